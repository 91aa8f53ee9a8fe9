package pool

import (
	"math"
	"testing"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
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
	e.SetLoad(&enginev1.GetStatusResponse{ActiveSequences: 3, QueueDepth: 2})
	done := e.Begin()
	if e.Busy() != 5 || e.InFlight() != 1 {
		t.Fatalf("busy %d in flight %d", e.Busy(), e.InFlight())
	}
	done()
}
