package ort

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llm-runner-router/llmrouter/pkg/onnx"
)

func initORT(t *testing.T) {
	t.Helper()
	lib := os.Getenv("LLMROUTER_ORT_LIB")
	if lib == "" {
		t.Fatal("LLMROUTER_ORT_LIB is not set: run the tests through make")
	}
	if err := Init(lib); err != nil {
		t.Fatal(err)
	}
}

// write puts a model in a temporary file.
func write(t *testing.T, model []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, model, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A graph written by pkg/onnx runs in ONNX Runtime: Z = X·W + B with a
// symbolic batch dimension.
func TestGeneratedGraphRuns(t *testing.T) {
	initORT(t)
	m := onnx.Model{IRVersion: 8, Opset: 17, Producer: "llmrouter-test", Graph: onnx.Graph{
		Name: "affine",
		Nodes: []onnx.Node{
			{Op: "MatMul", Name: "mm", Inputs: []string{"X", "W"}, Outputs: []string{"XW"}},
			{Op: "Add", Name: "add", Inputs: []string{"XW", "B"}, Outputs: []string{"Z"}},
		},
		Initializers: []onnx.Tensor{
			{Name: "W", Dims: []int64{2, 3}, Elem: onnx.Float, Float: []float32{1, 2, 3, 4, 5, 6}},
			{Name: "B", Dims: []int64{3}, Elem: onnx.Float, Float: []float32{0.5, -0.5, 1}},
		},
		Inputs:  []onnx.ValueInfo{{Name: "X", Elem: onnx.Float, Shape: []onnx.Dim{{Param: "batch"}, {Value: 2}}}},
		Outputs: []onnx.ValueInfo{{Name: "Z", Elem: onnx.Float, Shape: []onnx.Dim{{Param: "batch"}, {Value: 3}}}},
	}}
	s, err := Open(write(t, m.Marshal()), []string{"X"}, []string{"Z"}, Options{Threads: 1, CUDADevice: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x, err := NewFloat([]int64{2, 2}, []float32{1, 0, 1, 1})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	got := make([]float32, 6)
	out, err := NewFloat([]int64{2, 3}, got)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := s.RunInto([]*Value{x}, []*Value{out}); err != nil {
		t.Fatal(err)
	}
	want := []float32{1.5, 1.5, 4, 5.5, 6.5, 10} // [1,0]·W+B, [1,1]·W+B
	// A buffer of the wrong shape is refused, not overrun.
	wrong, err := NewFloat([]int64{2, 2}, make([]float32, 4))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if err := s.RunInto([]*Value{x}, []*Value{wrong}); err == nil {
		t.Fatal("an output of the wrong shape was accepted")
	}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("output %v, want %v", got, want)
		}
	}
	t.Logf("onnxruntime %s", Version())
}

func TestBrokenModelsAreErrors(t *testing.T) {
	initORT(t)
	if _, err := Open(write(t, []byte("not an onnx model")), []string{"X"}, []string{"Z"}, Options{CUDADevice: -1}); err == nil {
		t.Fatal("garbage loaded as a model")
	}
	m := onnx.Model{IRVersion: 8, Opset: 17, Graph: onnx.Graph{Name: "g",
		Nodes:   []onnx.Node{{Op: "NoSuchOp", Inputs: []string{"X"}, Outputs: []string{"Z"}}},
		Inputs:  []onnx.ValueInfo{{Name: "X", Elem: onnx.Float, Shape: []onnx.Dim{{Value: 1}}}},
		Outputs: []onnx.ValueInfo{{Name: "Z", Elem: onnx.Float, Shape: []onnx.Dim{{Value: 1}}}},
	}}
	_, err := Open(write(t, m.Marshal()), []string{"X"}, []string{"Z"}, Options{CUDADevice: -1})
	if err == nil || !strings.Contains(err.Error(), "NoSuchOp") {
		t.Fatalf("unknown operator: %v", err)
	}
}
