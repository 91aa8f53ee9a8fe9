package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/onnx"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/sampling"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
	"github.com/llm-runner-router/llmrouter/pkg/structured/structuredtest"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/ort"
)

var tinyDir string

func TestMain(m *testing.M) {
	lib, gpt2 := os.Getenv("LLMROUTER_ORT_LIB"), os.Getenv("LLMROUTER_GPT2")
	if lib == "" || gpt2 == "" {
		fmt.Fprintln(os.Stderr, "LLMROUTER_ORT_LIB and LLMROUTER_GPT2 are not set: run the tests through make")
		os.Exit(1)
	}
	if err := ort.Init(lib); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "engine-onnx-test")
	if err != nil {
		panic(err)
	}
	tinyDir = filepath.Join(dir, "tiny")
	if err := testmodel.WriteONNXDir(tinyDir, testmodel.Tiny, gpt2); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(&wrap{m, dir})
}

// wrap removes the model directory after the tests.
type wrap struct {
	m   *testing.M
	dir string
}

func (w *wrap) Run() int {
	defer os.RemoveAll(w.dir)
	return w.m.Run()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newManager(t *testing.T, opt Options) *Manager {
	t.Helper()
	if opt.Parallel == 0 {
		opt = DefaultOptions()
		opt.Threads = 1
	}
	m := New(opt, quiet())
	t.Cleanup(m.Close)
	if _, err := m.Register("tiny", tinyDir); err != nil {
		t.Fatal(err)
	}
	return m
}

// generate runs one greedy sequence of n tokens.
func generate(t *testing.T, m *Manager, prompt []uint32, n int) []uint32 {
	t.Helper()
	seq, err := m.Start(context.Background(), "tiny", prompt, enginehost.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	defer seq.Close()
	var out []uint32
	for len(out) < n {
		tok, err := seq.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tok.ID)
		if tok.EOG {
			break
		}
	}
	return out
}

// detached is a runner over a loaded model's session for running steps
// directly from a test, outside the model's loop (sessions allow concurrent
// runs; the loop's buffers are its own).
func detached(t *testing.T, m *Manager, name string) *runner {
	t.Helper()
	r, err := m.models.Acquire(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return &runner{name: r.name, spec: r.spec, sess: r.sess, opt: r.opt, ctx: r.ctx, pool: pool{limit: 4 * r.spec.layers},
		loop: enginehost.NewLoop[*request](name, r.opt.Parallel, r.opt.Queue)} // counts only: never run
}

func prompt(t *testing.T, m *Manager, text string) []uint32 {
	t.Helper()
	ids, err := m.Tokenize(context.Background(), "tiny", &generationv1.Prompt{Kind: &generationv1.Prompt_Text{Text: text}})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestGreedyIsDeterministic(t *testing.T) {
	m := newManager(t, Options{})
	p := prompt(t, m, "The quick brown fox")
	a, b := generate(t, m, p, 24), generate(t, m, p, 24)
	if !slices.Equal(a, b) || len(a) != 24 {
		t.Fatalf("two greedy runs differ:\n%v\n%v", a, b)
	}
	if len(slices.Compact(slices.Clone(a))) < 3 {
		t.Fatalf("degenerate output %v", a)
	}
}

// Decoding with the KV cache gives the tokens (and nearly the logits) of
// recomputing the whole sequence without a cache at every step.
func TestKVCacheEqualsNoCache(t *testing.T) {
	m := newManager(t, Options{})
	p := prompt(t, m, "Once upon a time, in a land far away")
	cached := generate(t, m, p, 16)

	r := detached(t, m, "tiny")
	seq := slices.Clone(p)
	worst := float32(1e9)
	for i := range cached {
		ids, pos, mask := make([]int64, len(seq)), make([]int64, len(seq)), make([]int64, len(seq))
		for j, id := range seq {
			ids[j], pos[j], mask[j] = int64(id), int64(j), 1
		}
		past, err := r.emptyKV()
		if err != nil {
			t.Fatal(err)
		}
		all, present, err := r.run(1, len(seq), ids, mask, pos, past)
		r.free(past)
		if err != nil {
			t.Fatal(err)
		}
		logits := r.lastLogits(all, 0, len(seq))
		next := sampling.Argmax(logits)
		worst = min(worst, testmodel.TopMargin(logits))
		r.free(present)
		if next != cached[i] {
			t.Fatalf("token %d: no-cache %d, cached %d (prefix %v)", i, next, cached[i], cached[:i])
		}
		seq = append(seq, next)
	}
	t.Logf("16 tokens equal; smallest top-2 logit margin %.4f", worst)
}

// Requests decoded together in one batch, with different prompt lengths
// and start times, get exactly the tokens each gets alone.
func TestBatchedEqualsAlone(t *testing.T) {
	m := newManager(t, Options{})
	texts := []string{"Hello", "A much longer prompt that spans quite a few more tokens than the others", "1 2 3 4 5", "¿Qué tal?", "func main() {", "zebra"}
	alone := make([][]uint32, len(texts))
	for i, s := range texts {
		alone[i] = generate(t, m, prompt(t, m, s), 20)
	}
	together := make([][]uint32, len(texts))
	var wg sync.WaitGroup
	for i, s := range texts {
		p := prompt(t, m, s)
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 3 * time.Millisecond) // join at different steps
			together[i] = generate(t, m, p, 20)
		})
	}
	wg.Wait()
	for i := range texts {
		if !slices.Equal(alone[i], together[i]) {
			t.Errorf("%q: alone %v\n batched %v", texts[i], alone[i], together[i])
		}
	}
}

// A long prompt is prefilled in chunks; the result equals one chunk.
func TestChunkedPrefill(t *testing.T) {
	p := prompt(t, newManager(t, Options{}), strings.Repeat("chunks of prompt ", 40))
	opt := DefaultOptions()
	opt.Threads = 1
	whole := generate(t, newManager(t, opt), p, 8)
	opt.PrefillChunk = 7
	chunked := generate(t, newManager(t, opt), p, 8)
	if !slices.Equal(whole, chunked) {
		t.Fatalf("chunked prefill %v, one chunk %v", chunked, whole)
	}
}

// A cancelled sequence frees its slot within a step and others go on.
func TestCancelFreesSlot(t *testing.T) {
	opt := DefaultOptions()
	opt.Threads, opt.Parallel, opt.Queue = 1, 1, 1
	m := newManager(t, opt)
	p := prompt(t, m, "cancel me")
	seq, err := m.Start(context.Background(), "tiny", p, enginehost.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seq.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The only slot is taken and the queue holds one: a third is refused.
	queued, err := m.Start(context.Background(), "tiny", p, enginehost.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(context.Background(), "tiny", p, enginehost.Sampling{}); rpcerr.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over capacity: %v", err)
	}
	seq.Close()
	// Closed, it no longer counts in the reported load (the loop frees its
	// slot at its next step; a stream's load trailer is built before that).
	if st := m.Status(); st.GetActiveSequences()+st.GetQueueDepth() != 1 {
		t.Fatalf("a closed sequence still counted (the queued one, waiting or admitted, is the only one): %v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := queued.Next(ctx); err != nil {
		t.Fatalf("queued request after the cancel: %v", err)
	}
	queued.Close()
	deadline := time.Now().Add(5 * time.Second)
	for m.Status().GetActiveSequences() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := m.Status(); st.GetActiveSequences() != 0 || st.GetQueueDepth() != 0 {
		t.Fatalf("after cancelling everything: %v", st)
	}
}

func TestChatAndSampling(t *testing.T) {
	m := newManager(t, Options{})
	chat := &generationv1.Prompt{Kind: &generationv1.Prompt_Chat{Chat: &generationv1.ChatMessages{Messages: []*generationv1.ChatMessage{
		{Role: generationv1.Role_ROLE_USER, Content: "hi<|endoftext|>"},
	}}}}
	ids, err := m.Tokenize(context.Background(), "tiny", chat)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ids, testmodel.EndOfText.ID) {
		t.Fatalf("special token in a chat message not parsed: %v", ids)
	}
	// Seeded sampling repeats; logprobs come with alternatives.
	s := enginehost.Sampling{Temperature: 0.9, TopK: 40, TopP: 0.95, Seed: 5, SeedSet: true, Logprobs: true, TopLogprobs: 3}
	run := func() []enginehost.Token {
		seq, err := m.Start(context.Background(), "tiny", ids, s)
		if err != nil {
			t.Fatal(err)
		}
		defer seq.Close()
		var out []enginehost.Token
		for range 10 {
			tok, err := seq.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, tok)
		}
		return out
	}
	a, b := run(), run()
	for i := range a {
		if a[i].ID != b[i].ID {
			t.Fatalf("seeded runs differ at %d", i)
		}
		if len(a[i].Top) != 3 || a[i].Logprob > 0 || a[i].Top[0].Logprob < a[i].Logprob {
			t.Fatalf("token %d logprobs: %+v", i, a[i])
		}
	}
}

// Broken and unsupported model directories are refused with errors that
// say what is wrong; the manager keeps serving its good model.
func TestBadModels(t *testing.T) {
	m := newManager(t, Options{})
	base := t.TempDir()
	mk := func(name string, edit func(dir string)) string {
		dir := filepath.Join(base, name)
		if err := os.CopyFS(dir, os.DirFS(tinyDir)); err != nil {
			t.Fatal(err)
		}
		edit(dir)
		return dir
	}
	noPast := testmodel.Tiny
	cases := []struct {
		name, want string
		code       codes.Code
		edit       func(dir string)
	}{
		{"garbage", "not a valid ONNX model", codes.InvalidArgument, func(d string) {
			os.WriteFile(filepath.Join(d, "model.onnx"), []byte("this is not protobuf at all \xff\xff\xff"), 0o644)
		}},
		{"truncated", "not a valid ONNX model", codes.InvalidArgument, func(d string) {
			b, _ := os.ReadFile(filepath.Join(d, "model.onnx"))
			os.WriteFile(filepath.Join(d, "model.onnx"), b[:len(b)/2], 0o644)
		}},
		{"no-tokenizer", "tokenizer", codes.NotFound, func(d string) { os.Remove(filepath.Join(d, "tokenizer.json")) }},
		{"sentencepiece", "not supported", codes.InvalidArgument, func(d string) {
			os.WriteFile(filepath.Join(d, "tokenizer.json"), []byte(`{"model":{"type":"Unigram","vocab":{"a":0}}}`), 0o644)
		}},
		{"no-kv-cache", "missing", codes.InvalidArgument, func(d string) {
			g, err := testmodel.ONNX(noPast, 50257)
			if err != nil {
				t.Fatal(err)
			}
			g.Graph.Inputs = g.Graph.Inputs[:3] // drop past_key_values.*
			os.WriteFile(filepath.Join(d, "model.onnx"), g.Marshal(), 0o644)
		}},
		{"missing", "no ONNX graph", codes.NotFound, func(d string) { os.Remove(filepath.Join(d, "model.onnx")) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := m.Register(c.name, mk(c.name, c.edit))
			if rpcerr.Code(err) != c.code || err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v (%v), want %v containing %q", err, rpcerr.Code(err), c.code, c.want)
			}
			t.Log(err)
		})
	}
	// A graph that passes the header checks but does not run (an operator
	// ONNX Runtime lacks) fails at load with FailedPrecondition.
	bad := mk("bad-op", func(d string) {
		g, err := testmodel.ONNX(testmodel.Tiny, 50257)
		if err != nil {
			t.Fatal(err)
		}
		g.Graph.Nodes[0].Op = "NoSuchOperator"
		os.WriteFile(filepath.Join(d, "model.onnx"), g.Marshal(), 0o644)
	})
	if _, err := m.Load(context.Background(), "bad-op", bad); rpcerr.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "NoSuchOperator") {
		t.Fatalf("bad operator: %v", err)
	}
	if got := generate(t, m, prompt(t, m, "still serving"), 4); len(got) != 4 {
		t.Fatalf("good model after bad ones: %v", got)
	}
	if _, _, err := m.Embed(context.Background(), "tiny", []string{"x"}); rpcerr.Code(err) != codes.Unimplemented {
		t.Fatalf("embed: %v", err)
	}
	if err := m.Unload(context.Background(), "tiny"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(context.Background(), "tiny", []uint32{1}, enginehost.Sampling{}); rpcerr.Code(err) != codes.NotFound {
		t.Fatalf("after unload: %v", err)
	}
	if err := m.Unload(context.Background(), "tiny"); !errors.Is(err, rpcerr.ErrNotFound) && rpcerr.Code(err) != codes.NotFound {
		t.Fatalf("second unload: %v", err)
	}
}

// Prompts prefilled together as left-padded rows get the first token and
// KV cache each gets prefilled alone.
func TestPrefillTogetherEqualsAlone(t *testing.T) {
	m := newManager(t, Options{})
	d := detached(t, m, "tiny")
	texts := []string{"short", "a somewhat longer prompt of several tokens", "mid length one"}
	var group []*request
	for _, s := range texts {
		group = append(group, &request{Request: enginehost.Request{Out: enginehost.NewTokenQueue()}, prompt: prompt(t, m, s), sampler: sampling.New(sampling.Params{})})
	}
	if err := d.prefillTogether(group); err != nil {
		t.Fatal(err)
	}
	if len(d.joining) != len(group) {
		t.Fatalf("%d of %d joined", len(d.joining), len(group))
	}
	for _, q := range group {
		tok, err := q.Out.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := len(q.prompt)
		ids, pos, mask := make([]int64, n), make([]int64, n), make([]int64, n)
		for i := range n {
			ids[i], pos[i], mask[i] = int64(q.prompt[i]), int64(i), 1
		}
		past, err := d.emptyKV()
		if err != nil {
			t.Fatal(err)
		}
		logits, present, err := d.run(1, n, ids, mask, pos, past)
		d.free(past)
		if err != nil {
			t.Fatal(err)
		}
		if want := sampling.Argmax(d.lastLogits(logits, 0, n)); tok.ID != want {
			t.Errorf("%d-token prompt: first token %d together, %d alone", n, tok.ID, want)
		}
		worst := 0.0
		for l := range present {
			a, b := q.kv[l].Floats(), present[l].Floats()
			if len(a) != len(b) {
				t.Fatalf("KV sizes %d and %d", len(a), len(b))
			}
			for i := range a {
				worst = max(worst, math.Abs(float64(a[i]-b[i])))
			}
		}
		if worst > 1e-5 {
			t.Errorf("%d-token prompt: KV differs by %.2e", n, worst)
		}
		d.free(present)
		d.free(q.kv)
	}
}

// A prompt that extends a finished sequence's tokens reuses its cache: the
// shared prefix is not recomputed and the output equals a cold start.
func TestPrefixReuse(t *testing.T) {
	m := newManager(t, Options{})
	system := prompt(t, m, strings.Repeat("You are a helpful assistant who answers briefly. ", 6))
	generate(t, m, system, 6)
	follow := append(slices.Clone(system), prompt(t, m, " Question: what is the capital of France?")...)
	seq, err := m.Start(context.Background(), "tiny", follow, enginehost.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	var warm []uint32
	for range 12 {
		tok, err := seq.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		warm = append(warm, tok.ID)
	}
	seq.Close()
	reused := seq.(interface{ CachedTokens() int }).CachedTokens()
	if reused < len(system) {
		t.Fatalf("reused %d prompt tokens, want at least the %d shared", reused, len(system))
	}
	// The trace's view of the run: only the uncached prompt was computed.
	if st := seq.(enginehost.StatsReporter).Stats(); st.PrefillTokens != len(follow)-reused || st.Prefill <= 0 || st.QueueWait < 0 || st.BatchMax != 1 {
		t.Fatalf("stats %+v, want %d prefill tokens, a prefill time, a batch of 1", st, len(follow)-reused)
	}
	opt := DefaultOptions()
	opt.Threads, opt.PrefixCache = 1, 0 // no reuse
	off := newManager(t, opt)
	generate(t, off, system, 6)
	seq, err = off.Start(context.Background(), "tiny", follow, enginehost.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	var cold []uint32
	for range 12 {
		tok, err := seq.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cold = append(cold, tok.ID)
	}
	seq.Close()
	if n := seq.(interface{ CachedTokens() int }).CachedTokens(); n != 0 {
		t.Fatalf("prefix cache off, yet %d tokens reused", n)
	}
	if !slices.Equal(warm, cold) {
		t.Fatalf("with the cached prefix %v, cold %v", warm, cold)
	}
	t.Logf("reused %d of %d prompt tokens", reused, len(follow))
}

// A model can be named by its .onnx file as well as by its directory, and
// both serve the same model.
func TestRegisterByFile(t *testing.T) {
	m := newManager(t, Options{})
	info, err := m.Register("by-file", filepath.Join(tinyDir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if info.GetFormat() != "onnx" || info.GetArchitecture() != "llama" || info.GetContextLength() != 1024 || info.GetParameters() < 3_000_000 {
		t.Fatalf("metadata: %v", info)
	}
	p := prompt(t, m, "same model")
	a := generate(t, m, p, 8)
	seq, err := m.Start(context.Background(), "by-file", p, enginehost.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	defer seq.Close()
	for i := range a {
		tok, err := seq.Next(context.Background())
		if err != nil || tok.ID != a[i] {
			t.Fatalf("token %d: %v %v, want %d", i, tok.ID, err, a[i])
		}
	}
}

// A merged decoder's use_cache_branch input gets false for a prompt with no
// past and true once there is one. The test graph checks the engine: it
// adds 1e4 to token 13's logit whenever the flag disagrees with the past
// length, so any wrong flag turns the greedy output into 13s.
func TestMergedDecoderCacheBranch(t *testing.T) {
	g, err := testmodel.ONNX(testmodel.Tiny, 50257)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range g.Graph.Nodes {
		if len(n.Outputs) == 1 && n.Outputs[0] == "logits" {
			g.Graph.Nodes[i].Outputs[0] = "logits_raw"
		}
	}
	onehot := make([]float32, 50257)
	onehot[13] = 1e4
	g.Graph.Initializers = append(g.Graph.Initializers,
		onnx.Tensor{Name: "cb_two", Elem: onnx.Int64, Int64: []int64{2}},
		onnx.Tensor{Name: "cb_zero", Elem: onnx.Int64, Int64: []int64{0}},
		onnx.Tensor{Name: "cb_onehot", Dims: []int64{50257}, Elem: onnx.Float, Float: onehot})
	g.Graph.Nodes = append(g.Graph.Nodes,
		onnx.Node{Op: "Shape", Name: "cb1", Inputs: []string{"past_key_values.0.key"}, Outputs: []string{"cb_shape"}},
		onnx.Node{Op: "Gather", Name: "cb2", Inputs: []string{"cb_shape", "cb_two"}, Outputs: []string{"cb_past"}},
		onnx.Node{Op: "Greater", Name: "cb3", Inputs: []string{"cb_past", "cb_zero"}, Outputs: []string{"cb_has_past"}},
		onnx.Node{Op: "Xor", Name: "cb4", Inputs: []string{"use_cache_branch", "cb_has_past"}, Outputs: []string{"cb_wrong"}},
		onnx.Node{Op: "Cast", Name: "cb5", Inputs: []string{"cb_wrong"}, Outputs: []string{"cb_wrong_f"}, Attrs: []onnx.Attr{{Name: "to", Kind: 2, I: onnx.Float}}},
		onnx.Node{Op: "Mul", Name: "cb6", Inputs: []string{"cb_wrong_f", "cb_onehot"}, Outputs: []string{"cb_bias"}},
		onnx.Node{Op: "Add", Name: "cb7", Inputs: []string{"logits_raw", "cb_bias"}, Outputs: []string{"logits"}},
	)
	g.Graph.Inputs = append(g.Graph.Inputs, onnx.ValueInfo{Name: "use_cache_branch", Elem: onnx.Bool, Shape: []onnx.Dim{{Value: 1}}})
	dir := filepath.Join(t.TempDir(), "merged")
	if err := os.CopyFS(dir, os.DirFS(tinyDir)); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteExternal(filepath.Join(dir, "model.onnx"), "model.onnx_data"); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, Options{})
	if _, err := m.Register("merged", dir); err != nil {
		t.Fatal(err)
	}
	texts := []string{"merged decoders", "take a flag", strings.Repeat("long prompt ", 30)}
	for _, s := range texts {
		p := prompt(t, m, s)
		want := generate(t, m, p, 12)
		seq, err := m.Start(context.Background(), "merged", p, enginehost.Sampling{})
		if err != nil {
			t.Fatal(err)
		}
		var got []uint32
		for range 12 {
			tok, err := seq.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, tok.ID)
		}
		seq.Close()
		if !slices.Equal(got, want) {
			t.Fatalf("%q: merged decoder %v, plain %v", s, got, want)
		}
	}
}

// The Go sampler's logit bias forces and bans tokens, its frequency and
// presence penalties keep a token the prompt repeats out of the answer (or,
// negative, repeat it), and bias ids outside the vocabulary are refused.
func TestLogitBiasAndPenalties(t *testing.T) {
	m := newManager(t, Options{})
	p := prompt(t, m, "The quick brown fox")
	base := generate(t, m, p, 12)
	run := func(prompt []uint32, s enginehost.Sampling, n int) []uint32 {
		t.Helper()
		ids, _, _, err := runIDs(m, prompt, s, n)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	forced := base[len(base)-1]
	if got := run(p, enginehost.Sampling{LogitBias: map[uint32]float32{forced: 100}}, 6); slices.ContainsFunc(got, func(id uint32) bool { return id != forced }) {
		t.Fatalf("bias +100 on %d, generated %v", forced, got)
	}
	banned := enginehost.Sampling{Temperature: 1, Seed: 3, SeedSet: true, LogitBias: map[uint32]float32{base[0]: -100}}
	if got := run(p, banned, 12); slices.Contains(got, base[0]) {
		t.Fatalf("banned %d, sampled %v", base[0], got)
	}
	x := base[0]
	rep := slices.Repeat([]uint32{x}, 40)
	pen := run(rep, enginehost.Sampling{FrequencyPenalty: 2, PresencePenalty: 2}, 12)
	fav := run(rep, enginehost.Sampling{FrequencyPenalty: -2, PresencePenalty: -2}, 12)
	if slices.Contains(pen, x) || slices.ContainsFunc(fav, func(id uint32) bool { return id != x }) {
		t.Fatalf("penalties did not act on token %d: penalised %v, favoured %v", x, pen, fav)
	}
	if _, err := m.Start(context.Background(), "tiny", p, enginehost.Sampling{LogitBias: map[uint32]float32{1 << 30: 1}}); rpcerr.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "outside the model's vocabulary") {
		t.Fatalf("bias outside the vocabulary: %v", err)
	}
}

// Structured output with the Go sampler's grammar constraint: for every
// schema of the corpus, greedy and at two temperatures with two seeds, the
// random-weight model's answer validates (independent validator) and ends
// by itself.
func TestResponseFormatSchemas(t *testing.T) {
	opt := DefaultOptions()
	opt.Threads, opt.Parallel = 1, 4
	m := newManager(t, opt)
	p := prompt(t, m, "Answer in JSON.")
	structuredtest.RunCorpus(t, 4, func(schema []byte, r structuredtest.Run) (structuredtest.Result, error) {
		g, err := structured.Compile(schema)
		if err != nil {
			return structuredtest.Result{}, err
		}
		s := enginehost.Sampling{Temperature: r.Temp, TopP: 1, RepeatPenalty: 1, Seed: r.Seed, SeedSet: true, Grammar: g}
		text, ended, n, err := runText(m, p, s, 400)
		return structuredtest.Result{Text: text, Ended: ended, Tokens: n}, err
	})
}

// runText generates up to n tokens and returns the text, whether the model
// ended it, and the token count.
func runText(m *Manager, prompt []uint32, s enginehost.Sampling, n int) (string, bool, int, error) {
	ids, pieces, ended, err := runTokens(m, prompt, s, n)
	return string(pieces), ended, len(ids), err
}

// runIDs generates up to n tokens and returns their ids (without the end
// of generation).
func runIDs(m *Manager, prompt []uint32, s enginehost.Sampling, n int) ([]uint32, bool, int, error) {
	ids, _, ended, err := runTokens(m, prompt, s, n)
	return ids, ended, len(ids), err
}

func runTokens(m *Manager, prompt []uint32, s enginehost.Sampling, n int) ([]uint32, []byte, bool, error) {
	seq, err := m.Start(context.Background(), "tiny", prompt, s)
	if err != nil {
		return nil, nil, false, err
	}
	defer seq.Close()
	var ids []uint32
	var out []byte
	for range n {
		tok, err := seq.Next(context.Background())
		if err != nil {
			return ids, out, false, err
		}
		if tok.EOG {
			return ids, out, true, nil
		}
		ids, out = append(ids, tok.ID), append(out, tok.Piece...)
	}
	return ids, out, false, nil
}

// A continuation at the end of the prompt advances the grammar (engine-onnx).
func TestResponseFormatContinuation(t *testing.T) {
	m := newManager(t, Options{})
	schema := `{"type":"object","properties":{"name":{"type":"string","maxLength":12},"n":{"type":"integer","minimum":0,"maximum":9}},"required":["name","n"]}`
	g, err := structured.Compile([]byte(schema))
	if err != nil {
		t.Fatal(err)
	}
	v, err := structuredtest.NewValidator([]byte(schema))
	if err != nil {
		t.Fatal(err)
	}
	cont := prompt(t, m, `{"name":"ab`)
	p := append(prompt(t, m, "Answer in JSON."), cont...)
	text, ended, _, err := runText(m, p, enginehost.Sampling{TopP: 1, RepeatPenalty: 1, Grammar: g, Continued: len(cont)}, 300)
	if doc := `{"name":"ab` + text; err != nil || !ended || v.Validate([]byte(doc)) != nil {
		t.Fatalf("continued %q (ended %v): %v %v", doc, ended, err, v.Validate([]byte(doc)))
	}
	bad := prompt(t, m, `["x`)
	if _, err := m.Start(context.Background(), "tiny", append(prompt(t, m, "x"), bad...), enginehost.Sampling{Grammar: g, Continued: len(bad)}); rpcerr.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a continuation outside the format: %v", err)
	}
}

// Tool calls with the Go sampler's grammar constraint, through the engine
// service: forced calls of every corpus tool validate, and tool
// conversations, auto and none, a failover inside a call and bad tools
// behave (the checks engine-gguf runs too).
func TestToolCalls(t *testing.T) {
	opt := DefaultOptions()
	opt.Threads, opt.Parallel = 1, 4
	m := newManager(t, opt)
	c := testkit.ServeEngine(t, m, enginehost.Limits{}).Client
	t.Logf("%d valid calls", structuredtest.RunTools(t, 4, c, "tiny"))
	structuredtest.CheckToolConversations(t, c, "tiny", func(text string) []uint32 { return prompt(t, m, text) })
}
