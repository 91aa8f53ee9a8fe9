package engine

import (
	"context"
	"encoding/json"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/structured/structuredtest"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

var (
	quiet     = slog.New(slog.NewTextHandler(io.Discard, nil))
	tinyPath  string // peaked tiny model, f32
	otherPath string // a second model (different seed)
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "engine-gguf-test")
	if err != nil {
		panic(err)
	}
	vocab := os.Getenv("LLMROUTER_VOCAB")
	if vocab == "" {
		fmt.Fprintln(os.Stderr, "LLMROUTER_VOCAB is not set: run the tests through make")
		os.Exit(1)
	}
	c := testmodel.Tiny
	c.Peak = 32
	tinyPath = filepath.Join(dir, "tiny.gguf")
	otherPath = filepath.Join(dir, "other.gguf")
	if err := testmodel.WriteFile(tinyPath, c, vocab); err != nil {
		panic(err)
	}
	c.Seed = 7
	if err := testmodel.WriteFile(otherPath, c, vocab); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testOptions() Options {
	o := DefaultOptions()
	o.CtxPerSeq, o.Threads, o.ThreadsBatch, o.Queue = 256, 1, 1, 4
	return o
}

// serve runs a real gRPC Engine server over a Manager whose LoadModel may
// load from the test models' directory and dirs.
func serve(t *testing.T, opt Options, models map[string]string, dirs ...string) (enginev1.EngineServiceClient, *Manager) {
	t.Helper()
	mgr := New(opt, quiet)
	t.Cleanup(mgr.Close) // after the server stops (cleanups run last first)
	for name, p := range models {
		if _, err := mgr.Register(name, p); err != nil {
			t.Fatal(err)
		}
	}
	dirs = append(dirs, filepath.Dir(tinyPath))
	return testkit.ServeEngine(t, mgr, enginehost.Limits{ModelDirs: dirs}).Client, mgr
}

type result struct {
	ids  []uint32
	text string
	end  *genv1.EndEvent
}

func generate(ctx context.Context, c enginev1.EngineServiceClient, req *enginev1.GenerateRequest) (result, error) {
	var r result
	s, err := c.Generate(ctx, req)
	if err != nil {
		return r, err
	}
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return r, nil
		}
		if err != nil {
			return r, err
		}
		if d := msg.GetDelta(); d != nil {
			r.ids = append(r.ids, d.GetTokenIds()...)
			r.text += d.GetText()
		}
		if e := msg.GetEnd(); e != nil {
			r.end = e
		}
	}
}

func req(model, prompt string, maxTokens int32) *enginev1.GenerateRequest {
	return &enginev1.GenerateRequest{Model: model, Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: maxTokens}}
}

var prompts = []string{
	"The quick brown fox jumps over the lazy dog",
	"Once upon a time in a land far away",
	"Routers pick workers by load and cost",
	"Continuous batching decodes many sequences together",
}

// Greedy output is deterministic and the same alone as among 4 concurrent
// sequences (prefilling and decoding in the same batches).
func TestGreedyAloneEqualsConcurrent(t *testing.T) {
	c, _ := serve(t, testOptions(), map[string]string{"tiny": tinyPath})
	alone := make([]result, len(prompts))
	for i, p := range prompts {
		r, err := generate(context.Background(), c, req("tiny", p, 24))
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = r
	}
	again, err := generate(context.Background(), c, req("tiny", prompts[0], 24))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(again.ids) != fmt.Sprint(alone[0].ids) {
		t.Fatalf("greedy not deterministic:\n%v\n%v", again.ids, alone[0].ids)
	}
	for round := range 2 {
		var wg sync.WaitGroup
		got := make([]result, len(prompts))
		errs := make([]error, len(prompts))
		for i, p := range prompts {
			wg.Go(func() { got[i], errs[i] = generate(context.Background(), c, req("tiny", p, 24)) })
		}
		wg.Wait()
		for i := range prompts {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if fmt.Sprint(got[i].ids) != fmt.Sprint(alone[i].ids) {
				t.Fatalf("round %d prompt %d: concurrent %v != alone %v", round, i, got[i].ids, alone[i].ids)
			}
		}
	}
	t.Logf("prompt 0 greedy: %q", alone[0].text)
}

func TestStopSequencesAndMaxTokens(t *testing.T) {
	c, _ := serve(t, testOptions(), map[string]string{"tiny": tinyPath})
	full, err := generate(context.Background(), c, req("tiny", prompts[1], 16))
	if err != nil {
		t.Fatal(err)
	}
	if len(full.ids) != 16 || full.end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("max_tokens: %d tokens, %v", len(full.ids), full.end.GetFinishReason())
	}
	// Stop at a word from the middle of the known output.
	words := strings.Fields(full.text)
	if len(words) < 4 {
		t.Fatalf("output too short to pick a stop word: %q", full.text)
	}
	stop := words[len(words)/2]
	want := full.text[:strings.Index(full.text, stop)]
	r := req("tiny", prompts[1], 16)
	r.Sampling.Stop = []string{stop}
	got, err := generate(context.Background(), c, r)
	if err != nil {
		t.Fatal(err)
	}
	if got.text != want || got.end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_STOP_SEQUENCE {
		t.Fatalf("stop %q: got %q (%v), want %q", stop, got.text, got.end.GetFinishReason(), want)
	}
}

func TestPrefixReuse(t *testing.T) {
	opt := testOptions()
	opt.Parallel = 2
	c, _ := serve(t, opt, map[string]string{"tiny": tinyPath})
	long := strings.Repeat("shared system prompt words ", 12)
	first, err := generate(context.Background(), c, req("tiny", long+"question one", 4))
	if err != nil {
		t.Fatal(err)
	}
	if first.end.GetUsage().GetCachedPromptTokens() != 0 {
		t.Fatalf("cold request reused %d tokens", first.end.GetUsage().GetCachedPromptTokens())
	}
	second, err := generate(context.Background(), c, req("tiny", long+"question two", 4))
	if err != nil {
		t.Fatal(err)
	}
	u := second.end.GetUsage()
	if u.GetCachedPromptTokens() < u.GetPromptTokens()-4 || u.GetCachedPromptTokens() >= u.GetPromptTokens() {
		t.Fatalf("second request reused %d of %d prompt tokens", u.GetCachedPromptTokens(), u.GetPromptTokens())
	}
	// Reuse does not change the output: same request twice, same tokens.
	third, err := generate(context.Background(), c, req("tiny", long+"question one", 4))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(third.ids) != fmt.Sprint(first.ids) {
		t.Fatalf("with reused prefix %v, cold %v", third.ids, first.ids)
	}
}

// Concurrent requests with one prompt (the choices of an n > 1 request)
// compute its KV once: the others copy it from the first sequence (with a
// unified KV cache and without), and their greedy answers are the cold one.
func TestSamePromptSharesKV(t *testing.T) {
	long := strings.Repeat("a system prompt that every choice shares ", 8) + "and the question"
	for _, unified := range []bool{false, true} {
		t.Run(fmt.Sprintf("unified=%v", unified), func(t *testing.T) {
			opt := testOptions()
			opt.Parallel, opt.KVUnified = 4, unified
			c, _ := serve(t, opt, map[string]string{"tiny": tinyPath})
			cold, err := generate(context.Background(), c, req("tiny", long, 8))
			if err != nil {
				t.Fatal(err)
			}
			// A second model with the same options: its cache is empty, so
			// the 4 requests below find nothing cached but each other.
			c2, _ := serve(t, opt, map[string]string{"tiny": tinyPath})
			got := make([]result, 4)
			errs := make([]error, 4)
			var wg sync.WaitGroup
			for i := range got {
				wg.Go(func() { got[i], errs[i] = generate(context.Background(), c2, req("tiny", long, 8)) })
			}
			wg.Wait()
			shared := 0
			for i, g := range got {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				if fmt.Sprint(g.ids) != fmt.Sprint(cold.ids) {
					t.Fatalf("request %d with a shared prefix: %v, cold: %v", i, g.ids, cold.ids)
				}
				if g.end.GetUsage().GetCachedPromptTokens() == g.end.GetUsage().GetPromptTokens()-1 {
					shared++
				}
			}
			if shared != 3 {
				t.Fatalf("%d of 4 concurrent requests reused the prompt's KV, want 3 (all but the first): %v", shared, got)
			}
		})
	}
}

func TestCancelFreesSlotAndQueueOverflow(t *testing.T) {
	opt := testOptions()
	opt.Parallel, opt.Queue = 1, 1
	c, mgr := serve(t, opt, map[string]string{"tiny": tinyPath})
	ctx, cancel := context.WithCancel(context.Background())
	running, err := c.Generate(ctx, req("tiny", prompts[0], 200))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // start event and a token: the slot is busy
		if _, err := running.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	queued := make(chan error, 1)
	go func() {
		_, err := generate(context.Background(), c, req("tiny", prompts[1], 4))
		queued <- err
	}()
	waitFor(t, func() bool { return mgr.Status().GetQueueDepth() == 1 })
	_, err = generate(context.Background(), c, req("tiny", prompts[2], 4))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("overflow: %v", err)
	}
	cancel()
	select {
	case err := <-queued:
		if err != nil {
			t.Fatalf("queued request after the cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("queued request never ran: the cancelled slot was not freed")
	}
	waitFor(t, func() bool { return mgr.Status().GetActiveSequences() == 0 })
}

func TestPromptLongerThanContext(t *testing.T) {
	c, _ := serve(t, testOptions(), map[string]string{"tiny": tinyPath})
	_, err := generate(context.Background(), c, req("tiny", strings.Repeat("word ", 300), 4))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "context of 256") {
		t.Fatalf("long prompt: %v", err)
	}
}

// Corrupt files are refused in Go with a precise error; the worker keeps
// serving its other model.
func TestCorruptModelsAreRefused(t *testing.T) {
	dir := t.TempDir()
	c, mgr := serve(t, testOptions(), map[string]string{"tiny": tinyPath}, dir, filepath.Dir(os.Getenv("LLMROUTER_VOCAB")))
	good, err := os.ReadFile(otherPath)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, path, want string
		code             codes.Code
	}{
		{"truncated data", write("trunc.gguf", good[:len(good)/2]), "runs past the end of the file", codes.InvalidArgument},
		{"truncated header", write("head.gguf", good[:100]), "truncated", codes.InvalidArgument},
		{"not gguf", write("text.gguf", []byte("hello, I am not a model at all")), "bad magic", codes.InvalidArgument},
		{"empty", write("empty.gguf", nil), "truncated", codes.InvalidArgument},
		{"vocabulary only", os.Getenv("LLMROUTER_VOCAB"), "holds no tensors", codes.InvalidArgument},
		{"missing", filepath.Join(dir, "nope.gguf"), "does not exist", codes.NotFound},
		{"outside the model directories", "/etc/shadow", "outside the model directories", codes.PermissionDenied},
		{"escape through ..", "../../etc/passwd", "no ..", codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.LoadModel(context.Background(), &enginev1.LoadModelRequest{Model: "bad", Source: tc.path})
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.want)
			}
			if strings.Contains(st.Message(), "hello") || strings.Contains(st.Message(), "root:") {
				t.Fatalf("the error echoes the file's bytes: %q", st.Message())
			}
			if _, err := generate(context.Background(), c, req("tiny", "still serving?", 3)); err != nil {
				t.Fatalf("worker stopped serving its good model: %v", err)
			}
		})
	}
	if len(mgr.Models()) != 1 {
		t.Fatalf("models after refusals: %v", mgr.Models())
	}
}

func TestLoadUnloadKeepAliveAndBudget(t *testing.T) {
	opt := testOptions()
	opt.KeepAlive = 300 * time.Millisecond
	c, mgr := serve(t, opt, map[string]string{"tiny": tinyPath})
	if _, err := generate(context.Background(), c, req("tiny", "load me", 2)); err != nil {
		t.Fatal(err)
	}
	if !mgr.Loaded("tiny") {
		t.Fatal("model not loaded after use")
	}
	waitFor(t, func() bool { return !mgr.Loaded("tiny") })
	// Unloaded by keep-alive, still listed, reloads on demand.
	if _, err := generate(context.Background(), c, req("tiny", "again", 2)); err != nil {
		t.Fatal(err)
	}
	resp, err := c.LoadModel(context.Background(), &enginev1.LoadModelRequest{Model: "other", Source: otherPath})
	if err != nil {
		t.Fatal(err)
	}
	info := resp.GetModel()
	if info.GetArchitecture() != "llama" || info.GetQuantization() != "F32" || info.GetParameters() < 3_000_000 || info.GetContextLength() != 256 {
		t.Fatalf("metadata %v", info)
	}
	list, err := c.ListModels(context.Background(), &enginev1.ListModelsRequest{})
	if err != nil || len(list.GetModels()) != 2 {
		t.Fatalf("list %v %v", list, err)
	}
	if _, err := c.UnloadModel(context.Background(), &enginev1.UnloadModelRequest{Model: "other"}); err != nil {
		t.Fatal(err)
	}
	if _, err := generate(context.Background(), c, req("other", "x", 2)); status.Code(err) != codes.NotFound {
		t.Fatalf("unloaded model: %v", err)
	}
}

func TestMemoryBudgetEvictsLeastRecentlyUsed(t *testing.T) {
	opt := testOptions()
	probe := New(opt, quiet)
	s, err := probe.read("a", tinyPath)
	probe.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Room for one model only.
	_, estimate := probe.describe("a", s.header)
	opt.MemoryBudget = estimate + estimate/2
	mgr := New(opt, quiet)
	defer mgr.Close()
	if _, err := mgr.Register("a", tinyPath); err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.Register("b", otherPath); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := mgr.models.Acquire(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.models.Acquire(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if mgr.Loaded("a") || !mgr.Loaded("b") {
		t.Fatalf("after loading b: a loaded %v, b loaded %v", mgr.Loaded("a"), mgr.Loaded("b"))
	}
	// A busy model is not evicted: the other load is refused.
	seq, err := mgr.Start(ctx, "b", []uint32{1, 2, 3}, enginehost.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.models.Acquire(ctx, "a"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("load while the only evictable model is busy: %v", err)
	}
	seq.Close()
	// The loop frees the closed sequence's slot at its next step (the
	// reported load stops counting it at once, eviction only then).
	waitFor(t, func() bool {
		busy := false
		mgr.models.Peek("b", func(r *runner) { busy = r.Busy() })
		return !busy
	})
	if _, err := mgr.models.Acquire(ctx, "a"); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddings(t *testing.T) {
	c, _ := serve(t, testOptions(), map[string]string{"tiny": tinyPath})
	resp, err := c.Embed(context.Background(), &enginev1.EmbedRequest{Model: "tiny", Inputs: []string{"alpha beta", "gamma", "alpha beta"}})
	if err != nil {
		t.Fatal(err)
	}
	e := resp.GetEmbeddings()
	if len(e) != 3 || len(e[0].GetValues()) != 32 || !proto.Equal(e[0], e[2]) || proto.Equal(e[0], e[1]) {
		t.Fatalf("embeddings %v", resp)
	}
	var norm float64
	for _, v := range e[1].GetValues() {
		norm += float64(v) * float64(v)
	}
	if norm < 0.999 || norm > 1.001 {
		t.Fatalf("embedding norm² %v", norm)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Each sequence reports its run for the trace: the prompt tokens it
// computed (not those reused from a slot's cache), a prefill time, and the
// most sequences decoded beside it.
func TestSequenceStats(t *testing.T) {
	opt := testOptions()
	opt.Parallel = 2
	_, mgr := serve(t, opt, map[string]string{"tiny": tinyPath})
	run := func(p string, n int) enginehost.SeqStats {
		ids, err := mgr.Tokenize(context.Background(), "tiny", &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: p}})
		if err != nil {
			t.Error(err)
			return enginehost.SeqStats{}
		}
		seq, err := mgr.Start(context.Background(), "tiny", ids, enginehost.Sampling{})
		if err != nil {
			t.Error(err)
			return enginehost.SeqStats{}
		}
		for range n {
			if _, err := seq.Next(context.Background()); err != nil {
				t.Error(err)
			}
		}
		seq.Close()
		st := seq.(enginehost.StatsReporter).Stats()
		if got, want := st.PrefillTokens, len(ids)-seq.(interface{ CachedTokens() int }).CachedTokens(); got != want {
			t.Errorf("%q: %d prefill tokens, want %d", p, got, want)
		}
		if st.Prefill <= 0 || st.QueueWait < 0 || st.BatchMax < 1 {
			t.Errorf("%q: %+v", p, st)
		}
		return st
	}
	long := strings.Repeat("shared system prompt words ", 12)
	cold := run(long+"question one", 4)
	warm := run(long+"question two", 4)
	if warm.PrefillTokens >= cold.PrefillTokens {
		t.Errorf("a reused prefix did not shorten the prefill: %d then %d tokens", cold.PrefillTokens, warm.PrefillTokens)
	}
	if cold.BatchMax != 1 {
		t.Errorf("alone, yet batched with %d", cold.BatchMax)
	}
	var wg sync.WaitGroup
	stats := make([]enginehost.SeqStats, 2)
	for i := range stats {
		wg.Go(func() { stats[i] = run(prompts[i], 24) })
	}
	wg.Wait()
	if stats[0].BatchMax != 2 && stats[1].BatchMax != 2 {
		t.Errorf("two concurrent sequences never decoded together: %+v", stats)
	}
}

// A stream's load trailer, written as it ends, no longer counts it: the
// loop frees the slot at its next step, but a router reading the trailer
// must not see the worker busier than it is.
func TestLoadTrailerLeavesOutTheEndedStream(t *testing.T) {
	opt := testOptions()
	opt.Parallel = 2
	c, _ := serve(t, opt, map[string]string{"tiny": tinyPath})
	for _, n := range []int32{1, 4, 16} {
		var md metadata.MD
		s, err := c.Generate(context.Background(), req("tiny", prompts[0], n), grpc.Trailer(&md))
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = s.Recv()
		}
		if !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if l, ok := enginehost.ParseLoad(md); !ok || l != (enginehost.LoadReport{HasModel: true}) {
			t.Fatalf("%d tokens: trailer %v (%+v, ok %v), want nothing decoding or queued", n, md, l, ok)
		}
	}
}

// logit_bias forces or bans tokens, positive frequency and presence
// penalties keep a token the prompt repeats out of the answer and negative
// ones make the answer repeat it, and bad values are refused.
func TestLogitBiasAndPenalties(t *testing.T) {
	c, _ := serve(t, testOptions(), map[string]string{"tiny": tinyPath})
	ctx := context.Background()
	base, err := generate(ctx, c, req("tiny", prompts[0], 24))
	if err != nil {
		t.Fatal(err)
	}
	forced := base.ids[0]
	for _, id := range base.ids {
		if id != base.ids[0] {
			forced = id
			break
		}
	}
	if forced == base.ids[0] {
		t.Fatalf("greedy output is one token repeated: %v", base.ids)
	}
	r := req("tiny", prompts[0], 8)
	r.Sampling.LogitBias = map[uint32]float32{forced: 100}
	got, err := generate(ctx, c, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range got.ids {
		if id != forced {
			t.Fatalf("bias +100 on %d, generated %v", forced, got.ids)
		}
	}
	r = req("tiny", prompts[0], 8)
	r.Sampling.LogitBias = map[uint32]float32{base.ids[0]: -100}
	if got, err = generate(ctx, c, r); err != nil || got.ids[0] == base.ids[0] {
		t.Fatalf("bias -100 on %d, generated %v (%v)", base.ids[0], got.ids, err)
	}
	// Sampled at temperature 1, the ban holds for every draw.
	r.Sampling.Temperature, r.Sampling.Seed = proto.Float32(1), proto.Uint64(5)
	if got, err = generate(ctx, c, r); err != nil || slices.Contains(got.ids, base.ids[0]) {
		t.Fatalf("banned %d, sampled %v (%v)", base.ids[0], got.ids, err)
	}

	// A prompt of one token 40 times: the penalties count those
	// occurrences (the window holds the prompt's last 64 tokens).
	x := base.ids[0]
	r = &enginev1.GenerateRequest{Model: "tiny", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Tokens{Tokens: &genv1.TokenIds{Ids: slices.Repeat([]uint32{x}, 40)}}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 16}}
	plain, err := generate(ctx, c, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Sampling.FrequencyPenalty, r.Sampling.PresencePenalty = 2, 2
	pen, err := generate(ctx, c, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Sampling.FrequencyPenalty, r.Sampling.PresencePenalty = -2, -2
	fav, err := generate(ctx, c, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d×40: plain %v, penalised %v, favoured %v", x, plain.ids, pen.ids, fav.ids)
	if slices.Contains(pen.ids, x) || slices.ContainsFunc(fav.ids, func(id uint32) bool { return id != x }) {
		t.Fatalf("penalties did not act on token %d: penalised %v, favoured %v", x, pen.ids, fav.ids)
	}

	for _, tt := range []struct {
		mod  func(*genv1.SamplingParams)
		want string
	}{
		{func(s *genv1.SamplingParams) { s.LogitBias = map[uint32]float32{1 << 30: 1} }, "outside the model's vocabulary"},
		{func(s *genv1.SamplingParams) { s.LogitBias = map[uint32]float32{1: 101} }, "logit_bias[1] = 101 is out of range"},
		{func(s *genv1.SamplingParams) { s.FrequencyPenalty = 2.5 }, "frequency_penalty = 2.5 is out of range"},
		{func(s *genv1.SamplingParams) { s.PresencePenalty = float32(math.NaN()) }, "presence_penalty = NaN is out of range"},
	} {
		r := req("tiny", prompts[0], 4)
		tt.mod(r.Sampling)
		if _, err := generate(ctx, c, r); status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Fatalf("got %v, want InvalidArgument %q", err, tt.want)
		}
	}
}

// Structured output with llama.cpp's grammar sampler: for every schema of
// the corpus, at several temperatures and seeds, the random-weight model's
// answer is JSON that an independent validator accepts, and generation
// ends by itself (the grammar allows only the end of generation once the
// document is complete).
func TestResponseFormatSchemas(t *testing.T) {
	opt := testOptions()
	opt.Parallel, opt.CtxPerSeq = 4, 1024
	c, _ := serve(t, opt, map[string]string{"tiny": tinyPath})
	structuredtest.RunCorpus(t, 4, func(schema []byte, r structuredtest.Run) (structuredtest.Result, error) {
		q := req("tiny", "Answer in JSON.", 600)
		q.Sampling.Temperature, q.Sampling.Seed = proto.Float32(r.Temp), proto.Uint64(r.Seed)
		q.Sampling.ResponseFormat = &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA, JsonSchema: string(schema)}
		got, err := generate(context.Background(), c, q)
		return structuredtest.Result{Text: got.text, Ended: got.end.GetFinishReason() == genv1.FinishReason_FINISH_REASON_STOP, Tokens: len(got.ids)}, err
	})
}

// A schema the grammar cannot express is refused before generation, naming
// the feature; json_object answers an object.
func TestResponseFormatRefusalsAndJSONObject(t *testing.T) {
	c, _ := serve(t, testOptions(), map[string]string{"tiny": tinyPath})
	r := req("tiny", "x", 8)
	r.Sampling.ResponseFormat = &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA, JsonSchema: `{"type":"object","patternProperties":{"^a":{}}}`}
	if _, err := generate(context.Background(), c, r); status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), `"patternProperties" at #`) {
		t.Fatalf("unsupported schema: %v", err)
	}
	r = req("tiny", "x", 64)
	r.Sampling.ResponseFormat = &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT}
	got, err := generate(context.Background(), c, r)
	if err != nil {
		t.Fatal(err)
	}
	// Unbounded (any object), so it may stop at max_tokens: a complete
	// answer is an object, a cut one starts like one.
	if got.end.GetFinishReason() == genv1.FinishReason_FINISH_REASON_STOP {
		var m map[string]any
		if err := json.Unmarshal([]byte(got.text), &m); err != nil {
			t.Fatalf("json_object answered %q: %v", got.text, err)
		}
	} else if !strings.HasPrefix(got.text, "{") {
		t.Fatalf("json_object answered %q", got.text)
	}
}

// A failover's continuation (tokens another worker already generated)
// advances the grammar: the answer goes on from it to a valid document,
// and a continuation the format does not allow is refused.
func TestResponseFormatContinuation(t *testing.T) {
	opt := testOptions()
	opt.CtxPerSeq = 1024
	c, mgr := serve(t, opt, map[string]string{"tiny": tinyPath})
	schema := `{"type":"object","properties":{"name":{"type":"string","maxLength":12},"n":{"type":"integer","minimum":0,"maximum":9}},"required":["name","n"]}`
	format := &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA, JsonSchema: schema}
	toks := func(text string) []uint32 {
		ids, err := mgr.Tokenize(context.Background(), "tiny", &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: text}})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	v, err := structuredtest.NewValidator([]byte(schema))
	if err != nil {
		t.Fatal(err)
	}
	r := req("tiny", "Answer in JSON.", 300)
	r.Sampling.ResponseFormat = format
	r.Continuation = toks(`{"name":"ab`)
	got, err := generate(context.Background(), c, r)
	if err != nil {
		t.Fatal(err)
	}
	if doc := `{"name":"ab` + got.text; got.end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_STOP || v.Validate([]byte(doc)) != nil {
		t.Fatalf("continued %q: %v (%v)", doc, v.Validate([]byte(doc)), got.end.GetFinishReason())
	}
	r.Continuation = toks(`["not an object`)
	if _, err := generate(context.Background(), c, r); status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "does not fit the response format") {
		t.Fatalf("a continuation outside the format: %v", err)
	}
}

// Tool calls with llama.cpp's grammar sampler: forced calls of every
// corpus tool validate (structuredtest.RunTools), and tool conversations,
// auto and none, a failover inside a call and bad tools behave
// (structuredtest.CheckToolConversations).
func TestToolCalls(t *testing.T) {
	opt := testOptions()
	opt.Parallel, opt.CtxPerSeq = 4, 2048
	c, mgr := serve(t, opt, map[string]string{"tiny": tinyPath})
	n := structuredtest.RunTools(t, 4, c, "tiny")
	t.Logf("%d valid calls", n)
	structuredtest.CheckToolConversations(t, c, "tiny", func(text string) []uint32 {
		ids, err := mgr.Tokenize(context.Background(), "tiny", &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: text}})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	})
}
