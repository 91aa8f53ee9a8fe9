package admission

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLimitQueueAndDeadlines(t *testing.T) {
	c := New(2, 1, 100*time.Millisecond)
	ctx := context.Background()
	r1, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The third waits; a release lets it in.
	got := make(chan error, 1)
	go func() {
		r, err := c.Acquire(ctx)
		if err == nil {
			r()
		}
		got <- err
	}()
	for c.Waiting() != 1 {
		time.Sleep(time.Millisecond)
	}
	// The queue is full: refused at once with a hint.
	if _, err := c.Acquire(ctx); rpcerr.Code(err) != codes.ResourceExhausted || rpcerr.RetryAfter(err) != time.Second {
		t.Fatalf("over queue: %v", err)
	}
	r1()
	if err := <-got; err != nil {
		t.Fatalf("queued request: %v", err)
	}
	// Waiting longer than MaxWait is refused.
	r3, _ := c.Acquire(ctx)
	began := time.Now()
	if _, err := c.Acquire(ctx); rpcerr.Code(err) != codes.ResourceExhausted || time.Since(began) < 90*time.Millisecond {
		t.Fatalf("queue timeout: %v after %v", err, time.Since(began))
	}
	// A caller's own deadline ends its wait.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := c.Acquire(cctx); rpcerr.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("caller deadline: %v", err)
	}
	r2()
	r3()
	if c.Running() != 0 || c.Waiting() != 0 {
		t.Fatalf("leaked: running %d waiting %d", c.Running(), c.Waiting())
	}
	if r, err := New(0, 0, 0).Acquire(ctx); err != nil {
		t.Fatal(err)
	} else {
		r()
	}
}
