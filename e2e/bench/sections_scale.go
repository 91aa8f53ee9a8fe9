package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// CacheOptimization: engine-gguf's KV prefix reuse as routing sees it:
// requests sharing long system prompts over two workers, routed blind
// (round-robin) and by prefix affinity (cache-affinity).
func CacheOptimization(e *Env) (Section, error) {
	s := Section{Title: "Cache Optimization", Status: Partly}
	var ws []*testkit.Proc
	for range 2 {
		ws = append(ws, e.ggufWorker("cache", e.Models.GGUF["Q4_0"], "-parallel", "4"))
	}
	defer func() {
		for _, w := range ws {
			w.Stop(5 * time.Second)
		}
	}()
	if err := e.waitModel(e.Router, "cache", 2); err != nil {
		return s, err
	}
	// Three prefixes (odd, so round-robin over two workers cannot line up
	// with them) in a seeded random order; each row its own prefixes, so no
	// row runs on caches another warmed.
	prefixes := 3
	n := pick(e, 12, 60)
	var rows [][]string
	var coldTTFT time.Duration
	for row, strat := range []string{"none", "round-robin", "cache-affinity"} {
		var ttft []time.Duration
		cached, prompt := 0, 0
		order := rand.New(rand.NewPCG(uint64(row), 3))
		for i := range n {
			p := append(tokens(uint64(100*row+order.IntN(prefixes)), 384), tokens(uint64(10000*row+i), 16)...)
			if strat == "none" {
				p = tokens(uint64(20000+i), 400) // nothing shared: every prompt computed
			}
			req := TokenRequest("cache", p, 4)
			if strat != "none" {
				req.Routing = &routerv1.RoutingOptions{Strategy: strat}
			} else {
				req.Routing = &routerv1.RoutingOptions{Strategy: "round-robin"}
			}
			r := Stream(e.Ctx, e.Router.Client, req)
			if r.Err != nil {
				return s, r.Err
			}
			ttft = append(ttft, r.TTFT)
			cached += int(r.Usage.GetCachedPromptTokens())
			prompt += int(r.Usage.GetPromptTokens())
		}
		label := map[string]string{"none": "no shared prefix (every prompt distinct)", "round-robin": "shared prefixes, round-robin over 2 workers",
			"cache-affinity": "shared prefixes, cache-affinity routing"}[strat]
		m := median(ttft)
		if strat == "none" {
			coldTTFT = m
		}
		rows = append(rows, []string{label, fmt.Sprintf("%.0f%%", 100*float64(cached)/float64(prompt)), ms(m), ms(coldTTFT - m)})
	}
	s.Method = fmt.Sprintf("Two engine-gguf workers (%s, Q4_0, 4 slots each); %d requests of 400 prompt tokens, each one of %d 384-token "+
		"system prompts (in a seeded random order, new ones for each row) plus a distinct 16-token question, 4 tokens generated, sequentially. *Hit rate* is prompt tokens whose KV cache was "+
		"reused (the workers' `cached_prompt_tokens`) over all prompt tokens; *latency reduction* is the median TTFT saved against the row "+
		"with nothing shared.", e.describeModel(), n, prefixes)
	prefixMethod := s.Method
	respTable, respMethod, err := responseCacheTable(e)
	if err != nil {
		return s, err
	}
	s.Status = Measured
	s.Method = "**Response cache** (the document's rows). " + respMethod + "\n\n**Worker KV prefix reuse** (the second table). " + prefixMethod
	s.Table = respTable + "\n" + table([]string{"KV prefix reuse", "hit rate", "TTFT p50", "latency reduction"}, rows)
	s.Notes = "The response cache replays stored streams (exact: the same normalised request; semantic: a close last user turn with the same " +
		"system prompt, turns and tools, refused by the guard on a negation, number or name mismatch); its accuracy on the labelled set is " +
		"the *Semantic cache accuracy* table. The KV rows are each worker's prefix reuse (no memory of its own — slots are preallocated), " +
		"which prefix-affinity routing turns into hits."
	return s, nil
}

// BaseMemory: the router's memory idle, per open stream and per model.
func BaseMemory(e *Env) (Section, error) {
	s := Section{Title: "Base Memory Consumption", Status: Measured}
	w := e.M.Sim("-models", "bm:ctx=4096;output_tokens=2000", "-tps", "2", "-ttft", "1ms", "-max-concurrency", "2000", "-queue", "10")
	defer w.Stop(5 * time.Second)
	r := e.M.Router()
	defer r.Proc.Stop(5 * time.Second)
	if err := e.waitModel(r, "bm", 1); err != nil {
		return s, err
	}
	for range 20 {
		if res := Stream(e.Ctx, r.Client, TextRequest("bm", "x", 1)); res.Err != nil {
			return s, res.Err
		}
	}
	idle, idlePeak := r.RSS()
	var rows [][]string
	rows = append(rows, []string{"router, idle (one worker, 20 requests served)", fmt.Sprintf("%.1f MiB", idle), fmt.Sprintf("%.1f MiB", idlePeak), "—"})
	ctx, cancel := context.WithCancel(e.Ctx)
	var wg sync.WaitGroup
	streams := pick(e, 50, 1000)
	started := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			s, err := r.Client.Generate(ctx, TextRequest("bm", fmt.Sprint(i), 2000))
			if err == nil {
				_, err = s.Recv()
			}
			started <- err
			for err == nil {
				_, err = s.Recv()
			}
		})
	}
	for range streams {
		var err error
		select {
		case err = <-started:
		case <-time.After(30 * time.Second):
			err = fmt.Errorf("open streams did not start within 30 s")
		}
		if err != nil {
			cancel()
			wg.Wait()
			return s, err
		}
	}
	time.Sleep(500 * time.Millisecond)
	open, openPeak := r.RSS()
	cancel()
	wg.Wait()
	rows = append(rows, []string{fmt.Sprintf("router with %d open streams", streams), fmt.Sprintf("%.1f MiB", open), fmt.Sprintf("%.1f MiB", openPeak),
		fmt.Sprintf("%.1f KiB/stream", (open-idle)*1024/float64(streams))})
	// The registry: one worker advertising many models (Consul's service
	// metadata bounds how many one worker may advertise), against a fresh
	// router's own baseline.
	var models []string
	nm := pick(e, 20, 50)
	for i := range nm {
		models = append(models, fmt.Sprintf("reg-%d:output_tokens=8", i))
	}
	r2 := e.M.Router()
	if err := e.waitModel(r2, "bm", 1); err != nil {
		return s, err
	}
	for range 20 {
		if res := Stream(e.Ctx, r2.Client, TextRequest("bm", "x", 1)); res.Err != nil {
			return s, res.Err
		}
	}
	base2, _ := r2.RSS() // before the models exist
	w2 := e.M.Sim("-models", strings.Join(models, ","), "-tps", "1000")
	defer w2.Stop(5 * time.Second)
	if err := e.waitModel(r2, fmt.Sprintf("reg-%d", nm-1), 1); err != nil {
		return s, err
	}
	for i := range nm {
		if res := Stream(e.Ctx, r2.Client, TextRequest(fmt.Sprintf("reg-%d", i), "x", 2)); res.Err != nil {
			return s, res.Err
		}
	}
	reg, regPeak := r2.RSS()
	rows = append(rows, []string{fmt.Sprintf("router knowing %d more models (each routed once)", nm), fmt.Sprintf("%.1f MiB", reg), fmt.Sprintf("%.1f MiB", regPeak),
		fmt.Sprintf("%.1f KiB/model (from %.1f MiB)", (reg-base2)*1024/float64(nm), base2)})
	s.Method = "A fresh router process (" + runtime.Version() + ", GOGC default) measured by its own RSS and peak RSS: idle after 20 requests, " +
		"then with many streams held open at once (a sim worker streaming 2 tokens/s each); and a second fresh router before and after " +
		"learning many more models from discovery and routing each once."
	s.Table = table([]string{"component", "memory usage", "peak usage", "growth rate"}, rows)
	s.Notes = "The router keeps no model weights and no per-request buffers beyond a stream's frames; growth over hours is checked by " +
		"`make soak` (docs/soak.md), not here. The cache-system row of the document has no counterpart until the response cache exists."
	return s, nil
}

// MemoryOptimizations: what unloading, quantization and a memory limit do.
func MemoryOptimizations(e *Env) (Section, error) {
	s := Section{Title: "Memory Optimization Results", Status: Partly}
	var rows [][]string
	// Model unloading: a worker with 3 models loaded, then 2 unloaded.
	path := e.Models.GGUF["F16"]
	w := e.ggufWorker("mo-0", path, "-load-dir", filepath.Dir(path), "-parallel", "4")
	defer w.Stop(5 * time.Second)
	admin := e.adminClient(w)
	for i := 1; i <= 2; i++ {
		if _, err := admin.LoadModel(e.Ctx, &enginev1.LoadModelRequest{Model: fmt.Sprintf("mo-%d", i), Source: path}); err != nil {
			return s, err
		}
	}
	cl := e.engineClient(w)
	for i := range 3 {
		if r := direct(e.Ctx, cl, fmt.Sprintf("mo-%d", i), tokens(1, 16), 4); r.Err != nil {
			return s, r.Err
		}
	}
	before, _ := harness.ProcRSS(w.Cmd.Process.Pid)
	for i := 1; i <= 2; i++ {
		if _, err := admin.UnloadModel(e.Ctx, &enginev1.UnloadModelRequest{Model: fmt.Sprintf("mo-%d", i)}); err != nil {
			return s, err
		}
	}
	time.Sleep(200 * time.Millisecond)
	after, _ := harness.ProcRSS(w.Cmd.Process.Pid)
	rows = append(rows, []string{"model unloading (3 F16 models → 1, `UnloadModel`)", fmt.Sprintf("%.0f MiB", before), fmt.Sprintf("%.0f MiB", after), reduction(before, after)})
	if f16, q4 := e.PeakMiB["GGUF F16"], e.PeakMiB["GGUF Q4_0"]; f16 > 0 && q4 > 0 {
		rows = append(rows, []string{"quantization (F16 → Q4_0, worker peak)", fmt.Sprintf("%.0f MiB", f16), fmt.Sprintf("%.0f MiB", q4), reduction(f16, q4)})
	}
	s.Method = fmt.Sprintf("Worker RSS for %s: one engine-gguf worker with three models loaded (each its own context and 4 slots' KV cache) "+
		"before and after two `UnloadModel` calls; worker peak memory by quantization from Format-Specific Loading.", e.describeModel())
	s.Table = table([]string{"optimization", "before", "after", "improvement"}, rows)
	s.Notes = "Keep-alive unloading (`-keep-alive`) and the memory budget that evicts the least recently used model do the same unloading " +
		"automatically. *Cache compression* and *stream pooling* have no counterpart here (no response cache; streams are relayed as frames, " +
		"not buffered). *GC tuning*: the router's pods run with GOMEMLIMIT from their limit; its effect is not measured in this table."
	return s, nil
}

func reduction(before, after float64) string {
	if before <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%% reduction", 100*(before-after)/before)
}

// MemoryImpact: memory saved against speed lost, per technique measured.
func MemoryImpact(e *Env) (Section, error) {
	s := Section{Title: "Memory Optimization Impact", Status: Partly}
	if err := LazyLoad(e); err != nil {
		return s, err
	}
	var rows [][]string
	f16, f16tps := e.PeakMiB["GGUF F16"], e.GenTPS["F16"]
	for _, q := range []string{"Q8_0", "Q4_0"} {
		m, tps := e.PeakMiB["GGUF "+q], e.GenTPS[q]
		if f16 == 0 || m == 0 || f16tps == 0 || tps == 0 {
			continue
		}
		rows = append(rows, []string{"model quantization (F16 → " + q + ")", fmt.Sprintf("%.0f%%", 100*(f16-m)/f16), fmt.Sprintf("%+.0f%% inference speed", 100*(tps-f16tps)/f16tps), "low (llama.cpp's quantizer: `gguf-quantize`)"})
	}
	if lazy, eager := e.LoadMS["lazy"], e.LoadMS["GGUF Q4_0"]; lazy > 0 {
		rows = append(rows, []string{"dynamic loading (`-lazy`: load on first use)", "all of a model until first used", fmt.Sprintf("start %.0f ms instead of %.0f ms; first request +%.0f ms", lazy, eager, e.LoadMS["lazy-first"]), "built in"})
	}
	s.Method = "Derived from the tables above in the same run: worker peak memory (Format-Specific Loading) and single-stream tokens/s " +
		"through the router (Single Model Inference) per quantization of " + e.describeModel() + "."
	s.Table = table([]string{"optimization", "memory reduction", "performance impact", "implementation effort"}, rows)
	s.Notes = "On a model this small the runtime and KV cache weigh as much as the weights, so quantization saves less than on a 7B model; " +
		"memory mapping is always on in engine-gguf (no off switch to compare), and GC settings are not measured."
	return s, nil
}

// LazyLoad measures -lazy: worker start and first request.
func LazyLoad(e *Env) error {
	t0 := time.Now()
	w := e.ggufWorker("lazy", e.Models.GGUF["Q4_0"], "-lazy")
	e.LoadMS["lazy"] = float64(time.Since(t0)) / 1e6
	cl := e.engineClient(w)
	t1 := time.Now()
	r := direct(e.Ctx, cl, "lazy", tokens(1, 8), 1)
	e.LoadMS["lazy-first"] = float64(time.Since(t1)) / 1e6
	w.Stop(5 * time.Second)
	return r.Err
}

// UserLoad: simulated users with think time against a pool of sim workers.
func UserLoad(e *Env) (Section, error) {
	s := Section{Title: "User Load Testing", Status: Measured}
	const slots, tokens = 16, 32
	var ws []*testkit.Proc
	for range 4 {
		ws = append(ws, e.M.Sim("-models", "ul:output_tokens=256", "-tps", "100", "-ttft", "50ms", "-max-concurrency", strconv.Itoa(slots), "-queue", "32"))
	}
	defer func() {
		for _, w := range ws {
			w.Stop(5 * time.Second)
		}
	}()
	r := e.M.Router("-max-concurrent", "128", "-max-queued", "256")
	defer r.Proc.Stop(5 * time.Second)
	if err := e.waitModel(r, "ul", 4); err != nil {
		return s, err
	}
	think := 2 * time.Second
	users := []int{10, 50, 100, 500, 1000}
	if e.Quick {
		users = []int{10, 50}
	}
	var rows [][]string
	codesSeen := map[string]int{}
	for _, n := range users {
		st := Load{Routers: []routerv1.RouterServiceClient{r.Client}, Clients: n, Seed: 12,
			Request: func(i, j int) *routerv1.GenerateRequest {
				return TextRequest("ul", fmt.Sprintf("user %d turn %d", i, j), tokens)
			},
			Think:   func(g *rand.Rand) time.Duration { return time.Duration(g.ExpFloat64() * float64(think)) },
			Stagger: think, Warmup: pick(e, time.Second, 4*time.Second), Duration: pick(e, 2*time.Second, 15*time.Second)}.Run()
		lat := st.E2Es()
		total := len(st.Results) + st.Errors
		errRate := 0.0
		if total > 0 {
			errRate = 100 * float64(st.Errors) / float64(total)
		}
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		avg := time.Duration(0)
		if len(lat) > 0 {
			avg = sum / time.Duration(len(lat))
		}
		for code, k := range st.ErrorCodes {
			codesSeen[code.String()] += k
		}
		rows = append(rows, []string{strconv.Itoa(n), ms(avg), fmt.Sprintf("%.0f ms", percentile(lat, 0.5)), fmt.Sprintf("%.0f ms", percentile(lat, 0.95)), fmt.Sprintf("%.0f ms", percentile(lat, 0.99)),
			fmt.Sprintf("%.1f req/sec", st.PerSecond(len(st.Results))), fmt.Sprintf("%.1f%%", errRate), strconv.Itoa(st.Unfinished)})
	}
	capacity := float64(4*slots) / (0.05 + float64(tokens-1)/100)
	s.Method = fmt.Sprintf("N simulated users, each sending a %d-token request through one router and thinking an exponentially distributed "+
		"%v on average before the next (seeded); 4 sim workers of %d slots at 100 tokens/s (a request takes 360 ms idle; the pool's capacity "+
		"is %.0f req/s), each with a 32-request queue; the router admits 128 at once (below the pool's 64 slots + 128 queue places) and queues 256 more (`-max-concurrent`, `-max-queued`). "+
		"Latency is end to end as the users see it, over the requests that ended in the window; the last column counts those still "+
		"waiting when it closed (neither answered nor failed, so the percentiles leave them out).", tokens, think, slots, capacity)
	s.Table = table([]string{"concurrent users", "avg response time", "50th percentile", "95th percentile", "99th percentile", "throughput", "error rate", "in flight at the end"}, rows)
	s.Notes = fmt.Sprintf("Offered load is about users / (%v + 0.36 s) requests a second; past the pool's %.0f req/s requests wait in the "+
		"router's and the workers' queues, and once those are full they are refused. Errors by gRPC code over all rows: %s.", think, capacity, codeList(codesSeen))
	return s, nil
}

// HorizontalScaling: the sim sweep (1–8 workers, two routers at 8),
// engine-gguf at 1 and 2 workers, and a heterogeneous pool per strategy.
func HorizontalScaling(e *Env) (Section, error) {
	s := Section{Title: "Horizontal Scaling Performance", Status: Partly}
	cfg := ScalingConfig{Workers: harness.Counts{1, 2, 4, 8}, Slots: 8, TPS: 100, TTFT: 50 * time.Millisecond, Tokens: 32,
		Duration: pick(e, 2*time.Second, 10*time.Second), Warmup: pick(e, 500*time.Millisecond, 2*time.Second)}
	if e.Quick {
		cfg.Workers = harness.Counts{1, 2}
	}
	rows, err := Scaling(e.M.Sub(), cfg) // its own discovery: only its workers
	if err != nil {
		return s, err
	}
	if err := ScalingPlot(rows, filepath.Join(e.Dir, "scaling-throughput.png"), filepath.Join(e.Dir, "scaling-efficiency.png")); err != nil {
		return s, err
	}
	s.Plots = []string{"scaling-throughput.png", "scaling-efficiency.png"}
	var b string
	b += "**Sim workers** (" + cfg.Describe() + ")\n\n" + ScalingTable(rows)

	// The same with short, fast requests: the router's work per second
	// rises until the machine (router, workers and clients on two cores)
	// is the limit.
	heavy := cfg
	heavy.TPS, heavy.TTFT, heavy.Tokens = 2000, time.Millisecond, 32
	hrowsHeavy, err := Scaling(e.M.Sub(), heavy)
	if err != nil {
		return s, fmt.Errorf("short requests: %w", err)
	}
	b += "\n**Short, fast requests** (" + heavy.Describe() + " Everything shares the two cores, so this is where the router's " +
		"cost shows.)\n\n" + ScalingTable(hrowsHeavy)

	// engine-gguf: 1 and 2 real workers, one thread each.
	g := e.M.Sub()
	defer g.Stop()
	gr := g.Router()
	var gw []*testkit.Proc
	var grows []ScalingRow
	const parallel, gtok = 4, 32
	for _, n := range []int{1, 2} {
		for len(gw) < n {
			gw = append(gw, g.GGUF("-model", "hs="+e.Models.GGUF["Q4_0"], "-threads", "1", "-threads-batch", "1", "-parallel", strconv.Itoa(parallel)))
		}
		row, err := Closed([]*Router{gr}, Pids(gw), parallel*n, 0, time.Second, pick(e, time.Second, 3*time.Second), pick(e, 3*time.Second, 15*time.Second),
			func(i, j int) *routerv1.GenerateRequest {
				return TokenRequest("hs", tokens(uint64(i*1000+j), 16), gtok)
			}, g.TraceClient())
		if err != nil {
			return s, fmt.Errorf("engine-gguf, %d workers: %w", n, err)
		}
		grows = append(grows, row)
	}
	Efficiency(grows)
	b += fmt.Sprintf("\n**engine-gguf workers** (%s in Q4_0, 1 thread each, %d slots, %d tokens from a 16-token prompt; closed loop of %d × N clients):\n\n",
		e.describeModel(), parallel, gtok, parallel) + ScalingTable(grows)

	// Heterogeneous pool: workers of different speeds, per strategy.
	g.Stop()
	h := e.M.Sub()
	defer h.Stop()
	speeds := []float64{25, 50, 100, 200}
	hc := cfg
	var hw []*testkit.Proc
	ideal := 0.0
	for _, tps := range speeds {
		hw = append(hw, h.Sim(hc.SimArgs(tps)...))
		ideal += float64(hc.Slots) / (hc.TTFT + time.Duration(float64(hc.Tokens-1)/tps*float64(time.Second))).Seconds()
	}
	var hrows [][]string
	ratio := map[string]float64{}
	for _, strat := range []string{"balanced", "least-loaded", "speed-priority", "adaptive", "round-robin"} {
		r := h.Router("-strategy", strat)
		row, err := Closed([]*Router{r}, Pids(hw), hc.Slots*len(speeds), ideal, time.Second, hc.Warmup, hc.Duration,
			func(i, j int) *routerv1.GenerateRequest {
				return TextRequest("sim", fmt.Sprintf("c%d r%d", i, j), hc.Tokens)
			}, h.TraceClient())
		r.Proc.Stop(5 * time.Second)
		if err != nil {
			return s, fmt.Errorf("heterogeneous, %s: %w", strat, err)
		}
		ratio[strat] = row.ReqPerSec / ideal
		hrows = append(hrows, []string{strat, f1(row.ReqPerSec), f1(ideal), f3(row.ReqPerSec / ideal), fmt.Sprintf("%.1f / %.1f", row.E2EP50, row.E2EP99), strconv.Itoa(row.Errors)})
	}
	b += fmt.Sprintf("\n**Heterogeneous pool**: 4 sim workers at 25, 50, 100 and 200 tokens/s per sequence (%d slots each), closed loop of %d clients; "+
		"the ideal keeps every slot busy (Σ slots / request time):\n\n", hc.Slots, hc.Slots*len(speeds)) +
		table([]string{"strategy", "req/s", "ideal req/s", "X / ideal", "end-to-end p50 / p99 ms", "errors"}, hrows)
	k8s, err := os.ReadFile(filepath.Join(e.Dir, "k8s-scaling.md"))
	if err == nil {
		s.Status = Measured
		stale := ""
		if m := regexp.MustCompile(`commit ([0-9a-f]+[^)]*)\)`).FindSubmatch(k8s); m == nil || string(m[1]) != Commit() {
			stale = fmt.Sprintf(" It was measured at another commit than this report's (%s).", Commit())
		}
		b += "\n**On Kubernetes** (from `docs/bench/k8s-scaling.md`, written by `make k8s-scaling`; not re-run by this report." + stale + ") " + string(k8s)
	}
	s.Table = b
	s.Method = "N workers behind the router, discovered through Consul, offered load rising with N (a closed loop that keeps every slot busy); " +
		"sim workers (fixed slots and token rate) because two cores cannot host eight real engines, so what scales is the mesh itself " +
		"(discovery, routing, relaying); two real engine-gguf workers, one thread each, on the two cores; and a pool of unequal workers."
	s.Notes = "E(N) = X(N) / (N · X(1)): the document reports 201.3 / (8 × 34.5) = 73% at 8 instances. Its *memory per instance* falling with N " +
		"is model sharding; here every worker holds its whole model (worker RSS column). " + fmt.Sprintf("On the heterogeneous pool "+
		"balanced reached %.3f of the ideal and round-robin, blind to speed, %.3f. ", ratio["balanced"], ratio["round-robin"])
	if len(k8s) == 0 {
		s.Notes += "The same sweep on the one-node Kubernetes cluster is `make k8s-scaling`; its table is missing here because docs/bench/k8s-scaling.md does not exist."
	}
	return s, nil
}

// Production: no production traffic exists here.
func Production(e *Env) (Section, error) {
	return Section{Title: "Production Metrics (30-day average)", Status: Unmeasured,
		Method: "Not measurable here: there is no production deployment or 30 days of traffic.",
		Notes: "What would measure it: the router's Prometheus metrics (`llmrouter_requests_total`, `llmrouter_request_duration_seconds`, " +
			"`llmrouter_attempts_total`, `llmrouter_first_token_seconds`) scraped from a deployment over 30 days, and uptime from the Consul/" +
			"Kubernetes health history. The closest synthetic figures are the User Load Testing rows above (15-second runs) and `make soak`."}, nil
}

// Usage: no user population exists here.
func Usage(e *Env) (Section, error) {
	return Section{Title: "Usage Patterns", Status: Unmeasured,
		Method: "Not measurable here: usage by time of day and popular models describe a user population, which a benchmark does not have.",
		Notes: "What would measure it: the router's per-model request counters (`llmrouter_requests_total{model=…}`) from a deployment, " +
			"aggregated by hour; the report would read them from Prometheus rather than generate them."}, nil
}

// codeList renders error counts by code, "none" when empty.
func codeList(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}
