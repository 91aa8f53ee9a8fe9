package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	"github.com/llm-runner-router/llmrouter/pkg/gguf"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

// Models are the report's model files: one generated llama-architecture
// model in F16 and its Q8_0 and Q4_0 quantizations (llama.cpp's own
// quantizer), and the same weights in F32 as GGUF and as ONNX.
type Models struct {
	Config testmodel.Config
	Params uint64
	// GGUF by quantization: "F16", "Q8_0", "Q4_0".
	GGUF          map[string]string
	F32, ONNX     string
	Quantizations []string
}

// Quick is the quick mode's model: about 3M parameters (GPT-2's vocabulary
// with a 64-wide, 2-layer body).
var Quick = testmodel.Config{Name: "quick", Seed: 1, Embd: 64, Layers: 2, Heads: 4, HeadsKV: 4, FF: 192, Context: 2048,
	Type: gguf.F16, Peak: 1, RMSEps: 1e-5, RopeBase: 10000, Std: 0.02}

// PrepareModels writes the models into dir unless they are there (the full
// report's ~124M model is cached under the tool cache, shared with make
// bench's ggufbench and onnxbench).
func PrepareModels(dir string, c testmodel.Config, bins harness.Binaries) (Models, error) {
	vocab := os.Getenv("LLMROUTER_VOCAB")
	if vocab == "" {
		return Models{}, fmt.Errorf("LLMROUTER_VOCAB is not set: run through make")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Models{}, err
	}
	m := Models{Config: c, Params: c.Params(50257), GGUF: map[string]string{}, Quantizations: []string{"F16", "Q8_0", "Q4_0"}}
	f16 := filepath.Join(dir, c.Name+"-f16.gguf")
	if _, err := os.Stat(f16); err != nil {
		fmt.Fprintf(os.Stderr, "bench: writing %s (F16) ...\n", f16)
		if err := testmodel.WriteFile(f16, c, vocab); err != nil {
			return m, err
		}
	}
	m.GGUF["F16"] = f16
	for _, q := range m.Quantizations[1:] {
		p := filepath.Join(dir, c.Name+"-"+strings.ToLower(q)+".gguf")
		if _, err := os.Stat(p); err != nil {
			if msg, err := exec.Command(bins.GGUFQuantize, "-type", q, f16, p).CombinedOutput(); err != nil {
				return m, fmt.Errorf("quantize %s: %v\n%s", q, err, msg)
			}
		}
		m.GGUF[q] = p
	}
	f32 := c
	f32.Name, f32.Type = c.Name+"-f32", gguf.F32
	m.F32, m.ONNX = filepath.Join(dir, f32.Name+".gguf"), filepath.Join(dir, f32.Name+"-onnx")
	if _, err := os.Stat(filepath.Join(m.ONNX, testmodel.ONNXDataFile)); err != nil {
		fmt.Fprintf(os.Stderr, "bench: writing %s (GGUF and ONNX, F32) ...\n", f32.Name)
		if m.F32, m.ONNX, err = harness.ModelPair(dir, f32); err != nil {
			return m, err
		}
	}
	return m, nil
}

// FileMiB is a file's size (a directory's: its files') in MiB.
func FileMiB(path string) float64 {
	var n int64
	filepath.Walk(path, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return float64(n) / (1 << 20)
}
