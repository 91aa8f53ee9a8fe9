// Package admission bounds the router's work: at most Limit requests run at
// once, at most Queue more wait (each no longer than MaxWait or its own
// deadline), and anything beyond is refused at once with ResourceExhausted
// and a retry hint, so overload costs neither unbounded memory nor a crash.
// A Controller is safe for concurrent use.
package admission

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Controller admits requests.
type Controller struct {
	slots   chan struct{}
	waiting atomic.Int64
	queue   int64
	maxWait time.Duration
	// RetryAfter is the hint given with refusals.
	RetryAfter time.Duration
}

// New returns a controller; limit <= 0 admits everything.
func New(limit, queue int, maxWait time.Duration) *Controller {
	c := &Controller{queue: int64(queue), maxWait: maxWait, RetryAfter: time.Second}
	if limit > 0 {
		c.slots = make(chan struct{}, limit)
	}
	return c
}

// Acquire admits a request or refuses it; call release when it ends.
func (c *Controller) Acquire(ctx context.Context) (release func(), err error) {
	if c.slots == nil {
		return func() {}, nil
	}
	select {
	case c.slots <- struct{}{}:
		return c.release, nil
	default:
	}
	if c.waiting.Add(1) > c.queue {
		c.waiting.Add(-1)
		return nil, rpcerr.WithReason(rpcerr.ResourceExhausted(c.RetryAfter, "router overloaded: %d requests running and %d queued; retry later", cap(c.slots), c.queue), rpcerr.ReasonOverloaded)
	}
	defer c.waiting.Add(-1)
	var timeout <-chan time.Time
	if c.maxWait > 0 {
		t := time.NewTimer(c.maxWait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case c.slots <- struct{}{}:
		return c.release, nil
	case <-timeout:
		return nil, rpcerr.WithReason(rpcerr.ResourceExhausted(c.RetryAfter, "router overloaded: waited %v in the admission queue; retry later", c.maxWait), rpcerr.ReasonOverloaded)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Controller) release() { <-c.slots }

// Running and Waiting report the current counts.
func (c *Controller) Running() int { return len(c.slots) }
func (c *Controller) Waiting() int { return int(c.waiting.Load()) }
