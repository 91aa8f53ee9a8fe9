// Package gguf reads and writes GGUF files (version 3), the format llama.cpp
// loads. The reader checks every length, count, type and tensor bound against
// the file before anything trusts it, so a truncated or corrupt file becomes a
// precise error in Go instead of an abort inside llama.cpp. Values are
// immutable after Read; a File is safe for concurrent reads.
package gguf

import (
	"fmt"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// Version is the GGUF version this package writes; Read accepts 2 and 3.
const Version = 3

// DefaultAlignment of tensor data when general.alignment is absent.
const DefaultAlignment = 32

// ValueType is a metadata value's type tag.
type ValueType uint32

// Metadata value types.
const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
	typeCount
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if t < typeCount {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// size is the encoded size of a fixed-size value type, 0 for string/array.
func (t ValueType) size() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// KV is one metadata entry. Value holds uint8, int8, uint16, int16, uint32,
// int32, float32, bool, string, uint64, int64, float64, or an Array.
type KV struct {
	Key   string
	Value any
}

// Array is a typed metadata array. Values is a slice of the element's Go
// type ([]string, []int32, []float32, ...).
type Array struct {
	Type   ValueType
	Values any
}

// TensorType is a ggml tensor type.
type TensorType uint32

// The tensor types this package knows the block layout of.
const (
	F32  TensorType = 0
	F16  TensorType = 1
	Q4_0 TensorType = 2
	Q4_1 TensorType = 3
	Q5_0 TensorType = 6
	Q5_1 TensorType = 7
	Q8_0 TensorType = 8
	Q8_1 TensorType = 9
	Q2_K TensorType = 10
	Q3_K TensorType = 11
	Q4_K TensorType = 12
	Q5_K TensorType = 13
	Q6_K TensorType = 14
	Q8_K TensorType = 15
	BF16 TensorType = 30
)

// block is (elements per block, bytes per block).
var blocks = map[TensorType][2]int{
	F32: {1, 4}, F16: {1, 2}, BF16: {1, 2},
	Q4_0: {32, 18}, Q4_1: {32, 20}, Q5_0: {32, 22}, Q5_1: {32, 24}, Q8_0: {32, 34}, Q8_1: {32, 36},
	Q2_K: {256, 84}, Q3_K: {256, 110}, Q4_K: {256, 144}, Q5_K: {256, 176}, Q6_K: {256, 210}, Q8_K: {256, 292},
}

var tensorTypeNames = map[TensorType]string{
	F32: "F32", F16: "F16", BF16: "BF16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1", Q8_0: "Q8_0", Q8_1: "Q8_1",
	Q2_K: "Q2_K", Q3_K: "Q3_K", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K", Q8_K: "Q8_K",
}

func (t TensorType) String() string {
	if n, ok := tensorTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("ggml_type(%d)", uint32(t))
}

// ByteSize returns the bytes of a tensor of this type with n elements, or an
// error for unknown types and element counts that do not fill whole blocks.
func (t TensorType) ByteSize(n uint64) (uint64, error) {
	b, ok := blocks[t]
	if !ok {
		return 0, fmt.Errorf("unknown tensor type %d", uint32(t))
	}
	if n%uint64(b[0]) != 0 {
		return 0, fmt.Errorf("%d elements do not fill whole %s blocks of %d", n, t, b[0])
	}
	return n / uint64(b[0]) * uint64(b[1]), nil
}

// TensorInfo describes one tensor.
type TensorInfo struct {
	Name string
	// Dims are ggml's ne: Dims[0] is the innermost (contiguous) dimension.
	Dims []uint64
	Type TensorType
	// Offset of the data from the start of the data section.
	Offset uint64
	// Size in bytes, from Dims and Type.
	Size uint64
}

// Elements is the product of the dimensions.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF header: metadata and tensor descriptions.
type File struct {
	Version   uint32
	KV        []KV
	Tensors   []TensorInfo
	Alignment uint64
	// DataOffset is where tensor data starts in the file.
	DataOffset uint64
	// Size of the file.
	Size uint64
}

// Get returns the value of key, or nil.
func (f *File) Get(key string) any {
	for _, kv := range f.KV {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

// String returns a string value or "".
func (f *File) String(key string) string {
	s, _ := f.Get(key).(string)
	return s
}

// Uint returns an unsigned or non-negative integer value as uint64.
func (f *File) Uint(key string) (uint64, bool) {
	switch v := f.Get(key).(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8:
		return uint64(v), v >= 0
	case int16:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

// Tensor returns the named tensor's description.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// Parameters is the total element count of all tensors.
func (f *File) Parameters() uint64 {
	var n uint64
	for _, t := range f.Tensors {
		n += t.Elements()
	}
	return n
}
