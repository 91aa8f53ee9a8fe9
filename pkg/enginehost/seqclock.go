package enginehost

import (
	"sync/atomic"
	"time"
)

// SeqClock records one sequence's run for SeqStats: an engine's loop
// goroutine writes it (Admit, Token, Batch) while the request's owner may
// read it (Stats), so every field written after construction is atomic.
type SeqClock struct {
	submitted                time.Time
	admitted, first          atomic.Int64
	prefillTokens, batchMost atomic.Int32
}

// NewSeqClock starts a clock at submission.
func NewSeqClock() *SeqClock { return &SeqClock{submitted: time.Now()} }

// Admit marks the sequence taking a slot with pending prompt tokens left to
// compute (the rest came from a cache).
func (c *SeqClock) Admit(pending int) {
	c.admitted.Store(time.Now().UnixNano())
	c.prefillTokens.Store(int32(pending))
}

// Token marks a generated token; the first one ends the prefill.
func (c *SeqClock) Token() {
	if c.first.Load() == 0 {
		c.first.Store(time.Now().UnixNano())
	}
}

// Batch notes a step that decoded n sequences, this one among them.
func (c *SeqClock) Batch(n int) {
	if int32(n) > c.batchMost.Load() {
		c.batchMost.Store(int32(n))
	}
}

// Stats is what the clock saw; zero durations for what did not happen.
func (c *SeqClock) Stats() SeqStats {
	st := SeqStats{PrefillTokens: int(c.prefillTokens.Load()), BatchMax: int(c.batchMost.Load())}
	if a := c.admitted.Load(); a != 0 {
		st.QueueWait = time.Unix(0, a).Sub(c.submitted)
		if f := c.first.Load(); f != 0 {
			st.Prefill = time.Duration(f - a)
		}
	}
	return st
}
