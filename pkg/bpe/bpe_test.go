package bpe

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func tools(t *testing.T, flag string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "tools", "install.sh"), flag).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func load(t *testing.T) *Tokenizer {
	t.Helper()
	dir := tools(t, "--gpt2")
	tok, err := Load(filepath.Join(dir, "encoder.json"), filepath.Join(dir, "vocab.bpe"))
	if err != nil {
		t.Fatalf("%v (run make tools)", err)
	}
	return tok
}

// llama.cpp's own GPT-2 tokenizer test vectors (from its bundle): every
// input must give exactly the expected ids, and decode back to the input.
func TestLlamaCppVectors(t *testing.T) {
	tok := load(t)
	vocab := filepath.Join(tools(t, "--llama"), "vocab")
	inp, err := os.ReadFile(filepath.Join(vocab, "ggml-vocab-gpt-2.gguf.inp"))
	if err != nil {
		t.Fatalf("%v (run make tools)", err)
	}
	outp, err := os.ReadFile(filepath.Join(vocab, "ggml-vocab-gpt-2.gguf.out"))
	if err != nil {
		t.Fatal(err)
	}
	inputs := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	inputs = inputs[:len(inputs)-1] // the file ends with the separator
	wants := strings.Split(strings.TrimSuffix(string(outp), "\n"), "\n")
	if len(inputs) != len(wants) || len(inputs) < 40 {
		t.Fatalf("%d inputs, %d outputs", len(inputs), len(wants))
	}
	for i, in := range inputs {
		got := fmt.Sprint(tok.Encode(in))
		want := "[" + strings.TrimSpace(wants[i]) + "]"
		if got != want {
			t.Errorf("case %d %q:\n got %s\nwant %s", i, in, got, want)
		}
		if back := string(tok.Decode(tok.Encode(in))); back != in {
			t.Errorf("case %d: decode gives %q", i, back)
		}
	}
	if tok.VocabSize() != 50257 {
		t.Fatalf("vocab size %d", tok.VocabSize())
	}
}
