package server

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
)

// A local route's first-token deadline is generous until the route is
// measured, then grows with the prompt at the measured prefill rate.
func TestLocalFirstTokenDeadline(t *testing.T) {
	e := pool.NewEndpoint("w", "w:1", true)
	r := e.Route("m")
	if got := localFirstToken(5*time.Second, r, 2000); got != 30*time.Second {
		t.Fatalf("unmeasured route: %v, want 30s", got)
	}
	r.ObserveTTFT(100 * time.Millisecond)
	r.ObservePrefill(1000, time.Second) // 1,000 tokens/s
	want := 5*time.Second + 300*time.Millisecond + 8*time.Second
	if got := localFirstToken(5*time.Second, r, 2000); got != want {
		t.Fatalf("measured route, 2,000-token prompt: %v, want %v", got, want)
	}
	if short := localFirstToken(5*time.Second, r, 10); short >= want {
		t.Fatalf("a short prompt's deadline %v is not below a long one's %v", short, want)
	}
}

// Backoff is exponential with full jitter over [d/2, d], capped at 2 s.
func TestBackoffJitter(t *testing.T) {
	s := &Server{cfg: Config{BackoffBase: 100 * time.Millisecond}}
	for n := 1; n <= 6; n++ {
		d := min(100*time.Millisecond<<(n-1), 2*time.Second)
		lo, hi := time.Hour, time.Duration(0)
		for range 500 {
			w := s.backoff(n)
			lo, hi = min(lo, w), max(hi, w)
		}
		if lo < d/2 || hi > d || hi-lo < d/10 {
			t.Fatalf("attempt %d: waits in [%v, %v], want spread over [%v, %v]", n, lo, hi, d/2, d)
		}
	}
}

// Failures are classified by their reason first, then their code.
func TestClassify(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		outcome generationv1.AttemptOutcome
		want    failureKind
	}{
		{"connection refused", status.Error(codes.Unavailable, "connection refused"), 0, failTransport},
		{"torn down", status.Error(codes.Canceled, "closing"), 0, failTransport},
		{"upstream 5xx", rpcerr.WithReason(rpcerr.Unavailable("503"), rpcerr.ReasonUpstreamUnavailable), 0, failModel},
		{"upstream 429", rpcerr.WithReason(rpcerr.ResourceExhausted(time.Second, "429"), rpcerr.ReasonRateLimited), 0, failRateLimited},
		{"local queue full", rpcerr.ResourceExhausted(time.Second, "queue full"), 0, failBusy},
		{"context length", rpcerr.WithReason(rpcerr.InvalidArgument("too long"), rpcerr.ReasonContextLength), 0, failContext},
		{"content policy", rpcerr.WithReason(rpcerr.InvalidArgument("refused"), rpcerr.ReasonContentFiltered), 0, failFatal},
		{"bad parameter", rpcerr.InvalidArgument("temperature"), 0, failFatal},
		{"our deadline", status.Error(codes.DeadlineExceeded, "late"), generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FIRST_TOKEN_TIMEOUT, failSilent},
		{"stalled", errors.New("x"), generationv1.AttemptOutcome_ATTEMPT_OUTCOME_STALLED, failSilent},
		// The reason survives the trip through a gRPC status.
		{"reason over the wire", status.Convert(rpcerr.ToStatus(rpcerr.WithReason(rpcerr.Unavailable("503"), rpcerr.ReasonUpstreamUnavailable))).Err(), 0, failModel},
	}
	for _, tt := range tests {
		if got := classify(tt.err, tt.outcome); got != tt.want {
			t.Errorf("%s: kind %d, want %d", tt.name, got, tt.want)
		}
	}
}
