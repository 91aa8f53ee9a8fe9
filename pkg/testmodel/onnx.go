package testmodel

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/llm-runner-router/llmrouter/pkg/bpe"
	"github.com/llm-runner-router/llmrouter/pkg/onnx"
)

// The ONNX export follows the layout of Hugging Face's decoder exports
// (optimum's "text-generation-with-past"):
//
//	inputs:  input_ids [batch, seq] int64, attention_mask [batch, past+seq]
//	         int64, position_ids [batch, seq] int64,
//	         past_key_values.N.key / .value [batch, kv_heads, past, head_dim]
//	outputs: logits [batch, 1, vocab] (the last position only; exports that
//	         give every position work too), present.N.key / .value
//	         [batch, kv_heads, past+seq, head_dim]
//
// Rows are left-padded: attention_mask marks padding with 0. The graph
// computes exactly what llama.cpp computes for the llama architecture:
// RMSNorm with the file's epsilon, RoPE in llama.cpp's NORM layout (adjacent
// pairs of each head rotate together; GGUF conversion permutes Q and K for
// it), grouped-query attention where query head h reads KV head
// h/(heads/kv_heads), and a SwiGLU feed-forward.

// ONNX file names inside a model directory.
const (
	ONNXModelFile     = "model.onnx"
	ONNXDataFile      = "model.onnx_data" // the weights, as ONNX external data
	ONNXTokenizerFile = "tokenizer.json"
	ONNXConfigFile    = "config.json"
	ONNXTokConfigFile = "tokenizer_config.json"
)

// EndOfText is GPT-2's end-of-text token, the BOS and EOS of the GPT-2
// vocabulary in llama.cpp's bundle.
var EndOfText = bpe.Added{ID: 50256, Content: "<|endoftext|>", Special: true}

// graph helps write nodes with unique names.
type graph struct {
	g onnx.Graph
	n int
}

func (b *graph) op(op string, inputs []string, attrs ...onnx.Attr) string {
	b.n++
	out := fmt.Sprintf("%s_%d", op, b.n)
	b.g.Nodes = append(b.g.Nodes, onnx.Node{Op: op, Name: out, Inputs: inputs, Outputs: []string{out}, Attrs: attrs})
	return out
}

func (b *graph) opTo(out, op string, inputs []string, attrs ...onnx.Attr) string {
	b.n++
	b.g.Nodes = append(b.g.Nodes, onnx.Node{Op: op, Name: fmt.Sprintf("%s_%d", op, b.n), Inputs: inputs, Outputs: []string{out}, Attrs: attrs})
	return out
}

func (b *graph) ints(name string, v ...int64) string {
	b.g.Initializers = append(b.g.Initializers, onnx.Tensor{Name: name, Dims: []int64{int64(len(v))}, Elem: onnx.Int64, Int64: v})
	return name
}

func (b *graph) scalarInt(name string, v int64) string {
	b.g.Initializers = append(b.g.Initializers, onnx.Tensor{Name: name, Elem: onnx.Int64, Int64: []int64{v}})
	return name
}

func (b *graph) floats(name string, dims []int64, v []float32) string {
	b.g.Initializers = append(b.g.Initializers, onnx.Tensor{Name: name, Dims: dims, Elem: onnx.Float, Float: v})
	return name
}

func attrInt(name string, v int64) onnx.Attr { return onnx.Attr{Name: name, Kind: 2, I: v} }
func attrInts(name string, v ...int64) onnx.Attr {
	return onnx.Attr{Name: name, Kind: 7, Ints: v}
}

// ONNX returns the model as an ONNX graph with the same weights as the GGUF
// file (half-precision values for F16 configs, stored as f32).
func ONNX(c Config, vocab int) (*onnx.Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.bigram != nil && len(c.bigram.E) != vocab {
		return nil, fmt.Errorf("the bigram factors cover %d tokens, the vocabulary has %d", len(c.bigram.E), vocab)
	}
	hd := int64(c.Embd / c.Heads)
	heads, kvHeads, embd := int64(c.Heads), int64(c.HeadsKV), int64(c.Embd)
	b := &graph{}
	byName := map[string]Tensor{}
	for _, t := range c.Tensors(vocab) {
		byName[t.Name] = t
	}
	// weight adds a ggml [out][in] matrix transposed to [in, out] for MatMul.
	weight := func(name string) string {
		t := byName[name]
		in, out := int(t.Dims[0]), int(t.Dims[1])
		w := c.Rounded(t)
		tr := make([]float32, len(w))
		for o := range out {
			for i := range in {
				tr[i*out+o] = w[o*in+i]
			}
		}
		return b.floats(name, []int64{int64(in), int64(out)}, tr)
	}
	vec := func(name string) string {
		t := byName[name]
		return b.floats(name, []int64{int64(t.Dims[0])}, c.Rounded(t))
	}
	eps := b.floats("rms_eps", nil, []float32{c.RMSEps})
	rmsNorm := func(x, w string) string {
		ms := b.op("ReduceMean", []string{b.op("Mul", []string{x, x})}, attrInts("axes", -1), attrInt("keepdims", 1))
		return b.op("Mul", []string{b.op("Div", []string{x, b.op("Sqrt", []string{b.op("Add", []string{ms, eps})})}), w})
	}

	// Inputs.
	dyn := func(names ...string) []onnx.Dim {
		d := make([]onnx.Dim, len(names))
		for i, n := range names {
			if v, err := strconv.ParseInt(n, 10, 64); err == nil {
				d[i] = onnx.Dim{Value: v}
			} else {
				d[i] = onnx.Dim{Param: n}
			}
		}
		return d
	}
	kvShape := func(len string) []onnx.Dim {
		return dyn("batch_size", strconv.FormatInt(kvHeads, 10), len, strconv.FormatInt(hd, 10))
	}
	b.g.Inputs = []onnx.ValueInfo{
		{Name: "input_ids", Elem: onnx.Int64, Shape: dyn("batch_size", "sequence_length")},
		{Name: "attention_mask", Elem: onnx.Int64, Shape: dyn("batch_size", "total_sequence_length")},
		{Name: "position_ids", Elem: onnx.Int64, Shape: dyn("batch_size", "sequence_length")},
	}
	b.g.Outputs = []onnx.ValueInfo{{Name: "logits", Elem: onnx.Float, Shape: dyn("batch_size", "1", strconv.Itoa(vocab))}}
	for l := range c.Layers {
		for _, kv := range []string{"key", "value"} {
			b.g.Inputs = append(b.g.Inputs, onnx.ValueInfo{Name: fmt.Sprintf("past_key_values.%d.%s", l, kv), Elem: onnx.Float, Shape: kvShape("past_sequence_length")})
			b.g.Outputs = append(b.g.Outputs, onnx.ValueInfo{Name: fmt.Sprintf("present.%d.%s", l, kv), Elem: onnx.Float, Shape: kvShape("total_sequence_length")})
		}
	}

	// Rotary angles from position_ids: [batch, seq, 1, head_dim/2, 1].
	inv := make([]float32, hd/2)
	for i := range inv {
		inv[i] = float32(math.Pow(float64(c.RopeBase), -2*float64(i)/float64(hd)))
	}
	pos := b.op("Unsqueeze", []string{b.op("Cast", []string{"position_ids"}, attrInt("to", onnx.Float)), b.ints("axis_last", -1)})
	angles := b.op("Mul", []string{pos, b.floats("rope_inv_freq", []int64{hd / 2}, inv)})
	ax24 := b.ints("axes_2_4", 2, 4)
	cos := b.op("Unsqueeze", []string{b.op("Cos", []string{angles}), ax24})
	sin := b.op("Unsqueeze", []string{b.op("Sin", []string{angles}), ax24})
	// rope rotates the heads of x [batch, seq, nHeads*head_dim] and
	// returns [batch, seq, nHeads, head_dim].
	rope := func(x string, nHeads int64, shape string) string {
		p := b.op("Reshape", []string{x, b.ints(fmt.Sprintf("shape_pairs_%d", b.n), 0, 0, nHeads, -1, 2)})
		b.n++
		x0, x1 := fmt.Sprintf("rope_x0_%d", b.n), fmt.Sprintf("rope_x1_%d", b.n)
		b.g.Nodes = append(b.g.Nodes, onnx.Node{Op: "Split", Name: fmt.Sprintf("Split_%d", b.n), Inputs: []string{p}, Outputs: []string{x0, x1}, Attrs: []onnx.Attr{attrInt("axis", 4)}})
		r0 := b.op("Sub", []string{b.op("Mul", []string{x0, cos}), b.op("Mul", []string{x1, sin})})
		r1 := b.op("Add", []string{b.op("Mul", []string{x0, sin}), b.op("Mul", []string{x1, cos})})
		return b.op("Reshape", []string{b.op("Concat", []string{r0, r1}, attrInt("axis", 4)), shape})
	}

	// Attention mask [batch, 1, seq, total]: causal over the padded columns
	// (query i sits at column past+i) and attention_mask's padding.
	zero, one := b.scalarInt("i0", 0), b.scalarInt("i1", 1)
	maskShape := b.op("Shape", []string{"attention_mask"})
	total := b.op("Gather", []string{maskShape, one})
	seq := b.op("Gather", []string{b.op("Shape", []string{"input_ids"}), one})
	past := b.op("Sub", []string{total, seq})
	qCol := b.op("Unsqueeze", []string{b.op("Range", []string{past, total, one}), b.ints("axis_1", 1)})
	kCol := b.op("Unsqueeze", []string{b.op("Range", []string{zero, total, one}), b.ints("axis_0", 0)})
	causal := b.op("LessOrEqual", []string{kCol, qCol})
	padding := b.op("Unsqueeze", []string{b.op("Cast", []string{"attention_mask"}, attrInt("to", 9)), b.ints("axes_1_2", 1, 2)})
	allowed := b.op("And", []string{causal, padding})
	masked := b.floats("mask_value", nil, []float32{-1e30})
	scale := b.floats("attn_scale", nil, []float32{float32(1 / math.Sqrt(float64(hd)))})

	shapeQ := b.ints("shape_q", 0, 0, heads, hd)
	shapeKV := b.ints("shape_kv", 0, 0, kvHeads, hd)
	groups := b.ints("shape_groups", 0, kvHeads, -1, hd)
	headsScores := b.ints("shape_head_scores", 0, heads, -1, 0)
	groupScores := b.ints("shape_group_scores", 0, kvHeads, -1, 0)
	headsOut := b.ints("shape_heads_out", 0, heads, -1, hd)
	merged := b.ints("shape_merged", 0, 0, embd)
	bshd := attrInts("perm", 0, 2, 1, 3)

	x := b.op("Gather", []string{vec2("token_embd.weight", b, c, byName), "input_ids"})
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		h := rmsNorm(x, vec(p+"attn_norm.weight"))
		q := b.op("Transpose", []string{rope(b.op("MatMul", []string{h, weight(p + "attn_q.weight")}), heads, shapeQ)}, bshd)
		k := b.op("Transpose", []string{rope(b.op("MatMul", []string{h, weight(p + "attn_k.weight")}), kvHeads, shapeKV)}, bshd)
		v := b.op("Transpose", []string{b.op("Reshape", []string{b.op("MatMul", []string{h, weight(p + "attn_v.weight")}), shapeKV})}, bshd)
		pk := b.opTo(fmt.Sprintf("present.%d.key", l), "Concat", []string{fmt.Sprintf("past_key_values.%d.key", l), k}, attrInt("axis", 2))
		pv := b.opTo(fmt.Sprintf("present.%d.value", l), "Concat", []string{fmt.Sprintf("past_key_values.%d.value", l), v}, attrInt("axis", 2))
		qg := b.op("Reshape", []string{b.op("Mul", []string{q, scale}), groups})
		scores := b.op("MatMul", []string{qg, b.op("Transpose", []string{pk}, attrInts("perm", 0, 1, 3, 2))})
		scores = b.op("Where", []string{allowed, b.op("Reshape", []string{scores, headsScores}), masked})
		probs := b.op("Reshape", []string{b.op("Softmax", []string{scores}, attrInt("axis", -1)), groupScores})
		ctx := b.op("Reshape", []string{b.op("MatMul", []string{probs, pv}), headsOut})
		ctx = b.op("Reshape", []string{b.op("Transpose", []string{ctx}, bshd), merged})
		x = b.op("Add", []string{x, b.op("MatMul", []string{ctx, weight(p + "attn_output.weight")})})
		h = rmsNorm(x, vec(p+"ffn_norm.weight"))
		g := b.op("MatMul", []string{h, weight(p + "ffn_gate.weight")})
		up := b.op("MatMul", []string{h, weight(p + "ffn_up.weight")})
		act := b.op("Mul", []string{b.op("Mul", []string{g, b.op("Sigmoid", []string{g})}), up})
		x = b.op("Add", []string{x, b.op("MatMul", []string{act, weight(p + "ffn_down.weight")})})
	}
	last := b.op("Gather", []string{x, b.scalarInt("i_last", -1)}, attrInt("axis", 1))
	last = rmsNorm(last, vec("output_norm.weight"))
	out := "token_embd.weight" // tied
	if c.UntiedOutput {
		out = vec2("output.weight", b, c, byName)
	}
	logits := b.op("Gemm", []string{last, out}, attrInt("transB", 1))
	b.opTo("logits", "Unsqueeze", []string{logits, b.ints("axis_1b", 1)})

	b.g.Name = c.Name
	return &onnx.Model{IRVersion: 8, Opset: 17, Producer: "llmrouter-testmodel", Graph: b.g, Metadata: map[string]string{
		"architecture":   "llama",
		"name":           c.Name,
		"context_length": strconv.Itoa(c.Context),
		"description":    fmt.Sprintf("llmrouter test model: seeded random weights (seed %d, peak %g); not a trained model", c.Seed, c.Peak),
	}}, nil
}

// vec2 adds a 2-D ggml tensor as stored ([rows][cols] = [Dims[1]][Dims[0]]),
// once.
func vec2(name string, b *graph, c Config, byName map[string]Tensor) string {
	for _, t := range b.g.Initializers {
		if t.Name == name {
			return name
		}
	}
	t := byName[name]
	return b.floats(name, []int64{int64(t.Dims[1]), int64(t.Dims[0])}, c.Rounded(t))
}

// WriteONNXDir writes the model as a Hugging Face-style ONNX directory:
// model.onnx with its weights in model.onnx_data, tokenizer.json (GPT-2's BPE from gpt2Dir's encoder.json and
// vocab.bpe), config.json and tokenizer_config.json (chat template, BOS and
// EOS). The weights equal WriteFile's GGUF for the same config.
func WriteONNXDir(dir string, c Config, gpt2Dir string) error {
	tok, err := bpe.Load(filepath.Join(gpt2Dir, "encoder.json"), filepath.Join(gpt2Dir, "vocab.bpe"))
	if err != nil {
		return fmt.Errorf("read GPT-2 tokenizer: %w", err)
	}
	m, err := ONNX(c, tok.VocabSize())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, ONNXTokenizerFile))
	if err != nil {
		return err
	}
	if err := tok.WriteHF(f, []bpe.Added{EndOfText}); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cfg := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": c.Embd, "num_hidden_layers": c.Layers, "num_attention_heads": c.Heads,
		"num_key_value_heads": c.HeadsKV, "intermediate_size": c.FF, "max_position_embeddings": c.Context,
		"rms_norm_eps": c.RMSEps, "rope_theta": c.RopeBase, "vocab_size": tok.VocabSize(),
		"bos_token_id": EndOfText.ID, "eos_token_id": EndOfText.ID, "tie_word_embeddings": !c.UntiedOutput,
		"torch_dtype": "float32",
	}
	tcfg := map[string]any{
		"bos_token": EndOfText.Content, "eos_token": EndOfText.Content, "add_bos_token": false,
		"chat_template": ChatMLTemplate, "model_max_length": c.Context,
	}
	for name, v := range map[string]any{ONNXConfigFile: cfg, ONNXTokConfigFile: tcfg} {
		j, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), append(j, '\n'), 0o644); err != nil {
			return err
		}
	}
	// The model file is written last (via a rename), so a directory with a
	// model.onnx is complete.
	tmp := filepath.Join(dir, ONNXModelFile+".tmp")
	if err := m.WriteExternal(tmp, ONNXDataFile); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, ONNXModelFile))
}
