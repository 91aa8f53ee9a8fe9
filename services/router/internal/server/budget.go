package server

import (
	"sync"
	"time"
)

// retryBudget caps retries at ratio × recent requests + floor per second
// (measured over a 10-second window), so that retries cannot multiply load
// when many workers fail at once.
type retryBudget struct {
	ratio, floor float64
	now          func() time.Time

	mu      sync.Mutex
	start   time.Time
	reqs    float64
	retries float64
}

const budgetWindow = 10 * time.Second

func newRetryBudget(ratio, floor float64, now func() time.Time) *retryBudget {
	return &retryBudget{ratio: ratio, floor: floor, now: now, start: now()}
}

func (b *retryBudget) roll() {
	if t := b.now(); t.Sub(b.start) > budgetWindow {
		b.start, b.reqs, b.retries = t, 0, 0
	}
}

func (b *retryBudget) request() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.roll()
	b.reqs++
}

// retry reports whether one more retry fits the budget, and spends it.
func (b *retryBudget) retry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.roll()
	allowed := b.ratio*b.reqs + b.floor*budgetWindow.Seconds()
	if b.retries+1 > allowed {
		return false
	}
	b.retries++
	return true
}
