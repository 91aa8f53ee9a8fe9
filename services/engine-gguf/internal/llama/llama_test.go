package llama

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llm-runner-router/llmrouter/pkg/bpe"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

// tinyModel writes the tiny test model (peaked so greedy is robust).
func tinyModel(t *testing.T) string {
	t.Helper()
	vocab := os.Getenv("LLMROUTER_VOCAB")
	if vocab == "" {
		t.Fatal("LLMROUTER_VOCAB is not set: run tests through make (it points at ggml-vocab-gpt-2.gguf)")
	}
	c := testmodel.Tiny
	c.Peak = 32
	p := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := testmodel.WriteFile(p, c, vocab); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadTokenizeDecode(t *testing.T) {
	m, err := LoadModel(tinyModel(t), ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.NVocab() != 50257 || m.NEmbd() != 32 || m.NLayer() != 2 {
		t.Fatalf("model shape: vocab %d embd %d layers %d", m.NVocab(), m.NEmbd(), m.NLayer())
	}
	toks, err := m.Tokenize("Hello world", false, false)
	if err != nil {
		t.Fatal(err)
	}
	// GPT-2 BPE: "Hello" = 15496, " world" = 995.
	if !slices.Equal(toks, []int32{15496, 995}) {
		t.Fatalf("tokens %v", toks)
	}
	if string(m.Piece(995)) != " world" || !m.IsEOG(50256) {
		t.Fatalf("piece %q eog %v", m.Piece(995), m.IsEOG(50256))
	}
	chat, err := m.ApplyChatTemplate("", []ChatMessage{{"user", "hi"}}, true)
	if err != nil || chat != "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" {
		t.Fatalf("chat template: %q %v", chat, err)
	}

	ctx, err := NewContext(m, ContextParams{NCtx: 512, NBatch: 64, NSeqMax: 2, Threads: 1, ThreadsBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	if ctx.NCtxSeq() != 256 {
		t.Fatalf("per-sequence context %d, want 256", ctx.NCtxSeq())
	}
	greedy := func(seq int) []int32 {
		s, err := NewSampler(m, SamplerParams{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx.BatchClear()
		for i, tk := range toks {
			ctx.BatchAdd(tk, i, seq, i == len(toks)-1)
		}
		if err := ctx.Decode(); err != nil {
			t.Fatal(err)
		}
		var out []int32
		idx, pos := len(toks)-1, len(toks)
		for range 8 {
			tk, err := s.Sample(ctx, idx)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, tk)
			ctx.BatchClear()
			idx = ctx.BatchAdd(tk, pos, seq, true)
			pos++
			if err := ctx.Decode(); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	a, b := greedy(0), greedy(1)
	if !slices.Equal(a, b) {
		t.Fatalf("greedy differs across sequences: %v vs %v", a, b)
	}
	logits := ctx.Logits(0, nil)
	t.Logf("greedy %v; top-1 margin of the last step %.3f", a, testmodel.TopMargin(logits))
	if ctx.SeqPosMax(0) != len(toks)+7 {
		t.Fatalf("seq 0 pos max %d", ctx.SeqPosMax(0))
	}
	if !ctx.SeqRm(0, 1, -1) || ctx.SeqPosMax(0) != 0 {
		t.Fatalf("after partial remove: pos max %d", ctx.SeqPosMax(0))
	}
	if err := ctx.SeqCp(1, 0, 0, 3, false); err == nil {
		t.Fatal("partial copy without a unified cache was allowed")
	}
}

func TestQuantize(t *testing.T) {
	src := tinyModel(t)
	for _, q := range []QuantizeType{QuantQ8_0, QuantQ4_0} {
		dst := filepath.Join(t.TempDir(), string(q)+".gguf")
		if err := Quantize(src, dst, q, 1); err != nil {
			t.Fatal(err)
		}
		m, err := LoadModel(dst, ModelParams{})
		if err != nil {
			t.Fatal(err)
		}
		if m.Size() >= 12_000_000 {
			t.Errorf("%s model is %d bytes, not smaller than f32", q, m.Size())
		}
		t.Logf("%s: %s, %d bytes", q, m.Desc(), m.Size())
		m.Close()
	}
	if err := Quantize(src, filepath.Join(t.TempDir(), "x.gguf"), "Q3_X", 1); err == nil {
		t.Fatal("unknown quantization accepted")
	}
}

func TestThreadpoolsAttached(t *testing.T) {
	m, err := LoadModel(tinyModel(t), ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, err := NewContext(m, ContextParams{NCtx: 256, NSeqMax: 1, Threads: 2, ThreadsBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	if ctx.pools[0] == nil || ctx.pools[1] == nil {
		t.Fatalf("persistent threadpools not attached: %v", ctx.pools)
	}
}

// The pure-Go GPT-2 tokenizer (pkg/bpe, for workers without llama.cpp)
// gives llama.cpp's ids on random text mixing scripts, digits, spaces,
// newlines, tabs, contractions and emoji.
func TestPureGoTokenizerMatchesLlamaCpp(t *testing.T) {
	m, err := LoadModel(os.Getenv("LLMROUTER_VOCAB"), ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	gpt2 := os.Getenv("LLMROUTER_GPT2")
	tok, err := bpe.Load(filepath.Join(gpt2, "encoder.json"), filepath.Join(gpt2, "vocab.bpe"))
	if err != nil {
		t.Fatalf("%v (LLMROUTER_GPT2 is set by make)", err)
	}
	pieces := []string{"Hello", " world", "'s", "'ll", "don't", "  ", "   ", "\n", "\n\n", "\t", " \n ", "42", "3.14", "１２３",
		"café", "naïve", "Äpfel", "нещо", "中文", "🦙", "😀😀", "!!!", "...", "<|endoftext|>", "a", " b", "C", "   x", "x   "}
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 400 {
		var sb strings.Builder
		for range 1 + r.IntN(12) {
			sb.WriteString(pieces[r.IntN(len(pieces))])
		}
		text := sb.String()
		want, err := m.Tokenize(text, false, false)
		if err != nil {
			t.Fatal(err)
		}
		got := tok.Encode(text)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("case %d %q: bpe %v, llama.cpp %v", i, text, got, want)
		}
	}
}
