package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/traces"
)

// ScalingConfig is one horizontal-scaling sweep over sim workers, each a
// fixed number of slots at a fixed token rate.
type ScalingConfig struct {
	Workers  harness.Counts
	Slots    int
	TPS      float64
	TTFT     time.Duration
	Tokens   int
	Duration time.Duration
	Warmup   time.Duration
	// Strategy is the routers' -strategy ("": their default).
	Strategy string
}

// ScalingRow is one measured configuration.
type ScalingRow struct {
	Workers, Routers, Clients int
	Requests, Errors          int
	ReqPerSec, TokPerSec      float64
	IdealReqPerSec            float64 // 0: no ideal known (real engines)
	TTFTP50, TTFTP99          float64 // ms
	E2EP50, E2EP99            float64 // ms
	RouterCores               float64 // CPU seconds per second, summed over routers
	RouterRSSMiB              float64 // per router
	WorkerRSSMiB              float64 // mean per worker
	Efficiency                float64 // X(N) / (N · X(1))
	LoadAvg                   string
	// From the traces of a sample of the window's requests (Traced of
	// them; 0: not traced): the router's own time (its span minus the
	// worker's) and the worker's queue wait, p50 and p99 in ms, and the
	// sample's spans expected and received.
	Traced                     int
	RouterOwnP50, RouterOwnP99 float64
	QueueP50, QueueP99         float64
	SpansExpected, SpansGot    int
}

// AddFlags registers the sweep's settings (defaults: 1, 2, 4, 8 workers of
// 8 slots at 100 tokens/s, 50 ms TTFT, 32 tokens a request, 10 s measured
// after 2 s).
func (c *ScalingConfig) AddFlags(fs *flag.FlagSet) {
	c.Workers = harness.Counts{1, 2, 4, 8}
	fs.Var(&c.Workers, "workers", "comma-separated worker counts, rising")
	fs.IntVar(&c.Slots, "slots", 8, "sequences each sim worker decodes at once")
	fs.Float64Var(&c.TPS, "tps", 100, "tokens per second per sequence")
	fs.DurationVar(&c.TTFT, "ttft", 50*time.Millisecond, "simulated time to first token")
	fs.IntVar(&c.Tokens, "tokens", 32, "tokens per request")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured time per configuration")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "load before measuring, per configuration")
	fs.StringVar(&c.Strategy, "strategy", "", "routing strategy of the routers (empty: their default)")
}

// per is how long one request takes on an idle sim worker.
func (c ScalingConfig) per() time.Duration {
	return c.TTFT + time.Duration(float64(c.Tokens-1)/c.TPS*float64(time.Second))
}

// SimArgs are a sim worker's flags for the sweep's settings.
func (c ScalingConfig) SimArgs(tps float64) []string {
	return []string{"-models", fmt.Sprintf("sim:output_tokens=%d", c.Tokens*4), "-tps", fmt.Sprint(tps), "-ttft", c.TTFT.String(),
		"-max-concurrency", strconv.Itoa(c.Slots), "-queue", strconv.Itoa(c.Slots * 4)}
}

// Scaling runs every worker count in rising order (adding workers as it
// goes) and, at the largest, again with a second router.
// Everything it starts is stopped when it returns.
func Scaling(m *Mesh, cfg ScalingConfig) ([]ScalingRow, error) {
	defer m.Stop()
	var extra []string
	if cfg.Strategy != "" {
		extra = []string{"-strategy", cfg.Strategy}
	}
	routers := []*Router{m.Router(extra...)}
	var workers []*testkit.Proc
	maxN := cfg.Workers[len(cfg.Workers)-1]
	var rows []ScalingRow
	for _, n := range cfg.Workers {
		for len(workers) < n {
			workers = append(workers, m.Sim(cfg.SimArgs(cfg.TPS)...))
		}
		sets := [][]*Router{routers[:1]}
		if n == maxN {
			routers = append(routers, m.Router(extra...))
			sets = append(sets, routers)
		}
		for _, rs := range sets {
			row, err := cfg.Measure(rs, Pids(workers), m.TraceClient())
			if err != nil {
				return rows, fmt.Errorf("%d workers, %d routers: %w", n, len(rs), err)
			}
			rows = append(rows, row)
			fmt.Fprintf(os.Stderr, "scaling: %d workers, %d routers: %.1f req/s, router %.2f cores\n", n, len(rs), row.ReqPerSec, row.RouterCores)
		}
	}
	Efficiency(rows)
	return rows, nil
}

// Measure keeps the sweep's sim workers (pids) full through routers: a
// closed loop of slots × workers clients, against the ideal of every slot
// busy; with tr, a sample of the requests is read back from the traces.
func (c ScalingConfig) Measure(routers []*Router, workers []int, tr *traces.Client) (ScalingRow, error) {
	clients := c.Slots * len(workers)
	return Closed(routers, workers, clients, float64(clients)/c.per().Seconds(), c.per(), c.Warmup, c.Duration, func(i, j int) *routerv1.GenerateRequest {
		return TextRequest("sim", fmt.Sprintf("client %d request %d", i, j), c.Tokens)
	}, tr)
}

// WriteSweep writes a sweep's Markdown (text) and raw numbers to
// dir/name.md and dir/name.json.
func WriteSweep(dir, name, text string, c ScalingConfig, rows []ScalingRow) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".md"), []byte(text), 0o644); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(struct {
		Config ScalingConfig
		Rows   []ScalingRow
	}{c, rows}, "", "  ")
	return os.WriteFile(filepath.Join(dir, name+".json"), b, 0o644)
}

// Efficiency fills E(N) from the smallest pool's throughput per worker.
func Efficiency(rows []ScalingRow) {
	if len(rows) == 0 {
		return
	}
	x1 := rows[0].ReqPerSec / float64(rows[0].Workers)
	for i := range rows {
		rows[i].Efficiency = rows[i].ReqPerSec / (float64(rows[i].Workers) * x1)
	}
}

// Closed waits until every router sees every worker, then keeps clients
// busy in a closed loop, spread over the routers, and measures.
// With tr, a sample of the window's requests is read back from its traces.
func Closed(routers []*Router, workers []int, clients int, ideal float64, per, warmup, duration time.Duration, req func(i, j int) *routerv1.GenerateRequest, tr *traces.Client) (ScalingRow, error) {
	row := ScalingRow{Workers: len(workers), Routers: len(routers), Clients: clients, IdealReqPerSec: ideal}
	run := fmt.Sprintf("closed-%d-%d", time.Now().UnixNano(), clients)
	tagged := func(i, j int) *routerv1.GenerateRequest {
		r := req(i, j)
		r.RequestId = fmt.Sprintf("%s-%d-%d", run, i, j)
		return r
	}
	var cs []routerv1.RouterServiceClient
	for _, rt := range routers {
		if err := rt.WaitHealthy(len(workers), 30*time.Second); err != nil {
			return row, err
		}
		cs = append(cs, rt.Client)
	}
	var cpu0, cpu1 time.Duration
	// Memory is read as the window closes, under load.
	after := func() {
		cpu1 = routersCPU(routers)
		for _, rt := range routers {
			rss, _ := rt.RSS()
			row.RouterRSSMiB += rss / float64(len(routers))
		}
		for _, w := range workers {
			rss, _ := harness.ProcRSS(w)
			row.WorkerRSSMiB += rss / float64(len(workers))
		}
	}
	st := Load{Routers: cs, Clients: clients, Request: tagged, Stagger: per, Warmup: warmup, Duration: duration,
		Before: func() { cpu0 = routersCPU(routers) }, After: after}.Run()
	row.Requests, row.Errors = len(st.Results), st.Errors
	row.ReqPerSec, row.TokPerSec = st.PerSecond(row.Requests), st.PerSecond(st.Tokens)
	row.TTFTP50, row.TTFTP99 = harness.Percentile(st.TTFTs(), 0.5), harness.Percentile(st.TTFTs(), 0.99)
	row.E2EP50, row.E2EP99 = harness.Percentile(st.E2Es(), 0.5), harness.Percentile(st.E2Es(), 0.99)
	row.RouterCores = (cpu1 - cpu0).Seconds() / st.Wall.Seconds()
	row.LoadAvg = LoadAvg()
	if tr != nil && len(st.Results) > 0 {
		if err := traceSample(tr, st.Results, &row); err != nil {
			return row, err
		}
	}
	if row.Requests == 0 {
		return row, fmt.Errorf("no request completed (first error: %v)", st.FirstErr)
	}
	return row, nil
}

// traceSample reads up to 60 of the results, evenly spread, back from
// Jaeger (each by its request id) into row.
func traceSample(tr *traces.Client, rs []Result, row *ScalingRow) error {
	const n = 60
	step := max(len(rs)/n, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var own, queue []time.Duration
	for i := 0; i < len(rs) && len(own) < n; i += step {
		var h traces.Hops
		seen := "no trace found"
		for {
			got, err := tr.Find(ctx, traces.Query{Service: "router", Tags: map[string]string{"llm.request_id": rs[i].ID}, Limit: 1})
			if err == nil && len(got) == 1 {
				if h, err = traces.Breakdown(got[0]); err == nil && h.Spans >= h.ExpectedSpans {
					break
				}
				seen = fmt.Sprintf("%d of %d spans (%d attempts): %v", h.Spans, h.ExpectedSpans, h.Attempts, err)
			}
			if ctx.Err() != nil {
				return fmt.Errorf("request %s: no complete trace within 30 s (last seen: %s)", rs[i].ID, seen)
			}
			time.Sleep(200 * time.Millisecond)
		}
		own, queue = append(own, h.Total-h.Worker), append(queue, h.Queue)
		row.SpansExpected += h.ExpectedSpans
		// A lost hedge's spans, when it left any, are not expected: they
		// do not make up for a missing one.
		row.SpansGot += min(h.Spans, h.ExpectedSpans)
	}
	row.Traced = len(own)
	row.RouterOwnP50, row.RouterOwnP99 = harness.Percentile(own, 0.5), harness.Percentile(own, 0.99)
	row.QueueP50, row.QueueP99 = harness.Percentile(queue, 0.5), harness.Percentile(queue, 0.99)
	return nil
}

func routersCPU(routers []*Router) time.Duration {
	var sum time.Duration
	for _, rt := range routers {
		sum += rt.CPU()
	}
	return sum
}

// ScalingTable renders rows as Markdown.
func ScalingTable(rows []ScalingRow) string {
	var b strings.Builder
	b.WriteString("| workers | routers | clients | req/s | ideal req/s | tokens/s | TTFT p50 / p99 ms | end-to-end p50 / p99 ms | router CPU (cores) | router RSS MiB | worker RSS MiB | E(N) | errors | load avg | traced: router's own p50 / p99 ms | traced: worker queue p50 / p99 ms | traced: spans |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		ideal := "—"
		if r.IdealReqPerSec > 0 {
			ideal = fmt.Sprintf("%.1f", r.IdealReqPerSec)
		}
		own, queue, spans := "—", "—", "—"
		if r.Traced > 0 {
			own, queue = fmt.Sprintf("%.2f / %.2f", r.RouterOwnP50, r.RouterOwnP99), fmt.Sprintf("%.2f / %.2f", r.QueueP50, r.QueueP99)
			spans = fmt.Sprintf("%d of %d (%d requests)", r.SpansGot, r.SpansExpected, r.Traced)
		}
		fmt.Fprintf(&b, "| %d | %d | %d | %.1f | %s | %.0f | %.1f / %.1f | %.1f / %.1f | %.2f | %.1f | %.1f | %.3f | %d | %s | %s | %s | %s |\n",
			r.Workers, r.Routers, r.Clients, r.ReqPerSec, ideal, r.TokPerSec, r.TTFTP50, r.TTFTP99, r.E2EP50, r.E2EP99,
			r.RouterCores, r.RouterRSSMiB, r.WorkerRSSMiB, r.Efficiency, r.Errors, r.LoadAvg, own, queue, spans)
	}
	return b.String()
}

// Describe says what a sim sweep ran.
func (c ScalingConfig) Describe() string {
	strategy := c.Strategy
	if strategy == "" {
		strategy = "the router's default (balanced)"
	}
	return fmt.Sprintf("Sim workers: %d slots each, %g tokens/s per sequence, TTFT %v, %d tokens per request; closed loop of slots × N clients; %v measured after %v of warm-up per row; strategy %s.",
		c.Slots, c.TPS, c.TTFT, c.Tokens, c.Duration, c.Warmup, strategy)
}
