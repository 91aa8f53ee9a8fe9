package testmodel

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/llm-runner-router/llmrouter/pkg/gguf"
)

func vocab(t *testing.T) *gguf.File {
	t.Helper()
	p := os.Getenv("LLMROUTER_VOCAB")
	if p == "" {
		t.Fatal("LLMROUTER_VOCAB is not set: run the tests through make")
	}
	f, err := gguf.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSameSeedSameBytes(t *testing.T) {
	v := vocab(t)
	write := func(c Config) []byte {
		var b bytes.Buffer
		if err := Write(&b, c, v); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	a, b := write(Tiny), write(Tiny)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed gave different files")
	}
	other := Tiny
	other.Seed = 2
	if bytes.Equal(a, write(other)) {
		t.Fatal("different seeds gave the same file")
	}
	f, err := gguf.Read(bytes.NewReader(a), uint64(len(a)))
	if err != nil {
		t.Fatal(err)
	}
	if f.String("general.architecture") != "llama" || f.String("tokenizer.ggml.model") != "gpt2" || f.Parameters() != Tiny.Params(50257) {
		t.Fatalf("header: arch %q tokenizer %q params %d", f.String("general.architecture"), f.String("tokenizer.ggml.model"), f.Parameters())
	}
	// A tensor's weights depend on seed and name only.
	tensors := Tiny.Tensors(50257)
	if w1, w2 := Tiny.Weights(tensors[1]), Tiny.Weights(tensors[1]); w1[0] != w2[0] || w1[0] == 0 {
		t.Fatal("weights not reproducible")
	}
}

func TestBenchPresetSize(t *testing.T) {
	n := Bench.Params(50257)
	if n < 100_000_000 || n > 150_000_000 {
		t.Fatalf("bench preset has %d parameters, want 100-150M", n)
	}
	if err := (Config{Embd: 30, Layers: 1, Heads: 4, HeadsKV: 4, FF: 1, Context: 1, Type: gguf.F32, Peak: 1, Std: 1}).Validate(); err == nil {
		t.Fatal("embedding not divisible by heads accepted")
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "x.gguf"), Tiny, filepath.Join(t.TempDir(), "missing.gguf")); err == nil {
		t.Fatal("missing vocabulary accepted")
	}
}
