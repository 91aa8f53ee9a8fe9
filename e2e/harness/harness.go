// Package harness builds the project's binaries and starts a mesh of real
// processes (Consul, Jaeger, engine workers, router) on free loopback ports,
// for end-to-end tests, the local mesh command and benchmarks.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/llm-runner-router/llmrouter/pkg/bpe"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

// RepoRoot finds the directory holding go.work, upwards from the working
// directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		dir = parent
	}
}

// Binaries are the project's service binaries.
type Binaries struct {
	Dir           string
	Router        string
	EngineSim     string
	EngineGGUF    string
	GGUFQuantize  string
	EngineONNX    string
	ProviderProxy string
	// LLMR is the command-line client.
	LLMR string
}

// Build compiles the service binaries into dir: router and engine-sim
// without cgo, engine-gguf with it (CGO_CFLAGS/CGO_LDFLAGS must point at
// llama.cpp, as the Makefile sets them).
func Build(dir string) (Binaries, error) {
	root, err := RepoRoot()
	if err != nil {
		return Binaries{}, err
	}
	out := dir + string(filepath.Separator)
	builds := []struct {
		cgo  string
		pkgs []string
	}{
		{"0", []string{"./services/router/cmd/router", "./services/router/cmd/llmr", "./services/engine-sim/cmd/engine-sim", "./services/provider-proxy/cmd/provider-proxy"}},
		{"1", []string{"./services/engine-gguf/cmd/engine-gguf", "./services/engine-gguf/cmd/gguf-quantize", "./services/engine-onnx/cmd/engine-onnx"}},
	}
	for _, b := range builds {
		cmd := exec.Command("go", append([]string{"build", "-o", out}, b.pkgs...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if msg, err := cmd.CombinedOutput(); err != nil {
			hint := ""
			if b.cgo == "1" && os.Getenv("CGO_LDFLAGS") == "" {
				hint = " (CGO_LDFLAGS is empty: build through make, which points cgo at llama.cpp)"
			}
			return Binaries{}, fmt.Errorf("go build %v: %v%s\n%s", b.pkgs, err, hint, msg)
		}
	}
	return Binaries{Dir: dir, Router: filepath.Join(dir, "router"), EngineSim: filepath.Join(dir, "engine-sim"),
		EngineGGUF: filepath.Join(dir, "engine-gguf"), GGUFQuantize: filepath.Join(dir, "gguf-quantize"),
		ProviderProxy: filepath.Join(dir, "provider-proxy"), EngineONNX: filepath.Join(dir, "engine-onnx"), LLMR: filepath.Join(dir, "llmr")}, nil
}

// TinyModel writes the tiny test model (peaked output) into dir and returns
// its path; the vocabulary comes from LLMROUTER_VOCAB, as the Makefile sets.
func TinyModel(dir string) (string, error) {
	vocab := os.Getenv("LLMROUTER_VOCAB")
	if vocab == "" {
		return "", fmt.Errorf("LLMROUTER_VOCAB is not set: run through make (it points at ggml-vocab-gpt-2.gguf)")
	}
	p := filepath.Join(dir, "tiny.gguf")
	return p, testmodel.WriteFile(p, TinyConfig(), vocab)
}

// KJVModel writes the demo model, a counted bigram model of the King James
// Bible (testmodel.KJVBigram), as GGUF into dir, and with withONNX also as
// an ONNX model directory; the text comes from LLMROUTER_KJV, the tokenizer
// from LLMROUTER_GPT2, as the Makefile sets.
func KJVModel(dir string, withONNX bool) (ggufPath, onnxDir string, err error) {
	ggufPath, onnxDir, _, err = KJVModelCounts(dir, withONNX)
	return ggufPath, onnxDir, err
}

// KJVModelCounts is KJVModel also returning the counted bigrams.
func KJVModelCounts(dir string, withONNX bool) (ggufPath, onnxDir string, counts *testmodel.Bigrams, err error) {
	text, vocab, gpt2 := os.Getenv("LLMROUTER_KJV"), os.Getenv("LLMROUTER_VOCAB"), os.Getenv("LLMROUTER_GPT2")
	if text == "" || vocab == "" || gpt2 == "" {
		return "", "", nil, fmt.Errorf("LLMROUTER_KJV, LLMROUTER_VOCAB and LLMROUTER_GPT2 are not set: run through make (tools/install.sh kjv gpt2 llama)")
	}
	f, err := os.Open(text)
	if err != nil {
		return "", "", nil, fmt.Errorf("the King James text (tools/install.sh kjv): %w", err)
	}
	defer f.Close()
	tok, err := bpe.Load(filepath.Join(gpt2, "encoder.json"), filepath.Join(gpt2, "vocab.bpe"))
	if err != nil {
		return "", "", nil, err
	}
	c, counts, err := testmodel.KJVBigram(f, tok)
	if err != nil {
		return "", "", nil, err
	}
	ggufPath = filepath.Join(dir, c.Name+".gguf")
	if err := testmodel.WriteFile(ggufPath, c, vocab); err != nil {
		return "", "", nil, err
	}
	if withONNX {
		onnxDir = filepath.Join(dir, c.Name+"-onnx")
		err = testmodel.WriteONNXDir(onnxDir, c, gpt2)
	}
	return ggufPath, onnxDir, counts, err
}

// ModelPair writes config c as a GGUF file and as an ONNX model directory
// under dir: the same weights for engine-gguf and engine-onnx.
func ModelPair(dir string, c testmodel.Config) (ggufPath, onnxDir string, err error) {
	vocab, gpt2 := os.Getenv("LLMROUTER_VOCAB"), os.Getenv("LLMROUTER_GPT2")
	if vocab == "" || gpt2 == "" {
		return "", "", fmt.Errorf("LLMROUTER_VOCAB and LLMROUTER_GPT2 are not set: run through make")
	}
	ggufPath, onnxDir = filepath.Join(dir, c.Name+".gguf"), filepath.Join(dir, c.Name+"-onnx")
	if err := testmodel.WriteFile(ggufPath, c, vocab); err != nil {
		return "", "", err
	}
	return ggufPath, onnxDir, testmodel.WriteONNXDir(onnxDir, c, gpt2)
}

// TinyConfig is the tiny test model with a peaked output, so that greedy
// decoding is stable across engines.
func TinyConfig() testmodel.Config {
	c := testmodel.Tiny
	c.Peak = 32
	return c
}

// TinyONNX writes the same model as TinyModel as an ONNX model directory
// (model.onnx, tokenizer.json, configs) under dir and returns its path; the
// tokenizer comes from LLMROUTER_GPT2, as the Makefile sets.
func TinyONNX(dir string) (string, error) {
	gpt2 := os.Getenv("LLMROUTER_GPT2")
	if gpt2 == "" {
		return "", fmt.Errorf("LLMROUTER_GPT2 is not set: run through make (it points at GPT-2's encoder.json and vocab.bpe)")
	}
	p := filepath.Join(dir, "tiny-onnx")
	return p, testmodel.WriteONNXDir(p, TinyConfig(), gpt2)
}

// ORTLibrary is the ONNX Runtime library for engine-onnx workers
// (LLMROUTER_ORT_LIB, as the Makefile sets).
func ORTLibrary() (string, error) {
	lib := os.Getenv("LLMROUTER_ORT_LIB")
	if lib == "" {
		return "", fmt.Errorf("LLMROUTER_ORT_LIB is not set: run through make (tools/install.sh --ort installs it)")
	}
	return lib, nil
}

// Jaeger is a running Jaeger with in-memory storage.
type Jaeger struct {
	*testkit.Proc
	// OTLP is the host:port of its OTLP gRPC receiver.
	OTLP string
	// Query is the base URL of its HTTP query API.
	Query string
}

const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

// StartJaeger starts Jaeger on free ports.
func StartJaeger(t testkit.T) *Jaeger {
	t.Helper()
	bin := testkit.ToolBin(t, "jaeger")
	query, grpcPort, otlp := testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, query, grpcPort, otlp), 0o644); err != nil {
		t.Fatal(err)
	}
	queryURL := "http://127.0.0.1:" + strconv.Itoa(query)
	// traces level none: Jaeger would otherwise trace itself to the default
	// OTLP port.
	p := testkit.Start(t, "jaeger", bin, testkit.StartOptions{
		WaitHTTP: queryURL + "/api/services", Timeout: 60 * time.Second,
	}, "--config", cfg)
	return &Jaeger{Proc: p, OTLP: "127.0.0.1:" + strconv.Itoa(otlp), Query: queryURL}
}

// OTELEnv points a service's tracing at j with a short export delay.
func (j *Jaeger) OTELEnv() []string {
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + j.OTLP,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
}
