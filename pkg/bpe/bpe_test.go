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

// A tokenizer written as tokenizer.json and read back encodes the same,
// recognises its added tokens when asked, and other tokenizer kinds are
// refused with a reason.
func TestHuggingFaceFile(t *testing.T) {
	tok := load(t)
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	eot := Added{ID: 50256, Content: "<|endoftext|>", Special: true}
	if err := tok.WriteHF(f, []Added{eot}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	hf, err := LoadHF(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"Hello world", " leading  spaces\n\n and 123 numbers", "ünïcödé 日本語 🦙", "it's we'll"} {
		if got, want := fmt.Sprint(hf.Encode(text)), fmt.Sprint(tok.Encode(text)); got != want {
			t.Errorf("%q: %s, want %s", text, got, want)
		}
	}
	got := hf.EncodeSpecial("a<|endoftext|>b")
	want := append(append(tok.Encode("a"), 50256), tok.Encode("b")...)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("special: %v, want %v", got, want)
	}
	if plain := hf.Encode("<|endoftext|>"); len(plain) == 1 && plain[0] == 50256 {
		t.Errorf("Encode must not parse special tokens")
	}
	if id, ok := hf.TokenID("<|endoftext|>"); !ok || id != 50256 {
		t.Errorf("TokenID = %d, %v", id, ok)
	}

	for name, body := range map[string]string{
		"unigram":   `{"model":{"type":"Unigram","vocab":{"a":0}},"pre_tokenizer":{"type":"ByteLevel"}}`,
		"metaspace": `{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Metaspace"}}`,
		"fallback":  `{"model":{"type":"BPE","byte_fallback":true,"vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}}`,
		"empty":     `{"model":{"type":"BPE","vocab":{},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}}`,
		"broken":    `{"model":`,
	} {
		p := filepath.Join(t.TempDir(), name+".json")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := LoadHF(p); err == nil {
			t.Errorf("%s: loaded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
