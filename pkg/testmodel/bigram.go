package testmodel

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"unicode"

	"github.com/llm-runner-router/llmrouter/pkg/bpe"
	"github.com/llm-runner-router/llmrouter/pkg/gguf"
)

// A demo model that writes readable text without trained weights: the
// next-token distribution of a counted bigram model of a public-domain
// text, tokenised with the model's own GPT-2 vocabulary, factorised into
// token embeddings and output weights. Attention and feed-forward add
// nothing (their output projections are zero), so the logits for the next
// token depend on the current token alone:
//
//	logits(c) = output · rmsnorm(token_embd[c])
//
// The log-probability matrix M[c][n] = log P(n|c) − F over the pairs the
// text has (F a floor below every such log-probability; 0 for the pairs it
// lacks) is approximated at rank k by subspace iteration: Q (n × k, with
// orthonormal columns) spans the dominant right singular subspace of M
// with rows weighted by how often their context occurs, and M ≈ (M Q) Qᵀ.
// Token c's embedding is (M Q)[c] and token n's output row is Q[n], each
// padded so that every embedding has the same norm (RMSNorm then only
// rescales) and so that tokens the text never continues with get a large
// negative bias.

// Separator and EndOfVerse frame each verse of the text: "\n" before (the
// chat template's assistant turn ends in it, so answers start the way
// verses start), GPT-2's end of text after (so answers end with a verse).
const (
	Separator  = 198   // "\n"
	EndOfVerse = 50256 // <|endoftext|>
)

// KJVVerses reads the text that the bible-kjv package's "bible" command
// prints for "Genesis1:1-Revelation22:21": a blank line and "Book N"
// before each chapter, each verse "  N text" (numbered, indented),
// wrapped onto unindented lines. It returns the verses' text.
func KJVVerses(r io.Reader) ([]string, error) {
	var verses []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			verses = append(verses, cur.String())
			cur.Reset()
		}
	}
	sc := bufio.NewScanner(r)
	prevBlank := true
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
			prevBlank = true
			continue
		case strings.HasPrefix(line, "  "):
			flush()
			num, text, ok := strings.Cut(strings.TrimLeft(line, " "), " ")
			if !ok || strings.TrimFunc(num, unicode.IsDigit) != "" {
				return nil, fmt.Errorf("verse line %q has no number", line)
			}
			cur.WriteString(strings.TrimSpace(text))
		case prevBlank: // a chapter heading
		default:
			if cur.Len() == 0 {
				return nil, fmt.Errorf("continuation line %q outside a verse", line)
			}
			cur.WriteByte(' ')
			cur.WriteString(strings.TrimSpace(line))
		}
		prevBlank = false
	}
	flush()
	return verses, sc.Err()
}

// Bigrams counts token pairs of sequences framed by Start and End.
type Bigrams struct {
	Vocab      int
	Start, End uint32
	Pairs      map[[2]uint32]uint32
	Context    []uint32 // how often each token is followed by anything
}

// CountBigrams counts the pairs of the tokenised sequences, each framed by
// start and end (for the King James text, Separator and EndOfVerse).
func CountBigrams(vocab int, start, end uint32, seqs [][]uint32) *Bigrams {
	b := &Bigrams{Vocab: vocab, Start: start, End: end, Pairs: map[[2]uint32]uint32{}, Context: make([]uint32, vocab)}
	for _, s := range seqs {
		prev := start
		for _, t := range append(slices.Clone(s), end) {
			b.Pairs[[2]uint32{prev, t}]++
			b.Context[prev]++
			prev = t
		}
	}
	return b
}

// Factors is a rank-k factorisation: logits(c)[n] ≈ E[c]·O[n] + Bias[n].
type Factors struct {
	K    int
	E, O [][]float32 // vocab rows of k
	Bias []float32   // per next token: 0, or a large negative for tokens no context continues with
}

// Fitting choices, measured on the King James text at rank 190: the
// weights favour frequent contexts but not so much that rare ones (word
// pieces, whose successors are few and unusual) are lost, and a margin of
// 10 nats between observed and unobserved pairs puts ~98.7 % of the
// probability of a frequent context on pairs the text has.
const (
	contextWeight = 0.25 // rows weighted by count^0.25
	margin        = 10.0
)

// Factorise fits the rank-k factorisation by subspace iteration.
func (b *Bigrams) Factorise(k, iterations int, seed uint64) (*Factors, error) {
	type entry struct {
		n int // index among the successors
		v float32
	}
	floor := math.Inf(1)
	for p, n := range b.Pairs {
		floor = min(floor, math.Log(float64(n)/float64(b.Context[p[0]])))
	}
	floor -= margin               // every observed pair at least margin nats above an unobserved one
	index := make([]int, b.Vocab) // token -> successor index + 1
	var succ []uint32
	keys := slices.SortedFunc(maps.Keys(b.Pairs), func(a, c [2]uint32) int {
		return cmp.Or(cmp.Compare(a[0], c[0]), cmp.Compare(a[1], c[1]))
	})
	for _, p := range keys {
		if index[p[1]] == 0 {
			succ = append(succ, p[1])
			index[p[1]] = len(succ)
		}
	}
	if k > len(succ) {
		// More factors than next tokens leave directions with nothing in
		// them (and nothing to normalise).
		return nil, fmt.Errorf("rank %d is over the %d distinct next tokens of the text", k, len(succ))
	}
	rows := make([][]entry, b.Vocab)
	for _, p := range keys {
		v := math.Log(float64(b.Pairs[p])/float64(b.Context[p[0]])) - floor
		rows[p[0]] = append(rows[p[0]], entry{index[p[1]] - 1, float32(v)})
	}
	weight := make([]float32, b.Vocab)
	for c, n := range b.Context {
		weight[c] = float32(math.Pow(float64(n), contextWeight))
	}
	r := rand.New(rand.NewPCG(seed, 0x6b6a76))
	q := make([][]float32, len(succ))
	for i := range q {
		q[i] = make([]float32, k)
		for j := range q[i] {
			q[i][j] = float32(r.NormFloat64())
		}
	}
	orthonormalise(q, k)
	y := make([][]float32, b.Vocab)
	for i := range y {
		y[i] = make([]float32, k)
	}
	for range iterations {
		// y = W M q; q = orth(Mᵀ W y)
		for c, row := range rows {
			clear(y[c])
			for _, e := range row {
				axpy(y[c], e.v*weight[c], q[e.n])
			}
		}
		for i := range q {
			clear(q[i])
		}
		for c, row := range rows {
			for _, e := range row {
				axpy(q[e.n], e.v*weight[c], y[c])
			}
		}
		orthonormalise(q, k)
	}
	for c, row := range rows {
		clear(y[c])
		for _, e := range row {
			axpy(y[c], e.v, q[e.n])
		}
	}
	// A token the text never has (a prompt's, the chat template's) starts
	// afresh, as after a verse.
	for c, n := range b.Context {
		if n == 0 {
			copy(y[c], y[b.Start])
		}
	}
	f := &Factors{K: k, E: y, O: make([][]float32, b.Vocab), Bias: make([]float32, b.Vocab)}
	for n := range f.O {
		if index[n] == 0 {
			f.O[n] = make([]float32, k)
			f.Bias[n] = -30
			continue
		}
		f.O[n] = q[index[n]-1]
	}
	return f, nil
}

func axpy(dst []float32, a float32, x []float32) {
	for i, v := range x {
		dst[i] += a * v
	}
}

// orthonormalise makes the k columns of the row-major matrix m
// orthonormal: Cholesky QR, twice for stability (the Gram matrix's
// Cholesky factor R, then m R⁻¹), row by row so it streams through m.
func orthonormalise(m [][]float32, k int) {
	g := make([]float64, k*k)
	for range 2 {
		clear(g)
		for _, row := range m {
			for i, a := range row {
				if a == 0 {
					continue
				}
				gi := g[i*k : i*k+k]
				for j := i; j < k; j++ {
					gi[j] += float64(a) * float64(row[j])
				}
			}
		}
		// Cholesky: g = Rᵀ R, R upper triangular, in place.
		for i := range k {
			for j := i; j < k; j++ {
				s := g[i*k+j]
				for p := range i {
					s -= g[p*k+i] * g[p*k+j]
				}
				if j == i {
					g[i*k+i] = math.Sqrt(max(s, 1e-30))
				} else {
					g[i*k+j] = s / g[i*k+i]
				}
			}
		}
		// Each row x becomes x R⁻¹: solve y R = x left to right.
		y := make([]float64, k)
		for _, row := range m {
			for j := range k {
				s := float64(row[j])
				for p := range j {
					s -= y[p] * g[p*k+j]
				}
				y[j] = s / g[j*k+j]
			}
			for j, v := range y {
				row[j] = float32(v)
			}
		}
	}
}

// Logits are the factorised logits after context c.
func (f *Factors) Logits(c uint32, out []float32) []float32 {
	out = out[:0]
	e := f.E[c]
	for n, o := range f.O {
		var s float32
		for i, v := range o {
			s += v * e[i]
		}
		out = append(out, s+f.Bias[n])
	}
	return out
}

// padDims is how many dimensions even out the embeddings' norms.
const padDims = 17

// BigramModel is the demo model's configuration over f: one llama block
// whose attention and feed-forward are zero, embeddings of f.K+18: f.K
// factors, padDims that even out the norms, one that carries the bias.
func BigramModel(name, description string, f *Factors) Config {
	return Config{Name: name, Description: description, Seed: 1, Embd: f.K + padDims + 1, Layers: 1, Heads: 2, HeadsKV: 2, FF: 16, Context: 2048,
		Type: gguf.F16, Peak: 1, RMSEps: 1e-5, RopeBase: 10000, Std: 1, UntiedOutput: true, bigram: f}
}

// tables are the embedding and output matrices (ggml order: a row per
// token, e values each). Every embedding has squared norm K2 + 1 (K2 the
// largest squared norm of a context's factors): the padding, a direction
// of its own for each token (seeded by the token), makes up the rest, and
// the bias dimension is 1. RMSNorm then divides every embedding by the
// same s = sqrt((K2+1)/e + eps), which the output rows carry, so the
// logits are the factorised ones exactly. (The padding is largest for
// rare tokens, so a mean of a text's embeddings leans on its rarer
// words, and texts that share them are close.)
func (f *Factors) tables(e int, eps float32) (embd, out []float32) {
	vocab := len(f.E)
	var k2 float64
	for _, u := range f.E {
		k2 = max(k2, dot64(u, u))
	}
	s := float32(math.Sqrt((k2+1)/float64(e) + float64(eps)))
	embd, out = make([]float32, vocab*e), make([]float32, vocab*e)
	dir := make([]float64, padDims)
	for t := range vocab {
		er, or := embd[t*e:(t+1)*e], out[t*e:(t+1)*e]
		u := f.E[t]
		copy(er, u)
		r := rand.New(rand.NewPCG(uint64(t), 0x706164))
		var n float64
		for i := range dir {
			dir[i] = r.NormFloat64()
			n += dir[i] * dir[i]
		}
		z := math.Sqrt(max(k2-dot64(u, u), 0) / n)
		for i, d := range dir {
			er[f.K+i] = float32(z * d)
		}
		er[e-1] = 1
		for i, v := range f.O[t] {
			or[i] = s * v
		}
		or[e-1] = s * f.Bias[t]
	}
	return embd, out
}

func dot64(a, b []float32) float64 {
	var s float64
	for i, v := range a {
		s += float64(v) * float64(b[i])
	}
	return s
}

// Demo model names and shape.
const (
	KJVName = "kjv-bigram"
	// KJVRank is the factorisation's rank: embeddings of 208, which keeps
	// the ONNX export (f32) under 85 MB.
	KJVRank = 190
)

// KJVBigram builds the demo model from the King James text (as KJVVerses
// reads it), tokenised with GPT-2's tokenizer: counted bigrams factorised
// at KJVRank. It returns the model's configuration and the counts.
func KJVBigram(text io.Reader, tok *bpe.Tokenizer) (Config, *Bigrams, error) {
	verses, err := KJVVerses(text)
	if err != nil {
		return Config{}, nil, err
	}
	if len(verses) == 0 {
		return Config{}, nil, fmt.Errorf("no verses in the text")
	}
	seqs := make([][]uint32, len(verses))
	for i, v := range verses {
		seqs[i] = tok.Encode(v)
	}
	b := CountBigrams(tok.VocabSize(), Separator, EndOfVerse, seqs)
	f, err := b.Factorise(KJVRank, 6, 1)
	if err != nil {
		return Config{}, nil, err
	}
	desc := fmt.Sprintf("llmrouter demo model: a counted bigram model of the King James Bible (%d verses, %d distinct token pairs; public domain text from Debian's bible-kjv-text), factorised at rank %d into token embeddings and output weights; attention and feed-forward are zero. Not a trained transformer.", len(verses), len(b.Pairs), KJVRank)
	return BigramModel(KJVName, desc, f), b, nil
}
