package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/grpcserver"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/services/router/internal/admission"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
	"github.com/llm-runner-router/llmrouter/services/router/internal/metrics"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/rawcodec"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type worker struct {
	addr    string
	backend *sim.Backend
	srv     *grpcserver.Server
	client  enginev1.EngineServiceClient // straight to the worker, as another router
}

// startWorker runs a real sim Engine server on loopback.
func startWorker(t *testing.T, cfg sim.Config) *worker {
	t.Helper()
	b := sim.New(cfg)
	e := testkit.ServeEngine(t, b, enginehost.Limits{})
	return &worker{addr: e.Addr, backend: b, srv: e.Server, client: e.Client}
}

func simCfg(models ...sim.ModelConfig) sim.Config {
	if len(models) == 0 {
		models = []sim.ModelConfig{{Name: "m", Quality: 0.5, CostPer1KOutput: 1}}
	}
	return sim.Config{Models: models, TokensPerSecond: 2000, MaxConcurrency: 16, QueueSize: 16}
}

// watcher is a discovery.Watcher the test drives.
type watcher struct{ ch chan []discovery.Endpoint }

func (w *watcher) Watch(ctx context.Context) <-chan []discovery.Endpoint {
	out := make(chan []discovery.Endpoint)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case eps := <-w.ch:
				select {
				case out <- eps:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// ep describes a worker as Consul would: with its models, healthy.
func ep(addr string, models ...string) discovery.Endpoint {
	if len(models) == 0 {
		models = []string{"m"}
	}
	var infos []*enginev1.ModelInfo
	for _, m := range models {
		infos = append(infos, &enginev1.ModelInfo{Name: m, Quality: 0.5, CostPer_1KOutput: 1, ContextLength: 4096})
	}
	return discovery.Endpoint{ID: addr, Address: addr, Models: infos, Healthy: true}
}

type mesh struct {
	client  routerv1.RouterServiceClient
	pool    *pool.Pool
	w       *watcher
	metrics *metrics.Metrics
}

// set replaces the endpoint set and waits until the pool has applied it.
func (m *mesh) set(t *testing.T, eps ...discovery.Endpoint) {
	t.Helper()
	changed := m.pool.Changed()
	m.w.ch <- eps
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("pool did not apply the endpoint set")
	}
}

func startRouter(t *testing.T, eps ...discovery.Endpoint) *mesh {
	t.Helper()
	return startRouterCfg(t, server.Config{MaxAttempts: 3}, eps...)
}

func startRouterCfg(t *testing.T, scfg server.Config, eps ...discovery.Endpoint) *mesh {
	t.Helper()
	return startRouterRefresh(t, 50*time.Millisecond, scfg, eps...)
}

// startRouterRefresh starts a router whose pool polls workers' status
// every refresh.
func startRouterRefresh(t *testing.T, refresh time.Duration, scfg server.Config, eps ...discovery.Endpoint) *mesh {
	t.Helper()
	return startRouterSched(t, refresh, scfg, nil, eps...)
}

// startRouterSched is startRouterRefresh with the scheduler's configuration
// changed by edit (policies, say).
func startRouterSched(t *testing.T, refresh time.Duration, scfg server.Config, edit func(*scheduling.Config), eps ...discovery.Endpoint) *mesh {
	t.Helper()
	w := &watcher{ch: make(chan []discovery.Endpoint)}
	p := pool.New(telemetry.Noop(), quiet, refresh)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, w) })
	cfg := plugins.DefaultConfig()
	cfg.Default = "round-robin"
	cfg.Aliases = map[string][]string{"chat-small": {"small", "m"}}
	cfg.Fallbacks = map[string][]string{"big": {"small"}}
	if edit != nil {
		edit(&cfg)
	}
	sched, err := plugins.Builtin().Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	scfg.RawRelay = true // as the router process runs it
	if scfg.Metrics == nil {
		scfg.Metrics = metrics.New(p, nil)
	}
	impl := server.New(p, sched, scfg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawcodec.New()))
	routerv1.RegisterRouterServiceServer(srv, impl)
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		cancel()
		wg.Wait()
	})
	m := &mesh{client: routerv1.NewRouterServiceClient(conn), pool: p, w: w, metrics: scfg.Metrics}
	m.set(t, eps...)
	return m
}

type result struct {
	start  *genv1.StartEvent
	tokens int
	text   string
	end    *genv1.EndEvent
}

func run(ctx context.Context, c routerv1.RouterServiceClient, req *routerv1.GenerateRequest) (result, error) {
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
		switch e := msg.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			if r.start != nil {
				return r, errors.New("two start events")
			}
			r.start = e.Start
		case *routerv1.GenerateResponse_Delta:
			r.tokens += len(e.Delta.GetTokenIds())
			r.text += e.Delta.GetText()
		case *routerv1.GenerateResponse_End:
			r.end = e.End
		}
	}
}

func req(model string, maxTokens int32) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{
		Model: model, Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "hello"}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: maxTokens},
	}
}

func TestRelayAndRoundRobin(t *testing.T) {
	a, b := startWorker(t, simCfg()), startWorker(t, simCfg())
	m := startRouter(t, ep(a.addr), ep(b.addr))
	seen := map[string]int{}
	var texts []string
	for range 6 {
		r, err := run(context.Background(), m.client, req("m", 20))
		if err != nil {
			t.Fatal(err)
		}
		if r.tokens != 20 || r.end.GetUsage().GetCompletionTokens() != 20 || r.start.GetModel() != "m" {
			t.Fatalf("relayed %d tokens, end %v", r.tokens, r.end)
		}
		seen[r.start.GetEndpoint()]++
		texts = append(texts, r.text)
	}
	if seen[a.addr] != 3 || seen[b.addr] != 3 {
		t.Fatalf("round robin spread %v", seen)
	}
	for _, tx := range texts[1:] {
		if tx != texts[0] {
			t.Fatalf("greedy outputs differ across workers: %q vs %q", tx, texts[0])
		}
	}
}

func TestRetryBeforeFirstTokenAndEjection(t *testing.T) {
	live := startWorker(t, simCfg())
	dead := "127.0.0.1:1" // nothing listens: connection refused
	m := startRouter(t, ep(dead), ep(live.addr))
	for i := range 6 {
		r, err := run(context.Background(), m.client, req("m", 5))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if r.start.GetEndpoint() != live.addr {
			t.Fatalf("served by %s", r.start.GetEndpoint())
		}
	}
	list, err := m.client.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list.GetEndpoints() {
		if e.GetAddress() == dead && e.GetConsecutiveFailures() < 2 {
			t.Fatalf("dead endpoint has %d failures", e.GetConsecutiveFailures())
		}
		if e.GetAddress() == live.addr && (e.GetConsecutiveFailures() != 0 || e.GetTtftEwma().AsDuration() <= 0) {
			t.Fatalf("live endpoint state %v", e)
		}
	}
}

func TestResourceExhaustedIsRetriedElsewhere(t *testing.T) {
	cfg := simCfg()
	cfg.MaxConcurrency, cfg.QueueSize, cfg.TokensPerSecond = 1, 1, 10
	full := startWorker(t, cfg)
	free := startWorker(t, simCfg())
	// Fill the first worker: one running, one queued.
	conn, err := grpc.NewClient(full.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		s, err := enginev1.NewEngineServiceClient(conn).Generate(ctx, &enginev1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "x"}}})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				if _, err := s.Recv(); err != nil {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for full.backend.Status().GetQueueDepth() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	m := startRouter(t, ep(full.addr), ep(free.addr))
	for i := range 4 {
		r, err := run(context.Background(), m.client, req("m", 3))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if r.start.GetEndpoint() != free.addr {
			t.Fatalf("request %d served by the full worker", i)
		}
	}
	// With only the full worker, the client sees ResourceExhausted.
	m.set(t, ep(full.addr))
	_, err = run(context.Background(), m.client, req("m", 3))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "at capacity") {
		t.Fatalf("only full worker: %v", err)
	}
}

func TestFallbackModels(t *testing.T) {
	w := startWorker(t, simCfg(sim.ModelConfig{Name: "small"}))
	m := startRouter(t, ep(w.addr, "small"))
	r := req("big", 4)
	r.Routing = &routerv1.RoutingOptions{FallbackModels: []string{"bigger", "small"}}
	got, err := run(context.Background(), m.client, r)
	if err != nil {
		t.Fatal(err)
	}
	if got.start.GetModel() != "small" || got.tokens != 4 {
		t.Fatalf("fallback served %v with %d tokens", got.start, got.tokens)
	}
	// The model's configured chain applies when the request names none.
	got, err = run(context.Background(), m.client, req("big", 3))
	if err != nil || got.start.GetModel() != "small" {
		t.Fatalf("configured fallback: %v %v", got.start, err)
	}
	// An alias resolves to its group's models.
	got, err = run(context.Background(), m.client, req("chat-small", 3))
	if err != nil || got.start.GetModel() != "small" {
		t.Fatalf("alias: %v %v", got.start, err)
	}
}

func TestRoutingErrors(t *testing.T) {
	w := startWorker(t, simCfg())
	sick := ep("127.0.0.1:1", "sick")
	sick.Healthy = false
	m := startRouter(t, ep(w.addr), sick)
	withRouting := func(model string, ro *routerv1.RoutingOptions) *routerv1.GenerateRequest {
		r := req(model, 4)
		r.Routing = ro
		return r
	}
	tests := []struct {
		name string
		req  *routerv1.GenerateRequest
		code codes.Code
		msg  string
	}{
		{"unknown model", req("nope", 4), codes.NotFound, "no worker serves model nope (routable models: m)"},
		{"no healthy worker", req("sick", 4), codes.Unavailable, "model sick: no healthy worker can serve it now"},
		{"constraints exclude all", withRouting("m", &routerv1.RoutingOptions{Constraints: &routerv1.Constraints{MinQuality: 0.9}}), codes.FailedPrecondition, "excluded by routing.constraints"},
		{"cost constraint", withRouting("m", &routerv1.RoutingOptions{Constraints: &routerv1.Constraints{MaxCostPer_1K: 0.5}}), codes.FailedPrecondition, "excluded by routing.constraints"},
		{"format constraint", withRouting("m", &routerv1.RoutingOptions{Constraints: &routerv1.Constraints{Formats: []string{"gguf", "onnx"}}}), codes.FailedPrecondition, "excluded by routing.constraints"},
		{"unknown strategy", withRouting("m", &routerv1.RoutingOptions{Strategy: "magic"}), codes.InvalidArgument, `routing.strategy "magic" is unknown (known: adaptive, balanced, cache-affinity, cost-optimized, least-loaded, quality-first, round-robin, speed-priority, weighted)`},
		{"bad constraint", withRouting("m", &routerv1.RoutingOptions{Constraints: &routerv1.Constraints{MinQuality: 2}}), codes.InvalidArgument, "min_quality"},
		{"bad fallback", withRouting("m", &routerv1.RoutingOptions{FallbackModels: []string{""}}), codes.InvalidArgument, "routing.fallback_models[0]"},
		{"empty prompt", &routerv1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{}}}, codes.InvalidArgument, "prompt.text is empty"},
		{"invalid utf8", &routerv1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "\xc3"}}}, codes.InvalidArgument, "not valid UTF-8"},
		{"negative temperature", &routerv1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "x"}}, Sampling: &genv1.SamplingParams{Temperature: proto.Float32(-1)}}, codes.InvalidArgument, "sampling.temperature"},
		// Certainly beyond the context: refused before any worker is asked.
		{"beyond context (router)", req("m", 5000), codes.InvalidArgument, "max_tokens (5000) exceed the context length of every model that could serve it"},
		// Beyond it by a margin only the worker can see: its status, with
		// no retry of the same model.
		{"beyond context (worker status)", req("m", 4095), codes.InvalidArgument, "exceeds model \"m\"'s context of 4096 tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := run(context.Background(), m.client, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
	m.set(t)
	_, err := run(context.Background(), m.client, req("m", 4))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("no workers at all: %v", err)
	}
}

func TestLatencyConstraintUsesObservedTTFT(t *testing.T) {
	slowCfg := simCfg()
	slowCfg.TTFT = 150 * time.Millisecond
	slow, fast := startWorker(t, slowCfg), startWorker(t, simCfg())
	m := startRouter(t, ep(slow.addr), ep(fast.addr))
	for range 2 { // observe both
		if _, err := run(context.Background(), m.client, req("m", 2)); err != nil {
			t.Fatal(err)
		}
	}
	r := req("m", 2)
	r.Routing = &routerv1.RoutingOptions{Constraints: &routerv1.Constraints{MaxLatency: durationpb.New(100 * time.Millisecond)}}
	for range 4 {
		got, err := run(context.Background(), m.client, r)
		if err != nil {
			t.Fatal(err)
		}
		if got.start.GetEndpoint() != fast.addr {
			t.Fatalf("latency constraint routed to the slow worker")
		}
	}
}

// A worker that dies mid-stream is replaced by another serving the same
// model, which continues from exactly the tokens already sent: the client
// sees one stream whose text equals an uninterrupted run.
func TestMidStreamFailover(t *testing.T) {
	cfg := simCfg()
	cfg.TokensPerSecond = 200
	a, b := startWorker(t, cfg), startWorker(t, cfg)
	m := startRouter(t, ep(a.addr), ep(b.addr))
	want, err := run(context.Background(), m.client, req("m", 60))
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.client.Generate(context.Background(), req("m", 60))
	if err != nil {
		t.Fatal(err)
	}
	var (
		got    result
		ids    []uint32
		killed bool
	)
	workers := map[string]*worker{a.addr: a, b.addr: b}
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream broke: %v", err)
		}
		switch e := msg.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			if got.start != nil {
				t.Fatal("a second start event reached the client")
			}
			got.start = e.Start
		case *routerv1.GenerateResponse_Delta:
			ids = append(ids, e.Delta.GetTokenIds()...)
			got.text += e.Delta.GetText()
			if len(ids) >= 20 && !killed {
				workers[got.start.GetEndpoint()].srv.GRPC.Stop() // the serving worker dies
				killed = true
			}
		case *routerv1.GenerateResponse_End:
			got.end = e.End
		}
	}
	if got.text != want.text || len(ids) != 60 {
		t.Fatalf("failed-over stream: %d tokens %q\nuninterrupted: %q", len(ids), got.text, want.text)
	}
	if got.end.GetFailovers() != 1 || got.end.GetUsage().GetCompletionTokens() != 60 {
		t.Fatalf("end event %v", got.end)
	}
}

func TestMidStreamFailureEndsWithUnavailable(t *testing.T) {
	cfg := simCfg()
	cfg.TokensPerSecond = 50
	w := startWorker(t, cfg)
	m := startRouter(t, ep(w.addr))
	s, err := m.client.Generate(context.Background(), req("m", 100))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < 3 {
		msg, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got += len(msg.GetDelta().GetTokenIds())
	}
	w.srv.GRPC.Stop() // the worker dies
	for {
		_, err = s.Recv()
		if err != nil {
			break
		}
	}
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "failed mid-stream after") || !strings.Contains(st.Message(), "no other worker could take the stream over") {
		t.Fatalf("mid-stream death: %v %q", st.Code(), st.Message())
	}
}

func TestClientCancelReachesWorker(t *testing.T) {
	cfg := simCfg()
	cfg.TokensPerSecond = 20
	w := startWorker(t, cfg)
	m := startRouter(t, ep(w.addr))
	ctx, cancel := context.WithCancel(context.Background())
	s, err := m.client.Generate(ctx, req("m", 100))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if w.backend.Status().GetActiveSequences() != 1 {
		t.Fatalf("active = %d", w.backend.Status().GetActiveSequences())
	}
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for w.backend.Status().GetActiveSequences() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("worker still decoding after the client hung up")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSessionAffinity(t *testing.T) {
	a, b, c := startWorker(t, simCfg()), startWorker(t, simCfg()), startWorker(t, simCfg())
	m := startRouter(t, ep(a.addr), ep(b.addr), ep(c.addr))
	byEndpoint := map[string]bool{}
	for s := range 8 {
		r := req("m", 1)
		r.Routing = &routerv1.RoutingOptions{SessionId: "session-" + string(rune('a'+s))}
		first := ""
		for range 3 {
			got, err := run(context.Background(), m.client, r)
			if err != nil {
				t.Fatal(err)
			}
			if first == "" {
				first = got.start.GetEndpoint()
			} else if got.start.GetEndpoint() != first {
				t.Fatalf("session %d moved from %s to %s", s, first, got.start.GetEndpoint())
			}
		}
		byEndpoint[first] = true
	}
	if len(byEndpoint) < 2 {
		t.Fatalf("8 sessions all landed on %v", byEndpoint)
	}
}

func TestListModelsAndStaticDiscovery(t *testing.T) {
	w := startWorker(t, simCfg(sim.ModelConfig{Name: "x", Quality: 0.9}, sim.ModelConfig{Name: "y"}))
	m := startRouter(t)
	// A static list carries no models: the pool asks the worker.
	m.set(t, discovery.NewStaticEndpoints(w.addr, "127.0.0.1:1")...)
	deadline := time.Now().Add(5 * time.Second)
	for {
		list, err := m.client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetModels()) == 2 {
			x := list.GetModels()[0]
			if x.GetInfo().GetName() != "x" || x.GetInfo().GetQuality() != 0.9 || len(x.GetEndpoints()) != 1 || x.GetEndpoints()[0] != w.addr {
				t.Fatalf("model x: %v", x)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("models never learned: %v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	eps, err := m.client.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	healthy := map[string]bool{}
	for _, e := range eps.GetEndpoints() {
		healthy[e.GetAddress()] = e.GetHealthy()
	}
	if !healthy[w.addr] || healthy["127.0.0.1:1"] || len(healthy) != 2 {
		t.Fatalf("static endpoint health %v", healthy)
	}
}

func TestFirstTokenTimeoutRetriesElsewhere(t *testing.T) {
	slowCfg := simCfg()
	slowCfg.TTFT = 2 * time.Second
	slow, fast := startWorker(t, slowCfg), startWorker(t, simCfg())
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, FirstTokenTimeout: 150 * time.Millisecond}, ep(slow.addr), ep(fast.addr))
	began := time.Now()
	for i := range 4 {
		r, err := run(context.Background(), m.client, req("m", 3))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if r.start.GetEndpoint() != fast.addr || r.tokens != 3 {
			t.Fatalf("request %d: %v, %d tokens", i, r.start, r.tokens)
		}
	}
	if d := time.Since(began); d > 1500*time.Millisecond {
		t.Fatalf("4 requests took %v: the slow worker's 2s TTFT was waited out", d)
	}
	// The slow worker's abandoned sequences are cancelled, not left running.
	deadline := time.Now().Add(3 * time.Second)
	for slow.backend.Status().GetActiveSequences() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("abandoned sequences still running on the slow worker")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAdmissionOverload(t *testing.T) {
	cfg := simCfg()
	cfg.TokensPerSecond = 20
	w := startWorker(t, cfg)
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Admission: admission.New(1, 0, 0)}, ep(w.addr))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := m.client.Generate(ctx, req("m", 50))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	_, err = run(context.Background(), m.client, req("m", 2))
	if status.Code(err) != codes.ResourceExhausted || rpcerr.RetryAfter(err) <= 0 || !strings.Contains(status.Convert(err).Message(), "router overloaded") {
		t.Fatalf("overload: %v", err)
	}
	cancel()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := run(context.Background(), m.client, req("m", 2)); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("admission slot never freed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAPIKeysAndQuotas(t *testing.T) {
	w := startWorker(t, simCfg(sim.ModelConfig{Name: "m"}, sim.ModelConfig{Name: "other"}))
	env := map[string]string{}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte(`{"keys": [
		{"name": "team-a", "key": "sk-team-a-secret", "models": ["m"], "requests_per_minute": 3},
		{"name": "ops", "key": "sk-ops-secret"},
		{"name": "small", "key": "sk-small-secret", "tokens_per_minute": 100}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := auth.Load(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Keys: keys}, ep(w.addr, "m", "other"))
	as := func(key string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
	}
	tests := []struct {
		name string
		ctx  context.Context
		req  *routerv1.GenerateRequest
		code codes.Code
		msg  string
	}{
		{"no key", context.Background(), req("m", 2), codes.Unauthenticated, "missing API key"},
		{"wrong key", as("sk-guess"), req("m", 2), codes.Unauthenticated, "invalid API key"},
		{"model not allowed", as("sk-team-a-secret"), req("other", 2), codes.PermissionDenied, `API key "team-a" may not use model "other"`},
		{"allowed", as("sk-team-a-secret"), req("m", 2), codes.OK, ""},
		{"unrestricted key", as("sk-ops-secret"), req("other", 2), codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := run(tt.ctx, m.client, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
			if strings.Contains(st.Message(), "sk-") {
				t.Fatalf("status echoes a key: %q", st.Message())
			}
		})
	}
	// A request that could never fit the key's whole token quota is the
	// caller's mistake (InvalidArgument), not a wait (ResourceExhausted).
	if _, err := run(as("sk-small-secret"), m.client, req("m", 500)); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "over the key's whole quota of 100 tokens/min") {
		t.Fatalf("a request over the whole quota: %v", err)
	}
	// team-a has 3 requests a minute; one was used above.
	for i := range 2 {
		if _, err := run(as("sk-team-a-secret"), m.client, req("m", 2)); err != nil {
			t.Fatalf("request %d within quota: %v", i, err)
		}
	}
	_, err = run(as("sk-team-a-secret"), m.client, req("m", 2))
	if status.Code(err) != codes.ResourceExhausted || rpcerr.RetryAfter(err) <= 0 || !strings.Contains(status.Convert(err).Message(), `API key "team-a" is over its quota`) {
		t.Fatalf("over quota: %v", err)
	}
	list, err := m.client.ListModels(as("sk-team-a-secret"), &routerv1.ListModelsRequest{})
	if err != nil || len(list.GetModels()) != 1 || list.GetModels()[0].GetInfo().GetName() != "m" {
		t.Fatalf("team-a's models: %v %v", list, err)
	}
	if _, err := m.client.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("endpoints without a key: %v", err)
	}
}

// Keys never reach traces: every attribute and event of the router's spans
// is checked for the secret. The request's end user is recorded (user.id).
func TestKeysStayOutOfTraces(t *testing.T) {
	w := startWorker(t, simCfg())
	env := map[string]string{"LLMROUTER_API_KEYS": "svc=sk-very-secret-value"}
	keys, err := auth.Load("", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	p := pool.New(telemetry.Noop(), quiet, 50*time.Millisecond)
	wctx := &watcher{ch: make(chan []discovery.Endpoint, 1)}
	wctx.ch <- []discovery.Endpoint{ep(w.addr)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, wctx) })
	defer func() { cancel(); wg.Wait() }()
	sched, err := plugins.Builtin().Build(plugins.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp))))
	routerv1.RegisterRouterServiceServer(srv, server.New(p, sched, server.Config{Keys: keys}))
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := routerv1.NewRouterServiceClient(conn)
	deadline := time.Now().Add(5 * time.Second)
	for len(p.Endpoints()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	authed := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer sk-very-secret-value")
	withUser := req("m", 2)
	withUser.User = "alice"
	if _, err := run(authed, client, withUser); err != nil {
		t.Fatal(err)
	}
	bad := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer sk-very-secret-wrong")
	if _, err := run(bad, client, req("m", 2)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong key: %v", err)
	}
	// The server span ends in the stats handler after the status reaches the
	// client, so wait for both to be recorded.
	spans := rec.Ended()
	for wait := time.Now().Add(5 * time.Second); len(spans) < 2 && time.Now().Before(wait); spans = rec.Ended() {
		time.Sleep(5 * time.Millisecond)
	}
	if len(spans) < 2 {
		t.Fatalf("%d spans recorded", len(spans))
	}
	sawName, sawUser := false, false
	for _, s := range spans {
		var all []attribute.KeyValue
		all = append(all, s.Attributes()...)
		for _, e := range s.Events() {
			all = append(all, e.Attributes...)
		}
		for _, kv := range all {
			if strings.Contains(kv.Value.Emit(), "very-secret") {
				t.Fatalf("span %q carries the key in %s", s.Name(), kv.Key)
			}
			if kv.Key == "llm.api_key_name" && kv.Value.AsString() == "svc" {
				sawName = true
			}
			if kv.Key == "user.id" && kv.Value.AsString() == "alice" {
				sawUser = true
			}
		}
		if strings.Contains(s.Status().Description, "very-secret") {
			t.Fatalf("span %q status carries the key", s.Name())
		}
	}
	if !sawName {
		t.Fatal("no span names the key by its name")
	}
	if !sawUser {
		t.Fatal("no span records the request's user (user.id)")
	}
}

// The router learns a worker's load from the trailer of each stream it
// relays: requests another router sent there since its last status poll
// (which, here, never comes again) count in its busy figures.
func TestStreamTrailerUpdatesLoad(t *testing.T) {
	cfg := simCfg()
	cfg.TokensPerSecond = 50
	a := startWorker(t, cfg)
	m := startRouterRefresh(t, time.Hour, server.Config{MaxAttempts: 3}, ep(a.addr))
	eps := m.pool.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("%d endpoints", len(eps))
	}
	e := eps[0]
	waitPolled(t, e)
	// Another router's three long streams, straight to the worker.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 3 {
		s, err := a.client.Generate(ctx, &enginev1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: strings.Repeat("x", i+1)}},
			Sampling: &genv1.SamplingParams{MaxTokens: 500}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if b := e.Busy(); b != 0 {
		t.Fatalf("busy %d before any stream of ours ended (no poll since the start)", b)
	}
	if _, err := run(context.Background(), m.client, req("m", 2)); err != nil {
		t.Fatal(err)
	}
	if b, bm := e.Busy(), e.Route("m").Busy(); b != 3 || bm != 3 {
		t.Fatalf("after our stream's trailer: busy %d, model %d; want the other router's 3", b, bm)
	}
}

// A stream that ends in an error carries the worker's load too: refused by
// a full worker, the router learns that the worker is full.
func TestErrorTrailerUpdatesLoad(t *testing.T) {
	cfg := simCfg()
	cfg.TokensPerSecond, cfg.MaxConcurrency, cfg.QueueSize = 50, 1, 1
	a := startWorker(t, cfg)
	m := startRouterRefresh(t, time.Hour, server.Config{MaxAttempts: 1}, ep(a.addr))
	e := m.pool.Endpoints()[0]
	waitPolled(t, e)
	// Another router's streams hold the only slot and the only queue place.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := a.client.Generate(ctx, &enginev1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "x"}},
		Sampling: &genv1.SamplingParams{MaxTokens: 500}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.Generate(ctx, &enginev1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "y"}},
		Sampling: &genv1.SamplingParams{MaxTokens: 500}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.backend.Status().GetQueueDepth() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 500*time.Millisecond) // no waiting out the retry hint
	defer rcancel()
	if _, err := run(rctx, m.client, req("m", 2)); status.Code(err) != codes.ResourceExhausted && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a request to the full worker: %v, want ResourceExhausted", err)
	}
	if b := e.ModelBusy("m"); b != 2 {
		t.Fatalf("after the refusal's trailer: model busy %d, want the other router's 2 (one decoding, one queued)", b)
	}
}

// waitPolled waits for the pool's first status poll of e (it polls once as
// an endpoint arrives).
func waitPolled(t *testing.T, e *pool.Endpoint) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Status() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if e.Status() == nil {
		t.Fatal("the pool never polled the worker's status")
	}
}
