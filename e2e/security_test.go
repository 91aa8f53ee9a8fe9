package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// guarded is a router in front of one sim worker, with API keys, a metrics
// listener, short write and read timeouts, and the worker's own client.
type guarded struct {
	router *testkit.Proc
	worker *testkit.Proc
	client routerv1.RouterServiceClient
	engine enginev1.EngineServiceClient
	http   string
}

const (
	keyA   = "sk-key-a-0123456789"
	keyB   = "sk-key-b-0123456789"
	keyAll = "sk-key-all-0123456789"
	mkey   = "metrics-key-0123456789"
)

func startGuarded(t *testing.T) *guarded {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keys, []byte(fmt.Sprintf(`{"keys": [
	  {"name": "a", "key": %q, "models": ["sim-a"], "max_concurrent": 2},
	  {"name": "b", "key": %q, "models": ["sim-b"]},
	  {"name": "all", "key": %q}
	]}`, keyA, keyB, keyAll)), 0o600); err != nil {
		t.Fatal(err)
	}
	metricsKey := filepath.Join(dir, "metrics-key")
	if err := os.WriteFile(metricsKey, []byte(mkey), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &guarded{}
	g.worker = testkit.Start(t, "sim", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
		"-models", "sim-a:output_tokens=100000000;ctx=100000000,sim-b", "-tps", "4000", "-ttft", "5ms", "-max-concurrency", "64")...)
	g.router = testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
		"-static", g.worker.Addr, "-refresh", "200ms", "-keys", keys, "-http-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0",
		"-metrics-key-file", metricsKey, "-write-timeout", "1s", "-http-read-timeout", "1s", "-http-idle-timeout", "1s", "-http-max-header-bytes", "16384")...)
	g.http = "http://" + g.router.Addrs["http"]
	g.client = routerClient(t, g.router.Addr)
	g.engine = engineClient(t, g.worker.Addr)
	waitFor(t, 10*time.Second, "the router sees sim-a and sim-b", func() bool {
		l, err := g.client.ListModels(withAPIKey(keyAll), &routerv1.ListModelsRequest{})
		return err == nil && len(l.GetModels()) == 2
	})
	return g
}

func withAPIKey(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func text(model, prompt string, maxTokens int32) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{Model: model, Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: maxTokens}}
}

// scrapeText reads a Prometheus endpoint.
func scrapeText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestRouterRefusesBadInput(t *testing.T) {
	g := startGuarded(t)
	ctx := withAPIKey(keyAll)

	t.Run("invalid UTF-8 in any string field is InvalidArgument", func(t *testing.T) {
		bad := "\xff\xfeoops"
		cases := map[string]*routerv1.GenerateRequest{
			"model":       text(bad, "hi", 2),
			"request_id":  func() *routerv1.GenerateRequest { r := text("sim-a", "hi", 2); r.RequestId = bad; return r }(),
			"prompt.text": text("sim-a", bad, 2),
			"routing.session_id": func() *routerv1.GenerateRequest {
				r := text("sim-a", "hi", 2)
				r.Routing = &routerv1.RoutingOptions{SessionId: bad}
				return r
			}(),
			"routing.strategy": func() *routerv1.GenerateRequest {
				r := text("sim-a", "hi", 2)
				r.Routing = &routerv1.RoutingOptions{Strategy: bad}
				return r
			}(),
			"sampling.stop[0]": func() *routerv1.GenerateRequest {
				r := text("sim-a", "hi", 2)
				r.Sampling.Stop = []string{bad}
				return r
			}(),
			"routing.constraints": func() *routerv1.GenerateRequest {
				r := text("sim-a", "hi", 2)
				r.Routing = &routerv1.RoutingOptions{Constraints: &routerv1.Constraints{Formats: []string{bad}}}
				return r
			}(),
		}
		for field, req := range cases {
			s, err := g.client.Generate(ctx, req)
			if err == nil {
				_, err = s.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), field) {
				t.Errorf("%s: %v, want InvalidArgument naming the field", field, err)
			}
		}
		if b, _ := os.ReadFile(g.router.Log); strings.Contains(string(b), "panic") {
			t.Fatalf("the router logged a panic:\n%s", b)
		}
	})

	t.Run("unknown model names share one metric label", func(t *testing.T) {
		for i := range 300 {
			name := fmt.Sprintf("junk-%03d-%x", i, i*7919)
			if i%50 == 0 {
				name = "\xc3\x28bad-" + name // invalid UTF-8 too
			}
			s, err := g.client.Generate(ctx, text(name, "hi", 2))
			if err == nil {
				_, err = s.Recv()
			}
			if c := status.Code(err); c != codes.NotFound && c != codes.InvalidArgument {
				t.Fatalf("model %q: %v", name, err)
			}
		}
		if _, err := g.client.Generate(ctx, text("sim-b", "hi", 2)); err != nil {
			t.Fatal(err)
		}
		metrics := scrapeText(t, "http://"+g.router.Addrs["metrics"]+"/metrics")
		labels := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^llmrouter_\w+\{[^}]*model="([^"]*)"`).FindAllStringSubmatch(metrics, -1) {
			labels[m[1]] = true
		}
		series := len(regexp.MustCompile(`(?m)^llmrouter_\w+\{`).FindAllString(metrics, -1))
		t.Logf("after 300 unknown model names: %d llmrouter series, model labels %v", series, labels)
		if strings.Contains(metrics, "junk-") || !labels["_other"] || len(labels) > 3 {
			t.Fatalf("model labels %v: want only known models and _other", labels)
		}
		if series > 200 {
			t.Fatalf("%d series after unknown names", series)
		}
	})

	t.Run("metrics only on their listener or behind the key", func(t *testing.T) {
		get := func(auth string) int {
			req, _ := http.NewRequest("GET", g.http+"/metrics", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if c := get("Bearer wrong-key-000000000"); c != http.StatusUnauthorized {
			t.Errorf("wrong metrics key: %d", c)
		}
		if c := get(""); c != http.StatusUnauthorized {
			t.Errorf("no metrics key: %d", c)
		}
		if c := get("bearer " + mkey); c != http.StatusOK {
			t.Errorf("metrics key: %d", c)
		}
	})

	t.Run("HTTP key headers, stop null, header cap", func(t *testing.T) {
		post := func(hdr map[string]string, body string) (int, string) {
			req, _ := http.NewRequest("POST", g.http+"/v1/completions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		body := `{"model": "sim-b", "prompt": "hi", "max_tokens": 3, "stop": null}`
		for name, hdr := range map[string]map[string]string{
			"x-api-key":         {"x-api-key": keyAll},
			"lower-case bearer": {"Authorization": "bearer " + keyAll},
			"upper-case BEARER": {"Authorization": "BEARER " + keyAll},
		} {
			if code, b := post(hdr, body); code != http.StatusOK {
				t.Errorf("%s: %d %s", name, code, b)
			}
		}
		if code, _ := post(map[string]string{"x-api-key": "sk-wrong-000000000"}, body); code != http.StatusUnauthorized {
			t.Errorf("wrong x-api-key: %d", code)
		}
		if code, _ := post(map[string]string{"x-api-key": keyA}, body); code != http.StatusForbidden {
			t.Errorf("key a on sim-b: %d, want 403", code)
		}
		if code, _ := post(map[string]string{"x-api-key": keyAll, "X-Padding": strings.Repeat("x", 40000)}, body); code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("40 KB of headers: %d, want 431", code)
		}
	})

	t.Run("a request body that stalls is cut after the read timeout", func(t *testing.T) {
		c, err := net.Dial("tcp", g.router.Addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-api-key: %s\r\nContent-Length: 100\r\n\r\n{\"model\":", keyAll)
		began := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			resp.Body.Close()
		}
		if d := time.Since(began); d > 5*time.Second {
			t.Fatalf("a stalled body held the connection %v (read timeout 1s)", d)
		}
	})

	t.Run("an idle keep-alive connection is closed after the idle timeout", func(t *testing.T) {
		c, err := net.Dial("tcp", g.router.Addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body := `{"model": "sim-b", "prompt": "hi", "max_tokens": 2}`
		fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-api-key: %s\r\nContent-Length: %d\r\n\r\n%s", keyAll, len(body), body)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("keep-alive request: %d (close %v)", resp.StatusCode, resp.Close)
		}
		began := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("idle connection: %v, want the server to close it", err)
		}
		if d := time.Since(began); d < 900*time.Millisecond || d > 3*time.Second {
			t.Fatalf("idle connection closed after %v (idle timeout 1s)", d)
		}
	})

	t.Run("a stream outlives the read timeout", func(t *testing.T) {
		// 1s read timeout; 8,000 tokens at 4,000/s take 2s.
		req, _ := http.NewRequest("POST", g.http+"/v1/completions", strings.NewReader(`{"model": "sim-a", "prompt": "long", "max_tokens": 8000, "stream": true}`))
		req.Header.Set("x-api-key", keyAll)
		began := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if d := time.Since(began); d < 1500*time.Millisecond || !strings.HasSuffix(strings.TrimSpace(string(b)), "data: [DONE]") {
			t.Fatalf("stream of %v ended without [DONE]: ...%.200s", d, b[max(0, len(b)-200):])
		}
	})

	t.Run("ListEndpoints shows a key only its models", func(t *testing.T) {
		for key, want := range map[string][]string{keyA: {"sim-a"}, keyB: {"sim-b"}, keyAll: {"sim-a", "sim-b"}} {
			l, err := g.client.ListEndpoints(withAPIKey(key), &routerv1.ListEndpointsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range l.GetEndpoints() {
				for _, m := range e.GetModels() {
					got = append(got, m.GetName())
				}
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("key %s sees %v, want %v", key[:8], got, want)
			}
		}
	})

	t.Run("a key's concurrency cap", func(t *testing.T) {
		sctx, cancel := context.WithCancel(withAPIKey(keyA))
		defer cancel()
		for range 2 { // key a: max_concurrent 2
			s, err := g.client.Generate(sctx, text("sim-a", "long", 0))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
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
		s, err := g.client.Generate(withAPIKey(keyA), text("sim-a", "third", 2))
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "in flight") {
			t.Fatalf("third concurrent stream of key a: %v, want ResourceExhausted", err)
		}
		cancel()
		waitActive(t, g, 0)
	})

	t.Run("a gRPC client that stops reading is cut and its sequence freed", func(t *testing.T) {
		// A small fixed window: the router's sends block once it is full.
		conn, err := grpc.NewClient(g.router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		s, err := routerv1.NewRouterServiceClient(conn).Generate(withAPIKey(keyAll), text("sim-a", "flood", 0))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		waitActive(t, g, 1)
		began := time.Now()
		waitActive(t, g, 0) // the client reads nothing more
		t.Logf("worker sequence freed %v after the client stopped reading (write timeout 1s)", time.Since(began).Round(time.Millisecond))
	})

	t.Run("an HTTP client that stops reading is cut and its sequence freed", func(t *testing.T) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		c, err := d.Dial("tcp", g.router.Addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body := `{"model": "sim-a", "prompt": "flood", "stream": true, "max_tokens": 50000000}`
		fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-api-key: %s\r\nContent-Length: %d\r\n\r\n%s", keyAll, len(body), body)
		first := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := c.Read(first)
		if !strings.Contains(string(first[:n]), "200 OK") {
			t.Fatalf("stream did not start: %q", first[:n])
		}
		waitActive(t, g, 1)
		began := time.Now()
		waitActive(t, g, 0)
		t.Logf("HTTP: worker sequence freed %v after the client stopped reading", time.Since(began).Round(time.Millisecond))
	})
}

// waitActive waits until the worker runs n sequences and the router relays
// n requests.
func waitActive(t *testing.T, g *guarded, n int32) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d sequences on the worker", n), func() bool {
		st, err := g.engine.GetStatus(context.Background(), &enginev1.GetStatusRequest{})
		if err != nil || st.GetActiveSequences() != n {
			return false
		}
		l, err := g.client.ListEndpoints(withAPIKey(keyAll), &routerv1.ListEndpointsRequest{})
		return err == nil && len(l.GetEndpoints()) == 1 && l.GetEndpoints()[0].GetInFlight() == n
	})
}

// Two routers enforce one key's token quota together, through Redis; with
// Redis down, one fails open (admits, counts the error) and one fails
// closed.
func TestTwoRoutersShareOneQuota(t *testing.T) {
	redis := testkit.StartRedis(t)
	keys := filepath.Join(t.TempDir(), "keys.json")
	const tpm = 30000
	if err := os.WriteFile(keys, []byte(fmt.Sprintf(`{"keys": [{"name": "shared", "key": %q, "tokens_per_minute": %d}]}`, keyAll, tpm)), 0o600); err != nil {
		t.Fatal(err)
	}
	worker := testkit.Start(t, "sim", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
		"-models", "sim:output_tokens=100000", "-tps", "2000", "-ttft", "5ms", "-max-concurrency", "64")...)
	var clients []routerv1.RouterServiceClient
	var routers []*testkit.Proc
	for i, fail := range []string{"open", "closed"} {
		r := testkit.Start(t, fmt.Sprintf("router%d", i), bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
			"-static", worker.Addr, "-refresh", "200ms", "-keys", keys, "-quota-redis", redis.Addr, "-quota-fail", fail,
			"-metrics-listen", "127.0.0.1:0")...)
		c := routerClient(t, r.Addr)
		waitFor(t, 10*time.Second, "the router sees the worker", func() bool {
			l, err := c.ListModels(withAPIKey(keyAll), &routerv1.ListModelsRequest{})
			return err == nil && len(l.GetModels()) == 1
		})
		clients, routers = append(clients, c), append(routers, r)
	}

	// 16 clients, half on each router, ask for 400 tokens at a time for
	// 5 s; refused ones wait the hint (at most 100 ms) and ask again.
	const run = 5 * time.Second
	var (
		mu              sync.Mutex
		served, refused int
		lastAdmit       time.Time
	)
	began := time.Now()
	// A request without max_tokens under the token quota gets the
	// router's cap, within the model's context (the sim's 4,096): it runs
	// to the cap, not into a context-length refusal.
	s, err := clients[0].Generate(withAPIKey(keyAll), &routerv1.GenerateRequest{Model: "sim", Prompt: text("sim", "no max_tokens", 0).Prompt})
	if err != nil {
		t.Fatal(err)
	}
	first := consume(s, nil)
	if first.err != nil || first.tokens < 4000 || first.tokens > 4096 {
		t.Fatalf("a request without max_tokens under a token quota: %d tokens, %v", first.tokens, first.err)
	}
	served += int(first.end.GetUsage().GetTotalTokens())
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for time.Since(began) < run {
				t0 := time.Now()
				s, err := clients[i%2].Generate(withAPIKey(keyAll), text("sim", "hi", 400))
				var usage int
				if err == nil {
					for {
						msg, err2 := s.Recv()
						if err2 != nil {
							if err2 != io.EOF {
								err = err2
							}
							break
						}
						if e := msg.GetEnd(); e != nil {
							usage = int(e.GetUsage().GetTotalTokens())
						}
					}
				}
				mu.Lock()
				switch {
				case err == nil:
					served += usage
					if t0.After(lastAdmit) {
						lastAdmit = t0
					}
				case status.Code(err) == codes.ResourceExhausted:
					refused++
				default:
					t.Errorf("request: %v", err)
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(min(100*time.Millisecond, 10*time.Millisecond+time.Duration(i)*time.Millisecond))
				}
			}
		})
	}
	wg.Wait()
	allowed := tpm + tpm*lastAdmit.Sub(began).Minutes()
	ratio := float64(served) / allowed
	t.Logf("two routers, one key of %d tokens/min: served %d tokens in %v (allowed %.0f: ratio %.3f), %d refusals",
		tpm, served, lastAdmit.Sub(began).Round(time.Millisecond), allowed, ratio, refused)
	if ratio > 1.05 || ratio < 0.95 {
		t.Fatalf("served/allowed = %.3f, want within 5%%", ratio)
	}

	redis.Kill()
	<-redis.Exited()
	s, err = clients[0].Generate(withAPIKey(keyAll), text("sim", "hi", 2))
	if err == nil {
		err = consume(s, nil).err
	}
	if err != nil {
		t.Fatalf("fail-open router with Redis down: %v", err)
	}
	s, err = clients[1].Generate(withAPIKey(keyAll), text("sim", "hi", 2))
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "quota store") {
		t.Fatalf("fail-closed router with Redis down: %v, want Unavailable", err)
	}
	waitFor(t, 5*time.Second, "the fail-open router counts the quota-store error", func() bool {
		return regexp.MustCompile(`(?m)^llmrouter_quota_store_errors_total [1-9]`).MatchString(scrapeText(t, "http://"+routers[0].Addrs["metrics"]+"/metrics"))
	})
}

// Clients reach a router started with -client-tls mtls only with a
// certificate from the CA: over gRPC (Go and grpcurl, as the README shows)
// and HTTPS; -client-tls tls needs none.
func TestRouterClientTLS(t *testing.T) {
	worker := testkit.Start(t, "sim", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
		"-models", "sim", "-tps", "1000", "-ttft", "1ms")...)
	for _, mode := range []string{"mtls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			router := testkit.Start(t, "router-"+mode, bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
				"-static", worker.Addr, "-refresh", "200ms", "-client-tls", mode, "-http-listen", "127.0.0.1:0", "-health-listen", "127.0.0.1:0")...)
			withCert := routerv1.NewRouterServiceClient(dialT(t, router.Addr, certs.Dial(t, mtls.RoleClient, mtls.RoleRouter)))
			waitFor(t, 10*time.Second, "the router serves sim over TLS", func() bool { return len(servedBy(withCert)["sim"]) == 1 })
			s, err := withCert.Generate(context.Background(), text("sim", "hi", 3))
			if err == nil {
				err = consume(s, nil).err
			}
			if err != nil {
				t.Fatalf("client with a certificate: %v", err)
			}
			_, err = routerv1.NewRouterServiceClient(dialT(t, router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))).
				ListModels(context.Background(), &routerv1.ListModelsRequest{})
			if status.Code(err) != codes.Unavailable {
				t.Errorf("plaintext client: %v, want Unavailable", err)
			}

			p := mtls.DevPaths(certs.Dir, mtls.RoleClient)
			grpcurl := testkit.ToolBin(t, "grpcurl")
			args := []string{"-cacert", p.CA}
			if mode == "mtls" {
				args = append(args, "-cert", p.Cert, "-key", p.Key)
			}
			out, err := exec.Command(grpcurl, append(args, router.Addr, "list")...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "llmrouter.router.v1.RouterService") {
				t.Errorf("grpcurl %v list: %v\n%s", args, err, out)
			}
			if mode == "mtls" {
				out, _ := exec.Command(grpcurl, "-cacert", p.CA, router.Addr, "list").CombinedOutput()
				if strings.Contains(string(out), "RouterService") {
					t.Errorf("grpcurl without a client certificate listed services:\n%s", out)
				}
			}

			// HTTPS with the same certificates.
			tc, err := tlsClientConfig(p, mode == "mtls")
			if err != nil {
				t.Fatal(err)
			}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
			resp, err := hc.Post("https://"+router.Addrs["http"]+"/v1/completions", "application/json", strings.NewReader(`{"model": "sim", "prompt": "hi", "max_tokens": 2}`))
			if err != nil {
				t.Fatalf("HTTPS: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("HTTPS: %d", resp.StatusCode)
			}

			// Probes need no certificate.
			hconn := dialT(t, router.Addrs["health"], grpc.WithTransportCredentials(insecure.NewCredentials()))
			if hc, err := healthpb.NewHealthClient(hconn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("plaintext health listener: %v %v", hc, err)
			}
		})
	}
}

func dialT(t *testing.T, addr string, opt grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// tlsClientConfig trusts the development CA (checking the host name, as
// HTTPS clients do) and presents the client certificate when asked.
func tlsClientConfig(p mtls.Flags, withCert bool) (*tls.Config, error) {
	pem, err := os.ReadFile(p.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if withCert {
		cert, err := tls.LoadX509KeyPair(p.Cert, p.Key)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
