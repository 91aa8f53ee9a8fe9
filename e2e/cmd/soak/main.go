// Command soak runs mixed load with faults through a real router for a long
// time and checks that it does not grow: the router's RSS and goroutine
// count at the end are within 5 % of those at the mark (both measured with
// the load paused and drained).
//
//	make soak                       # 10 minutes, mark at 2
//	go run ./e2e/cmd/soak -duration 3m -mark 1m
//
// The load: gRPC streams to two sim workers (some cancelled mid-stream), a
// hosted model behind provider-proxy whose upstream misbehaves in turn
// (5xx, resets, stalls, cuts, rate limits, malformed events) with a local
// fallback, OpenAI-style HTTP requests (streamed and not), a key over its
// token quota, bad input (unknown models, invalid UTF-8, absurd
// parameters) and clients that stop reading. Every 45 s one worker is
// killed and restarted on the same port.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/llm-runner-router/llmrouter/e2e/faults"
	"github.com/llm-runner-router/llmrouter/e2e/harness"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

const quotaKey = "sk-soak-quota-0123456789"

type config struct {
	duration, mark time.Duration
	clients        int
	out            string
}

// counters are the load's outcomes by kind.
type counters struct {
	mu sync.Mutex
	n  map[string]int
	// unexpected failures, with the first few messages
	bad     int
	badMsgs []string
}

func (c *counters) add(kind string) {
	c.mu.Lock()
	c.n[kind]++
	c.mu.Unlock()
}

func (c *counters) fail(kind string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bad++
	if len(c.badMsgs) < 8 {
		c.badMsgs = append(c.badMsgs, kind+": "+err.Error())
	}
}

// sample is the router's footprint at one moment.
type sample struct {
	at         time.Duration
	rssMiB     float64
	goroutines int
}

func run() (err error) {
	var c config
	flag.DurationVar(&c.duration, "duration", 10*time.Minute, "how long the load runs")
	flag.DurationVar(&c.mark, "mark", 2*time.Minute, "when the reference footprint is taken")
	flag.IntVar(&c.clients, "clients", 24, "concurrent load clients")
	flag.StringVar(&c.out, "out", "docs/soak.md", "where to write the report (empty: stdout only)")
	flag.Parse()
	if c.mark >= c.duration {
		return errors.New("-mark must be before the end of -duration")
	}

	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return err
	}
	certs := testkit.DevCerts(r)
	dir := r.TempDir()

	words := make([]string, 12)
	for i := range words {
		words[i] = fmt.Sprintf(" w%02d", i)
	}
	up := faults.NewUpstream(words, 10*time.Millisecond)
	defer up.Close()
	proxyCfg := faults.WriteJSON(r, dir, "proxy.json", map[string]any{
		"providers": []map[string]any{{"name": "up", "kind": "openai-compatible", "base_url": up.URL}},
		"models": []map[string]any{
			{"name": "hosted", "provider": "up", "upstream_model": "hosted", "price_in_per_1m": 1.0, "price_out_per_1m": 2.0, "quality": 0.9, "context_length": 8192},
			{"name": "flaky", "provider": "up", "upstream_model": "flaky", "price_in_per_1m": 1.0, "price_out_per_1m": 2.0, "quality": 0.9, "context_length": 8192},
		},
	})
	strategies := faults.WriteJSON(r, dir, "strategies.json", map[string]any{
		"default": "balanced",
		"strategies": map[string]any{"balanced": map[string]any{
			"filters": []map[string]any{{"type": "healthy"}, {"type": "constraints"}, {"type": "fits"}, {"type": "session"}},
			"scorers": []map[string]any{{"type": "load", "weight": 1}},
			"picker":  map[string]any{"type": "max-score"},
		}},
		"fallbacks": map[string]any{"flaky": []string{"local"}},
		"policies":  map[string]any{"flaky": map[string]any{"first_token_timeout": "1s", "stall_timeout": "1s"}},
	})
	keys := faults.WriteJSON(r, dir, "keys.json", map[string]any{"keys": []map[string]any{
		{"name": "quota", "key": quotaKey, "tokens_per_minute": 3000, "max_concurrent": 4},
	}})
	os.Setenv("LLMROUTER_API_KEYS", "open=sk-soak-open-0123456789")

	proxy := testkit.Start(r, "provider-proxy", bins.ProviderProxy, testkit.StartOptions{WaitListening: true},
		certs.Args(mtls.RoleProviderProxy, "-config", proxyCfg)...)
	ports := []int{testkit.FreePort(r), testkit.FreePort(r)}
	startWorker := func(i int) *testkit.Proc {
		return testkit.Start(r, fmt.Sprintf("sim%d", i), bins.EngineSim, testkit.StartOptions{WaitListening: true},
			certs.Args(mtls.RoleEngine, "-listen", "127.0.0.1:"+strconv.Itoa(ports[i]), "-models", "local:output_tokens=200",
				"-tps", "300", "-ttft", "10ms", "-max-concurrency", "128", "-grace", "1s")...)
	}
	workers := []*testkit.Proc{startWorker(0), startWorker(1)}
	var workersMu sync.Mutex
	router := testkit.Start(r, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
		"-static", strings.Join([]string{proxy.Addr, workers[0].Addr, workers[1].Addr}, ","), "-refresh", "300ms",
		"-strategies", strategies, "-keys", keys, "-http-listen", "127.0.0.1:0", "-debug-listen", "127.0.0.1:0",
		"-write-timeout", "2s", "-max-concurrent", "512", "-hosted-first-token-timeout", "2s", "-stall-timeout", "2s")...)
	conn, err := grpc.NewClient(router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := routerv1.NewRouterServiceClient(conn)
	httpBase := "http://" + router.Addrs["http"]
	debug := "http://" + router.Addrs["debug"]
	if err := waitModels(client, 3); err != nil {
		return err
	}

	// The upstream's flaky model misbehaves in turn.
	faultCycle := []faults.Fault{
		{}, {Status: 500, Body: `{"error":{"message":"boom","type":"server_error"}}`}, {}, {Reset: true}, {},
		{CutAfter: 4}, {}, {StallAfter: 3}, {}, {Status: 429, Body: `{"error":{"message":"slow down","type":"rate_limit"}}`, Header: map[string]string{"Retry-After": "0"}},
		{}, {Malformed: 2}, {}, {Silent: true}, {},
	}
	var cycle []faults.Fault
	for range 200 {
		cycle = append(cycle, faultCycle...)
	}

	var (
		ctr     = &counters{n: map[string]int{}}
		paused  atomic.Bool
		active  atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		samples []sample
	)
	began := time.Now()
	// Faults on the side: the upstream script restarts; a worker dies.
	wg.Go(func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		kill := time.NewTicker(45 * time.Second)
		defer kill.Stop()
		n := 0
		up.Script("flaky", cycle...)
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				up.Script("flaky", cycle...)
			case <-kill.C:
				if paused.Load() {
					continue
				}
				workersMu.Lock()
				i := n % 2
				n++
				workers[i].Kill()
				<-workers[i].Exited()
				workers[i] = startWorker(i)
				workersMu.Unlock()
				ctr.add("worker restarts")
			}
		}
	})
	for i := range c.clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if paused.Load() {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				active.Add(1)
				one(client, httpBase, rng, ctr, fmt.Sprintf("client %d request %d", i, n))
				active.Add(-1)
			}
		})
	}
	measure := func() (sample, error) {
		paused.Store(true)
		defer paused.Store(false)
		for active.Load() > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(3 * time.Second) // streams the router cut wind down
		s := sample{at: time.Since(began).Round(time.Second)}
		s.rssMiB, _ = harness.ProcRSS(router.Cmd.Process.Pid)
		g, err := goroutines(debug)
		s.goroutines = g
		return s, err
	}
	fmt.Printf("soak: %v of load with %d clients, reference at %v\n", c.duration, c.clients, c.mark)
	time.Sleep(c.mark)
	ref, err := measure()
	if err != nil {
		return err
	}
	samples = append(samples, ref)
	fmt.Printf("soak: at %v: router RSS %.1f MiB, %d goroutines\n", ref.at, ref.rssMiB, ref.goroutines)
	for time.Since(began) < c.duration {
		time.Sleep(min(time.Minute, c.duration-time.Since(began)))
		if time.Since(began) < c.duration-10*time.Second {
			rss, _ := harness.ProcRSS(router.Cmd.Process.Pid)
			g, _ := goroutines(debug)
			samples = append(samples, sample{at: time.Since(began).Round(time.Second), rssMiB: rss, goroutines: g})
			fmt.Printf("soak: at %v (under load): router RSS %.1f MiB, %d goroutines\n", time.Since(began).Round(time.Second), rss, g)
		}
	}
	end, err := measure()
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	samples = append(samples, end)
	rep := report(c, ctr, samples, ref, end)
	fmt.Print(rep)
	if c.out != "" {
		if err := os.WriteFile(c.out, []byte(rep), 0o644); err != nil {
			return err
		}
	}
	drss, dg := (end.rssMiB-ref.rssMiB)/ref.rssMiB, float64(end.goroutines-ref.goroutines)/float64(ref.goroutines)
	if drss > 0.05 || dg > 0.05 || ctr.bad > 0 {
		return fmt.Errorf("RSS %+.1f%%, goroutines %+.1f%%, %d unexpected failures (%s)", 100*drss, 100*dg, ctr.bad, strings.Join(ctr.badMsgs, "; "))
	}
	return nil
}

// one sends one request of a random kind and counts its outcome.
func one(c routerv1.RouterServiceClient, httpBase string, rng *rand.Rand, ctr *counters, prompt string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch k := rng.IntN(100); {
	case k < 35: // a local stream
		expect(ctr, "grpc local", stream(ctx, c, gen("local", prompt, 30), -1), codes.OK)
	case k < 45: // a client that hangs up mid-stream
		expect(ctr, "grpc cancelled mid-stream", stream(ctx, c, gen("local", prompt, 100), 5), codes.Canceled)
	case k < 60: // a flaky hosted model with a local fallback
		// Cut or stalled mid-answer, with a fallback that takes no prefill:
		// a clear Unavailable (docs/reliability.md), never a wrong answer.
		expect(ctr, "grpc flaky hosted + fallback", stream(ctx, c, gen("flaky", prompt, 12), -1), codes.OK, codes.Unavailable)
	case k < 75: // HTTP, streamed or not
		body := fmt.Sprintf(`{"model": %q, "messages": [{"role": "user", "content": %q}], "max_tokens": 12, "stream": %v}`,
			[]string{"hosted", "local"}[rng.IntN(2)], prompt, rng.IntN(2) == 0)
		expectHTTP(ctr, "http chat", httpBase, "sk-soak-open-0123456789", body, http.StatusOK)
	case k < 82: // a key over its token quota: served or refused, never failed
		body := fmt.Sprintf(`{"model": "local", "prompt": %q, "max_tokens": 200}`, prompt)
		expectHTTP(ctr, "http quota key", httpBase, quotaKey, body, http.StatusOK, http.StatusTooManyRequests)
	case k < 88: // bad input
		bad := []*routerv1.GenerateRequest{gen("no-such-model", prompt, 3), gen("local\xff", prompt, 3), gen("local", prompt, -5)}
		i := rng.IntN(len(bad))
		expect(ctr, "grpc bad input", stream(ctx, c, bad[i], -1), []codes.Code{codes.NotFound, codes.InvalidArgument, codes.InvalidArgument}[i])
	case k < 90: // a client that stops reading
		stopReading(ctr, httpBase)
	default:
		expect(ctr, "grpc hosted", stream(ctx, c, gen("hosted", prompt, 12), -1), codes.OK)
	}
}

func gen(model, prompt string, max int32) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{Model: model, Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: max}}
}

// stream runs a generation with the open key; cancelAfter >= 0 hangs up
// after that many tokens.
func stream(ctx context.Context, c routerv1.RouterServiceClient, req *routerv1.GenerateRequest, cancelAfter int) error {
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer sk-soak-open-0123456789"))
	defer cancel()
	s, err := c.Generate(ctx, req)
	if err != nil {
		return err
	}
	tokens := 0
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			if tokens == 0 {
				return errors.New("a stream without tokens")
			}
			return nil
		}
		if err != nil {
			return err
		}
		if d := msg.GetDelta(); d != nil {
			tokens += max(len(d.GetTokenIds()), 1)
			if cancelAfter >= 0 && tokens >= cancelAfter {
				cancel()
			}
		}
	}
}

func expect(ctr *counters, kind string, err error, want ...codes.Code) {
	got := status.Code(err)
	for _, w := range want {
		if got == w {
			ctr.add(kind + ": " + got.String())
			return
		}
	}
	ctr.fail(kind, fmt.Errorf("%v, want %v", err, want))
}

func expectHTTP(ctr *counters, kind, base, key, body string, want ...int) {
	req, _ := http.NewRequest("POST", base+"/v1/"+map[bool]string{true: "chat/completions", false: "completions"}[strings.Contains(body, "messages")], strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ctr.fail(kind, err)
		return
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, w := range want {
		if resp.StatusCode == w {
			if w == http.StatusOK && !complete(b) {
				ctr.fail(kind, fmt.Errorf("a 200 that is not a whole answer: %.300s", b))
				return
			}
			ctr.add(fmt.Sprintf("%s: %d", kind, w))
			return
		}
	}
	ctr.fail(kind, fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, b))
}

// complete reports whether a 200 body is a whole answer: a JSON object
// with choices and no error, or an event stream with no error event that
// ends in [DONE]. (The llmrouter report inside may list failed attempts.)
func complete(b []byte) bool {
	if bytes.HasPrefix(b, []byte("data: ")) {
		return !bytes.Contains(b, []byte("data: {\"error\"")) && bytes.HasSuffix(bytes.TrimSpace(b), []byte("data: [DONE]"))
	}
	var r struct {
		Error   json.RawMessage   `json:"error"`
		Choices []json.RawMessage `json:"choices"`
	}
	return json.Unmarshal(b, &r) == nil && r.Error == nil && len(r.Choices) > 0
}

// stopReading opens a long stream and reads nothing: the router must cut it.
func stopReading(ctr *counters, base string) {
	u := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", u)
	if err != nil {
		ctr.fail("stops reading", err)
		return
	}
	defer c.Close()
	body := `{"model": "local", "prompt": "flood", "stream": true, "max_tokens": 200}`
	fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-soak-open-0123456789\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	time.Sleep(3 * time.Second)
	ctr.add("http client stops reading")
}

func goroutines(debug string) (int, error) {
	resp, err := http.Get(debug + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, _ := bytes.CutPrefix(firstLine(resp.Body), []byte("goroutine profile: total "))
	return strconv.Atoi(string(bytes.TrimSpace(line)))
}

func firstLine(r io.Reader) []byte {
	b := make([]byte, 128)
	n, _ := io.ReadAtLeast(r, b, 1)
	line, _, _ := bytes.Cut(b[:n], []byte("\n"))
	return line
}

func waitModels(c routerv1.RouterServiceClient, n int) error {
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer sk-soak-open-0123456789")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if l, err := c.ListModels(ctx, &routerv1.ListModelsRequest{}); err == nil && len(l.GetModels()) >= n {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the router did not see %d models", n)
}

func report(c config, ctr *counters, samples []sample, ref, end sample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Soak: %v of mixed load with faults\n\n", c.duration)
	fmt.Fprintf(&b, "`make soak` (`go run ./e2e/cmd/soak -duration %v -mark %v -clients %d`): one router, two sim workers (one killed and restarted every 45 s), provider-proxy in front of an upstream that misbehaves in turn, %d clients.\n\n", c.duration, c.mark, c.clients, c.clients)
	b.WriteString("## Router footprint\n\n| at | RSS MiB | goroutines | |\n|---|---:|---:|---|\n")
	for _, s := range samples {
		note := "under load"
		if s == ref {
			note = "reference (load paused and drained)"
		} else if s == end {
			note = "end (load stopped and drained)"
		}
		fmt.Fprintf(&b, "| %v | %.1f | %d | %s |\n", s.at, s.rssMiB, s.goroutines, note)
	}
	fmt.Fprintf(&b, "\nEnd vs reference: RSS %+.1f %%, goroutines %+.1f %% (limit +5 %% each).\n\n",
		100*(end.rssMiB-ref.rssMiB)/ref.rssMiB, 100*float64(end.goroutines-ref.goroutines)/float64(ref.goroutines))
	b.WriteString("## Outcomes\n\n| kind | count |\n|---|---:|\n")
	ctr.mu.Lock()
	defer ctr.mu.Unlock()
	kinds := make([]string, 0, len(ctr.n))
	for k := range ctr.n {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "| %s | %d |\n", k, ctr.n[k])
	}
	fmt.Fprintf(&b, "| unexpected failures | %d |\n", ctr.bad)
	for _, m := range ctr.badMsgs {
		fmt.Fprintf(&b, "\n- %s", m)
	}
	b.WriteString("\n")
	return b.String()
}
