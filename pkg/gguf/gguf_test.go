package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

func sample(t *testing.T) []byte {
	t.Helper()
	w := NewWriter()
	w.Set("general.architecture", "llama")
	w.Set("general.alignment", uint32(32))
	w.Set("some.float", float32(1.5))
	w.Set("some.list", Array{Type: TypeString, Values: []string{"a", "bc"}})
	w.Set("some.ints", Array{Type: TypeInt32, Values: []int32{1, -2, 3}})
	if err := w.AddTensor("a", F32, []uint64{4, 2}, EncodeF32(make([]float32, 8))); err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("b", F16, []uint64{3}, EncodeF16([]float32{1, 2, 3})); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	b := sample(t)
	f, err := Read(bytes.NewReader(b), uint64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if f.String("general.architecture") != "llama" || f.Get("some.float") != float32(1.5) {
		t.Fatalf("metadata %v", f.KV)
	}
	if l := f.Get("some.list").(Array).Values.([]string); len(l) != 2 || l[1] != "bc" {
		t.Fatalf("list %v", l)
	}
	a, _ := f.Tensor("a")
	bt, _ := f.Tensor("b")
	if a.Size != 32 || bt.Size != 6 || bt.Offset != 32 || f.Parameters() != 11 || f.DataOffset%32 != 0 {
		t.Fatalf("tensors %+v %+v data at %d", a, bt, f.DataOffset)
	}
}

// Every corruption the engine must refuse before llama.cpp sees the file.
func TestCorruptionCases(t *testing.T) {
	good := sample(t)
	patch := func(off int, v uint64, n int) []byte {
		b := bytes.Clone(good)
		if n == 4 {
			binary.LittleEndian.PutUint32(b[off:], uint32(v))
		} else {
			binary.LittleEndian.PutUint64(b[off:], v)
		}
		return b
	}
	// Offsets in the header: magic 0, version 4, tensors 8, kvs 16, first key 24.
	keyLenAt := 24
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"bad magic", append([]byte("GGML"), good[4:]...), "bad magic"},
		{"unknown version", patch(4, 99, 4), "unsupported version 99"},
		{"implausible tensor count", patch(8, 1<<40, 8), "implausible counts"},
		{"implausible key length", patch(keyLenAt, 1<<40, 8), "length 1099511627776 is implausible"},
		{"truncated metadata", good[:60], "truncated"},
		{"truncated tensor data", good[:len(good)-30], "runs past the end of the file"},
		{"unknown tensor type", retype(t, good, "b", 99), "unknown tensor type 99"},
		{"tensor offset beyond file", reoffset(t, good, "b", 1<<20), "runs past the end"},
		{"misaligned tensor", reoffset(t, good, "b", 33), "not aligned"},
		{"overlapping tensors", reoffset(t, good, "b", 0), "overlaps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tt.data), uint64(len(tt.data)))
			if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrCorrupt containing %q", err, tt.want)
			}
		})
	}
}

// tensorField finds tensor name's info record and returns the byte offset
// of its type field (offset follows it).
func tensorField(t *testing.T, b []byte, name string, dims int) int {
	t.Helper()
	rec := append(binary.LittleEndian.AppendUint64(nil, uint64(len(name))), name...)
	i := bytes.LastIndex(b[:len(b)-64], rec)
	if i < 0 {
		t.Fatalf("tensor %q not found", name)
	}
	return i + len(rec) + 4 + 8*dims
}

func retype(t *testing.T, b []byte, name string, typ uint32) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint32(b[tensorField(t, b, name, 1):], typ)
	return b
}

func reoffset(t *testing.T, b []byte, name string, off uint64) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint64(b[tensorField(t, b, name, 1)+4:], off)
	return b
}

func TestF16(t *testing.T) {
	tests := []struct {
		in   float32
		want uint16
	}{
		{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {1e6, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {5.960464477539063e-08, 0x0001}, {0.333251953125, 0x3555},
		{1.0009765625 / 2 * 2, 0x3c01},
	}
	for _, tt := range tests {
		if got := F32ToF16(tt.in); got != tt.want {
			t.Errorf("F32ToF16(%v) = %#04x, want %#04x", tt.in, got, tt.want)
		}
		if tt.want != 0x7c00 {
			if back := F16ToF32(tt.want); back != tt.in {
				t.Errorf("F16ToF32(%#04x) = %v, want %v", tt.want, back, tt.in)
			}
		}
	}
	// Round to nearest even: 1 + 2^-11 is halfway between 1 and 1+2^-10.
	if got := F32ToF16(1 + 1.0/2048); got != 0x3c00 {
		t.Errorf("tie rounded to %#04x, want even 0x3c00", got)
	}
}
