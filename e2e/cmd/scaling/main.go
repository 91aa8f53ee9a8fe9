// Command scaling measures horizontal scaling: 1, 2, 4, 8 sim workers
// (each a fixed number of slots at a fixed token rate, found through
// Consul) behind the router, the offered load rising with N (a closed loop
// of slots × N clients, so every worker is kept full), and N = 8 again with
// two router replicas. Per N it reports throughput (requests/s, tokens/s),
// TTFT and end-to-end p50/p99 as the clients see them, the router's CPU
// (cores, from its own accounting) and memory, the workers' memory, and the
// scaling efficiency E(N) = X(N) / (N · X(1)). A Markdown table goes to
// stdout and to -out/scaling.md, the raw numbers to -out/scaling.json, the
// curves to -out/scaling-throughput.png and scaling-efficiency.png.
//
// The workers are simulated because two cores cannot host eight real
// engines; what is measured is the mesh (discovery, routing, relaying),
// which is what scales.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "scaling:", err)
		os.Exit(1)
	}
}

// Config is one sweep.
type Config struct {
	Workers  harness.Counts
	Slots    int
	TPS      float64
	TTFT     time.Duration
	Tokens   int
	Duration time.Duration
	Warmup   time.Duration
	Out      string
	// Strategy is the routers' -strategy ("": their default).
	Strategy string
}

// Row is one measured configuration.
type Row struct {
	Workers, Routers, Clients int
	Requests, Errors          int
	ReqPerSec, TokPerSec      float64
	IdealReqPerSec            float64
	TTFTP50, TTFTP99          float64 // ms
	E2EP50, E2EP99            float64 // ms
	RouterCores               float64 // CPU seconds per second, summed over routers
	RouterRSSMiB              float64 // per router
	WorkerRSSMiB              float64 // mean per worker
	Efficiency                float64 // X(N) / (N · X(1))
	LoadAvg                   string
}

func run(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("scaling", flag.ContinueOnError)
	cfg := Config{Workers: harness.Counts{1, 2, 4, 8}}
	fs.Var(&cfg.Workers, "workers", "comma-separated worker counts")
	fs.IntVar(&cfg.Slots, "slots", 8, "sequences each sim worker decodes at once")
	fs.Float64Var(&cfg.TPS, "tps", 100, "tokens per second per sequence")
	fs.DurationVar(&cfg.TTFT, "ttft", 50*time.Millisecond, "simulated time to first token")
	fs.IntVar(&cfg.Tokens, "tokens", 32, "tokens per request")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time per configuration")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "load before measuring, per configuration")
	fs.StringVar(&cfg.Out, "out", "bench/out", "directory for scaling.md and scaling.json (empty: none)")
	fs.StringVar(&cfg.Strategy, "strategy", "", "routing strategy of the routers (empty: their default)")
	quick := fs.Bool("quick", false, "1 and 2 workers, 2 s each (for tests)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		cfg.Workers, cfg.Duration, cfg.Warmup = harness.Counts{1, 2}, 2*time.Second, 500*time.Millisecond
	}
	// Workers are only added: the counts run in rising order, once each.
	slices.Sort(cfg.Workers)
	cfg.Workers = slices.Compact(cfg.Workers)
	rows, err := Sweep(cfg)
	if err != nil {
		return err
	}
	table := Table(cfg, rows)
	fmt.Fprint(stdout, table)
	if cfg.Out == "" {
		return nil
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "scaling.md"), []byte(table), 0o644); err != nil {
		return err
	}
	if err := Plot(rows, filepath.Join(cfg.Out, "scaling-throughput.png"), filepath.Join(cfg.Out, "scaling-efficiency.png")); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(struct {
		Config Config
		Rows   []Row
	}{cfg, rows}, "", "  ")
	return os.WriteFile(filepath.Join(cfg.Out, "scaling.json"), b, 0o644)
}

// Sweep runs every worker count (adding workers as it goes) and, at the
// largest, again with a second router.
func Sweep(cfg Config) (rows []Row, err error) {
	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return nil, err
	}
	certs := testkit.DevCerts(r)
	consul := testkit.StartConsul(r, 0)
	routerArgs := certs.Args(mtls.RoleRouter, "-consul", consul.HTTPAddr, "-max-concurrent", "0")
	if cfg.Strategy != "" {
		routerArgs = append(routerArgs, "-strategy", cfg.Strategy)
	}
	routers := []*testkit.Proc{testkit.Start(r, "router0", bins.Router, testkit.StartOptions{WaitListening: true}, routerArgs...)}
	var workers []*testkit.Proc
	maxN := slices.Max(cfg.Workers)
	for _, n := range cfg.Workers {
		for len(workers) < n {
			workers = append(workers, testkit.Start(r, fmt.Sprintf("sim%d", len(workers)), bins.EngineSim, testkit.StartOptions{WaitListening: true},
				certs.Args(mtls.RoleEngine, "-consul", consul.HTTPAddr, "-check-interval", "1s", "-models", fmt.Sprintf("sim:output_tokens=%d", cfg.Tokens*4),
					"-tps", fmt.Sprint(cfg.TPS), "-ttft", cfg.TTFT.String(), "-max-concurrency", strconv.Itoa(cfg.Slots), "-queue", strconv.Itoa(cfg.Slots*4))...))
		}
		sets := [][]*testkit.Proc{routers[:1]}
		if n == maxN {
			routers = append(routers, testkit.Start(r, "router1", bins.Router, testkit.StartOptions{WaitListening: true}, routerArgs...))
			sets = append(sets, routers)
		}
		for _, rs := range sets {
			row, err := measure(cfg, rs, workers)
			if err != nil {
				return rows, fmt.Errorf("%d workers, %d routers: %w", n, len(rs), err)
			}
			rows = append(rows, row)
			fmt.Fprintf(os.Stderr, "scaling: %d workers, %d routers: %.1f req/s, router %.2f cores\n", n, len(rs), row.ReqPerSec, row.RouterCores)
		}
	}
	// X(1) per worker from the smallest pool measured (one worker unless
	// told otherwise).
	x1 := rows[0].ReqPerSec / float64(rows[0].Workers)
	for i := range rows {
		rows[i].Efficiency = rows[i].ReqPerSec / (float64(rows[i].Workers) * x1)
	}
	return rows, nil
}

// measure waits until every router sees every worker, then keeps slots ×
// workers clients busy, spread over the routers.
func measure(cfg Config, routers, workers []*testkit.Proc) (Row, error) {
	var clients []routerv1.RouterServiceClient
	for _, rt := range routers {
		conn, err := grpc.NewClient(rt.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return Row{}, err
		}
		defer conn.Close()
		c := routerv1.NewRouterServiceClient(conn)
		deadline := time.Now().Add(30 * time.Second)
		for {
			l, err := c.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{})
			healthy := 0
			for _, e := range l.GetEndpoints() {
				if e.GetHealthy() {
					healthy++
				}
			}
			if err == nil && healthy == len(workers) {
				break
			}
			if time.Now().After(deadline) {
				return Row{}, fmt.Errorf("router %s sees %d of %d workers: %v", rt.Name, healthy, len(workers), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		clients = append(clients, c)
	}
	n := cfg.Slots * len(workers)
	row := Row{Workers: len(workers), Routers: len(routers), Clients: n}
	per := cfg.TTFT + time.Duration(float64(cfg.Tokens-1)/cfg.TPS*float64(time.Second))
	row.IdealReqPerSec = float64(n) / per.Seconds()

	ctx, cancel := context.WithCancel(context.Background())
	var (
		measuring atomic.Bool
		mu        sync.Mutex
		ttfts     []time.Duration
		e2es      []time.Duration
		tokens    atomic.Int64
		errs      atomic.Int64
		firstErr  atomic.Value
		wg        sync.WaitGroup
	)
	for i := range n {
		c := clients[i%len(clients)]
		wg.Go(func() {
			// Staggered starts: clients in step would finish together and
			// the window would count completions in lumps.
			select {
			case <-time.After(time.Duration(i) * per / time.Duration(n)):
			case <-ctx.Done():
				return
			}
			for j := 0; ctx.Err() == nil; j++ {
				t0 := time.Now()
				ttft, got, err := stream(ctx, c, fmt.Sprintf("client %d request %d", i, j), cfg.Tokens)
				if ctx.Err() != nil {
					return
				}
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				d := time.Since(t0)
				tokens.Add(int64(got))
				mu.Lock()
				ttfts, e2es = append(ttfts, ttft), append(e2es, d)
				mu.Unlock()
			}
		})
	}
	time.Sleep(cfg.Warmup)
	cpu0 := routerCPU(routers)
	began := time.Now()
	measuring.Store(true)
	time.Sleep(cfg.Duration)
	measuring.Store(false)
	wall := time.Since(began)
	cpu1 := routerCPU(routers)
	cancel()
	wg.Wait()

	row.Requests, row.Errors = len(e2es), int(errs.Load())
	row.ReqPerSec = float64(row.Requests) / wall.Seconds()
	row.TokPerSec = float64(tokens.Load()) / wall.Seconds()
	row.TTFTP50, row.TTFTP99 = harness.Percentile(ttfts, 0.5), harness.Percentile(ttfts, 0.99)
	row.E2EP50, row.E2EP99 = harness.Percentile(e2es, 0.5), harness.Percentile(e2es, 0.99)
	row.RouterCores = (cpu1 - cpu0).Seconds() / wall.Seconds()
	for _, rt := range routers {
		rss, _ := harness.ProcRSS(rt.Cmd.Process.Pid)
		row.RouterRSSMiB += rss / float64(len(routers))
	}
	for _, w := range workers {
		rss, _ := harness.ProcRSS(w.Cmd.Process.Pid)
		row.WorkerRSSMiB += rss / float64(len(workers))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		row.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if row.Requests == 0 {
		return row, fmt.Errorf("no request completed (first error: %v)", firstErr.Load())
	}
	return row, nil
}

func routerCPU(routers []*testkit.Proc) time.Duration {
	var sum time.Duration
	for _, rt := range routers {
		d, _ := harness.ProcCPU(rt.Cmd.Process.Pid)
		sum += d
	}
	return sum
}

// stream sends one request and reads it to the end: its time to first
// token and the tokens received.
func stream(ctx context.Context, c routerv1.RouterServiceClient, prompt string, tokens int) (time.Duration, int, error) {
	t0 := time.Now()
	s, err := c.Generate(ctx, &routerv1.GenerateRequest{Model: "sim", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}},
		Sampling: &genv1.SamplingParams{Temperature: new(float32), MaxTokens: int32(tokens)}})
	if err != nil {
		return 0, 0, err
	}
	var ttft time.Duration
	n := 0
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			if n != tokens {
				return ttft, n, fmt.Errorf("%d of %d tokens", n, tokens)
			}
			return ttft, n, nil
		}
		if err != nil {
			return ttft, n, err
		}
		if d := m.GetDelta(); d != nil && len(d.GetTokenIds()) > 0 {
			if n == 0 {
				ttft = time.Since(t0)
			}
			n += len(d.GetTokenIds())
		}
	}
}

// Table renders the sweep as Markdown, with what it ran.
func Table(cfg Config, rows []Row) string {
	var b strings.Builder
	strategy := cfg.Strategy
	if strategy == "" {
		strategy = "the router's default"
	}
	fmt.Fprintf(&b, "Sim workers: %d slots each, %g tokens/s per sequence, TTFT %v, %d tokens per request; closed loop of slots × N clients; %v measured after %v of warm-up per row; strategy %s.\n\n",
		cfg.Slots, cfg.TPS, cfg.TTFT, cfg.Tokens, cfg.Duration, cfg.Warmup, strategy)
	b.WriteString("| workers | routers | clients | req/s | ideal req/s | tokens/s | TTFT p50 / p99 ms | end-to-end p50 / p99 ms | router CPU (cores) | router RSS MiB | worker RSS MiB | E(N) | errors | load avg |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %d | %d | %.1f | %.1f | %.0f | %.1f / %.1f | %.1f / %.1f | %.2f | %.1f | %.1f | %.3f | %d | %s |\n",
			r.Workers, r.Routers, r.Clients, r.ReqPerSec, r.IdealReqPerSec, r.TokPerSec, r.TTFTP50, r.TTFTP99, r.E2EP50, r.E2EP99,
			r.RouterCores, r.RouterRSSMiB, r.WorkerRSSMiB, r.Efficiency, r.Errors, r.LoadAvg)
	}
	return b.String()
}
