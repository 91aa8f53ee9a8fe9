package engine

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

// reference computes the llama architecture's last-position logits in
// float64, straight from the GGUF tensor semantics (ggml [out][in]
// matrices, RoPE rotating adjacent pairs as llama.cpp's NORM mode does,
// query head h reading KV head h/(heads/kv_heads)), independently of the
// ONNX graph.
func reference(c testmodel.Config, vocab int, ids []uint32) []float64 {
	w := map[string][]float32{}
	for _, t := range c.Tensors(vocab) {
		w[t.Name] = c.Rounded(t)
	}
	e, hd := c.Embd, c.Embd/c.Heads
	kvE := hd * c.HeadsKV
	matvec := func(name string, x []float64, out int) []float64 {
		m, in := w[name], len(x)
		y := make([]float64, out)
		for o := range out {
			var s float64
			for i := range in {
				s += float64(m[o*in+i]) * x[i]
			}
			y[o] = s
		}
		return y
	}
	norm := func(x []float64, name string) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		scale := 1 / math.Sqrt(ss/float64(len(x))+float64(c.RMSEps))
		y := make([]float64, len(x))
		for i, v := range x {
			y[i] = v * scale * float64(w[name][i])
		}
		return y
	}
	rope := func(x []float64, pos int) {
		for h := 0; h < len(x)/hd; h++ {
			for i := 0; i < hd/2; i++ {
				theta := float64(pos) * math.Pow(float64(c.RopeBase), -2*float64(i)/float64(hd))
				a, b := x[h*hd+2*i], x[h*hd+2*i+1]
				x[h*hd+2*i] = a*math.Cos(theta) - b*math.Sin(theta)
				x[h*hd+2*i+1] = a*math.Sin(theta) + b*math.Cos(theta)
			}
		}
	}
	xs := make([][]float64, len(ids))
	for p, id := range ids {
		xs[p] = make([]float64, e)
		for i := range e {
			xs[p][i] = float64(w["token_embd.weight"][int(id)*e+i])
		}
	}
	for l := range c.Layers {
		pre := "blk." + itoa(l) + "."
		ks, vs := make([][]float64, len(ids)), make([][]float64, len(ids))
		qs := make([][]float64, len(ids))
		for p := range ids {
			h := norm(xs[p], pre+"attn_norm.weight")
			qs[p], ks[p], vs[p] = matvec(pre+"attn_q.weight", h, e), matvec(pre+"attn_k.weight", h, kvE), matvec(pre+"attn_v.weight", h, kvE)
			rope(qs[p], p)
			rope(ks[p], p)
		}
		for p := range ids {
			att := make([]float64, e)
			for h := range c.Heads {
				kh := h / (c.Heads / c.HeadsKV)
				scores := make([]float64, p+1)
				maxS := math.Inf(-1)
				for j := 0; j <= p; j++ {
					var s float64
					for d := range hd {
						s += qs[p][h*hd+d] * ks[j][kh*hd+d]
					}
					scores[j] = s / math.Sqrt(float64(hd))
					maxS = max(maxS, scores[j])
				}
				var sum float64
				for j := range scores {
					scores[j] = math.Exp(scores[j] - maxS)
					sum += scores[j]
				}
				for j := range scores {
					for d := range hd {
						att[h*hd+d] += scores[j] / sum * vs[j][kh*hd+d]
					}
				}
			}
			o := matvec(pre+"attn_output.weight", att, e)
			for i := range xs[p] {
				xs[p][i] += o[i]
			}
			h := norm(xs[p], pre+"ffn_norm.weight")
			g, u := matvec(pre+"ffn_gate.weight", h, c.FF), matvec(pre+"ffn_up.weight", h, c.FF)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			d := matvec(pre+"ffn_down.weight", g, e)
			for i := range xs[p] {
				xs[p][i] += d[i]
			}
		}
	}
	out := "output.weight"
	if !c.UntiedOutput {
		out = "token_embd.weight"
	}
	return matvec(out, norm(xs[len(ids)-1], "output_norm.weight"), vocab)
}

func itoa(i int) string { return string(rune('0' + i)) }

// The exported graph computes what the architecture defines: its logits
// match a float64 reference written from the GGUF semantics to about 1e-5,
// with attention made far from uniform by large weights.
func TestGraphMatchesFloat64Reference(t *testing.T) {
	c := testmodel.Tiny
	c.Name, c.Std = "sharp", 0.35
	dir := filepath.Join(t.TempDir(), "sharp")
	if err := testmodel.WriteONNXDir(dir, c, os.Getenv("LLMROUTER_GPT2")); err != nil {
		t.Fatal(err)
	}
	m := New(DefaultOptions(), quiet())
	defer m.Close()
	if _, err := m.Register("sharp", dir); err != nil {
		t.Fatal(err)
	}
	r := detached(t, m, "sharp")
	ids := []uint32{464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13}
	worst := 0.0
	for n := 1; n <= len(ids); n++ {
		want := reference(c, r.spec.vocab, ids[:n])
		in, pos, mask := make([]int64, n), make([]int64, n), make([]int64, n)
		for i := range n {
			in[i], pos[i], mask[i] = int64(ids[i]), int64(i), 1
		}
		past, err := r.emptyKV()
		if err != nil {
			t.Fatal(err)
		}
		all, present, err := r.run(1, n, in, mask, pos, past)
		r.free(past)
		if err != nil {
			t.Fatal(err)
		}
		got := r.lastLogits(all, 0, n)
		for i := range want {
			worst = max(worst, math.Abs(float64(got[i])-want[i])/max(1, math.Abs(want[i])))
		}
		r.free(present)
	}
	t.Logf("largest relative logit difference from the float64 reference over prompts of 1..%d tokens: %.2e", len(ids), worst)
	if worst > 1e-4 {
		t.Fatalf("the graph's logits differ from the reference by %.2e", worst)
	}
}
