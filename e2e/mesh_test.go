// End-to-end tests over real processes: a Consul dev agent, Jaeger, two
// engine-sim workers and the router, each on ports picked free, plus grpcurl
// and a Node.js client as outside callers.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/traces"
)

var (
	bins harness.Binaries
	// certs is the development CA and role certificates every process of
	// the tests runs with (mTLS on every hop).
	certs *testkit.Certs
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "llmrouter-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bins, err = harness.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	certs = &testkit.Certs{Dir: filepath.Join(dir, "certs")}
	if err := mtls.WriteDevSet(certs.Dir, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
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

type mesh struct {
	consul  *testkit.Consul
	jaeger  *harness.Jaeger
	workers []*testkit.Proc
	router  *testkit.Proc
	client  routerv1.RouterServiceClient
}

func startMesh(t *testing.T) *mesh {
	t.Helper()
	m := &mesh{consul: testkit.StartConsul(t, 0), jaeger: harness.StartJaeger(t)}
	for i := range 2 {
		m.workers = append(m.workers, testkit.Start(t, fmt.Sprintf("worker%d", i), bins.EngineSim,
			testkit.StartOptions{WaitListening: true, Env: append(m.jaeger.OTELEnv(), "OTEL_SERVICE_NAME=engine-sim")}, certs.Args(mtls.RoleEngine,
				"-consul", m.consul.HTTPAddr, "-check-interval", "1s", "-models", "sim-small:quality=0.6;cost_out=0.002;output_tokens=1000",
				"-tps", "100", "-ttft", "20ms", "-grace", "2s")...))
	}
	m.router = testkit.Start(t, "router", bins.Router,
		testkit.StartOptions{WaitListening: true, Env: append(m.jaeger.OTELEnv(), "OTEL_SERVICE_NAME=router")}, certs.Args(mtls.RoleRouter,
			"-consul", m.consul.HTTPAddr, "-grace", "2s", "-http-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0")...)
	conn, err := grpc.NewClient(m.router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m.client = routerv1.NewRouterServiceClient(conn)
	m.waitEndpoints(t, 2, 15*time.Second)
	return m
}

// waitEndpoints waits until n healthy workers serve sim-small.
func (m *mesh) waitEndpoints(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		list, err := m.client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
		if err == nil && len(list.GetModels()) == 1 && len(list.GetModels()[0].GetEndpoints()) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router never saw %d healthy workers: %v %v", n, list, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func generate(max int32, prompt string) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{
		Model: "sim-small", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: max},
	}
}

type streamResult struct {
	endpoint string
	model    string
	tokens   int
	text     string
	end      *genv1.EndEvent
	err      error
}

func consume(s routerv1.RouterService_GenerateClient, firstToken chan<- string) streamResult {
	var r streamResult
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		switch e := msg.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			r.endpoint, r.model = e.Start.GetEndpoint(), e.Start.GetModel()
		case *routerv1.GenerateResponse_Delta:
			if r.tokens == 0 && firstToken != nil {
				firstToken <- r.endpoint
			}
			r.tokens += len(e.Delta.GetTokenIds())
			r.text += e.Delta.GetText()
		case *routerv1.GenerateResponse_End:
			r.end = e.End
		}
	}
}

func TestMesh(t *testing.T) {
	m := startMesh(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("streams every token through the router", func(t *testing.T) {
		s, err := m.client.Generate(context.Background(), generate(32, "hello mesh"))
		if err != nil {
			t.Fatal(err)
		}
		r := consume(s, nil)
		if r.err != nil || r.tokens != 32 || r.end.GetUsage().GetCompletionTokens() != 32 || r.endpoint == "" {
			t.Fatalf("stream: %+v", r)
		}
	})

	t.Run("trace links router and worker spans", func(t *testing.T) {
		s, err := m.client.Generate(context.Background(), generate(4, "traced"))
		if err != nil {
			t.Fatal(err)
		}
		r := consume(s, nil)
		if r.err != nil {
			t.Fatal(r.err)
		}
		checkTrace(t, m.jaeger.Query, r.endpoint)
	})

	t.Run("every hop's time read back from Jaeger", func(t *testing.T) {
		since := time.Now()
		const n = 20
		ids := make([]string, n)
		client := map[string]time.Duration{}
		for i := range n {
			ids[i] = fmt.Sprintf("hops-%d-%d", since.UnixNano(), i)
			req := generate(8, fmt.Sprintf("hop %d", i))
			req.RequestId = ids[i]
			began := time.Now()
			s, err := m.client.Generate(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if r := consume(s, nil); r.err != nil || r.tokens != 8 {
				t.Fatalf("request %d: %+v", i, r)
			}
			client[ids[i]] = time.Since(began)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		got, err := (&traces.Client{Base: m.jaeger.Query}).Collect(ctx, ids, since)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Hops) != n || len(got.Missing) > 0 || len(got.Incomplete) > 0 || got.ReceivedSpans != got.ExpectedSpans {
			t.Fatalf("%d of %d traces complete; missing %v, incomplete %v; spans %d of %d", len(got.Hops), n, got.Missing, got.Incomplete, got.ReceivedSpans, got.ExpectedSpans)
		}
		var hs []traces.Hops
		for id, h := range got.Hops {
			hs = append(hs, h)
			// The hops nest, and the router's span agrees with what the
			// client measured (the client's time adds its own side of
			// the connection, never less). A worker's server span ends
			// after it has written its trailers, so on a busy machine it
			// may end a little after the router, which ends on reading
			// them: its end is allowed endSlack past the router's.
			const endSlack = 5 * time.Millisecond
			if h.Worker > h.Total+endSlack || h.ToWorker+h.Worker > h.Total+endSlack || h.TTFT > h.Worker || h.Queue+h.Prefill > h.TTFT+time.Millisecond ||
				h.AdmissionWait+h.Decision > h.ToWorker || h.OutputTokens != 8 || h.Attempts != 1 {
				t.Errorf("%s: hops do not nest: %+v", id, h)
			}
			if c := client[id]; h.Total > c || c-h.Total > 50*time.Millisecond {
				t.Errorf("%s: the router's span took %v, the client %v (tolerance 50ms)", id, h.Total, c)
			}
		}
		t.Logf("per hop over %d requests (sim workers, 20 ms TTFT, 100 tokens/s):\n%s", n, traces.Table(traces.Summarize(hs)))
		tr, err := (&traces.Client{Base: m.jaeger.Query}).Find(context.Background(), traces.Query{Service: "router", Tags: map[string]string{"llm.request_id": ids[0]}, Limit: 1})
		if err != nil || len(tr) != 1 {
			t.Fatalf("trace of %s: %v %v", ids[0], len(tr), err)
		}
		t.Logf("one request:\n%s", traces.Waterfall(tr[0]))
	})

	t.Run("grpcurl lists, describes and streams", func(t *testing.T) {
		grpcurl := testkit.ToolBin(t, "grpcurl")
		workerAddr := m.workers[0].Addr
		// Workers speak only mTLS: grpcurl holds the router's certificate
		// (the worker's own certificate names 127.0.0.1, so grpcurl's host
		// check passes too).
		rc := mtls.DevPaths(certs.Dir, mtls.RoleRouter)
		asRouter := []string{"-cacert", rc.CA, "-cert", rc.Cert, "-key", rc.Key}
		ac := mtls.DevPaths(certs.Dir, mtls.RoleAdmin)
		asAdmin := []string{"-cacert", ac.CA, "-cert", ac.Cert, "-key", ac.Key}
		cases := []struct {
			args []string
			want []string
		}{
			{[]string{"-plaintext", m.router.Addr, "list"}, []string{"llmrouter.router.v1.RouterService", "grpc.health.v1.Health"}},
			{append(asRouter, workerAddr, "list"), []string{"llmrouter.engine.v1.EngineService"}},
			{[]string{"-plaintext", workerAddr, "list"}, []string{"Failed to"}},
			{append(asRouter, "-d", `{"model":"sim-small"}`, workerAddr, "llmrouter.engine.v1.EngineService/UnloadModel"), []string{"Code: PermissionDenied", "is an admin RPC"}},
			{[]string{"-plaintext", m.router.Addr, "describe", "llmrouter.router.v1.RouterService"}, []string{"rpc Generate", "stream .llmrouter.router.v1.GenerateResponse"}},
			{append(asAdmin, workerAddr, "describe", "llmrouter.generation.v1.SamplingParams"), []string{"temperature", "max_tokens"}},
			{[]string{"-plaintext", "-d", `{"model":"sim-small","prompt":{"text":"hi"},"sampling":{"max_tokens":3,"temperature":0}}`, m.router.Addr, "llmrouter.router.v1.RouterService/Generate"}, []string{`"start"`, `"delta"`, `"FINISH_REASON_LENGTH"`}},
			{append(asRouter, "-d", `{"model":"sim-small","prompt":{"text":"hi"},"sampling":{"max_tokens":3}}`, workerAddr, "llmrouter.engine.v1.EngineService/Generate"), []string{`"start"`, `"completionTokens": 3`}},
			{append(asAdmin, "-d", `{"model":"sim-small","prompt":{"text":"hi"}}`, workerAddr, "llmrouter.engine.v1.EngineService/Generate"), []string{"Code: PermissionDenied"}},
			{[]string{"-plaintext", "-d", `{"model":"nope","prompt":{"text":"hi"}}`, m.router.Addr, "llmrouter.router.v1.RouterService/Generate"}, []string{"Code: NotFound"}},
		}
		for _, c := range cases {
			out, _ := exec.Command(grpcurl, c.args...).CombinedOutput()
			for _, w := range c.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("grpcurl %v: output lacks %q:\n%s", c.args, w, out)
				}
			}
		}
	})

	t.Run("node client streams from the router", func(t *testing.T) {
		modules := nodeModules(t, root)
		cmd := exec.Command("node", filepath.Join(root, "e2e", "node", "client.js"), m.router.Addr, filepath.Join(root, "proto"), "sim-small", "from node", "7")
		cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node client: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		var done struct {
			Done struct {
				Tokens int    `json:"tokens"`
				Text   string `json:"text"`
			} `json:"done"`
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &done); err != nil || done.Done.Tokens != 7 {
			t.Fatalf("node summary %q: %v", lines[len(lines)-1], err)
		}
		// The same request from Go gives the same text (greedy).
		s, err := m.client.Generate(context.Background(), generate(7, "from node"))
		if err != nil {
			t.Fatal(err)
		}
		if r := consume(s, nil); r.text != done.Done.Text {
			t.Fatalf("node got %q, go got %q", done.Done.Text, r.text)
		}
		if !strings.Contains(lines[0], `"start"`) || !strings.Contains(lines[len(lines)-2], `"end"`) {
			t.Fatalf("node events: first %q, last %q", lines[0], lines[len(lines)-2])
		}
	})

	t.Run("official openai client over the HTTP API", func(t *testing.T) {
		httpAddr := m.router.Addrs["http"]
		if httpAddr == "" {
			t.Fatal("router printed no http address")
		}
		cmd := exec.Command("node", filepath.Join(root, "e2e", "node", "openai_client.js"), "http://"+httpAddr+"/v1", "sim-small", "sim-small")
		cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules(t, root))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openai client: %v\n%s", err, out)
		}
		var got struct {
			Models []string `json:"models"`
			Chat   struct {
				Content, Finish string
				Usage           struct {
					CompletionTokens int `json:"completion_tokens"`
				}
			} `json:"chat"`
			Stream struct {
				Content string
				Chunks  int
				Finish  string
				Usage   struct {
					CompletionTokens int `json:"completion_tokens"`
				}
			} `json:"stream"`
			Completion struct{ Text string }    `json:"completion"`
			Embeddings struct{ Count, Dim int } `json:"embeddings"`
			NotFound   struct {
				Status  int
				Code    string
				Message string
			} `json:"notFound"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("output %s: %v", out, err)
		}
		switch {
		case len(got.Models) != 1 || got.Models[0] != "sim-small":
			t.Fatalf("models %v", got.Models)
		case got.Chat.Content == "" || got.Chat.Finish != "length" || got.Chat.Usage.CompletionTokens != 12:
			t.Fatalf("chat %+v", got.Chat)
		case got.Stream.Content != got.Chat.Content || got.Stream.Usage.CompletionTokens != 12 || got.Stream.Finish != "length" || got.Stream.Chunks < 3:
			t.Fatalf("stream %+v, non-stream %q", got.Stream, got.Chat.Content)
		case got.Completion.Text == "" || got.Embeddings.Count != 2 || got.Embeddings.Dim != 16:
			t.Fatalf("completion %+v embeddings %+v", got.Completion, got.Embeddings)
		case got.NotFound.Status != 404 || got.NotFound.Code != "model_not_found":
			t.Fatalf("unknown model: %+v", got.NotFound)
		}
	})

	t.Run("a killed worker", func(t *testing.T) { killWorker(t, m) })

	t.Run("prometheus metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + m.router.Addrs["metrics"] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text := string(b)
		for _, want := range []string{
			`llmrouter_requests_total{code="OK",model="sim-small"}`,
			`llmrouter_requests_total{code="NotFound",model="_other"}`, // an unknown name gets no label of its own
			`llmrouter_routing_decisions_total{strategy="balanced"}`,
			`llmrouter_time_to_first_token_seconds_bucket{model="sim-small"`,
			`llmrouter_tokens_total{kind="completion",model="sim-small"}`,
			`llmrouter_endpoint_in_flight{endpoint="` + m.workers[1].Addr + `"}`,
			`llmrouter_endpoint_healthy{endpoint="` + m.workers[1].Addr + `"} 1`,
			"llmrouter_failovers_total ",
			"process_cpu_seconds_total",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		if strings.Contains(text, "llmrouter_failovers_total 0") {
			t.Error("the killed worker's failovers were not counted")
		}
	})
}

// killWorker: streams underway on the killed worker fail over to the other
// worker and finish with the same text as uninterrupted runs, the rest
// finish, requests without a token yet succeed elsewhere, and Consul's check
// takes the worker out of rotation within seconds.
func killWorker(t *testing.T, m *mesh) {
	const streams = 8
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan string, streams)
	results := make([]streamResult, streams)
	var wg sync.WaitGroup
	for i := range streams {
		// Round robin, so that both workers hold streams whatever the
		// latency and load the earlier subtests left in the default
		// strategy's scores.
		req := generate(300, fmt.Sprint("long ", i))
		req.Routing = &routerv1.RoutingOptions{Strategy: "round-robin"}
		s, err := m.client.Generate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { results[i] = consume(s, first) })
	}
	onVictim := 0
	victim := m.workers[0]
	for range streams {
		if <-first == victim.Addr {
			onVictim++
		}
	}
	if onVictim == 0 || onVictim == streams {
		t.Fatalf("%d of %d streams on the victim; round robin should split them", onVictim, streams)
	}
	victim.Kill()
	killed := time.Now()

	// Requests sent right after the kill, before Consul notices, succeed.
	var fresh sync.WaitGroup
	freshErrs := make(chan error, 10)
	for i := range 10 {
		fresh.Go(func() {
			s, err := m.client.Generate(ctx, generate(5, fmt.Sprint("after ", i)))
			if err != nil {
				freshErrs <- err
				return
			}
			if r := consume(s, nil); r.err != nil || r.tokens != 5 {
				freshErrs <- fmt.Errorf("fresh request: %d tokens, %v", r.tokens, r.err)
			}
		})
	}
	fresh.Wait()
	close(freshErrs)
	for err := range freshErrs {
		t.Error(err)
	}

	// Consul marks the worker critical and the router drops it.
	m.waitEndpoints(t, 1, 5*time.Second)
	t.Logf("router stopped choosing the killed worker %v after the kill", time.Since(killed).Round(10*time.Millisecond))

	wg.Wait()
	var verify sync.WaitGroup
	for i, r := range results {
		if r.err != nil || r.tokens != 300 {
			t.Errorf("stream %d (started on %s): %d tokens, %v", i, r.endpoint, r.tokens, r.err)
			continue
		}
		wantFailovers := int32(0)
		if r.endpoint == victim.Addr {
			wantFailovers = 1
		}
		if r.end.GetFailovers() != wantFailovers {
			t.Errorf("stream %d (started on %s): %d failovers, want %d", i, r.endpoint, r.end.GetFailovers(), wantFailovers)
		}
		if r.endpoint == victim.Addr {
			verify.Go(func() {
				s, err := m.client.Generate(ctx, generate(300, fmt.Sprint("long ", i)))
				if err != nil {
					t.Error(err)
					return
				}
				if again := consume(s, nil); again.text != r.text {
					t.Errorf("stream %d: failed-over text differs from an uninterrupted run", i)
				}
			})
		}
	}
	verify.Wait()

	for i := range 6 {
		s, err := m.client.Generate(ctx, generate(2, fmt.Sprint("later ", i)))
		if err != nil {
			t.Fatal(err)
		}
		if r := consume(s, nil); r.err != nil || r.endpoint == victim.Addr {
			t.Fatalf("after removal: %+v", r)
		}
	}
}

// checkTrace finds the trace of a Generate in Jaeger and checks that the
// worker's server span is a descendant of the router's server span, and both
// carry model and endpoint attributes.
func checkTrace(t *testing.T, query, endpoint string) {
	t.Helper()
	type span struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	}
	type traceData struct {
		Spans     []span `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	}
	tag := func(s span, k string) string {
		for _, tg := range s.Tags {
			if tg.Key == k {
				return fmt.Sprint(tg.Value)
			}
		}
		return ""
	}
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		resp, err := http.Get(query + "/api/traces?service=router&operation=llmrouter.router.v1.RouterService/Generate&limit=50&lookback=1h")
		if err != nil {
			last = err.Error()
			continue
		}
		var body struct {
			Data []traceData `json:"data"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			last = err.Error()
			continue
		}
		for _, tr := range body.Data {
			byID := map[string]span{}
			for _, s := range tr.Spans {
				byID[s.SpanID] = s
			}
			var routerSpan, workerSpan *span
			for _, s := range tr.Spans {
				svc := tr.Processes[s.ProcessID].ServiceName
				switch {
				case svc == "router" && s.OperationName == "llmrouter.router.v1.RouterService/Generate" && tag(s, "llm.endpoint") == endpoint:
					routerSpan = &s
				case svc == "engine-sim" && s.OperationName == "llmrouter.engine.v1.EngineService/Generate":
					workerSpan = &s
				}
			}
			if routerSpan == nil || workerSpan == nil {
				continue
			}
			if tag(*routerSpan, "gen_ai.request.model") != "sim-small" || tag(*workerSpan, "gen_ai.request.model") != "sim-small" || tag(*workerSpan, "llm.endpoint") != endpoint {
				t.Fatalf("span attributes: router %v, worker %v", routerSpan.Tags, workerSpan.Tags)
			}
			// Each hop's timing is on its span: the router's admission,
			// decision and relay; the worker's queue, prefill, first token,
			// decode, batch and usage (GenAI names where they exist).
			for _, want := range []struct {
				s    *span
				keys []string
			}{
				{routerSpan, []string{"llm.admission_wait_ms", "llm.decision_ms", "llm.relay_ms", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.response.model"}},
				{workerSpan, []string{"llm.queue_wait_ms", "llm.prefill_ms", "llm.prefill_tokens", "llm.ttft_ms", "llm.decode_ms", "llm.batch_size_max",
					"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons", "gen_ai.usage.cache_read.input_tokens"}},
			} {
				for _, k := range want.keys {
					if tag(*want.s, k) == "" {
						t.Errorf("span %s lacks %s: %v", want.s.OperationName, k, want.s.Tags)
					}
				}
			}
			if tag(*workerSpan, "gen_ai.usage.output_tokens") != tag(*routerSpan, "gen_ai.usage.output_tokens") {
				t.Errorf("output tokens: worker %s, router %s", tag(*workerSpan, "gen_ai.usage.output_tokens"), tag(*routerSpan, "gen_ai.usage.output_tokens"))
			}
			// Walk the worker span's parents up to the router's server span.
			cur := *workerSpan
			for range 10 {
				if len(cur.References) == 0 {
					break
				}
				parent, ok := byID[cur.References[0].SpanID]
				if !ok {
					break
				}
				if parent.SpanID == routerSpan.SpanID {
					return
				}
				cur = parent
			}
			t.Fatalf("worker span %s is not a descendant of router span %s", workerSpan.SpanID, routerSpan.SpanID)
		}
		last = fmt.Sprintf("%d traces, none with both spans yet", len(body.Data))
	}
	t.Fatalf("no linked router→worker trace in Jaeger: %s", last)
}

// nodeModules is where tools/install.sh put the Node packages.
func nodeModules(t *testing.T, root string) string {
	t.Helper()
	cacheOut, err := exec.Command(filepath.Join(root, "tools", "install.sh"), "--cache").Output()
	if err != nil {
		t.Fatal(err)
	}
	modules := filepath.Join(strings.TrimSpace(string(cacheOut)), "node", "node_modules")
	for _, pkg := range []string{"@grpc/grpc-js", "openai", "@anthropic-ai/sdk"} {
		if _, err := os.Stat(filepath.Join(modules, pkg)); err != nil {
			t.Fatalf("node package %s missing (run make tools): %v", pkg, err)
		}
	}
	return modules
}
