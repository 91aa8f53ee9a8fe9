// Command meshbench measures what the router adds to a stream: the same fixed
// load (sim worker at a fixed token rate, fixed tokens per request) is sent
// straight to the worker and through the router, in interleaved runs of one
// invocation, at several concurrencies. It prints a table and writes it,
// with the raw numbers as JSON, under bench/out/.
//
// Headline figures hold on a shared machine: router CPU time per relayed
// token and per request, read from the router process's own accounting, and
// the TTFT and inter-token-latency deltas (router minus direct, p50/p99).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		os.Exit(1)
	}
}

type config struct {
	concurrency harness.Counts
	rounds      int
	perClient   int
	tokens      int
	tps         float64
	ttft        time.Duration
	out         string
	routerFlags string
	routerEnv   string
}

func run(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("meshbench", flag.ContinueOnError)
	var cfg config
	cfg.concurrency = harness.Counts{1, 64, 512, 1000}
	fs.Var(&cfg.concurrency, "concurrency", "comma-separated concurrent stream counts")
	fs.IntVar(&cfg.rounds, "rounds", 2, "interleaved direct/router run pairs per concurrency")
	fs.IntVar(&cfg.perClient, "requests-per-stream", 2, "requests each stream sends back to back")
	fs.IntVar(&cfg.tokens, "tokens", 128, "tokens per request")
	fs.Float64Var(&cfg.tps, "tps", 20, "sim worker tokens per second per stream")
	fs.DurationVar(&cfg.ttft, "ttft", 50*time.Millisecond, "sim worker time to first token")
	fs.StringVar(&cfg.out, "out", "bench/out", "directory for results")
	fs.StringVar(&cfg.routerEnv, "router-env", "", "extra router environment, space-separated KEY=VALUE (e.g. GOMAXPROCS=1)")
	fs.StringVar(&cfg.routerFlags, "router-flags", "", "extra router flags, space-separated (e.g. -debug-listen 127.0.0.1:6060 for profiles)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return err
	}
	maxC := max(slices.Max(cfg.concurrency), 64) // the short-request section runs 32 clients
	certs := testkit.DevCerts(r)
	worker := testkit.Start(r, "engine-sim", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
		"-models", fmt.Sprintf("sim:output_tokens=%d", cfg.tokens*2), "-tps", fmt.Sprint(cfg.tps), "-ttft", cfg.ttft.String(),
		"-max-concurrency", strconv.Itoa(maxC), "-queue", strconv.Itoa(maxC))...)
	router := testkit.Start(r, "router", bins.Router, testkit.StartOptions{WaitListening: true, Env: strings.Fields(cfg.routerEnv)}, certs.Args(mtls.RoleRouter, append([]string{"-static", worker.Addr}, strings.Fields(cfg.routerFlags)...)...)...)

	direct, err := dial(worker.Addr, certs.Dial(r, mtls.RoleRouter, mtls.RoleEngine))
	if err != nil {
		return err
	}
	defer direct.Close()
	routed, err := dial(router.Addr)
	if err != nil {
		return err
	}
	defer routed.Close()
	targets := map[string]streamFunc{
		"direct": directStream(enginev1.NewEngineServiceClient(direct)),
		"router": routerStream(routerv1.NewRouterServiceClient(routed)),
	}
	if err := waitReady(targets["router"]); err != nil {
		return err
	}

	period := cfg.ttft + time.Duration(float64(cfg.tokens)/cfg.tps*float64(time.Second))
	var rows []row
	for _, c := range cfg.concurrency {
		samples := map[string]*sample{"direct": {}, "router": {}}
		var cpu time.Duration
		for round := range cfg.rounds {
			for _, name := range []string{"direct", "router"} {
				before, err := harness.ProcCPU(router.Cmd.Process.Pid)
				if err != nil {
					return err
				}
				s, err := load(targets[name], c, cfg.tokens, cfg.perClient, period)
				if err != nil {
					return fmt.Errorf("%s run at %d streams (round %d): %w", name, c, round, err)
				}
				after, _ := harness.ProcCPU(router.Cmd.Process.Pid)
				if name == "router" {
					cpu += after - before
				}
				samples[name].merge(s)
			}
		}
		rows = append(rows, summarize(c, samples["direct"], samples["router"], cpu))
	}
	short, err := shortRequests(targets["router"], router.Cmd.Process.Pid)
	if err != nil {
		return err
	}
	scale, err := scaleTest(r, bins, certs, worker.Addr)
	if err != nil {
		return err
	}
	return report(stdout, cfg, rows, short, scale)
}

type streamFunc func(ctx context.Context, prompt string, tokens int) (ttft time.Duration, gaps []time.Duration, n int, err error)

// dial connects to the router (plaintext, as clients behind an ingress do)
// or, with creds, to the worker with the router's certificate.
func dial(addr string, creds ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, creds...)...)
}

func sampling(tokens int) *genv1.SamplingParams {
	return &genv1.SamplingParams{Temperature: new(float32), MaxTokens: int32(tokens)}
}

func prompt(p string) *genv1.Prompt { return &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: p}} }

// timeStream reads a stream of events, timing the first token and the gaps
// between tokens.
func timeStream(start time.Time, recv func() (delta *genv1.TokenDelta, err error)) (time.Duration, []time.Duration, int, error) {
	var (
		ttft time.Duration
		last time.Time
		gaps []time.Duration
		n    int
	)
	for {
		d, err := recv()
		if errors.Is(err, io.EOF) {
			return ttft, gaps, n, nil
		}
		if err != nil {
			return 0, nil, n, err
		}
		if d == nil || len(d.GetTokenIds()) == 0 {
			continue
		}
		now := time.Now()
		if n == 0 {
			ttft = now.Sub(start)
		} else {
			gaps = append(gaps, now.Sub(last))
		}
		last = now
		n += len(d.GetTokenIds())
	}
}

func directStream(c enginev1.EngineServiceClient) streamFunc {
	return func(ctx context.Context, p string, tokens int) (time.Duration, []time.Duration, int, error) {
		start := time.Now()
		s, err := c.Generate(ctx, &enginev1.GenerateRequest{Model: "sim", Prompt: prompt(p), Sampling: sampling(tokens)})
		if err != nil {
			return 0, nil, 0, err
		}
		return timeStream(start, func() (*genv1.TokenDelta, error) {
			m, err := s.Recv()
			return m.GetDelta(), err
		})
	}
}

func routerStream(c routerv1.RouterServiceClient) streamFunc {
	return func(ctx context.Context, p string, tokens int) (time.Duration, []time.Duration, int, error) {
		start := time.Now()
		s, err := c.Generate(ctx, &routerv1.GenerateRequest{Model: "sim", Prompt: prompt(p), Sampling: sampling(tokens)})
		if err != nil {
			return 0, nil, 0, err
		}
		return timeStream(start, func() (*genv1.TokenDelta, error) {
			m, err := s.Recv()
			return m.GetDelta(), err
		})
	}
}

func waitReady(f streamFunc) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, _, err := f(context.Background(), "warm up", 2)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router not ready: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type sample struct {
	ttft, gaps []time.Duration
	tokens     int
	requests   int
}

func (s *sample) merge(o *sample) {
	s.ttft = append(s.ttft, o.ttft...)
	s.gaps = append(s.gaps, o.gaps...)
	s.tokens += o.tokens
	s.requests += o.requests
}

// load keeps c streams open: c clients whose starts are spread evenly over
// one request period, each sending perClient requests back to back, so the
// router sees a steady arrival rate rather than one burst. It collects every
// request's timings.
func load(f streamFunc, c, tokens, perClient int, period time.Duration) (*sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		mu   sync.Mutex
		s    = &sample{}
		wg   sync.WaitGroup
		errs []error
	)
	for i := range c {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * period / time.Duration(c))
			for j := range perClient {
				ttft, gaps, n, err := f(ctx, fmt.Sprintf("bench stream %d.%d", i, j), tokens)
				mu.Lock()
				if err == nil && n != tokens {
					err = fmt.Errorf("stream %d got %d of %d tokens", i, n, tokens)
				}
				if err != nil {
					errs = append(errs, err)
				} else {
					s.ttft = append(s.ttft, ttft)
					s.gaps = append(s.gaps, gaps...)
					s.tokens += n
					s.requests++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return s, errors.Join(errs...)
}

type row struct {
	Streams         int     `json:"streams"`
	Requests        int     `json:"requests"`
	Tokens          int     `json:"tokens"`
	DirectTTFTp50   float64 `json:"direct_ttft_p50_ms"`
	RouterTTFTp50   float64 `json:"router_ttft_p50_ms"`
	DeltaTTFTp50    float64 `json:"delta_ttft_p50_ms"`
	DeltaTTFTp99    float64 `json:"delta_ttft_p99_ms"`
	DirectITLp50    float64 `json:"direct_itl_p50_ms"`
	DeltaITLp50     float64 `json:"delta_itl_p50_ms"`
	DeltaITLp99     float64 `json:"delta_itl_p99_ms"`
	CPUPerTokenUS   float64 `json:"router_cpu_per_token_us"`
	CPUPerRequestUS float64 `json:"router_cpu_per_request_us"`
}

func summarize(c int, direct, router *sample, cpu time.Duration) row {
	return row{
		Streams: c, Requests: router.requests, Tokens: router.tokens,
		DirectTTFTp50: harness.Percentile(direct.ttft, 0.5), RouterTTFTp50: harness.Percentile(router.ttft, 0.5),
		DeltaTTFTp50:    harness.Percentile(router.ttft, 0.5) - harness.Percentile(direct.ttft, 0.5),
		DeltaTTFTp99:    harness.Percentile(router.ttft, 0.99) - harness.Percentile(direct.ttft, 0.99),
		DirectITLp50:    harness.Percentile(direct.gaps, 0.5),
		DeltaITLp50:     harness.Percentile(router.gaps, 0.5) - harness.Percentile(direct.gaps, 0.5),
		DeltaITLp99:     harness.Percentile(router.gaps, 0.99) - harness.Percentile(direct.gaps, 0.99),
		CPUPerTokenUS:   float64(cpu) / float64(time.Microsecond) / float64(max(router.tokens, 1)),
		CPUPerRequestUS: float64(cpu) / float64(time.Microsecond) / float64(max(router.requests, 1)),
	}
}

// shortResult is the short-request throughput per router CPU-second.
type shortResult struct {
	Clients           int     `json:"clients"`
	Requests          int     `json:"requests"`
	Seconds           float64 `json:"seconds"`
	RouterCPUSeconds  float64 `json:"router_cpu_seconds"`
	RequestsPerCPUSec float64 `json:"requests_per_router_cpu_second"`
	Errors            int     `json:"errors"`
}

// shortRequests runs clients sending 1-token requests back to back for a
// few seconds through the router and divides the count by the router's CPU.
func shortRequests(f streamFunc, pid int) (shortResult, error) {
	const clients, dur = 32, 5 * time.Second
	res := shortResult{Clients: clients}
	before, err := harness.ProcCPU(pid)
	if err != nil {
		return res, err
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	began := time.Now()
	for i := range clients {
		wg.Go(func() {
			for j := 0; time.Since(began) < dur; j++ {
				_, _, n, err := f(context.Background(), fmt.Sprintf("short %d %d", i, j), 1)
				mu.Lock()
				if err != nil || n != 1 {
					res.Errors++
				} else {
					res.Requests++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(began).Seconds()
	after, _ := harness.ProcCPU(pid)
	res.RouterCPUSeconds = (after - before).Seconds()
	res.RequestsPerCPUSec = float64(res.Requests) / res.RouterCPUSeconds
	return res, nil
}

// scaleResult is the router with many endpoints.
type scaleResult struct {
	Endpoints   int     `json:"endpoints"`
	ListeningMS float64 `json:"start_to_listening_ms"`
	ReadyMS     float64 `json:"start_to_all_endpoints_ms"`
	RSSMiB      float64 `json:"rss_mib"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	DecisionP50 float64 `json:"request_via_1000_endpoints_p50_ms"`
}

// scaleTest registers 1,000 endpoints in a Consul agent (distinct ids, all
// pointing at the one sim worker, so each gets its own connection and status
// polling) and measures the router's cold start and memory.
func scaleTest(r *harness.Runner, bins harness.Binaries, certs *testkit.Certs, worker string) (scaleResult, error) {
	const n = 1000
	res := scaleResult{Endpoints: n}
	consul := testkit.StartConsul(r, 0)
	reg, err := discovery.NewConsul(consul.HTTPAddr, "", nil)
	if err != nil {
		return res, err
	}
	host, portStr, _ := net.SplitHostPort(worker)
	port, _ := strconv.Atoi(portStr)
	models := []*enginev1.ModelInfo{{Name: "sim", Format: "sim", ContextLength: 4096, Quality: 0.5, MaxConcurrency: 1024}}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := reg.Register(context.Background(), discovery.Registration{NoCheck: true,
				ID: fmt.Sprintf("bench-%04d", i), Address: host, Port: port, Models: models,
			}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	began := time.Now()
	router := testkit.Start(r, "router-scale", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter, "-consul", consul.HTTPAddr)...)
	res.ListeningMS = float64(time.Since(began)) / 1e6
	conn, err := dial(router.Addr)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	client := routerv1.NewRouterServiceClient(conn)
	for {
		l, err := client.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{})
		if err == nil && len(l.GetEndpoints()) == n {
			break
		}
		if time.Since(began) > time.Minute {
			return res, fmt.Errorf("router never saw %d endpoints", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	res.ReadyMS = float64(time.Since(began)) / 1e6
	// Route requests across the 1,000 endpoints while status polls run.
	stream := routerStream(client)
	var lat []time.Duration
	for i := range 200 {
		t0 := time.Now()
		if _, _, _, err := stream(context.Background(), fmt.Sprintf("scale %d", i), 1); err != nil {
			return res, err
		}
		lat = append(lat, time.Since(t0))
	}
	res.DecisionP50 = harness.Percentile(lat, 0.5)
	time.Sleep(3 * time.Second) // let status polling reach steady state
	res.RSSMiB, res.PeakRSSMiB = harness.ProcRSS(router.Cmd.Process.Pid)
	return res, nil
}

func report(stdout io.Writer, cfg config, rows []row, short shortResult, scale scaleResult) error {
	var b strings.Builder
	fmt.Fprintf(&b, "meshbench: sim worker at %.0f tokens/s per stream, TTFT %v, %d tokens per request; N streams held open\n", cfg.tps, cfg.ttft, cfg.tokens)
	fmt.Fprintf(&b, "(starts spread over one request period, %d requests each back to back); %d interleaved direct/router rounds\n", cfg.perClient, cfg.rounds)
	fmt.Fprintf(&b, "deltas are router minus direct at the same percentile (ms); CPU is the router process's own (µs)\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\trequests\ttokens\tTTFT p50 direct\tTTFT p50 router\tΔTTFT p50\tΔTTFT p99\tITL p50 direct\tΔITL p50\tΔITL p99\tCPU/token\tCPU/request\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f\t%.2f\t%+.3f\t%+.3f\t%.2f\t%+.3f\t%+.3f\t%.1f\t%.0f\t\n",
			r.Streams, r.Requests, r.Tokens, r.DirectTTFTp50, r.RouterTTFTp50, r.DeltaTTFTp50, r.DeltaTTFTp99,
			r.DirectITLp50, r.DeltaITLp50, r.DeltaITLp99, r.CPUPerTokenUS, r.CPUPerRequestUS)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\ntargets: router CPU < 20 µs/token; added p50 < 0.5 ms and p99 < 2 ms at 512 streams, p50 < 1 ms and p99 < 5 ms at 1,000\n")
	fmt.Fprintf(&b, "\nShort requests (1 token, %d clients back to back, %.1f s): %d requests, %d errors, router CPU %.2f s -> %.0f requests per router CPU-second (target >= 5,000)\n",
		short.Clients, short.Seconds, short.Requests, short.Errors, short.RouterCPUSeconds, short.RequestsPerCPUSec)
	fmt.Fprintf(&b, "\nRouter with %d endpoints from Consul: start to listening %.0f ms, to all endpoints known %.0f ms (target < 100 ms);\n  RSS %.1f MiB, peak %.1f MiB (target < 100 MB); 1-token request p50 %.2f ms\n",
		scale.Endpoints, scale.ListeningMS, scale.ReadyMS, scale.RSSMiB, scale.PeakRSSMiB, scale.DecisionP50)
	fmt.Fprint(stdout, b.String())
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.out, "meshbench.txt"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	j, _ := json.MarshalIndent(map[string]any{"streams": rows, "short_requests": short, "scale": scale}, "", "  ")
	return os.WriteFile(filepath.Join(cfg.out, "meshbench.json"), j, 0o644)
}
