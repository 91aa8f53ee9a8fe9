package gguf

import (
	"bytes"
	"testing"
)

// The header reader refuses malformed files with an error, never a panic or
// a hang; what it accepts is self-consistent.
func FuzzReadHeader(f *testing.F) {
	var good bytes.Buffer
	w := NewWriter()
	w.Set("general.architecture", "llama")
	w.Set("llama.block_count", uint32(1))
	if err := w.AddTensor("t", F32, []uint64{4}, make([]byte, 16)); err != nil {
		f.Fatal(err)
	}
	if _, err := w.WriteTo(&good); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Add([]byte("root:x:0:0:root:/root:/bin/bash\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Read(bytes.NewReader(b), uint64(len(b)))
		if err != nil {
			return
		}
		if h.DataOffset > uint64(len(b)) {
			t.Fatalf("accepted a header ending at %d in %d bytes", h.DataOffset, len(b))
		}
		for _, tn := range h.Tensors {
			if h.DataOffset+tn.Offset+tn.Size > uint64(len(b)) {
				t.Fatalf("accepted tensor %q past the end of the file", tn.Name)
			}
		}
	})
}
