package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// workerRows are the worker faults, with five real engine-gguf processes
// serving the generated tiny model (greedy decoding, so a failed-over
// stream must equal an uninterrupted one): SIGKILL mid-stream, SIGSTOP
// mid-stream, and a worker slowed by SIGSTOP/SIGCONT cycles.
func workerRows(t testkit.T, bins harness.Binaries, certs *testkit.Certs, tm Timings) []Result {
	path, err := harness.TinyModel(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var workers []*testkit.Proc
	var addrs []string
	for i := range 5 { // two are killed, two stopped and continued
		w := testkit.Start(t, fmt.Sprintf("gguf%d", i), bins.EngineGGUF, testkit.StartOptions{WaitListening: true, Timeout: 60 * time.Second}, certs.Args(mtls.RoleEngine,
			"-model", "tiny="+path, "-ctx", "1024", "-parallel", "2", "-threads", "1", "-threads-batch", "1", "-grace", "1s")...)
		workers = append(workers, w)
		addrs = append(addrs, w.Addr)
	}
	t.Cleanup(func() {
		for _, w := range workers {
			_ = w.Cmd.Process.Signal(syscall.SIGCONT) // a stopped worker must be able to die
		}
	})
	policies := map[string]any{}
	if tm.LocalStall > 0 {
		policies["tiny"] = map[string]any{"stall_timeout": tm.LocalStall.String()}
	}
	strategies := WriteJSON(t, t.TempDir(), "strategies.json", map[string]any{
		"default": "balanced",
		"strategies": map[string]any{"balanced": map[string]any{
			"filters": []map[string]any{{"type": "healthy"}, {"type": "constraints"}, {"type": "fits"}, {"type": "session"}},
			"scorers": []map[string]any{{"type": "load", "weight": 0.5}, {"type": "latency", "weight": 0.5}},
			"picker":  map[string]any{"type": "max-score"},
		}},
		"policies": policies,
	})
	// A short -refresh: static discovery drops a dead or stopped worker
	// after two missed refreshes, within about half a second (after the
	// request it broke).
	args := []string{"-static", strings.Join(addrs, ","), "-strategies", strategies, "-refresh", "200ms", "-http-listen", "127.0.0.1:0"}
	if tm.LocalFirst > 0 {
		args = append(args, "-local-first-token-timeout", tm.LocalFirst.String())
	}
	router := testkit.Start(t, "router-workers", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter, args...)...)
	conn, err := grpc.NewClient(router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := routerv1.NewRouterServiceClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
		if err == nil && len(l.GetModels()) == 1 && len(l.GetModels()[0].GetEndpoints()) == len(workers) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router does not list tiny on %d workers: %v %v", len(workers), l, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	byAddr := map[string]*testkit.Proc{}
	for _, w := range workers {
		byAddr[w.Addr] = w
	}

	const maxTokens = 400
	prompt := "A router in a serving mesh"
	ref := stream(client, prompt, maxTokens, 0, nil)
	if ref.err != nil || ref.tokens != maxTokens {
		t.Fatalf("reference run: %d tokens, %v", ref.tokens, ref.err)
	}
	// Each worker twice, so every route has measured rates.
	for range 2 * len(workers) {
		stream(client, prompt, 8, 0, nil)
	}

	httpBase := "http://" + router.Addrs["http"]
	refHTTP := httpStream(httpBase, prompt, maxTokens, 0, nil)
	if refHTTP.err != nil || refHTTP.tokens != maxTokens {
		t.Fatalf("reference run over HTTP: %d tokens, %v", refHTTP.tokens, refHTTP.err)
	}
	// inFlight names the worker serving the one request in flight.
	inFlight := func() *testkit.Proc {
		l, err := client.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{})
		if err != nil {
			return nil
		}
		for _, e := range l.GetEndpoints() {
			if e.GetInFlight() > 0 {
				return byAddr[e.GetAddress()]
			}
		}
		return nil
	}
	midStream := func(fault, required string, sig syscall.Signal, want []string) Result {
		res := Result{Row: Row{Fault: fault, Required: required}, Outcomes: map[string]Outcome{}, Seen: map[string]map[string]int{}}
		for _, tr := range []string{"grpc", "http-stream"} {
			var victim *testkit.Proc
			began := time.Now()
			var r streamed
			reference := ref
			if tr == "grpc" {
				r = stream(client, prompt, maxTokens, 3, func(endpoint string) {
					victim = byAddr[endpoint]
					_ = victim.Cmd.Process.Signal(sig)
				})
			} else {
				reference = refHTTP
				r = httpStream(httpBase, prompt, maxTokens, 3, func() {
					if victim = inFlight(); victim != nil {
						_ = victim.Cmd.Process.Signal(sig)
					}
				})
			}
			o := Outcome{OK: r.err == nil, Text: r.text, Took: time.Since(began), Model: "tiny",
				Failovers: int(r.end.GetFailovers()), Attempts: attemptList(r.end), Completed: int(r.end.GetUsage().GetCompletionTokens())}
			if victim != nil {
				o.Note = fmt.Sprintf("signalled %s; %s", victim.Name, strings.Join(o.Attempts, ", "))
			}
			res.Outcomes[tr] = o
			bad := func(format string, args ...any) {
				res.Failures = append(res.Failures, tr+": "+fmt.Sprintf(format, args...))
			}
			switch {
			case victim == nil:
				bad("no worker to signal")
			case r.err != nil:
				bad("the stream failed: %v", r.err)
			case r.text != reference.text || r.tokens != maxTokens:
				bad("%d tokens, text differs from the uninterrupted run: %v", r.tokens, r.text != reference.text)
			case o.Completed != maxTokens:
				bad("usage counts %d completion tokens, want %d", o.Completed, maxTokens)
			case o.Failovers != 1 || !slices.Equal(o.Attempts, want):
				bad("%d failovers, attempts %v; want 1 and %v", o.Failovers, o.Attempts, want)
			}
			if sig == syscall.SIGSTOP && victim != nil {
				_ = victim.Cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		return res
	}
	kill := midStream("worker SIGKILL mid-stream (engine-gguf)", "failover with identical text (end event `failovers` = 1)", syscall.SIGKILL,
		[]string{"tiny:first:cut", "tiny:failover:ok"})
	stop := midStream("worker SIGSTOP mid-stream (engine-gguf)", "stall detected; failover with identical text", syscall.SIGSTOP,
		[]string{"tiny:first:stalled", "tiny:failover:ok"})
	for _, w := range workers {
		_ = w.Cmd.Process.Signal(syscall.SIGCONT)
	}
	return []Result{kill, stop, silentRow(client, byAddr, ref, prompt, maxTokens, tm), slowRow(client, workers, tm)}
}

// silentRow: a worker stopped before its first token (a session sticks the
// request to it): the local first-token deadline, derived from the route's
// measured rates, fails the request over, and the answer is the same.
func silentRow(client routerv1.RouterServiceClient, byAddr map[string]*testkit.Proc, ref streamed, prompt string, maxTokens int, tm Timings) Result {
	res := Result{Row: Row{Fault: "worker SIGSTOP before its first token (engine-gguf)", Required: "the local first-token deadline (from the route's measured TTFT and prefill rate) fails over; identical text"},
		Outcomes: map[string]Outcome{}, Seen: map[string]map[string]int{}}
	bad := func(format string, args ...any) {
		res.Failures = append(res.Failures, "grpc: "+fmt.Sprintf(format, args...))
	}
	const session = "stuck-to-one-worker"
	// The session's worker, once two requests in a row agree: a route
	// whose circuit an earlier row opened may turn half-open between
	// requests and take the session back.
	var victim *testkit.Proc
	for range 20 {
		a, b := streamSession(client, session, prompt, 4, 0, nil), streamSession(client, session, prompt, 4, 0, nil)
		if a.err == nil && b.err == nil && a.endpoint == b.endpoint {
			victim = byAddr[a.endpoint]
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if victim == nil {
		bad("no worker served the session twice in a row")
		return res
	}
	// The stopped worker's next missed status refresh takes it out of
	// rotation (two misses: about half a second). A request the router
	// schedules only after that, on a loaded machine, never meets the
	// stopped worker; that case says nothing about the first-token
	// deadline, so it is tried once more.
	var (
		r    streamed
		took time.Duration
	)
	for try := 0; try < 2; try++ {
		_ = victim.Cmd.Process.Signal(syscall.SIGSTOP)
		began := time.Now()
		r = streamSession(client, session, prompt, maxTokens, 0, nil)
		took = time.Since(began)
		_ = victim.Cmd.Process.Signal(syscall.SIGCONT)
		if a := attemptList(r.end); len(a) != 1 || r.err != nil {
			break
		}
		time.Sleep(time.Second) // healthy again
	}
	o := Outcome{OK: r.err == nil, Text: r.text, Took: took, Model: "tiny", Attempts: attemptList(r.end), Completed: int(r.end.GetUsage().GetCompletionTokens())}
	o.Note = fmt.Sprintf("stopped %s; %s", victim.Name, strings.Join(o.Attempts, ", "))
	res.Outcomes["grpc"] = o
	floor := tm.LocalFirst
	if floor == 0 {
		floor = 5 * time.Second
	}
	switch want := []string{"tiny:first:first_token_timeout", "tiny:fallback:ok"}; {
	case r.err != nil:
		bad("the request failed: %v", r.err)
	case r.text != ref.text || o.Completed != maxTokens:
		bad("%d tokens; text differs from the uninterrupted run: %v", o.Completed, r.text != ref.text)
	case !slices.Equal(o.Attempts, want):
		bad("attempts %v, want %v", o.Attempts, want)
	case took < floor || took > floor+3*time.Second:
		bad("failed over after %v; the deadline's floor is %v", took, floor)
	}
	return res
}

// slowRow: one live worker runs a twentieth of the time (SIGSTOP/SIGCONT
// cycles); sequential requests move to the others once the router has seen
// it slow.
func slowRow(client routerv1.RouterServiceClient, workers []*testkit.Proc, tm Timings) Result {
	res := Result{Row: Row{Fault: "a slow worker (engine-gguf stopped 19/20 of the time)", Required: "load moves away: at most a fifth of the requests go to it once it was seen slow"},
		Outcomes: map[string]Outcome{}, Seen: map[string]map[string]int{}}
	var alive []*testkit.Proc
	for _, w := range workers {
		select {
		case <-w.Exited():
		default:
			alive = append(alive, w)
		}
	}
	if len(alive) < 2 {
		res.Failures = append(res.Failures, fmt.Sprintf("%d workers alive, want 2", len(alive)))
		return res
	}
	slow := alive[0]
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			_ = slow.Cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(190 * time.Millisecond)
			_ = slow.Cmd.Process.Signal(syscall.SIGCONT)
			time.Sleep(10 * time.Millisecond)
		}
	})
	const warm, n = 6, 20
	onSlow, seq := 0, ""
	began := time.Now()
	for i := range warm + n {
		r := stream(client, fmt.Sprint("slow worker ", i), 16, 0, nil)
		if r.err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("request %d failed: %v", i, r.err))
			continue
		}
		mark := "f"
		if r.endpoint == slow.Addr {
			mark = "S"
			if i >= warm {
				onSlow++
			}
		}
		seq += mark
	}
	cancel()
	wg.Wait()
	_ = slow.Cmd.Process.Signal(syscall.SIGCONT)
	res.Outcomes["grpc"] = Outcome{OK: len(res.Failures) == 0, Model: "tiny", Took: time.Since(began),
		Note: fmt.Sprintf("%d of %d requests on the slow worker after %d to learn (in order, S: the slow one: %s)", onSlow, n, warm, seq)}
	if onSlow > n/5 {
		res.Failures = append(res.Failures, fmt.Sprintf("%d of %d requests went to the slow worker", onSlow, n))
	}
	return res
}

type streamed struct {
	text     string
	tokens   int
	endpoint string
	end      *genv1.EndEvent
	err      error
}

// stream runs a greedy generation; after `after` tokens (if > 0) it calls
// at with the serving endpoint, once.
func stream(c routerv1.RouterServiceClient, prompt string, maxTokens, after int, at func(endpoint string)) streamed {
	return streamSession(c, "", prompt, maxTokens, after, at)
}

// streamSession is stream with a session id (affinity to one worker).
func streamSession(c routerv1.RouterServiceClient, session, prompt string, maxTokens, after int, at func(endpoint string)) streamed {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := c.Generate(ctx, &routerv1.GenerateRequest{Model: "tiny",
		Prompt:   &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}},
		Sampling: &genv1.SamplingParams{MaxTokens: int32(maxTokens), Temperature: proto.Float32(0)},
		Routing:  &routerv1.RoutingOptions{SessionId: session}})
	var r streamed
	if err != nil {
		r.err = err
		return r
	}
	fired := false
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		switch e := m.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			r.endpoint = e.Start.GetEndpoint()
		case *routerv1.GenerateResponse_Delta:
			r.tokens += len(e.Delta.GetTokenIds())
			r.text += e.Delta.GetText()
			if after > 0 && !fired && r.tokens >= after {
				fired = true
				at(r.endpoint)
			}
		case *routerv1.GenerateResponse_End:
			r.end = e.End
		}
	}
}

func attemptList(end *genv1.EndEvent) []string {
	var out []string
	for _, a := range end.GetAttempts() {
		out = append(out, a.GetModel()+":"+enumName(a.GetReason().String(), "ATTEMPT_REASON_")+":"+enumName(a.GetOutcome().String(), "ATTEMPT_OUTCOME_"))
	}
	return out
}

// httpStream runs the same generation through the HTTP API's SSE; after
// `after` content chunks (if > 0) it calls at, once. The end event is
// rebuilt from the final chunks (usage, the llmrouter report).
func httpStream(base, prompt string, maxTokens, after int, at func()) streamed {
	body, _ := json.Marshal(map[string]any{"model": "tiny", "messages": []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": maxTokens, "temperature": 0, "stream": true, "stream_options": map[string]bool{"include_usage": true}})
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return streamed{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return streamed{err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)}
	}
	r := streamed{end: &genv1.EndEvent{Usage: &genv1.Usage{}}}
	chunks, fired := 0, false
	done, err := readSSE(resp.Body, func(ch sseChunk) {
		if ch.Error != nil {
			r.err = errors.New(ch.Error.Message)
			return
		}
		for _, c := range ch.Choices {
			if c.Delta.Content != "" {
				r.text += c.Delta.Content
				chunks++
			}
		}
		if after > 0 && !fired && chunks >= after {
			fired = true
			at()
		}
		if ch.Usage != nil {
			r.end.Usage.CompletionTokens = int32(ch.Usage.CompletionTokens)
			r.tokens = ch.Usage.CompletionTokens
		}
		if rep := ch.LLMRouter; rep != nil {
			r.end.Failovers = int32(rep.Failovers)
			for _, a := range rep.Attempts {
				r.end.Attempts = append(r.end.Attempts, &genv1.Attempt{Model: a.Model,
					Reason:  genv1.AttemptReason(genv1.AttemptReason_value["ATTEMPT_REASON_"+strings.ToUpper(a.Reason)]),
					Outcome: genv1.AttemptOutcome(genv1.AttemptOutcome_value["ATTEMPT_OUTCOME_"+strings.ToUpper(a.Outcome)])})
			}
		}
	})
	if err != nil && r.err == nil {
		r.err = err
	}
	if r.err == nil && !done {
		r.err = errors.New("the stream ended without [DONE]")
	}
	return r
}
