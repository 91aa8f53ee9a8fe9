// Package cooldown fails calls to a remote store fast while it is down:
// after a failure, calls are refused for a cooldown period instead of each
// waiting out a dial timeout; then one call at a time probes the store while
// the others keep failing fast.
package cooldown

import (
	"sync/atomic"
	"time"
)

// Gate decides whether a call may go to the store. The zero value is open
// and safe for concurrent use.
type Gate struct {
	// downUntil: unix nanoseconds until which calls fail fast; 0 while the
	// store answers.
	downUntil atomic.Int64
}

// Allow reports whether a call may go to the store: always while it
// answers; after a failure, once period has passed, for one caller (the
// probe), which takes the next period for itself.
func (g *Gate) Allow(period time.Duration) bool {
	until := g.downUntil.Load()
	if until == 0 {
		return true
	}
	now := time.Now().UnixNano()
	return now >= until && g.downUntil.CompareAndSwap(until, now+int64(period))
}

// Failed records a failed call: calls fail fast for period.
func (g *Gate) Failed(period time.Duration) { g.downUntil.Store(time.Now().Add(period).UnixNano()) }

// OK records a call the store answered.
func (g *Gate) OK() {
	if g.downUntil.Load() != 0 {
		g.downUntil.Store(0)
	}
}
