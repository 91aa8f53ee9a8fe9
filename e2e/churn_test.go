package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// Workers join, leave gracefully and die under steady load; while capacity
// remains no request fails: graceful leavers deregister before draining,
// requests refused before their first token are retried elsewhere, and
// streams cut by a crash fail over.
func TestWorkersJoinAndLeaveUnderLoad(t *testing.T) {
	consul := testkit.StartConsul(t, 0)
	startWorker := func(name string) *testkit.Proc {
		return testkit.Start(t, name, bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
			"-consul", consul.HTTPAddr, "-check-interval", "1s", "-models", "sim-small:output_tokens=1000",
			"-tps", "200", "-ttft", "5ms", "-grace", "5s")...)
	}
	workers := []*testkit.Proc{startWorker("w0"), startWorker("w1"), startWorker("w2")}
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter, "-consul", consul.HTTPAddr)...)
	conn, err := grpc.NewClient(router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	m := &mesh{client: routerv1.NewRouterServiceClient(conn)}
	m.waitEndpoints(t, 3, 15*time.Second)

	var (
		ok, failed, failovers atomic.Int64
		firstErr              atomic.Value
		stop                  = make(chan struct{})
		wg                    sync.WaitGroup
	)
	for c := range 12 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s, err := m.client.Generate(context.Background(), generate(60, fmt.Sprintf("client %d request %d", c, i)))
				var r streamResult
				if err == nil {
					r = consume(s, nil)
					err = r.err
				}
				if err == nil && r.tokens != 60 {
					err = fmt.Errorf("%d of 60 tokens", r.tokens)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
				failovers.Add(int64(r.end.GetFailovers()))
			}
		})
	}
	time.Sleep(time.Second)
	workers = append(workers, startWorker("w3")) // joins
	m.waitEndpoints(t, 4, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	workers[0].Stop(10 * time.Second) // leaves gracefully: deregister, drain
	m.waitEndpoints(t, 3, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if eps, err := m.client.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{}); err == nil {
		for _, e := range eps.GetEndpoints() {
			t.Logf("before the crash: %s in flight %d healthy %v", e.GetAddress(), e.GetInFlight(), e.GetHealthy())
		}
	}
	t.Logf("killing %s", workers[1].Addr)
	workers[1].Kill() // crashes mid-stream
	m.waitEndpoints(t, 2, 10*time.Second)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d requests succeeded, %d failed, %d mid-stream failovers", ok.Load(), failed.Load(), failovers.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed while capacity remained; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Fatalf("only %d requests ran: the load was not sustained", ok.Load())
	}
}
