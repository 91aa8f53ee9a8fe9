// Package onnx writes ONNX models (the ModelProto wire format) without a
// generated schema: the few messages a decoder-only LM graph needs are
// encoded with protowire using the field numbers of the ONNX specification.
// Builders are not safe for concurrent use.
package onnx

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// Element types (TensorProto.DataType).
const (
	Float = 1
	Int32 = 6
	Int64 = 7
	Bool  = 9
)

// Dim is a dimension: a fixed size, or a symbolic name when Param is set.
type Dim struct {
	Value int64
	Param string
}

// ValueInfo names a graph input or output with its type.
type ValueInfo struct {
	Name  string
	Elem  int
	Shape []Dim
}

// Attr is a node attribute: exactly one of the value fields is used,
// chosen by Kind.
type Attr struct {
	Name string
	Kind int // 1 float, 2 int, 3 string, 7 ints
	F    float32
	I    int64
	S    string
	Ints []int64
}

// Node is one operator.
type Node struct {
	Op      string
	Name    string
	Inputs  []string
	Outputs []string
	Attrs   []Attr
	Domain  string
}

// Tensor is an initializer (constant weights).
type Tensor struct {
	Name  string
	Dims  []int64
	Elem  int
	Float []float32
	Int32 []int32
	Int64 []int64
}

// Graph is a model's computation.
type Graph struct {
	Name         string
	Nodes        []Node
	Initializers []Tensor
	Inputs       []ValueInfo
	Outputs      []ValueInfo
}

// Model is a whole ONNX model.
type Model struct {
	IRVersion int64
	Opset     int64
	Producer  string
	Graph     Graph
	Metadata  map[string]string
}

// Marshal encodes the model with every initializer inside it.
func (m *Model) Marshal() []byte {
	b, _ := m.marshal(nil) // without externalize there is no error
	return b
}

// externalize stores a tensor's raw bytes elsewhere and returns where: the
// file's name and the bytes' offset. Nil keeps data inside the model.
type externalize func(raw []byte) (location string, offset int64, err error)

// minExternal is the smallest initializer worth storing outside the model.
const minExternal = 1 << 10

// WriteExternal writes the model to modelPath with initializers of 1 KiB or
// more in dataName beside it (ONNX external data, as large Hugging Face
// exports are stored), each at a 4096-byte-aligned offset so that ONNX
// Runtime can map it instead of copying it.
func (m *Model) WriteExternal(modelPath, dataName string) error {
	data, err := os.Create(filepath.Join(filepath.Dir(modelPath), dataName))
	if err != nil {
		return err
	}
	defer data.Close()
	var off int64
	model, err := m.marshal(func(raw []byte) (string, int64, error) {
		if pad := (4096 - off%4096) % 4096; pad > 0 {
			if _, err := data.Write(make([]byte, pad)); err != nil {
				return "", 0, err
			}
			off += pad
		}
		at := off
		if _, err := data.Write(raw); err != nil {
			return "", 0, err
		}
		off += int64(len(raw))
		return dataName, at, nil
	})
	if err != nil {
		return err
	}
	if err := data.Close(); err != nil {
		return err
	}
	return os.WriteFile(modelPath, model, 0o644)
}

func (m *Model) marshal(ext externalize) ([]byte, error) {
	var err error
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(m.IRVersion))
	b = appendString(b, 2, m.Producer)
	b = appendMessage(b, 7, m.Graph.marshal(ext, &err))
	var opset []byte
	opset = appendString(opset, 1, "")
	opset = protowire.AppendTag(opset, 2, protowire.VarintType)
	opset = protowire.AppendVarint(opset, uint64(m.Opset))
	b = appendMessage(b, 8, opset)
	for _, k := range sortedKeys(m.Metadata) {
		var kv []byte
		kv = appendString(kv, 1, k)
		kv = appendString(kv, 2, m.Metadata[k])
		b = appendMessage(b, 14, kv)
	}
	return b, err
}

func (g *Graph) marshal(ext externalize, errp *error) []byte {
	var b []byte
	for _, n := range g.Nodes {
		b = appendMessage(b, 1, n.marshal())
	}
	b = appendString(b, 2, g.Name)
	for _, t := range g.Initializers {
		b = appendMessage(b, 5, t.marshal(ext, errp))
	}
	for _, v := range g.Inputs {
		b = appendMessage(b, 11, v.marshal())
	}
	for _, v := range g.Outputs {
		b = appendMessage(b, 12, v.marshal())
	}
	return b
}

func (n *Node) marshal() []byte {
	var b []byte
	for _, in := range n.Inputs {
		b = appendString(b, 1, in)
	}
	for _, out := range n.Outputs {
		b = appendString(b, 2, out)
	}
	b = appendString(b, 3, n.Name)
	b = appendString(b, 4, n.Op)
	for _, a := range n.Attrs {
		b = appendMessage(b, 5, a.marshal())
	}
	if n.Domain != "" {
		b = appendString(b, 7, n.Domain)
	}
	return b
}

func (a *Attr) marshal() []byte {
	var b []byte
	b = appendString(b, 1, a.Name)
	switch a.Kind {
	case 1:
		b = protowire.AppendTag(b, 2, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(a.F))
	case 2:
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(a.I))
	case 3:
		b = appendString(b, 4, a.S)
	case 7:
		var packed []byte
		for _, v := range a.Ints {
			packed = protowire.AppendVarint(packed, uint64(v))
		}
		b = appendMessage(b, 8, packed)
	}
	b = protowire.AppendTag(b, 20, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(a.Kind))
}

func (t *Tensor) marshal(ext externalize, errp *error) []byte {
	var b []byte
	if len(t.Dims) > 0 {
		var packed []byte
		for _, d := range t.Dims {
			packed = protowire.AppendVarint(packed, uint64(d))
		}
		b = appendMessage(b, 1, packed)
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(t.Elem))
	b = appendString(b, 8, t.Name)
	var raw []byte
	switch t.Elem {
	case Float:
		raw = make([]byte, 4*len(t.Float))
		for i, f := range t.Float {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
		}
	case Int32:
		raw = make([]byte, 4*len(t.Int32))
		for i, v := range t.Int32 {
			binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
		}
	case Int64:
		raw = make([]byte, 8*len(t.Int64))
		for i, v := range t.Int64 {
			binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
		}
	}
	if ext == nil || len(raw) < minExternal || *errp != nil {
		return appendMessage(b, 9, raw)
	}
	loc, off, err := ext(raw)
	if err != nil {
		*errp = err
		return b
	}
	for _, kv := range [][2]string{{"location", loc}, {"offset", strconv.FormatInt(off, 10)}, {"length", strconv.Itoa(len(raw))}} {
		var e []byte
		e = appendString(e, 1, kv[0])
		e = appendString(e, 2, kv[1])
		b = appendMessage(b, 13, e)
	}
	b = protowire.AppendTag(b, 14, protowire.VarintType)
	return protowire.AppendVarint(b, 1) // DataLocation EXTERNAL
}

func (v *ValueInfo) marshal() []byte {
	var shape []byte
	for _, d := range v.Shape {
		var dim []byte
		if d.Param != "" {
			dim = appendString(dim, 2, d.Param)
		} else {
			dim = protowire.AppendTag(dim, 1, protowire.VarintType)
			dim = protowire.AppendVarint(dim, uint64(d.Value))
		}
		shape = appendMessage(shape, 1, dim)
	}
	var tensor []byte
	tensor = protowire.AppendTag(tensor, 1, protowire.VarintType)
	tensor = protowire.AppendVarint(tensor, uint64(v.Elem))
	tensor = appendMessage(tensor, 2, shape)
	var typ []byte
	typ = appendMessage(typ, 1, tensor)
	var b []byte
	b = appendString(b, 1, v.Name)
	return appendMessage(b, 2, typ)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMessage(b []byte, num protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
