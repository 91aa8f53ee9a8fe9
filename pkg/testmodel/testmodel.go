// Package testmodel generates deterministic llama-architecture test models:
// seeded pseudo-random weights with a real tokenizer vocabulary taken from a
// vocabulary-only GGUF file of the llama.cpp bundle (GPT-2's BPE by default).
//
// Every tensor's values depend only on the seed and the tensor's name
// (Weights), so other exporters (engine-onnx) reproduce the same model, and
// the same seed gives a byte-identical file. Random weights give near-flat
// output distributions; Config.Peak sharpens them so greedy decoding does not
// flip on rounding.
package testmodel

import (
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"

	"github.com/llm-runner-router/llmrouter/pkg/gguf"
)

// Config describes a model.
type Config struct {
	Name    string
	Seed    uint64
	Embd    int // hidden size
	Layers  int
	Heads   int
	HeadsKV int
	FF      int // feed-forward size
	Context int
	// Type of the 2-D weight tensors: gguf.F32 or gguf.F16. Norms stay F32.
	Type gguf.TensorType
	// Peak scales the final norm, sharpening the output distribution;
	// 1 leaves it as random weights make it.
	Peak     float32
	RMSEps   float32
	RopeBase float32
	// Std of the random weights.
	Std float32
	// UntiedOutput adds a separate output.weight. Tied (the default), the
	// output projection is token_embd, and random layers barely move the
	// hidden state, so greedy decoding mostly repeats the last token.
	UntiedOutput bool
	// Description, when set, is the file's general.description (the
	// default describes seeded random weights).
	Description string
	// bigram, when set, gives the embedding and output weights (the demo
	// model, BigramModel); every other weight is zero.
	bigram *Factors
}

// Presets: a tiny model for tests and one of about 124M parameters for
// benchmarks (GPT-2 small's shape with llama's blocks, tied embeddings).
var (
	Tiny = Config{Name: "tiny", Seed: 1, Embd: 32, Layers: 2, Heads: 4, HeadsKV: 2, FF: 96, Context: 1024,
		Type: gguf.F32, Peak: 1, RMSEps: 1e-5, RopeBase: 10000, Std: 0.02, UntiedOutput: true}
	Bench = Config{Name: "bench-124m", Seed: 1, Embd: 768, Layers: 12, Heads: 12, HeadsKV: 12, FF: 2048, Context: 2048,
		Type: gguf.F16, Peak: 1, RMSEps: 1e-5, RopeBase: 10000, Std: 0.02}
)

// Validate checks the shape.
func (c Config) Validate() error {
	switch {
	case c.Embd <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.HeadsKV <= 0 || c.FF <= 0 || c.Context <= 0:
		return fmt.Errorf("all sizes must be positive: %+v", c)
	case c.Embd%c.Heads != 0:
		return fmt.Errorf("embedding %d is not divisible by %d heads", c.Embd, c.Heads)
	case c.Heads%c.HeadsKV != 0:
		return fmt.Errorf("%d heads are not divisible by %d kv heads", c.Heads, c.HeadsKV)
	case (c.Embd/c.Heads)%2 != 0:
		return fmt.Errorf("head size %d must be even for RoPE", c.Embd/c.Heads)
	case c.Type != gguf.F32 && c.Type != gguf.F16:
		return fmt.Errorf("weight type %v: want F32 or F16 (quantize afterwards for others)", c.Type)
	case c.Peak <= 0 || c.Std <= 0:
		return fmt.Errorf("peak and std must be positive")
	}
	return nil
}

// Tensor is one weight tensor of the model.
type Tensor struct {
	Name string
	Dims []uint64 // ggml order: Dims[0] is contiguous
	Norm bool     // a norm weight (stored F32, initialised to 1 or Peak)
}

// Tensors lists the model's tensors in file order. Without UntiedOutput the
// output projection is tied to token_embd (llama.cpp reuses it when
// output.weight is absent).
func (c Config) Tensors(vocab int) []Tensor {
	e, kv, ff := uint64(c.Embd), uint64(c.Embd/c.Heads*c.HeadsKV), uint64(c.FF)
	ts := []Tensor{{Name: "token_embd.weight", Dims: []uint64{e, uint64(vocab)}}}
	for i := range c.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		ts = append(ts,
			Tensor{Name: p + "attn_norm.weight", Dims: []uint64{e}, Norm: true},
			Tensor{Name: p + "attn_q.weight", Dims: []uint64{e, e}},
			Tensor{Name: p + "attn_k.weight", Dims: []uint64{e, kv}},
			Tensor{Name: p + "attn_v.weight", Dims: []uint64{e, kv}},
			Tensor{Name: p + "attn_output.weight", Dims: []uint64{e, e}},
			Tensor{Name: p + "ffn_norm.weight", Dims: []uint64{e}, Norm: true},
			Tensor{Name: p + "ffn_gate.weight", Dims: []uint64{e, ff}},
			Tensor{Name: p + "ffn_up.weight", Dims: []uint64{e, ff}},
			Tensor{Name: p + "ffn_down.weight", Dims: []uint64{ff, e}},
		)
	}
	ts = append(ts, Tensor{Name: "output_norm.weight", Dims: []uint64{e}, Norm: true})
	if c.UntiedOutput {
		ts = append(ts, Tensor{Name: "output.weight", Dims: []uint64{e, uint64(vocab)}})
	}
	return ts
}

// Weights returns a tensor's values (row-major in ggml order), determined by
// the seed and the tensor name alone. F16 models round these values to half
// precision when written; Rounded gives exactly what the file holds.
func (c Config) Weights(t Tensor) []float32 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	v := make([]float32, n)
	if c.bigram != nil && !t.Norm {
		switch t.Name {
		case "token_embd.weight":
			v, _ = c.bigram.tables(c.Embd, c.RMSEps)
		case "output.weight":
			_, v = c.bigram.tables(c.Embd, c.RMSEps)
		}
		return v // attention and feed-forward: zero
	}
	if t.Norm {
		g := float32(1)
		if t.Name == "output_norm.weight" {
			g = c.Peak
		}
		for i := range v {
			v[i] = g
		}
		return v
	}
	h := fnv.New64a()
	h.Write([]byte(t.Name))
	r := rand.New(rand.NewPCG(c.Seed, h.Sum64()))
	for i := range v {
		v[i] = float32(r.NormFloat64()) * c.Std
	}
	return v
}

// Rounded returns Weights as stored in the file (half precision for F16).
func (c Config) Rounded(t Tensor) []float32 {
	v := c.Weights(t)
	if c.Type == gguf.F16 && !t.Norm {
		for i, f := range v {
			v[i] = gguf.F16ToF32(gguf.F32ToF16(f))
		}
	}
	return v
}

// Params counts the model's parameters.
func (c Config) Params(vocab int) uint64 {
	var n uint64
	for _, t := range c.Tensors(vocab) {
		m := uint64(1)
		for _, d := range t.Dims {
			m *= d
		}
		n += m
	}
	return n
}

// Write writes the model as GGUF to w, with the tokenizer metadata copied
// from vocab (a vocabulary-only GGUF such as ggml-vocab-gpt-2.gguf).
func Write(w io.Writer, c Config, vocab *gguf.File) error {
	if err := c.Validate(); err != nil {
		return err
	}
	tokens, ok := vocab.Get("tokenizer.ggml.tokens").(gguf.Array)
	list, ok2 := tokens.Values.([]string)
	if !ok || !ok2 || len(list) == 0 {
		return fmt.Errorf("vocabulary file has no tokenizer.ggml.tokens")
	}
	nVocab := len(list)
	if c.bigram != nil && len(c.bigram.E) != nVocab {
		return fmt.Errorf("the bigram factors cover %d tokens, the vocabulary has %d", len(c.bigram.E), nVocab)
	}
	gw := gguf.NewWriter()
	fileType := uint32(0) // LLAMA_FTYPE_ALL_F32
	if c.Type == gguf.F16 {
		fileType = 1 // LLAMA_FTYPE_MOSTLY_F16
	}
	gw.Set("general.architecture", "llama")
	gw.Set("general.name", c.Name)
	desc := c.Description
	if desc == "" {
		desc = fmt.Sprintf("llmrouter test model: seeded random weights (seed %d, peak %g); not a trained model", c.Seed, c.Peak)
	}
	gw.Set("general.description", desc)
	gw.Set("general.file_type", fileType)
	gw.Set("llama.context_length", uint32(c.Context))
	gw.Set("llama.embedding_length", uint32(c.Embd))
	gw.Set("llama.block_count", uint32(c.Layers))
	gw.Set("llama.feed_forward_length", uint32(c.FF))
	gw.Set("llama.attention.head_count", uint32(c.Heads))
	gw.Set("llama.attention.head_count_kv", uint32(c.HeadsKV))
	gw.Set("llama.attention.layer_norm_rms_epsilon", c.RMSEps)
	gw.Set("llama.rope.dimension_count", uint32(c.Embd/c.Heads))
	gw.Set("llama.rope.freq_base", c.RopeBase)
	gw.Set("llama.vocab_size", uint32(nVocab))
	for _, kv := range vocab.KV {
		if len(kv.Key) > 10 && kv.Key[:10] == "tokenizer." {
			gw.Set(kv.Key, kv.Value)
		}
	}
	if vocab.Get("tokenizer.chat_template") == nil {
		gw.Set("tokenizer.chat_template", ChatMLTemplate)
	}
	for _, t := range c.Tensors(nVocab) {
		v := c.Weights(t)
		var err error
		if t.Norm || c.Type == gguf.F32 {
			err = gw.AddTensor(t.Name, gguf.F32, t.Dims, gguf.EncodeF32(v))
		} else {
			err = gw.AddTensor(t.Name, gguf.F16, t.Dims, gguf.EncodeF16(v))
		}
		if err != nil {
			return err
		}
	}
	_, err := gw.WriteTo(w)
	return err
}

// ChatMLTemplate is the chat template the test models carry; llama.cpp
// recognises it as "chatml". A chat without tools renders as plain ChatML
// (each turn <|im_start|>role\ncontent<|im_end|>\n); with tools, a system
// turn lists them and says how to call them, in the Hermes syntax
// (<tool_call> tags around {"name": ..., "arguments": ...}), assistant
// turns show their calls that way and tool turns come back as
// <tool_response> blocks in a user turn.
const ChatMLTemplate = "{%- if tools %}" +
	"{{ '<|im_start|>system\\n' }}{% if messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{% endif %}" +
	"{{ 'You can call functions. Their signatures, one JSON object per line, are inside <tools></tools>:\\n<tools>\\n' }}" +
	"{% for tool in tools %}{{ tool | tojson }}{{ '\\n' }}{% endfor %}" +
	"{{ '</tools>\\nTo call one, write a JSON object with its name and arguments between <tool_call></tool_call> tags:\\n' }}" +
	"{{ '<tool_call>\\n{\"name\": <function-name>, \"arguments\": <arguments-object>}\\n</tool_call><|im_end|>\\n' }}" +
	"{% endif %}" +
	"{% for message in messages %}" +
	"{% if message.role == 'system' and tools and loop.first %}" +
	"{% elif message.role == 'assistant' and message.tool_calls %}" +
	"{{ '<|im_start|>assistant\\n' }}{% if message.content %}{{ message.content + '\\n' }}{% endif %}" +
	"{% for call in message.tool_calls %}{% if not loop.first %}{{ '\\n' }}{% endif %}" +
	"{{ '<tool_call>\\n{\"name\": ' + (call.function.name | tojson) + ', \"arguments\": ' + (call.function.arguments | tojson) + '}\\n</tool_call>' }}" +
	"{% endfor %}{{ '<|im_end|>\\n' }}" +
	"{% elif message.role == 'tool' %}" +
	"{{ '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}" +
	"{% else %}" +
	"{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
	"{% endif %}" +
	"{% endfor %}" +
	"{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// WriteFile writes the model to path (atomically: a temporary file renamed).
func WriteFile(path string, c Config, vocabPath string) error {
	vocab, err := gguf.ReadFile(vocabPath)
	if err != nil {
		return fmt.Errorf("read vocabulary: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := Write(f, c, vocab); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// TopMargin returns the gap between the largest and second-largest logit
// (tests print it to show how safe a greedy comparison is).
func TopMargin(logits []float32) float32 {
	a, b := float32(math.Inf(-1)), float32(math.Inf(-1))
	for _, l := range logits {
		switch {
		case l > a:
			a, b = l, a
		case l > b:
			b = l
		}
	}
	return a - b
}
