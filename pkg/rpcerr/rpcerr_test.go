package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestToStatus(t *testing.T) {
	peer := status.Error(codes.PermissionDenied, "peer says no")
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"nil", nil, codes.OK, ""},
		{"invalid argument", InvalidArgument("bad %s", "x"), codes.InvalidArgument, "bad x"},
		{"wrapped not found", fmt.Errorf("lookup: %w", NotFound("model %q", "m")), codes.NotFound, `model "m"`},
		{"unavailable", Unavailable("down"), codes.Unavailable, "down"},
		{"peer status wrapped", fmt.Errorf("call: %w", peer), codes.PermissionDenied, "call: rpc error: code = PermissionDenied desc = peer says no"},
		{"canceled", fmt.Errorf("wait: %w", context.Canceled), codes.Canceled, "wait: context canceled"},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "context deadline exceeded"},
		{"plain", errors.New("boom"), codes.Internal, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(ToStatus(tt.err))
			if st.Code() != tt.code || st.Message() != tt.msg {
				t.Fatalf("ToStatus = %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
}

func TestSentinelsAndRetryHint(t *testing.T) {
	err := fmt.Errorf("admit: %w", ResourceExhausted(1500*time.Millisecond, "queue full"))
	if !errors.Is(err, ErrResourceExhausted) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("errors.Is mismatch for %v", err)
	}
	if got := RetryAfter(err); got != 1500*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want 1.5s", got)
	}
	if got := RetryAfter(InvalidArgument("x")); got != 0 {
		t.Fatalf("RetryAfter without hint = %v", got)
	}
	if Code(err) != codes.ResourceExhausted {
		t.Fatalf("Code = %v", Code(err))
	}
}

// A reason and a retry hint travel together in the status's details, and
// survive the wire (status to proto and back) and re-wrapping.
func TestReasonAndHintSurviveTheWire(t *testing.T) {
	err := WithReason(ResourceExhausted(2*time.Second, "slow down"), ReasonRateLimited)
	wire := status.FromProto(status.Convert(ToStatus(err)).Proto()).Err()
	if Reason(wire) != ReasonRateLimited || RetryAfter(wire) != 2*time.Second || Code(wire) != codes.ResourceExhausted {
		t.Fatalf("over the wire: reason %q, hint %v, code %v", Reason(wire), RetryAfter(wire), Code(wire))
	}
	again := WithReason(fmt.Errorf("wrapped: %w", wire), ReasonUpstreamUnavailable)
	if Reason(again) != ReasonUpstreamUnavailable || RetryAfter(again) != 2*time.Second {
		t.Fatalf("re-reasoned: reason %q, hint %v", Reason(again), RetryAfter(again))
	}
	if Reason(status.Error(codes.Unavailable, "plain")) != "" {
		t.Fatal("a plain status has a reason")
	}
}
