package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// 1,000 concurrent streams through one router (mTLS to the worker): every
// one completes; beyond the router's capacity, gRPC callers get
// ResourceExhausted and HTTP callers 429 with Retry-After, at once.
func TestThousandConcurrentStreams(t *testing.T) {
	// 100 tokens at 10 per second: every stream runs 10 s, longer than the
	// 40 refusals below take on a loaded machine (3.9 s seen), so that they
	// are all sent while the router is full.
	const streams, tokens = 1000, 100
	worker := testkit.Start(t, "sim", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
		"-models", "sim:output_tokens=100000", "-tps", "10", "-ttft", "20ms", "-max-concurrency", "1200", "-queue", "0")...)
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
		"-static", worker.Addr, "-refresh", "500ms", "-max-concurrent", fmt.Sprint(streams), "-max-queued", "0",
		"-http-listen", "127.0.0.1:0")...)
	var conns []routerv1.RouterServiceClient
	for range 4 {
		conns = append(conns, routerClient(t, router.Addr)) // four connections
	}
	waitFor(t, 10*time.Second, "the router sees the worker", func() bool { return len(servedBy(conns[0])["sim"]) == 1 })

	var (
		wg       sync.WaitGroup
		ok, bad  atomic.Int64
		started  atomic.Int64
		allIn    = make(chan struct{})
		mu       sync.Mutex
		ttfts    []time.Duration
		firstErr error
	)
	began := time.Now()
	for i := range streams {
		wg.Go(func() {
			t0 := time.Now()
			s, err := conns[i%len(conns)].Generate(context.Background(), text("sim", fmt.Sprintf("stream %d", i), tokens))
			first := make(chan string, 1)
			var (
				r    streamResult
				ttft time.Duration
			)
			if err == nil {
				gotFirst := make(chan struct{})
				go func() {
					defer close(gotFirst)
					if _, ok := <-first; !ok {
						return
					}
					ttft = time.Since(t0)
					if started.Add(1) == streams {
						close(allIn)
					}
				}()
				r = consume(s, first)
				close(first)
				<-gotFirst
				err = r.err
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil && r.tokens == tokens {
				ok.Add(1)
				ttfts = append(ttfts, ttft)
				return
			}
			bad.Add(1)
			if firstErr == nil {
				firstErr = fmt.Errorf("stream %d: %v (%d tokens)", i, err, r.tokens)
			}
		})
	}
	// With all 1,000 running, more is refused explicitly and at once.
	select {
	case <-allIn:
	case <-time.After(30 * time.Second):
		t.Fatalf("only %d of %d streams got a first token", started.Load(), streams)
	}
	refusedAt := time.Now()
	for i := range 20 {
		s, err := conns[0].Generate(context.Background(), text("sim", fmt.Sprintf("extra %d", i), 2))
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "overloaded") {
			t.Errorf("request beyond capacity over gRPC: %v, want ResourceExhausted", err)
		}
		resp, err := http.Post("http://"+router.Addrs["http"]+"/v1/completions", "application/json",
			strings.NewReader(`{"model": "sim", "prompt": "extra", "max_tokens": 2}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Errorf("request beyond capacity over HTTP: %d (Retry-After %q), want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	refusals := time.Since(refusedAt)
	wg.Wait()
	elapsed := time.Since(began)
	rss, peak := harness.ProcRSS(router.Cmd.Process.Pid)
	t.Logf("%d concurrent streams of %d tokens: %d complete, %d failed in %v; TTFT p50 %.0f ms p99 %.0f ms; 40 refusals beyond capacity in %v; router RSS %.0f MiB (peak %.0f)",
		streams, tokens, ok.Load(), bad.Load(), elapsed.Round(time.Millisecond), harness.Percentile(ttfts, 0.5), harness.Percentile(ttfts, 0.99),
		refusals.Round(time.Millisecond), rss, peak)
	if bad.Load() > 0 {
		t.Fatalf("%d of %d streams within capacity failed; first: %v", bad.Load(), streams, firstErr)
	}
}
