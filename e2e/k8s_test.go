package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
)

// The local overlay's fixed Consul address (deploy/k8s/overlays/local).
const k8sConsul = "127.0.0.1:28500"

// kubectl runs kubectl against the cluster of tools/k8s.sh (KUBECONFIG from
// its environment) and returns its output.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kubectl", append([]string{"-n", "llmrouter"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// k8sTimes collects the durations the test reports at the end.
type k8sTimes struct {
	mu    sync.Mutex
	lines []string
}

func (k *k8sTimes) add(what string, d time.Duration, extra ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	line := fmt.Sprintf("%-58s %8.1fs", what, d.Seconds())
	if len(extra) > 0 {
		line += "  " + strings.Join(extra, "; ")
	}
	k.lines = append(k.lines, line)
}

// routers lists the routers registered in Consul and passing their checks.
func routers(t *testing.T) []consulService {
	return consulServices(t, k8sConsul, "llmrouter-router")
}

// endpointsOf lists, by discovery ID, the endpoints the router would send
// model to.
func endpointsOf(c routerv1.RouterServiceClient, model string) map[string]string {
	l, err := c.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{})
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, e := range l.GetEndpoints() {
		if !e.GetHealthy() {
			continue
		}
		for _, m := range e.GetModels() {
			if m.GetName() == model {
				out[e.GetAddress()] = e.GetId()
			}
		}
	}
	return out
}

func tinyRequest(prompt string, max int32) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{Model: "tiny", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: max}}
}

func runTiny(c routerv1.RouterServiceClient, prompt string, max int32, firstToken chan<- string) streamResult {
	s, err := c.Generate(context.Background(), tinyRequest(prompt, max))
	if err != nil {
		return streamResult{err: err}
	}
	r := consume(s, firstToken)
	if r.err == nil && r.end == nil {
		r.err = fmt.Errorf("stream ended without an end event")
	}
	return r
}

// httpTiny asks the router's HTTP API (not streaming) and returns the
// answering endpoint from its llmrouter report.
func httpTiny(base, prompt string, max int) (string, error) {
	body, _ := json.Marshal(map[string]any{"model": "tiny", "prompt": prompt, "max_tokens": max, "temperature": 0})
	resp, err := http.Post(base+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	var out struct {
		Choices   []struct{ Text string }
		Llmrouter struct {
			Attempts []struct{ Endpoint, Outcome string }
		}
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out.Choices) != 1 || out.Choices[0].Text == "" {
		return "", fmt.Errorf("answer %s: %v", b, err)
	}
	a := out.Llmrouter.Attempts
	return a[len(a)-1].Endpoint, nil
}

// sseTiny streams a chat completion over the router's HTTP API (SSE) and
// returns the answering endpoint (from the llmrouter report of the last
// chunk) and how many chunks carried text.
func sseTiny(base, prompt string, max int) (endpoint string, chunks int, err error) {
	body, _ := json.Marshal(map[string]any{"model": "tiny", "messages": []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": max, "temperature": 0, "stream": true})
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		return "", 0, fmt.Errorf("HTTP %d %s: %s", resp.StatusCode, ct, b)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", 0, err
	}
	done := false
	for _, line := range strings.Split(string(b), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct{ Content string }
			}
			Llmrouter *struct {
				Attempts []struct{ Endpoint string }
			}
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return "", 0, fmt.Errorf("event %q: %w", data, err)
		}
		if len(ev.Choices) > 0 && ev.Choices[0].Delta.Content != "" {
			chunks++
		}
		if ev.Llmrouter != nil && len(ev.Llmrouter.Attempts) > 0 {
			endpoint = ev.Llmrouter.Attempts[len(ev.Llmrouter.Attempts)-1].Endpoint
		}
	}
	if !done {
		return endpoint, chunks, fmt.Errorf("no [DONE]")
	}
	return endpoint, chunks, nil
}

// load keeps n clients streaming from the router (gRPC, and every other
// one over HTTP) until stop is called; it counts requests and failures.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       context.CancelFunc
	wg         sync.WaitGroup
}

func startLoad(c routerv1.RouterServiceClient, httpBase string, n int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{stop: cancel}
	for i := range n {
		l.wg.Go(func() {
			for j := 0; ctx.Err() == nil; j++ {
				prompt := fmt.Sprintf("load %d %d", i, j)
				var err error
				if i%2 == 1 {
					_, err = httpTiny(httpBase, prompt, 48)
				} else if r := runTiny(c, prompt, 48, nil); r.err != nil {
					err = r.err
				} else if r.tokens == 0 {
					err = fmt.Errorf("no tokens")
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, err.Error())
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

func (l *load) end() (ok, failed int64, errs []string) {
	l.stop()
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.errs
}

// TestKubernetes runs the mesh on the one-node cluster of tools/k8s.sh (make
// test-k8s starts it, imports make images' archives and runs this with
// LLMROUTER_K8S=1): server-side dry-runs of the cpu and gpu overlays, the
// local overlay applied and rolled out, requests through the router found in
// Consul, kubectl scale up (the router sees every pod, each serves) and down
// under load, a rollout restart under load, a worker pod force-deleted
// mid-stream, two routers. Waits poll against a hang guard; durations are
// reported, not asserted.
func TestKubernetes(t *testing.T) {
	if os.Getenv("LLMROUTER_K8S") != "1" {
		t.Skip("needs the one-node cluster: make test-k8s")
	}
	// The cluster outlives this process's check for leaked goroutines:
	// idle keep-alive connections to it must not.
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	var times k8sTimes
	defer func() {
		t.Logf("durations:\n  %s", strings.Join(times.lines, "\n  "))
	}()
	root, _ := filepath.Abs("..")

	// Server-side dry-runs (the namespace exists first: a dry-run creates
	// nothing, so namespaced objects would find none).
	kubectlNS := func(args ...string) string {
		out, err := exec.Command("kubectl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The base's namespace, which enforces the restricted Pod Security
	// level: every workload of cpu and gpu must pass it (the API server
	// warns for workloads whose pods it would refuse).
	kubectlNS("apply", "-f", filepath.Join(root, "deploy/k8s/base/namespace.yaml"))
	for _, o := range []string{"cpu", "gpu"} {
		out := kubectlNS("apply", "--dry-run=server", "-k", filepath.Join(root, "deploy/k8s/overlays", o))
		if n := strings.Count(out, "(server dry run)"); n < 25 {
			t.Fatalf("dry-run of %s: %d objects\n%s", o, n, out)
		}
		if strings.Contains(out, "would violate PodSecurity") {
			t.Errorf("dry-run of %s: pods the restricted level refuses:\n%s", o, out)
		}
	}

	began := time.Now()
	out, err := exec.Command(filepath.Join(root, "tools/k8s.sh"), "deploy", certs.Dir).CombinedOutput()
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	times.add("apply -k overlays/local -> every rollout complete", time.Since(began))

	var rs []consulService
	waitFor(t, time.Minute, "a router registered in Consul", func() bool { rs = routers(t); return len(rs) == 1 })
	client := routerClient(t, rs[0].Addr)
	httpBase := "http://" + rs[0].Meta["http"]
	waitFor(t, time.Minute, "the router sees engine-gguf", func() bool { return len(endpointsOf(client, "tiny")) == 1 })

	// One request each way streams from the engine-gguf pod.
	gguf := endpointsOf(client, "tiny")
	r := runTiny(client, "hello from a pod", 16, nil)
	if r.err != nil || r.tokens != 16 || gguf[r.endpoint] == "" {
		t.Fatalf("gRPC through the router: %+v (engine-gguf endpoints %v)", r, gguf)
	}
	if ep, chunks, err := sseTiny(httpBase, "hello from a pod", 16); err != nil || gguf[ep] == "" || chunks < 2 {
		t.Fatalf("HTTP (SSE) through the router: endpoint %s, %d chunks, %v", ep, chunks, err)
	}

	// Scale out: the router lists every pod (through Consul) and each serves.
	began = time.Now()
	kubectl(t, "scale", "deploy/engine-gguf", "--replicas=3")
	waitFor(t, 3*time.Minute, "the router lists 3 engine-gguf endpoints", func() bool { return len(endpointsOf(client, "tiny")) == 3 })
	times.add("kubectl scale engine-gguf 1 -> 3 -> the router lists 3", time.Since(began))
	spreadOver(t, client, "after the scale-out")

	// Scale down under load: no stream fails.
	ld := startLoad(client, httpBase, 6)
	time.Sleep(2 * time.Second)
	began = time.Now()
	kubectl(t, "scale", "deploy/engine-gguf", "--replicas=1")
	waitFor(t, 3*time.Minute, "two engine-gguf pods gone", func() bool {
		return strings.Count(kubectl(t, "get", "pods", "-l", "app.kubernetes.io/name=engine-gguf", "-o", "name"), "\n") == 1 &&
			len(endpointsOf(client, "tiny")) == 1
	})
	scaleDown := time.Since(began)
	time.Sleep(2 * time.Second)
	ok, failed, errs := ld.end()
	times.add("kubectl scale engine-gguf 3 -> 1 under load (6 clients)", scaleDown, fmt.Sprintf("%d requests, %d failed", ok+failed, failed))
	if failed > 0 || ok == 0 {
		t.Errorf("scale-down under load: %d ok, %d failed: %v", ok, failed, firstN(errs, 5))
	}

	// A rollout restart under load: no request fails.
	ld = startLoad(client, httpBase, 6)
	time.Sleep(2 * time.Second)
	began = time.Now()
	kubectl(t, "rollout", "restart", "deploy/engine-gguf")
	kubectl(t, "rollout", "status", "deploy/engine-gguf", "--timeout=300s")
	waitFor(t, 3*time.Minute, "the old engine-gguf pod gone and one endpoint left", func() bool {
		return strings.Count(kubectl(t, "get", "pods", "-l", "app.kubernetes.io/name=engine-gguf", "-o", "name"), "\n") == 1 &&
			len(endpointsOf(client, "tiny")) == 1
	})
	rollout := time.Since(began)
	time.Sleep(2 * time.Second)
	ok, failed, errs = ld.end()
	times.add("kubectl rollout restart engine-gguf under load", rollout, fmt.Sprintf("%d requests, %d failed", ok+failed, failed))
	if failed > 0 || ok == 0 {
		t.Errorf("rollout restart under load: %d ok, %d failed: %v", ok, failed, firstN(errs, 5))
	}

	// A worker pod force-deleted mid-stream: the stream completes on the
	// other pod with the same text as an uninterrupted run.
	kubectl(t, "scale", "deploy/engine-gguf", "--replicas=2")
	waitFor(t, 3*time.Minute, "two engine-gguf endpoints", func() bool { return len(endpointsOf(client, "tiny")) == 2 })
	const long = 8000
	prompt := "A long answer that outlives its pod"
	refBegan := time.Now()
	ref := runTiny(client, prompt, long, nil)
	if ref.err != nil || ref.tokens < 1000 {
		t.Fatalf("reference run: %d tokens, %v", ref.tokens, ref.err)
	}
	times.add("uninterrupted long stream (the reference)", time.Since(refBegan), fmt.Sprintf("%d tokens on %s", ref.tokens, ref.endpoint))
	ids := endpointsOf(client, "tiny")
	first := make(chan string, 1)
	done := make(chan streamResult, 1)
	began = time.Now()
	go func() { done <- runTiny(client, prompt, long, first) }()
	var victim string
	select {
	case ep := <-first:
		victim = strings.TrimPrefix(ids[ep], "llmrouter-engine-")
	case r := <-done:
		t.Fatalf("the stream ended before its first token: %+v", r)
	case <-time.After(time.Minute):
		t.Fatal("no first token in a minute")
	}
	kubectl(t, "delete", "pod", victim, "--force", "--grace-period=0")
	var got streamResult
	select {
	case got = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("the stream did not end within 3 minutes of the forced delete")
	}
	forced := time.Since(began)
	detail := fmt.Sprintf("pod %s deleted; %d tokens, failovers %d, text identical %v", victim, got.tokens, got.end.GetFailovers(), got.text == ref.text)
	times.add("force-deleted worker pod mid-stream -> stream complete", forced, detail)
	if got.err != nil || got.text != ref.text || got.tokens != ref.tokens || got.end.GetFailovers() < 1 {
		t.Errorf("forced delete mid-stream: err %v, %d tokens (want %d), identical %v, failovers %d",
			got.err, got.tokens, ref.tokens, got.text == ref.text, got.end.GetFailovers())
	}

	// Two routers: both registered, both serve.
	began = time.Now()
	kubectl(t, "scale", "deploy/router", "--replicas=2")
	waitFor(t, 3*time.Minute, "two routers registered and passing", func() bool { rs = routers(t); return len(rs) == 2 })
	times.add("kubectl scale router 1 -> 2 -> both in Consul", time.Since(began))
	for _, rt := range rs {
		c := routerClient(t, rt.Addr)
		waitFor(t, time.Minute, "router "+rt.ID+" sees engine-gguf", func() bool { return len(endpointsOf(c, "tiny")) > 0 })
		if r := runTiny(c, "two routers", 8, nil); r.err != nil || r.tokens != 8 {
			t.Errorf("router %s over gRPC: %+v", rt.ID, r)
		}
		if _, err := httpTiny("http://"+rt.Meta["http"], "two routers", 8); err != nil {
			t.Errorf("router %s over HTTP: %v", rt.ID, err)
		}
	}

	// Every address in Consul is on loopback: what is registered, passing
	// or not, and what the health checks dial.
	for _, svc := range []string{"llmrouter-engine", "llmrouter-router"} {
		var targets []string
		waitFor(t, time.Minute, "every "+svc+" check has run", func() bool {
			targets = consulCheckTargets(t, k8sConsul, svc)
			return len(targets) > 0 && len(targets) == len(consulCatalog(t, k8sConsul, svc))
		})
		for _, s := range consulCatalog(t, k8sConsul, svc) {
			for _, a := range append([]string{s.Addr, s.Meta["http"]}, targets...) {
				if a == "" {
					continue
				}
				if host, _, err := net.SplitHostPort(a); err != nil || !net.ParseIP(host).IsLoopback() {
					t.Errorf("%s %s registered %q, not in 127.0.0.0/8", svc, s.ID, a)
				}
			}
		}
	}
	var names []string
	for _, s := range consulCatalog(t, k8sConsul, "llmrouter-engine") {
		names = append(names, s.ID)
	}
	sort.Strings(names)
	t.Logf("registered workers at the end: %v", names)
}

// spreadOver sends batches of 6 concurrent requests (up to 60) until every
// endpoint of tiny has served one; a pod that serves none is an error.
func spreadOver(t *testing.T, client routerv1.RouterServiceClient, when string) {
	t.Helper()
	eps := endpointsOf(client, "tiny")
	served := map[string]int{}
	for i := 0; i < 60 && len(served) < len(eps); i += 6 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for j := range 6 {
			wg.Go(func() {
				r := runTiny(client, fmt.Sprintf("spread %d", i+j), 64, nil)
				mu.Lock()
				defer mu.Unlock()
				if r.err != nil {
					t.Errorf("a request %s failed: %v", when, r.err)
					return
				}
				served[r.endpoint]++
			})
		}
		wg.Wait()
	}
	for addr, id := range eps {
		if served[addr] == 0 {
			t.Errorf("%s: pod %s (%s) served none of the requests: %v", when, id, addr, served)
		}
	}
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// TestKubernetesHPA: with metrics-server serving the metrics API (make
// k8s-hpa starts it), an HPA scales engine-gguf from 1 to 3 pods under
// load, and the router sends traffic to all of them; no request fails.
func TestKubernetesHPA(t *testing.T) {
	if os.Getenv("LLMROUTER_K8S_HPA") != "1" {
		t.Skip("needs the one-node cluster and metrics-server: make k8s-hpa")
	}
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	root, _ := filepath.Abs("..")
	if out, err := exec.Command(filepath.Join(root, "tools/k8s.sh"), "deploy", certs.Dir).CombinedOutput(); err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	kubectl(t, "apply", "-k", filepath.Join(root, "deploy/k8s/overlays/local-hpa"))
	var rs []consulService
	waitFor(t, time.Minute, "a router registered in Consul", func() bool { rs = routers(t); return len(rs) == 1 })
	client := routerClient(t, rs[0].Addr)
	waitFor(t, time.Minute, "the router sees engine-gguf", func() bool { return len(endpointsOf(client, "tiny")) == 1 })
	hpa := func() string {
		return kubectl(t, "get", "hpa", "engine-gguf", "-o", "jsonpath={.status.currentMetrics[0].resource.current.averageUtilization}% {.status.currentReplicas}->{.status.desiredReplicas}")
	}
	waitFor(t, 2*time.Minute, "the HPA reads a CPU metric", func() bool { return !strings.HasPrefix(hpa(), "%") })
	t.Logf("idle: utilization and replicas %s", hpa())

	ld := startLoad(client, "http://"+rs[0].Meta["http"], 6)
	began := time.Now()
	var seen []string
	last := ""
	waitFor(t, 5*time.Minute, "the HPA scales engine-gguf to 3 and the router lists 3", func() bool {
		if h := hpa(); h != last {
			last = h
			seen = append(seen, fmt.Sprintf("%s at %.0fs", h, time.Since(began).Seconds()))
		}
		return len(endpointsOf(client, "tiny")) == 3
	})
	scaled := time.Since(began)
	time.Sleep(3 * time.Second)
	ok, failed, errs := ld.end()
	spreadOver(t, client, "after the HPA scaled")
	t.Logf("under load (6 clients): the HPA went %s; 3 endpoints in the router after %.1fs; %d requests, %d failed",
		strings.Join(seen, ", "), scaled.Seconds(), ok+failed, failed)
	if failed > 0 {
		t.Errorf("%d of %d requests failed while the HPA scaled: %v", failed, ok+failed, firstN(errs, 5))
	}
}
