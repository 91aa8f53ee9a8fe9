package enginehost

import (
	"sync/atomic"
	"time"
)

// SeqClock records one sequence's run for SeqStats: an engine's loop
// goroutine writes it (Admit, Token, Batch) while the request's owner may
// read it (Stats), so every field written after construction is atomic.
// Times are monotonic offsets from submission. A nil clock records nothing.
type SeqClock struct {
	submitted                time.Time
	admitted, first          atomic.Int64 // ns since submitted; 0: not yet
	prefillTokens, batchMost atomic.Int32
}

// NewSeqClock starts a clock at submission.
func NewSeqClock() *SeqClock { return &SeqClock{submitted: time.Now()} }

// since is the time since submission, never 0 (0 means "not yet").
func (c *SeqClock) since() int64 { return max(int64(time.Since(c.submitted)), 1) }

// Admit marks the sequence taking a slot with pending prompt tokens left to
// compute (the rest came from a cache).
func (c *SeqClock) Admit(pending int) {
	if c == nil {
		return
	}
	c.admitted.Store(c.since())
	c.prefillTokens.Store(int32(pending))
}

// Token marks a generated token; the first one ends the prefill.
func (c *SeqClock) Token() {
	if c != nil && c.first.Load() == 0 {
		c.first.Store(c.since())
	}
}

// Batch notes a step that computed n sequences, this one among them.
func (c *SeqClock) Batch(n int) {
	if c != nil && int32(n) > c.batchMost.Load() {
		c.batchMost.Store(int32(n))
	}
}

// Stats is what the clock saw; zero durations for what did not happen.
func (c *SeqClock) Stats() SeqStats {
	if c == nil {
		return SeqStats{}
	}
	st := SeqStats{PrefillTokens: int(c.prefillTokens.Load()), BatchMax: int(c.batchMost.Load())}
	if a := c.admitted.Load(); a != 0 {
		st.QueueWait = time.Duration(a)
		if f := c.first.Load(); f != 0 {
			st.Prefill = time.Duration(f - a)
		}
	}
	return st
}
