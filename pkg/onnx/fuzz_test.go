package onnx

import (
	"bytes"
	"errors"
	"testing"
)

// The header reader answers every input with an Info or ErrFormat (or an
// I/O error), never a panic or a hang; a model it wrote reads back.
func FuzzReadInfo(f *testing.F) {
	whole := sample().Marshal()
	f.Add(whole)
	f.Add(whole[:len(whole)/2])
	f.Add([]byte("\x08\x01garbage that is not a model"))
	f.Add([]byte{0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // a graph field claiming 4 GiB
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := ReadInfo(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error without ErrFormat: %v", err)
			}
			return
		}
		if info == nil {
			t.Fatal("nil Info without an error")
		}
	})
}
