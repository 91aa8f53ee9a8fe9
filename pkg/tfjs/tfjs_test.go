package tfjs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llm-runner-router/llmrouter/pkg/onnx"
)

// write stores a model.json (and an empty weight shard) in a fresh dir.
func write(t *testing.T, modelJSON string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.json"), []byte(modelJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const graph = `{"modelTopology":{"node":[
 {"name":"x","op":"Placeholder","attr":{"dtype":{"type":1},"shape":{"shape":{"dim":[{"size":"-1"},{"size":"2"}]}}}},
 {"name":"w","op":"Const","attr":{"dtype":{"type":1}}},
 {"name":"y","op":"%s","input":["x","w"],"attr":{"T":{"type":1}}}
]},"weightsManifest":[{"paths":["w.bin"],"weights":[{"name":"w","shape":[2],"dtype":"float32"%s}]}]}`

func TestConvert(t *testing.T) {
	m, err := Convert(write(t, strings.Replace(strings.Replace(graph, "%s", "AddV2", 1), "%s", "", 1)), Options{Output: "out"})
	if err != nil {
		t.Fatal(err)
	}
	g := m.Graph
	if len(g.Inputs) != 1 || g.Inputs[0].Name != "x" || g.Inputs[0].Elem != onnx.Float || len(g.Inputs[0].Shape) != 2 || g.Inputs[0].Shape[0].Param == "" {
		t.Fatalf("inputs %+v", g.Inputs)
	}
	if len(g.Outputs) != 1 || g.Outputs[0].Name != "out" || len(g.Initializers) != 1 || g.Initializers[0].Name != "w" {
		t.Fatalf("outputs %+v, initializers %d", g.Outputs, len(g.Initializers))
	}
	if ops := []string{g.Nodes[0].Op, g.Nodes[1].Op}; ops[0] != "Add" || ops[1] != "Identity" {
		t.Fatalf("nodes %v", ops)
	}
}

func TestConvertRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ op, quant, want string }{
		"unknown op":     {"FFT", "", "op FFT is not supported"},
		"quantized":      {"AddV2", `,"quantization":{"dtype":"uint8"}`, "quantized"},
		"not a graph":    {"", "", "not a graph model"},
		"too few inputs": {"StridedSlice", "", "the op takes 4"},
	} {
		t.Run(name, func(t *testing.T) {
			doc := strings.Replace(strings.Replace(graph, "%s", tc.op, 1), "%s", tc.quant, 1)
			if tc.op == "" {
				doc = `{"modelTopology":{}}`
			}
			_, err := Convert(write(t, doc), Options{Output: "out"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if _, err := Convert(t.TempDir(), Options{}); err == nil {
		t.Fatal("a directory without model.json converted")
	}
}
