package discovery_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// next waits for the watcher's next set, or fails.
func next(t *testing.T, ch <-chan []discovery.Endpoint, within time.Duration) []discovery.Endpoint {
	t.Helper()
	select {
	case eps, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return eps
	case <-time.After(within):
		t.Fatalf("no endpoint update within %v", within)
		return nil
	}
}

// until reads sets until cond holds.
func until(t *testing.T, ch <-chan []discovery.Endpoint, within time.Duration, cond func([]discovery.Endpoint) bool) []discovery.Endpoint {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		eps := next(t, ch, time.Until(deadline))
		if cond(eps) {
			return eps
		}
	}
}

func TestStatic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := discovery.NewStatic("b:2", " a:1 ", "").Watch(ctx)
	eps := next(t, ch, time.Second)
	if len(eps) != 2 || eps[0].Address != "a:1" || !eps[0].Healthy || eps[1].ID != "b:2" {
		t.Fatalf("static set %+v", eps)
	}
	cancel()
	if _, ok := <-ch; ok {
		t.Fatal("channel not closed after cancel")
	}
}

func TestConsulRegisterWatchHealthAndOutage(t *testing.T) {
	consul := testkit.StartConsul(t, 0)
	c, err := discovery.NewConsul(consul.HTTPAddr, "", quiet)
	if err != nil {
		t.Fatal(err)
	}
	c.Wait = 2 * time.Second
	c.MaxBackoff = 200 * time.Millisecond
	c.RestartGrace = 2 * time.Second

	// A real gRPC health server for Consul's check.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	defer srv.Stop()
	port := lis.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := c.Watch(ctx)
	if eps := next(t, ch, 5*time.Second); len(eps) != 0 {
		t.Fatalf("fresh consul has endpoints %+v", eps)
	}

	models := []*enginev1.ModelInfo{{Name: "m1", Format: "sim", ContextLength: 4096, Quality: 0.7, CostPer_1KOutput: 0.002}, {Name: "m2"}}
	reg := discovery.Registration{ID: "w1", Address: "127.0.0.1", Port: port, Models: models, CheckInterval: 200 * time.Millisecond}
	if err := c.Register(ctx, reg); err != nil {
		t.Fatal(err)
	}
	eps := until(t, ch, 10*time.Second, func(e []discovery.Endpoint) bool { return len(e) == 1 && e[0].Healthy })
	got := eps[0]
	if got.ID != "w1" || got.Address != "127.0.0.1:"+strconv.Itoa(port) || len(got.Models) != 2 ||
		got.Models[0].GetName() != "m1" || got.Models[0].GetQuality() != 0.7 || got.Models[0].GetContextLength() != 4096 {
		t.Fatalf("registered endpoint %+v", got)
	}

	// NOT_SERVING makes the check critical.
	hs.Shutdown()
	until(t, ch, 10*time.Second, func(e []discovery.Endpoint) bool { return len(e) == 1 && !e[0].Healthy })
	hs.Resume()
	until(t, ch, 10*time.Second, func(e []discovery.Endpoint) bool { return len(e) == 1 && e[0].Healthy })

	// Consul goes away: the watcher sends nothing (consumers keep the last set).
	httpPort := consul.HTTPAddr[len("127.0.0.1:"):]
	consul.Kill()
	select {
	case eps := <-ch:
		t.Fatalf("watcher sent %+v while consul was down", eps)
	case <-time.After(1500 * time.Millisecond):
	}
	// A new agent on the same address (empty catalog): the watcher resumes,
	// keeps the worker for the restart grace (time to register again: no
	// update), then drops it.
	p, _ := strconv.Atoi(httpPort)
	testkit.StartConsul(t, p)
	restarted := time.Now()
	until(t, ch, 15*time.Second, func(e []discovery.Endpoint) bool { return len(e) == 0 })
	if d := time.Since(restarted); d < c.RestartGrace {
		t.Fatalf("worker dropped %v after the restart, before the grace of %v", d, c.RestartGrace)
	}

	if err := c.Register(ctx, reg); err != nil {
		t.Fatal(err)
	}
	until(t, ch, 10*time.Second, func(e []discovery.Endpoint) bool { return len(e) == 1 })
	if err := c.Deregister(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	until(t, ch, 10*time.Second, func(e []discovery.Endpoint) bool { return len(e) == 0 })

	cancel()
	for range ch {
	}
}

func TestRegisterRejectsOversizedMetadata(t *testing.T) {
	c, err := discovery.NewConsul("127.0.0.1:1", "", quiet)
	if err != nil {
		t.Fatal(err)
	}
	long := make([]byte, 600)
	for i := range long {
		long[i] = 'a'
	}
	err = c.Register(context.Background(), discovery.Registration{Address: "127.0.0.1", Port: 1, Models: []*enginev1.ModelInfo{{Name: string(long)}}})
	if err == nil {
		t.Fatal("oversized model metadata accepted")
	}
}
