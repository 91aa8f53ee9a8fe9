package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"slices"
)

// Limits that no real model reaches; beyond them a file is treated as corrupt
// rather than trusted with an allocation.
const (
	maxKVs       = 1 << 16
	maxTensors   = 1 << 20
	maxStringLen = 1 << 24
	maxArrayLen  = 1 << 26
	maxDims      = 4
)

// ErrCorrupt wraps every validation failure.
var ErrCorrupt = errors.New("corrupt gguf")

// ReadFile parses and validates the header of the GGUF file at path.
func ReadFile(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	f, err := Read(fh, uint64(st.Size()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

type reader struct {
	r    *bufio.Reader
	off  uint64
	size uint64
	err  error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: at byte %d: %s", ErrCorrupt, r.off, fmt.Sprintf(format, args...))
	}
}

func (r *reader) bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > r.size-r.off {
		r.fail("needs %d more bytes but the file ends after %d (truncated?)", n, r.size-r.off)
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.fail("read: %v", err)
		return nil
	}
	r.off += n
	return b
}

func (r *reader) u32() uint32 {
	b := r.bytes(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *reader) u64() uint64 {
	b := r.bytes(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (r *reader) str(what string) string {
	n := r.u64()
	if n > maxStringLen {
		r.fail("%s length %d is implausible", what, n)
		return ""
	}
	return string(r.bytes(n))
}

// Read parses and validates a GGUF header from r, a file of size bytes.
func Read(src io.Reader, size uint64) (*File, error) {
	r := &reader{r: bufio.NewReaderSize(src, 1<<16), size: size}
	if magic := r.bytes(4); r.err != nil || string(magic) != Magic {
		if r.err != nil {
			return nil, r.err
		}
		// The file's bytes are never quoted: the file may be anything.
		return nil, fmt.Errorf("%w: bad magic, want %q (not a GGUF file)", ErrCorrupt, Magic)
	}
	f := &File{Version: r.u32(), Size: size, Alignment: DefaultAlignment}
	if r.err == nil && f.Version != 2 && f.Version != 3 {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrCorrupt, f.Version)
	}
	nTensors, nKV := r.u64(), r.u64()
	if r.err == nil && (nTensors > maxTensors || nKV > maxKVs) {
		return nil, fmt.Errorf("%w: implausible counts: %d tensors, %d metadata entries", ErrCorrupt, nTensors, nKV)
	}
	seen := map[string]bool{}
	for i := uint64(0); i < nKV && r.err == nil; i++ {
		key := r.str("key")
		typ := ValueType(r.u32())
		v := r.value(typ, key, true)
		if r.err != nil {
			break
		}
		if seen[key] {
			r.fail("duplicate metadata key %q", key)
			break
		}
		seen[key] = true
		f.KV = append(f.KV, KV{Key: key, Value: v})
	}
	if r.err != nil {
		return nil, r.err
	}
	if a, ok := f.Uint("general.alignment"); ok {
		if a == 0 || a&(a-1) != 0 || a > 1<<16 {
			return nil, fmt.Errorf("%w: general.alignment %d is not a power of two", ErrCorrupt, a)
		}
		f.Alignment = a
	}
	names := map[string]bool{}
	for i := uint64(0); i < nTensors && r.err == nil; i++ {
		t := TensorInfo{Name: r.str("tensor name")}
		nd := r.u32()
		if r.err == nil && (nd == 0 || nd > maxDims) {
			r.fail("tensor %q has %d dimensions", t.Name, nd)
			break
		}
		elems := uint64(1)
		for d := uint32(0); d < nd && r.err == nil; d++ {
			dim := r.u64()
			hi, lo := bits.Mul64(elems, dim)
			if dim == 0 || hi != 0 {
				r.fail("tensor %q dimension %d = %d is invalid or overflows", t.Name, d, dim)
			}
			elems = lo
			t.Dims = append(t.Dims, dim)
		}
		t.Type = TensorType(r.u32())
		t.Offset = r.u64()
		if r.err != nil {
			break
		}
		var err error
		if t.Size, err = t.Type.ByteSize(elems); err != nil {
			r.fail("tensor %q: %v", t.Name, err)
			break
		}
		if names[t.Name] {
			r.fail("duplicate tensor %q", t.Name)
			break
		}
		names[t.Name] = true
		f.Tensors = append(f.Tensors, t)
	}
	if r.err != nil {
		return nil, r.err
	}
	f.DataOffset = (r.off + f.Alignment - 1) / f.Alignment * f.Alignment
	if len(f.Tensors) == 0 && f.DataOffset > size {
		f.DataOffset = size // vocabulary-only files end without padding
	}
	if f.DataOffset > size {
		return nil, fmt.Errorf("%w: header ends at %d but the file is %d bytes", ErrCorrupt, f.DataOffset, size)
	}
	if err := f.checkBounds(); err != nil {
		return nil, err
	}
	return f, nil
}

// checkBounds: every tensor aligned, inside the file, none overlapping.
func (f *File) checkBounds() error {
	data := f.Size - f.DataOffset
	ts := slices.Clone(f.Tensors)
	slices.SortFunc(ts, func(a, b TensorInfo) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	var end uint64
	for i, t := range ts {
		if t.Offset%f.Alignment != 0 {
			return fmt.Errorf("%w: tensor %q offset %d is not aligned to %d", ErrCorrupt, t.Name, t.Offset, f.Alignment)
		}
		if t.Offset > data || t.Size > data-t.Offset {
			return fmt.Errorf("%w: tensor %q (%d bytes at data offset %d) runs past the end of the file (%d data bytes; truncated?)", ErrCorrupt, t.Name, t.Size, t.Offset, data)
		}
		if i > 0 && t.Offset < end {
			return fmt.Errorf("%w: tensor %q overlaps tensor %q", ErrCorrupt, t.Name, ts[i-1].Name)
		}
		end = t.Offset + t.Size
	}
	return nil
}

func (r *reader) value(t ValueType, key string, arrayOK bool) any {
	switch t {
	case TypeUint8:
		b := r.bytes(1)
		if b == nil {
			return nil
		}
		return b[0]
	case TypeInt8:
		b := r.bytes(1)
		if b == nil {
			return nil
		}
		return int8(b[0])
	case TypeUint16:
		b := r.bytes(2)
		if b == nil {
			return nil
		}
		return binary.LittleEndian.Uint16(b)
	case TypeInt16:
		b := r.bytes(2)
		if b == nil {
			return nil
		}
		return int16(binary.LittleEndian.Uint16(b))
	case TypeUint32:
		return r.u32()
	case TypeInt32:
		return int32(r.u32())
	case TypeFloat32:
		return math.Float32frombits(r.u32())
	case TypeBool:
		b := r.bytes(1)
		if b == nil {
			return nil
		}
		if b[0] > 1 {
			r.fail("metadata %q: bool byte %d", key, b[0])
		}
		return b[0] == 1
	case TypeString:
		return r.str("metadata " + key)
	case TypeUint64:
		return r.u64()
	case TypeInt64:
		return int64(r.u64())
	case TypeFloat64:
		return math.Float64frombits(r.u64())
	case TypeArray:
		if !arrayOK {
			r.fail("metadata %q: nested arrays are not supported", key)
			return nil
		}
		et := ValueType(r.u32())
		n := r.u64()
		if r.err != nil {
			return nil
		}
		if et >= typeCount || et == TypeArray {
			r.fail("metadata %q: array of %v", key, et)
			return nil
		}
		min := uint64(et.size())
		if et == TypeString {
			min = 8
		}
		if n > maxArrayLen || n*min > r.size-r.off {
			r.fail("metadata %q: array of %d %v does not fit in the file", key, n, et)
			return nil
		}
		return Array{Type: et, Values: r.array(et, key, n)}
	}
	r.fail("metadata %q: unknown value type %d", key, uint32(t))
	return nil
}

func (r *reader) array(et ValueType, key string, n uint64) any {
	switch et {
	case TypeString:
		out := make([]string, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			out = append(out, r.str("metadata "+key))
		}
		return out
	case TypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(r.u32())
		}
		return out
	case TypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = r.u32()
		}
		return out
	case TypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(r.u32())
		}
		return out
	default:
		out := make([]any, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			out = append(out, r.value(et, key, false))
		}
		return out
	}
}
