package onnx

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func sample() *Model {
	return &Model{IRVersion: 8, Opset: 17, Producer: "test", Metadata: map[string]string{"context_length": "1024", "architecture": "llama"},
		Graph: Graph{Name: "g",
			Nodes:        []Node{{Op: "MatMul", Name: "mm", Inputs: []string{"x", "w"}, Outputs: []string{"y"}}},
			Initializers: []Tensor{{Name: "w", Dims: []int64{16, 32}, Elem: Float, Float: make([]float32, 16*32)}},
			Inputs:       []ValueInfo{{Name: "x", Elem: Float, Shape: []Dim{{Param: "batch"}, {Value: 16}}}},
			Outputs:      []ValueInfo{{Name: "y", Elem: Float, Shape: []Dim{{Param: "batch"}, {Value: 32}}}},
		}}
}

// The header reader gives back what the writer wrote, with the weights
// inline or external, and names what is wrong with damaged files.
func TestReadInfo(t *testing.T) {
	dir := t.TempDir()
	inline, external := filepath.Join(dir, "inline.onnx"), filepath.Join(dir, "external.onnx")
	if err := os.WriteFile(inline, sample().Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sample().WriteExternal(external, "external.onnx_data"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "external.onnx_data"))
	if err != nil || st.Size() != 16*32*4 {
		t.Fatalf("external data: %v %v", st, err)
	}
	for _, p := range []string{inline, external} {
		info, err := ReadInfoFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m := sample()
		if info.IRVersion != 8 || info.Producer != "test" || info.Opsets[""] != 17 ||
			!reflect.DeepEqual(info.Inputs, m.Graph.Inputs) || !reflect.DeepEqual(info.Outputs, m.Graph.Outputs) ||
			!reflect.DeepEqual(info.Metadata, m.Metadata) {
			t.Fatalf("%s: %+v", p, info)
		}
	}
	whole := sample().Marshal()
	for name, b := range map[string][]byte{
		"empty":     {},
		"truncated": whole[:len(whole)-40],
		"garbage":   []byte("\xff\xff\xff\xff not a model"),
		"no graph":  {0x08, 0x08},
	} {
		p := filepath.Join(dir, "bad.onnx")
		os.WriteFile(p, b, 0o644)
		if _, err := ReadInfoFile(p); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
