package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Writer assembles a GGUF file: metadata, then tensors in the order added.
type Writer struct {
	kv        []KV
	tensors   []TensorInfo
	data      [][]byte
	alignment uint64
}

// NewWriter returns an empty writer with the default alignment.
func NewWriter() *Writer { return &Writer{alignment: DefaultAlignment} }

// Set adds a metadata entry; values are the Go types KV documents.
func (w *Writer) Set(key string, v any) { w.kv = append(w.kv, KV{Key: key, Value: v}) }

// AddTensor adds a tensor with its encoded data.
func (w *Writer) AddTensor(name string, t TensorType, dims []uint64, data []byte) error {
	info := TensorInfo{Name: name, Dims: dims, Type: t}
	size, err := t.ByteSize(info.Elements())
	if err != nil {
		return fmt.Errorf("tensor %s: %w", name, err)
	}
	if uint64(len(data)) != size {
		return fmt.Errorf("tensor %s: %d bytes of data, want %d", name, len(data), size)
	}
	info.Size = size
	w.tensors = append(w.tensors, info)
	w.data = append(w.data, data)
	return nil
}

// WriteTo writes the file.
func (w *Writer) WriteTo(dst io.Writer) (int64, error) {
	bw := &countWriter{w: bufio.NewWriterSize(dst, 1<<20)}
	bw.raw([]byte(Magic))
	bw.u32(Version)
	bw.u64(uint64(len(w.tensors)))
	bw.u64(uint64(len(w.kv)))
	for _, kv := range w.kv {
		bw.str(kv.Key)
		if err := bw.value(kv.Value, true); err != nil {
			return bw.n, fmt.Errorf("metadata %s: %w", kv.Key, err)
		}
	}
	var off uint64
	for _, t := range w.tensors {
		bw.str(t.Name)
		bw.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			bw.u64(d)
		}
		bw.u32(uint32(t.Type))
		bw.u64(off)
		off = align(off+t.Size, w.alignment)
	}
	bw.pad(w.alignment)
	for _, d := range w.data {
		bw.raw(d)
		bw.pad(w.alignment)
	}
	if bw.err == nil {
		bw.err = bw.w.(*bufio.Writer).Flush()
	}
	return bw.n, bw.err
}

func align(n, a uint64) uint64 { return (n + a - 1) / a * a }

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) raw(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *countWriter) pad(a uint64) {
	if r := uint64(c.n) % a; r != 0 {
		c.raw(make([]byte, a-r))
	}
}

func (c *countWriter) u32(v uint32) { c.raw(binary.LittleEndian.AppendUint32(nil, v)) }
func (c *countWriter) u64(v uint64) { c.raw(binary.LittleEndian.AppendUint64(nil, v)) }
func (c *countWriter) str(s string) { c.u64(uint64(len(s))); c.raw([]byte(s)) }

func typeOf(v any) (ValueType, bool) {
	switch v.(type) {
	case uint8:
		return TypeUint8, true
	case int8:
		return TypeInt8, true
	case uint16:
		return TypeUint16, true
	case int16:
		return TypeInt16, true
	case uint32:
		return TypeUint32, true
	case int32:
		return TypeInt32, true
	case float32:
		return TypeFloat32, true
	case bool:
		return TypeBool, true
	case string:
		return TypeString, true
	case uint64:
		return TypeUint64, true
	case int64:
		return TypeInt64, true
	case float64:
		return TypeFloat64, true
	case Array:
		return TypeArray, true
	}
	return 0, false
}

func (c *countWriter) value(v any, top bool) error {
	t, ok := typeOf(v)
	if !ok {
		return fmt.Errorf("unsupported value type %T", v)
	}
	if top {
		c.u32(uint32(t))
	}
	switch x := v.(type) {
	case uint8:
		c.raw([]byte{x})
	case int8:
		c.raw([]byte{byte(x)})
	case uint16:
		c.raw(binary.LittleEndian.AppendUint16(nil, x))
	case int16:
		c.raw(binary.LittleEndian.AppendUint16(nil, uint16(x)))
	case uint32:
		c.u32(x)
	case int32:
		c.u32(uint32(x))
	case float32:
		c.u32(math.Float32bits(x))
	case bool:
		b := byte(0)
		if x {
			b = 1
		}
		c.raw([]byte{b})
	case string:
		c.str(x)
	case uint64:
		c.u64(x)
	case int64:
		c.u64(uint64(x))
	case float64:
		c.u64(math.Float64bits(x))
	case Array:
		if !top {
			return fmt.Errorf("nested arrays are not supported")
		}
		c.u32(uint32(x.Type))
		switch vals := x.Values.(type) {
		case []string:
			c.u64(uint64(len(vals)))
			for _, s := range vals {
				c.str(s)
			}
		case []int32:
			c.u64(uint64(len(vals)))
			for _, n := range vals {
				c.u32(uint32(n))
			}
		case []uint32:
			c.u64(uint64(len(vals)))
			for _, n := range vals {
				c.u32(n)
			}
		case []float32:
			c.u64(uint64(len(vals)))
			for _, f := range vals {
				c.u32(math.Float32bits(f))
			}
		case []any:
			c.u64(uint64(len(vals)))
			for _, e := range vals {
				if err := c.value(e, false); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("unsupported array %T", x.Values)
		}
	}
	return c.err
}

// EncodeF32 encodes float32 values little-endian.
func EncodeF32(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

// EncodeF16 encodes float32 values as IEEE half precision, rounding to
// nearest even.
func EncodeF16(v []float32) []byte {
	b := make([]byte, 2*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint16(b[2*i:], F32ToF16(f))
	}
	return b
}

// F32ToF16 converts with round-to-nearest-even; overflow gives infinity.
func F32ToF16(f float32) uint16 {
	x := math.Float32bits(f)
	sign := uint16(x>>16) & 0x8000
	exp := int32(x>>23&0xff) - 127 + 15
	mant := x & 0x7fffff
	switch {
	case x&0x7fffffff > 0x7f800000: // NaN
		return sign | 0x7e00
	case exp >= 31: // overflow or infinity
		return sign | 0x7c00
	case exp <= 0: // subnormal or zero
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		h := mant >> shift
		rem := mant & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // may carry into the exponent, which is still correct
	}
	return sign | uint16(h)
}

// F16ToF32 converts half precision bits to float32.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		for mant&0x400 == 0 {
			mant <<= 1
			exp--
		}
		exp++
		mant &= 0x3ff
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
