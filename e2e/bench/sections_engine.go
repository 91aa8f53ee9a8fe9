package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"gonum.org/v1/plot/plotter"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/traces"
)

func (e *Env) describeModel() string {
	return fmt.Sprintf("the generated %s model (llama architecture, %.1fM parameters, GPT-2 vocabulary, seeded random weights)",
		e.Models.Config.Name, float64(e.Models.Params)/1e6)
}

// fileKinds are the model files the loading table measures, in order.
func (e *Env) fileKinds() []struct{ kind, engine, path string } {
	out := []struct{ kind, engine, path string }{}
	for _, q := range e.Models.Quantizations {
		out = append(out, struct{ kind, engine, path string }{"GGUF " + q, "engine-gguf (llama.cpp)", e.Models.GGUF[q]})
	}
	out = append(out, struct{ kind, engine, path string }{"GGUF F32", "engine-gguf (llama.cpp)", e.Models.F32})
	out = append(out, struct{ kind, engine, path string }{"ONNX F32", "engine-onnx (ONNX Runtime)", e.Models.ONNX})
	return out
}

// FormatLoading: a worker process from exec until serving (its models
// loaded first), and its peak memory after one request.
func FormatLoading(e *Env) (Section, error) {
	s := Section{Title: "Format-Specific Loading Times", Status: Measured}
	var rows [][]string
	var labels []string
	var peaks []float64
	reps := pick(e, 1, 3)
	for _, f := range e.fileKinds() {
		var took []time.Duration
		var peak float64
		for range reps {
			t0 := time.Now()
			var p *testkit.Proc
			if f.kind == "ONNX F32" {
				p = e.onnxWorker("load", f.path)
			} else {
				p = e.ggufWorker("load", f.path)
			}
			took = append(took, time.Since(t0))
			if r := direct(e.Ctx, e.engineClient(p), "load", tokens(1, 16), 8); r.Err != nil {
				return s, fmt.Errorf("%s: %w", f.kind, r.Err)
			}
			_, pk := harness.ProcRSS(p.Cmd.Process.Pid)
			peak = max(peak, pk)
			p.Stop(5 * time.Second)
		}
		e.LoadMS[f.kind], e.PeakMiB[f.kind] = float64(median(took))/1e6, peak
		labels, peaks = append(labels, f.kind), append(peaks, peak)
		rows = append(rows, []string{f.kind, fmt.Sprintf("%.1f MiB", FileMiB(f.path)), ms(median(took)), fmt.Sprintf("%.0f MiB", peak), f.engine})
	}
	if err := BarPlot(filepath.Join(e.Dir, "memory-by-format.png"), "Worker peak memory by format and quantization", "peak RSS (MiB)", labels, peaks); err != nil {
		return s, err
	}
	s.Plots = []string{"memory-by-format.png"}
	s.Method = fmt.Sprintf("One worker process per file of %s, %d thread(s): *load time* is exec until the worker serves (it loads "+
		"its model before listening), median of %d; *peak memory* is the process's VmHWM after one request (weights, KV cache for its "+
		"slots, runtime).", e.describeModel(), e.Threads, reps)
	s.Table = table([]string{"model format", "size", "load time", "peak memory", "engine"}, rows)
	s.Notes = "The document's rows are 3.5–6.7 GB files; its safetensors and HuggingFace rows have no engine here (this mesh serves GGUF, ONNX and hosted APIs). " +
		"Load time is mostly the file read and mmap; GGUF files are memory-mapped, so their pages count toward RSS once touched."
	return s, nil
}

// ConcurrentLoading: LoadModel of 1..5 models at once on one worker.
func ConcurrentLoading(e *Env) (Section, error) {
	s := Section{Title: "Concurrent Loading Performance", Status: Measured}
	path := e.Models.GGUF["Q4_0"]
	w := e.ggufWorker("base", path, "-load-dir", filepath.Dir(path), "-parallel", "2")
	defer w.Stop(5 * time.Second)
	admin := e.adminClient(w)
	var rows [][]string
	for k := 1; k <= 5; k++ {
		rss0, _ := harness.ProcRSS(w.Cmd.Process.Pid)
		t0 := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		var peak float64
		done := make(chan struct{})
		var sampler sync.WaitGroup
		sampler.Go(func() { // sample RSS while loading
			for {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
					rss, _ := harness.ProcRSS(w.Cmd.Process.Pid)
					mu.Lock()
					peak = max(peak, rss)
					mu.Unlock()
				}
			}
		})
		for i := range k {
			wg.Go(func() {
				_, err := admin.LoadModel(e.Ctx, &enginev1.LoadModelRequest{Model: fmt.Sprintf("cl%d-%d", k, i), Source: path})
				mu.Lock()
				if err == nil {
					ok++
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		took := time.Since(t0)
		close(done)
		sampler.Wait() // peak is ours alone from here
		rss1, _ := harness.ProcRSS(w.Cmd.Process.Pid)
		peak = max(peak, rss1)
		for i := range k {
			admin.UnloadModel(e.Ctx, &enginev1.UnloadModelRequest{Model: fmt.Sprintf("cl%d-%d", k, i)})
		}
		rows = append(rows, []string{fmt.Sprintf("%d model(s)", k), ms(took), fmt.Sprintf("%.0f MiB (+%.0f)", peak, peak-rss0),
			fmt.Sprintf("%.0f%%", 100*float64(ok)/float64(k))})
	}
	s.Method = fmt.Sprintf("One engine-gguf worker (%d thread(s), 2 slots per model) already serving one model; k `LoadModel` RPCs at once "+
		"(as an administrator, mTLS) of the Q4_0 file of %s under k new names; total time until all answered, the worker's peak RSS "+
		"while loading (sampled every 20 ms) and the share that succeeded; the k models are unloaded before the next row.", e.Threads, e.describeModel())
	s.Table = table([]string{"concurrent models", "total time", "memory peak", "success rate"}, rows)
	s.Notes = "Each model gets its own llama.cpp context (KV cache for its slots); the weights of the same file are mmapped, so the page cache is shared."
	return s, nil
}

// singleRun is one request's measurement, through the router and direct.
type singleRun struct {
	label             string
	viaRouter, direct []Result
}

// SingleInference: 50 prompt tokens, 200 generated, per quantization,
// through the router and straight to the worker.
func SingleInference(e *Env) (Section, error) {
	s := Section{Title: "Single Model Inference", Status: Measured}
	gen := pick(e, 32, 200)
	reps := pick(e, 2, 3)
	var rows [][]string
	since := time.Now()
	type sent struct {
		id, label string
		client    time.Duration
	}
	var traced []sent
	for _, q := range append(append([]string{}, e.Models.Quantizations...), "ONNX F32") {
		name := "si-" + q
		var w *testkit.Proc
		if q == "ONNX F32" {
			name = "si-onnx"
			w = e.onnxWorker(name, e.Models.ONNX)
		} else {
			w = e.ggufWorker(name, e.Models.GGUF[q])
		}
		if err := e.waitModel(e.Router, name, 1); err != nil {
			return s, err
		}
		cl := e.engineClient(w)
		var via, dir []time.Duration
		var tps []float64
		for i := range reps + 1 {
			// Distinct prompts per path: a repeated one would be served
			// from the worker's prefix cache the second time.
			rq := TokenRequest(name, tokens(uint64(10+i), 50), gen)
			rq.RequestId = fmt.Sprintf("si-%s-%d", q, i)
			r := Stream(e.Ctx, e.Router.Client, rq)
			d := direct(e.Ctx, cl, name, tokens(uint64(500+i), 50), gen)
			if r.Err != nil || d.Err != nil {
				return s, fmt.Errorf("%s: %v %v", q, r.Err, d.Err)
			}
			if c := r.Usage.GetCachedPromptTokens() + d.Usage.GetCachedPromptTokens(); c > 1 {
				return s, fmt.Errorf("%s: %d prompt tokens came from the prefix cache; the comparison needs cold prompts", q, c)
			}
			if i == 0 {
				continue // warm-up
			}
			via, dir = append(via, r.E2E), append(dir, d.E2E)
			tps = append(tps, float64(r.Tokens)/r.E2E.Seconds())
			traced = append(traced, sent{rq.RequestId, q, r.E2E})
		}
		w.Stop(5 * time.Second)
		e.GenTPS[q] = median64(tps)
		rows = append(rows, []string{fmt.Sprintf("%s %s", e.Models.Config.Name, q), "50", strconv.Itoa(gen), ms(median(via)), f1(median64(tps)),
			ms(median(dir)), fmt.Sprintf("%.3f", float64(median(via))/float64(median(dir)))})
	}
	s.Method = fmt.Sprintf("Model: %s; one worker with %d thread(s), greedy, a 50-token prompt and %d generated tokens; median of %d after a warm-up. "+
		"*Through the router*: a gRPC client → router → worker (mTLS); *direct*: the same request to the worker itself; the ratio is the router's cost.",
		e.describeModel(), e.Threads, gen, reps)
	s.Table = table([]string{"model", "prompt tokens", "response tokens", "latency (router)", "tokens/sec", "latency (direct)", "router / direct"}, rows)
	// The same requests read back from Jaeger: where the time went, hop by
	// hop, and whether the traces agree with the client's own clock.
	ids := make([]string, len(traced))
	for i, t := range traced {
		ids[i] = t.id
	}
	got, err := e.collect(ids, since)
	if err != nil {
		return s, err
	}
	const tolerance = 50 * time.Millisecond // as the mesh test's
	var hrows [][]string
	var worst time.Duration
	byLabel := map[string][]traces.Hops{}
	var order []string
	for _, t := range traced {
		h, ok := got.Hops[t.id]
		if !ok {
			return s, fmt.Errorf("request %s: no complete trace (missing %d, incomplete %d)", t.id, len(got.Missing), len(got.Incomplete))
		}
		// The client's time covers the router's span plus the client's
		// own hop to the router and back.
		worst = max(worst, (t.client - h.Total).Abs())
		if len(byLabel[t.label]) == 0 {
			order = append(order, t.label)
		}
		byLabel[t.label] = append(byLabel[t.label], h)
	}
	if worst > tolerance {
		return s, fmt.Errorf("client and trace disagree by %v (tolerance %v)", worst, tolerance)
	}
	for _, q := range order {
		var total, worker, own, prefill, decode []time.Duration
		for _, h := range byLabel[q] {
			total, worker, own = append(total, h.Total), append(worker, h.Worker), append(own, h.Total-h.Worker)
			prefill, decode = append(prefill, h.Prefill), append(decode, h.Decode)
		}
		hrows = append(hrows, []string{q, ms(median(total)), ms(median(worker)), ms(median(prefill)), ms(median(decode)), ms(median(own))})
	}
	s.Table += fmt.Sprintf("\nThe router-path requests as their traces tell it (medians; spans expected %d, received %d; the client's end-to-end "+
		"time and the router span agree within %v, worst %v):\n\n", got.ExpectedSpans, got.ReceivedSpans, tolerance, worst.Round(10*time.Microsecond)) +
		table([]string{"model", "router span", "worker span", "worker: prefill", "worker: decode", "router's own (router − worker span)"}, hrows)
	s.Notes = "The document's rows are hosted APIs and 7B–13B models on a V100; none can be run here (no network, no weights, no GPU in CI). " +
		"provider-proxy's own overhead in front of a hosted API is measured by `make bench` (proxybench)."
	return s, nil
}

// median64 is the median of v.
func median64(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

// PromptLength: TTFT and latency against prompt length.
func PromptLength(e *Env) (Section, error) {
	s := Section{Title: "Prompt Length Impact", Status: Measured}
	w := e.ggufWorker("pl", e.Models.GGUF["Q4_0"], "-prefill-chunk", "512")
	defer w.Stop(5 * time.Second)
	if err := e.waitModel(e.Router, "pl", 1); err != nil {
		return s, err
	}
	gen := 32
	var rows [][]string
	var ttftXY, latXY plotter.XYs
	lengths := []int{10, 50, 100, 500, 1000}
	rss0, _ := harness.ProcRSS(w.Cmd.Process.Pid)
	lastRSS := rss0
	for _, n := range lengths {
		var ttft, lat []time.Duration
		var cached int
		for i := range pick(e, 1, 3) {
			r := Stream(e.Ctx, e.Router.Client, TokenRequest("pl", tokens(uint64(1000*n+i), n), gen))
			if r.Err != nil {
				return s, r.Err
			}
			ttft, lat = append(ttft, r.TTFT), append(lat, r.E2E)
			cached += int(r.Usage.GetCachedPromptTokens())
		}
		rss, _ := harness.ProcRSS(w.Cmd.Process.Pid)
		lastRSS = rss
		ttftXY = append(ttftXY, plotter.XY{X: float64(n), Y: float64(median(ttft)) / 1e6})
		latXY = append(latXY, plotter.XY{X: float64(n), Y: float64(median(lat)) / 1e6})
		rows = append(rows, []string{fmt.Sprintf("%d tokens", n), ms(median(ttft)), ms(median(lat)), fmt.Sprintf("%+.1f MiB", rss-rss0), strconv.Itoa(cached)})
	}
	if err := LinePlot(filepath.Join(e.Dir, "prompt-length.png"), "Prompt length: TTFT and latency (Q4_0, via router)", "prompt tokens", "ms", true,
		Series{"time to first token", ttftXY}, Series{fmt.Sprintf("end to end (%d tokens)", gen), latXY}); err != nil {
		return s, err
	}
	s.Plots = []string{"prompt-length.png"}
	s.Method = fmt.Sprintf("Model: %s, in Q4_0; one engine-gguf worker (%d thread(s), prefill in chunks of 512), through the router; distinct random "+
		"prompts (no prefix reuse: the cached-tokens column says so) and %d generated tokens; median of %d. Memory is the worker's RSS "+
		"against before the first row.", e.describeModel(), e.Threads, gen, pick(e, 1, 3))
	s.Table = table([]string{"prompt length", "time to first token", "latency", "worker memory", "prompt tokens reused"}, rows)
	s.Notes = fmt.Sprintf("The worker's RSS grew %.1f MiB from the first row to the last: engine-gguf allocates each slot's KV cache when "+
		"the model loads, so a long prompt fills memory already reserved; the document's +50 MB … +1.6 GB is a per-request allocation "+
		"this design does not make.", lastRSS-rss0)
	return s, nil
}

// TokenStreaming: first token, rate, setup and chunk size per model.
func TokenStreaming(e *Env) (Section, error) {
	s := Section{Title: "Token Streaming Performance", Status: Measured}
	gen := pick(e, 32, 128)
	var rows [][]string
	type target struct {
		label, model string
		start        func() *testkit.Proc
	}
	targets := []target{
		{e.Models.Config.Name + " Q4_0 (engine-gguf)", "ts-q4", func() *testkit.Proc { return e.ggufWorker("ts-q4", e.Models.GGUF["Q4_0"]) }},
		{e.Models.Config.Name + " F16 (engine-gguf)", "ts-f16", func() *testkit.Proc { return e.ggufWorker("ts-f16", e.Models.GGUF["F16"]) }},
		{e.Models.Config.Name + " F32 (engine-onnx)", "ts-onnx", func() *testkit.Proc {
			return e.onnxWorker("ts-onnx", e.Models.ONNX)
		}},
		{"sim (hosted-API-like: 180 ms TTFT, 45 tok/s)", "ts-sim", func() *testkit.Proc {
			return e.M.Sim("-models", "ts-sim:output_tokens=1000", "-tps", "45", "-ttft", "180ms")
		}},
	}
	chunks := map[string]bool{}
	for _, t := range targets {
		var ttft, setup []time.Duration
		var rate []float64
		var deltas, toks int
		err := func() error {
			w := t.start()
			defer w.Stop(5 * time.Second)
			if err := e.waitModel(e.Router, t.model, 1); err != nil {
				return err
			}
			for i := range pick(e, 2, 4) {
				req := TokenRequest(t.model, tokens(uint64(i), 16), gen)
				if t.model == "ts-sim" { // the simulator's vocabulary is small: text
					req = TextRequest(t.model, fmt.Sprintf("prompt %d", i), gen)
				}
				r := Stream(e.Ctx, e.Router.Client, req)
				if r.Err != nil {
					return fmt.Errorf("%s: %w", t.label, r.Err)
				}
				if i == 0 {
					continue
				}
				ttft, setup, rate = append(ttft, r.TTFT), append(setup, r.Setup), append(rate, decodeRate(r))
				deltas, toks = deltas+r.Deltas, toks+r.Tokens
			}
			return nil
		}()
		if err != nil {
			return s, err
		}
		chunk := fmt.Sprintf("%.2f tokens", float64(toks)/float64(deltas))
		chunks[chunk] = true
		rows = append(rows, []string{t.label, ms(median(ttft)), f1(median64(rate)), ms(median(setup)), chunk})
	}
	s.Method = fmt.Sprintf("Streams of %d tokens from a 16-token prompt through the router (gRPC), median of the runs after a warm-up. "+
		"*First token*: client send to first token; *tokens/sec*: after the first; *stream setup*: client send to the start event (routed and "+
		"accepted by the worker); *chunk size*: tokens per delta message.", gen)
	s.Table = table([]string{"model", "first token", "tokens/sec", "stream setup", "chunk size"}, rows)
	if len(chunks) == 1 && chunks["1.00 tokens"] {
		s.Notes = "Every token arrived as its own delta (chunk size 1.00 in every row): the router relays the worker's frames as they come. "
	}
	s.Notes += "The sim row stands in for a hosted API at the document's GPT-3.5 figures; provider-proxy against a real-wire-format upstream is in `make bench` (proxybench)."
	return s, nil
}

// ConcurrentStreaming: 1..50 concurrent streams on one worker.
func ConcurrentStreaming(e *Env) (Section, error) {
	s := Section{Title: "Concurrent Streaming", Status: Measured}
	w := e.ggufWorker("cs", e.Models.GGUF["Q4_0"], "-parallel", "16", "-queue", "64")
	defer w.Stop(5 * time.Second)
	if err := e.waitModel(e.Router, "cs", 1); err != nil {
		return s, err
	}
	gen := pick(e, 16, 64)
	levels := []int{1, 5, 10, 20, 50}
	if e.Quick {
		levels = []int{1, 5}
	}
	var rows [][]string
	var p50, p99 plotter.XYs
	failedAll, sent := 0, 0
	for _, n := range levels {
		sent += n
		var wg sync.WaitGroup
		res := make([]Result, n)
		t0 := time.Now()
		for i := range n {
			wg.Go(func() {
				res[i] = Stream(e.Ctx, e.Router.Client, TokenRequest("cs", tokens(uint64(n*1000+i), 32), gen))
			})
		}
		wg.Wait()
		wall := time.Since(t0)
		var ttft []time.Duration
		var rates []float64
		errs, total := 0, 0
		for _, r := range res {
			if r.Err != nil {
				errs++
				continue
			}
			ttft, rates, total = append(ttft, r.TTFT), append(rates, decodeRate(r)), total+r.Tokens
		}
		_, peak := harness.ProcRSS(w.Cmd.Process.Pid)
		failedAll += errs
		p50 = append(p50, plotter.XY{X: float64(n), Y: percentile(ttft, 0.5)})
		p99 = append(p99, plotter.XY{X: float64(n), Y: percentile(ttft, 0.99)})
		rows = append(rows, []string{fmt.Sprintf("%d stream(s)", n), fmt.Sprintf("%.1f tokens/sec", median64(rates)), f0(float64(total) / wall.Seconds()),
			fmt.Sprintf("%.1f / %.1f ms", percentile(ttft, 0.5), percentile(ttft, 0.99)), fmt.Sprintf("%.0f MiB", peak), fmt.Sprintf("%.1f%%", 100*float64(errs)/float64(n))})
	}
	if err := LinePlot(filepath.Join(e.Dir, "ttft-vs-concurrency.png"), "TTFT against concurrent streams (Q4_0, one worker, 16 slots)", "concurrent streams", "TTFT (ms)", false,
		Series{"p50", p50}, Series{"p99", p99}); err != nil {
		return s, err
	}
	s.Plots = []string{"ttft-vs-concurrency.png"}
	s.Method = fmt.Sprintf("Model: %s, in Q4_0, on one engine-gguf worker (%d thread(s), 16 continuous-batching slots, queue 64) behind the router; "+
		"n streams of %d tokens (32-token prompts) started together. *Throughput* is the median stream's own rate (the document's column); "+
		"*aggregate* is all tokens over the wall time; memory is the worker's peak RSS so far.", e.describeModel(), e.Threads, gen)
	s.Table = table([]string{"concurrent streams", "throughput per stream", "aggregate tokens/s", "TTFT p50 / p99", "peak memory", "error rate"}, rows)
	s.Notes = fmt.Sprintf("Past 16 streams requests wait in the worker's queue for a slot, which shows in TTFT; %d of the %d requests failed.", failedAll, sent)
	return s, nil
}

// ModelFormat: GGUF against ONNX on the same weights.
func ModelFormat(e *Env) (Section, error) {
	s := Section{Title: "Model Format Performance", Status: Measured}
	rows := [][]string{}
	for _, f := range []struct{ kind, model, compat string }{
		{"GGUF F32", "mf-gguf", "llama.cpp architectures (llama, qwen, mistral, …); F32/F16/Q8_0/Q4_0 …; CPU and CUDA"},
		{"ONNX F32", "mf-onnx", "decoder graphs with past_key_values (an export per model); CPU (CUDA provider libraries exist)"},
	} {
		var w *testkit.Proc
		if f.kind == "ONNX F32" {
			w = e.onnxWorker(f.model, e.Models.ONNX)
		} else {
			w = e.ggufWorker(f.model, e.Models.F32)
		}
		if err := e.waitModel(e.Router, f.model, 1); err != nil {
			return s, err
		}
		var rates []float64
		gen := pick(e, 32, 128)
		for i := range pick(e, 2, 4) {
			r := Stream(e.Ctx, e.Router.Client, TokenRequest(f.model, tokens(uint64(i), 32), gen))
			if r.Err != nil {
				return s, r.Err
			}
			if i > 0 {
				rates = append(rates, decodeRate(r))
			}
		}
		_, peak := harness.ProcRSS(w.Cmd.Process.Pid)
		w.Stop(5 * time.Second)
		load := "— (table 3 not run)"
		if v, ok := e.LoadMS[f.kind]; ok {
			load = fmt.Sprintf("%.0f ms", v)
		}
		rows = append(rows, []string{f.kind, load, fmt.Sprintf("%.1f tokens/s", median64(rates)), fmt.Sprintf("%.0f MiB peak (file %.0f MiB)", peak, FileMiB(map[string]string{"GGUF F32": e.Models.F32, "ONNX F32": e.Models.ONNX}[f.kind])), f.compat})
	}
	s.Method = fmt.Sprintf("The same weights (%s, F32) exported to both formats, one worker each with %d thread(s), single-stream decode "+
		"through the router; load time from Format-Specific Loading.", e.describeModel(), e.Threads)
	s.Table = table([]string{"format", "load time", "inference speed", "memory", "compatibility"}, rows)
	s.Notes = "The document grades formats in words; here they are numbers on one model. Both engines give the same greedy tokens for the same " +
		"weights (checked by `make test`'s cross-engine test). Safetensors and HuggingFace checkpoints have no engine in this mesh."
	return s, nil
}

// Framework: the router against calling the engine directly and llama.cpp's
// own llama-bench on the same libraries.
func Framework(e *Env) (Section, error) {
	s := Section{Title: "Framework Comparison", Status: Partly}
	path := e.Models.GGUF["Q4_0"]
	gen := pick(e, 32, 128)
	t0 := time.Now()
	w := e.ggufWorker("fw", path)
	defer w.Stop(5 * time.Second)
	if err := e.waitModel(e.Router, "fw", 1); err != nil {
		return s, err
	}
	setup := time.Since(t0)
	cl := e.engineClient(w)
	var via, dir []float64
	var viaLat, dirLat []time.Duration
	for i := range pick(e, 2, 4) {
		r := Stream(e.Ctx, e.Router.Client, TokenRequest("fw", tokens(uint64(i), 32), gen))
		d := direct(e.Ctx, cl, "fw", tokens(uint64(700+i), 32), gen)
		if r.Err != nil || d.Err != nil {
			return s, fmt.Errorf("%v %v", r.Err, d.Err)
		}
		if i > 0 {
			via, dir = append(via, decodeRate(r)), append(dir, decodeRate(d))
			viaLat, dirLat = append(viaLat, r.E2E), append(dirLat, d.E2E)
		}
	}
	routerRSS, _ := e.Router.RSS()
	_, workerPeak := harness.ProcRSS(w.Cmd.Process.Pid)
	rows := [][]string{
		{"LLM Runner Router (client → router → engine-gguf)", ms(setup) + " (worker start + discovery)", ms(median(viaLat)), f1(median64(via)),
			fmt.Sprintf("router %.0f MiB + worker %.0f MiB", routerRSS, workerPeak), "routing, failover, quotas, traces, OpenAI/Anthropic APIs"},
		{"engine-gguf called directly", "—", ms(median(dirLat)), f1(median64(dir)), fmt.Sprintf("%.0f MiB", workerPeak), "one worker's models"},
	}
	if bench := filepath.Join(os.Getenv("LLMROUTER_LLAMA"), "lib", "llama-bench"); fileExists(bench) {
		out, err := exec.Command(bench, "-m", path, "-p", "0", "-n", strconv.Itoa(gen), "-t", strconv.Itoa(e.Threads), "-r", "2", "-o", "json").Output()
		var res []struct {
			AvgTS float64 `json:"avg_ts"`
		}
		if err == nil {
			err = json.Unmarshal(out, &res)
		}
		if err == nil && len(res) > 0 {
			rows = append(rows, []string{"llama.cpp llama-bench (same libraries)", "—", "—", f1(res[0].AvgTS), "—", "the reference decode speed"})
		} else {
			return s, fmt.Errorf("llama-bench: %v (%d results)", err, len(res))
		}
	} else {
		s.Notes = "llama-bench is not installed (`tools/install.sh llama-bench`, run by `make bench`), so its row is missing. "
	}
	s.Method = fmt.Sprintf("Model: %s, in Q4_0, %d thread(s), %d tokens from a 32-token prompt: the mesh, the engine alone and llama.cpp's own benchmark tool on the same library build.",
		e.describeModel(), e.Threads, gen)
	s.Table = table([]string{"framework", "setup time", "inference time", "decode tokens/s", "memory", "features"}, rows)
	s.Notes += "LangChain, Transformers and Ollama cannot be installed here; llama-server (the fair peer for serving) is not built by the " +
		"project's tools yet, so serving throughput against it is not in this table; `make bench` (ggufbench) compares engine-gguf with " +
		"llama-bench and llama-batched-bench at 1–64 streams."
	return s, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
