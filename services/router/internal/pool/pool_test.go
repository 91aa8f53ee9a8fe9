package pool

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
)

func TestEjectionBacksOffAndResets(t *testing.T) {
	e := NewEndpoint("w", "w:1", true, &enginev1.ModelInfo{Name: "m"})
	now := time.Unix(1000, 0)
	for range EjectAfter - 1 {
		e.ObserveFailure(now)
	}
	if e.Ejected(now) {
		t.Fatal("ejected before EjectAfter failures")
	}
	e.ObserveFailure(now) // the third: out for 1 s
	if !e.Ejected(now.Add(900*time.Millisecond)) || e.Ejected(now.Add(1100*time.Millisecond)) {
		t.Fatal("first ejection is not about one second")
	}
	e.ObserveFailure(now) // the fourth: doubled
	if !e.Ejected(now.Add(1900*time.Millisecond)) || e.Ejected(now.Add(2100*time.Millisecond)) {
		t.Fatal("second ejection did not double")
	}
	for range 20 {
		e.ObserveFailure(now)
	}
	if e.Ejected(now.Add(maxEjection + time.Millisecond)) {
		t.Fatal("ejection exceeded its cap")
	}
	e.ObserveSuccess(10 * time.Millisecond)
	if e.Ejected(now) || e.Failures() != 0 {
		t.Fatal("a success did not reset the ejection")
	}
}

func TestSmoothedObservations(t *testing.T) {
	e := NewEndpoint("w", "w:1", true)
	e.ObserveSuccess(100 * time.Millisecond)
	if e.TTFT() != 100*time.Millisecond {
		t.Fatalf("first observation %v", e.TTFT())
	}
	e.ObserveSuccess(200 * time.Millisecond)
	if e.TTFT() != 120*time.Millisecond { // 0.8×100 + 0.2×200
		t.Fatalf("smoothed TTFT %v", e.TTFT())
	}
	e.ObserveITL(20 * time.Millisecond)
	e.ObserveITL(0) // ignored
	if e.ITL() != 20*time.Millisecond {
		t.Fatalf("ITL %v", e.ITL())
	}
	e.ObserveFailure(time.Time{})
	if r := e.ErrorRate(); math.Abs(r-0.2) > 1e-9 || e.Observations() != 3 {
		t.Fatalf("error rate %v after 2 successes and 1 failure (%d observations)", r, e.Observations())
	}
}

// Busy is the worker's last report (poll or trailer) plus this router's own
// requests started or ended since, never below its own in-flight count; the
// worker's and each model's (its route's) alike.
func TestBusyFromReports(t *testing.T) {
	e := NewEndpoint("a", "a:1", true)
	check := func(want, wantM int, what string) {
		t.Helper()
		if got, gotM := e.Busy(), e.Route("m").Busy(); got != want || gotM != wantM {
			t.Fatalf("%s: busy %d, model m %d; want %d, %d (in flight %d)", what, got, gotM, want, wantM, e.InFlight())
		}
	}
	check(0, 0, "no report, nothing in flight")
	first := e.Begin(e.Route("m"))
	check(1, 1, "own request, no report")
	// A poll: 3 decoding (ours among them: 2 of model m) and 2 queued.
	e.SetLoad(&enginev1.GetStatusResponse{ActiveSequences: 3, QueueDepth: 2, Models: []*enginev1.ModelLoad{
		{Model: "m", ActiveSequences: 2}, {Model: "n", ActiveSequences: 1, QueueDepth: 2}}})
	check(5, 2, "after the poll")
	second := e.Begin(e.Route("m"))
	check(6, 3, "one more of ours since the poll")
	// Our second stream ends: its trailer says 1 decoding, 0 queued, 1 of
	// them m (the others' requests ended meanwhile); it is still in
	// flight here until its end func runs.
	e.StreamEnded(e.Route("m"), enginehost.LoadReport{Active: 1, ModelActive: 1, HasModel: true})
	second()
	check(1, 1, "after the trailer and our stream's end")
	first()
	check(0, 0, "everything of ours ended")
	// Another router's requests: the trailer of another stream of ours
	// says 4 are there (3 of m); ours has ended.
	third := e.Begin(e.Route("m"))
	e.StreamEnded(e.Route("m"), enginehost.LoadReport{Active: 4, ModelActive: 3, HasModel: true})
	third()
	check(4, 3, "the other routers' requests")
	// A trailer without per-model counts leaves the model's report alone.
	fourth := e.Begin(e.Route("m"))
	e.StreamEnded(e.Route("m"), enginehost.LoadReport{Active: 2})
	fourth()
	check(2, 3, "a trailer without model counts")
	// A stale report below our own count never hides our requests.
	for range 6 {
		defer e.Begin(e.Route("m"))()
	}
	check(8, 9, "ours since the report")
	e.SetLoad(&enginev1.GetStatusResponse{ActiveSequences: 2, Models: []*enginev1.ModelLoad{{Model: "m", ActiveSequences: 2}}})
	check(6, 6, "a poll that has not yet seen all of ours")
}

// Endpoints from discovery connect on first use: applying a large registry
// dials nothing, a call dials once, and a closed endpoint's calls fail with
// Unavailable without dialling.
func TestEndpointsConnectOnFirstUse(t *testing.T) {
	p := New(telemetry.Noop(), slog.New(slog.NewTextHandler(io.Discard, nil)), time.Hour)
	eps := make([]discovery.Endpoint, 200)
	for i := range eps {
		eps[i] = discovery.Endpoint{ID: fmt.Sprint(i), Address: fmt.Sprintf("127.0.0.1:%d", 1+i), Healthy: true}
	}
	eps = append(eps, discovery.Endpoint{ID: "bad", Address: "no port here", Healthy: true})
	p.apply(eps)
	if n := len(p.Endpoints()); n != 200 {
		t.Fatalf("%d endpoints, want 200 (the bad address is skipped)", n)
	}
	for _, e := range p.Endpoints() {
		if e.conn.cc != nil {
			t.Fatalf("endpoint %s dialled before use", e.ID)
		}
	}
	e := p.Endpoints()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := e.Client.GetStatus(ctx, &enginev1.GetStatusRequest{})
	if err == nil || e.conn.cc == nil {
		t.Fatalf("first call: %v, conn %v", err, e.conn.cc)
	}
	first := e.conn.cc
	e.Client.GetStatus(ctx, &enginev1.GetStatusRequest{})
	if e.conn.cc != first {
		t.Fatal("second call dialled again")
	}
	closed := p.Endpoints()[1]
	closed.conn.Close()
	if _, err := closed.Client.GetStatus(context.Background(), &enginev1.GetStatusRequest{}); status.Code(err) != codes.Unavailable || closed.conn.cc != nil {
		t.Fatalf("closed endpoint: %v, conn %v", err, closed.conn.cc)
	}
	for _, e := range p.Endpoints() {
		e.conn.Close()
	}
}

// A route's circuit opens after consecutive failures without benching the
// endpoint's other models, lets one probe through once its interval has
// passed, reopens (longer, capped) when the probe fails and closes at the
// first probe that succeeds.
func TestRouteCircuitHalfOpen(t *testing.T) {
	e := NewEndpoint("w", "w:1", true, &enginev1.ModelInfo{Name: "a"}, &enginev1.ModelInfo{Name: "b"})
	e.breaker = &Breaker{After: 3, Base: time.Second, MaxOpen: 4 * time.Second}
	a, b := e.Route("a"), e.Route("b")
	now := time.Unix(1000, 0)
	for range 3 {
		if !a.Available(now) {
			t.Fatal("circuit open before 3 failures")
		}
		a.Failure(now, false)
	}
	if a.Available(now.Add(900*time.Millisecond)) || !b.Available(now) || e.Ejected(now) {
		t.Fatal("after 3 failures: want route a open, route b and the endpoint untouched")
	}
	probeAt := now.Add(1100 * time.Millisecond)
	if !a.Available(probeAt) || !a.Begin(probeAt) {
		t.Fatal("no half-open probe after the interval")
	}
	if a.Available(probeAt) || a.Begin(probeAt) {
		t.Fatal("a second request went through while the probe is in flight")
	}
	a.Failure(probeAt, true) // the probe failed: open again, doubled
	if a.Available(probeAt.Add(1900*time.Millisecond)) || !a.Available(probeAt.Add(2100*time.Millisecond)) {
		t.Fatal("a failed probe did not reopen the circuit for twice the interval")
	}
	for range 10 {
		a.Failure(probeAt, false)
	}
	if !a.Available(probeAt.Add(4100 * time.Millisecond)) {
		t.Fatal("open interval exceeded MaxOpen")
	}
	later := probeAt.Add(5 * time.Second)
	if !a.Begin(later) {
		t.Fatal("no probe")
	}
	a.Success()
	if !a.Available(later) || a.Open() || a.Failures() != 0 {
		t.Fatal("a successful probe did not close the circuit")
	}
}

// A worker that reports no per-model counts (a hosted-API proxy) is judged
// by its whole load; once it reports them, by the model's.
func TestModelBusyFallsBackToTheWorker(t *testing.T) {
	e := NewEndpoint("a", "a:1", true)
	e.SetLoad(&enginev1.GetStatusResponse{ActiveSequences: 5})
	if b := e.ModelBusy("m"); b != 5 {
		t.Fatalf("no per-model counts: model busy %d, want the worker's 5", b)
	}
	e.SetLoad(&enginev1.GetStatusResponse{ActiveSequences: 5, Models: []*enginev1.ModelLoad{{Model: "m", ActiveSequences: 2}, {Model: "n", ActiveSequences: 3}}})
	if b := e.ModelBusy("m"); b != 2 {
		t.Fatalf("per-model counts: model busy %d, want 2", b)
	}
}

// A poll's answer counts against the in-flight counts as it was sent, and
// one overtaken by a newer trailer is dropped.
func TestPollAgainstItsSendTime(t *testing.T) {
	e := NewEndpoint("a", "a:1", true)
	sent := e.InFlightNow()
	// Two of ours start while the poll is out; the worker counted one of
	// them with 3 others'.
	end1, end2 := e.Begin(e.Route("m")), e.Begin(e.Route("m"))
	e.SetPolled(&enginev1.GetStatusResponse{ActiveSequences: 4, Models: []*enginev1.ModelLoad{{Model: "m", ActiveSequences: 4}}}, sent)
	if b := e.Busy(); b != 6 {
		t.Fatalf("busy %d, want 4 counted + 2 of ours since the send (one counted twice, never missed)", b)
	}
	// A trailer after the send, then the poll's answer arrives late: the
	// trailer's newer count stands.
	sent = e.InFlightNow()
	e.StreamEnded(e.Route("m"), enginehost.LoadReport{Active: 1, ModelActive: 1, HasModel: true})
	end1()
	e.SetPolled(&enginev1.GetStatusResponse{ActiveSequences: 9, Models: []*enginev1.ModelLoad{{Model: "m", ActiveSequences: 9}}}, sent)
	if b, bm := e.Busy(), e.ModelBusy("m"); b != 1 || bm != 1 {
		t.Fatalf("busy %d, model %d after a stale poll; want the trailer's 1", b, bm)
	}
	end2()
}
