package metrics

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
)

func TestUserTokensAreBounded(t *testing.T) {
	m := New(pool.New(telemetry.Noop(), slog.New(slog.DiscardHandler), time.Minute), nil)
	m.UserTokens("", 5, 5) // no user: no series
	m.UserTokens("alice", 10, 3)
	m.UserTokens("alice", 1, 1)
	if got := testutil.ToFloat64(m.users.WithLabelValues("alice", "prompt")); got != 11 {
		t.Fatalf("alice's prompt tokens = %v, want 11", got)
	}
	if got := testutil.ToFloat64(m.users.WithLabelValues("alice", "completion")); got != 4 {
		t.Fatalf("alice's completion tokens = %v, want 4", got)
	}
	for i := range MaxUsers + 50 {
		m.UserTokens(fmt.Sprintf("u%d", i), 1, 0)
	}
	m.UserTokens("bad\xff", 1, 0)
	// alice plus MaxUsers-1 others have series of their own; 51 users and
	// the invalid name fall under _other.
	if got := testutil.ToFloat64(m.users.WithLabelValues(OtherUser, "prompt")); got != 52 {
		t.Fatalf("_other prompt tokens = %v, want 52", got)
	}
	if n := testutil.CollectAndCount(m.users); n != 2*(MaxUsers+1) {
		t.Fatalf("%d series, want %d (MaxUsers users and _other, two kinds each)", n, 2*(MaxUsers+1))
	}
}
