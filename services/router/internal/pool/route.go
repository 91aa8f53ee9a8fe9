package pool

import (
	"math"
	"sync/atomic"
	"time"
)

// Route is one model on one endpoint, with a circuit of its own: a hosted
// model that keeps failing opens its route's circuit without benching the
// other models its provider-proxy serves. (Failures of the connection to the
// worker bench the whole endpoint instead; see Endpoint.ObserveFailure.)
//
// The circuit is closed until Breaker.After consecutive failures, then open
// for an interval that doubles per failure up to Breaker.MaxOpen. When the
// interval has passed it is half-open: one request at a time goes through
// as a probe; the first probe that succeeds closes the circuit, a probe that
// fails opens it again. All methods are safe for concurrent use.
type Route struct {
	br *Breaker

	failures  atomic.Int32
	openUntil atomic.Int64 // unix nanoseconds; 0 when closed
	probing   atomic.Bool

	ttftEWMA    atomic.Int64  // nanoseconds
	itlEWMA     atomic.Int64  // nanoseconds
	prefillEWMA atomic.Uint64 // float64 bits: prompt tokens per second

	load Load // the model's requests on the worker
}

// Breaker is the circuit policy of routes.
type Breaker struct {
	// After is the count of consecutive failures that opens the circuit.
	After int
	// Base is the first open interval; it doubles per further failure.
	Base time.Duration
	// MaxOpen caps the open interval: the longest time between probes.
	MaxOpen time.Duration
}

// DefaultBreaker opens after 3 failures for 1 s, probing at least every 10 s.
var DefaultBreaker = Breaker{After: 3, Base: time.Second, MaxOpen: 10 * time.Second}

// Available reports whether a request may use the route now: the circuit is
// closed, or half-open with no probe in flight.
func (r *Route) Available(now time.Time) bool {
	u := r.openUntil.Load()
	return u == 0 || (now.UnixNano() >= u && !r.probing.Load())
}

// Open reports whether the circuit is open or half-open.
func (r *Route) Open() bool { return r.openUntil.Load() != 0 }

// Begin marks a request started on the route and reports whether it is the
// half-open circuit's probe. Call Success, Failure or Release when it ends.
func (r *Route) Begin(now time.Time) (probe bool) {
	u := r.openUntil.Load()
	return u != 0 && now.UnixNano() >= u && r.probing.CompareAndSwap(false, true)
}

// Success closes the circuit.
func (r *Route) Success() {
	r.failures.Store(0)
	r.openUntil.Store(0)
	r.probing.Store(false)
}

// Failure records a failure of the model on this endpoint (probe: the
// request held the half-open circuit's probe); it opens the circuit after
// Breaker.After of them in a row, and at once when it was already open.
func (r *Route) Failure(now time.Time, probe bool) {
	n := int(r.failures.Add(1))
	wasOpen := r.openUntil.Load() != 0
	if probe {
		r.probing.Store(false)
	}
	if n < r.br.After && !wasOpen {
		return
	}
	d := time.Duration(math.Min(float64(r.br.Base)*math.Pow(2, float64(max(n-r.br.After, 0))), float64(r.br.MaxOpen)))
	r.openUntil.Store(now.Add(d).UnixNano())
}

// Release ends a request that says nothing of the route's health (the
// client went away), freeing the probe slot if it held it.
func (r *Route) Release(probe bool) {
	if probe {
		r.probing.Store(false)
	}
}

// Failures is the count of consecutive failures.
func (r *Route) Failures() int32 { return r.failures.Load() }

// ObserveTTFT records a first token after d.
func (r *Route) ObserveTTFT(d time.Duration) { ewmaDuration(&r.ttftEWMA, d) }

// ObserveITL records a stream's mean inter-token latency.
func (r *Route) ObserveITL(d time.Duration) {
	if d > 0 {
		ewmaDuration(&r.itlEWMA, d)
	}
}

// ObservePrefill records a prompt of tokens processed in d.
func (r *Route) ObservePrefill(tokens int, d time.Duration) {
	if tokens <= 0 || d <= 0 {
		return
	}
	rate := float64(tokens) / d.Seconds()
	for {
		old := r.prefillEWMA.Load()
		next := rate
		if old != 0 {
			next = (1-ewmaAlpha)*math.Float64frombits(old) + ewmaAlpha*rate
		}
		if r.prefillEWMA.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// TTFT is the smoothed time to first token, 0 until observed.
func (r *Route) TTFT() time.Duration { return time.Duration(r.ttftEWMA.Load()) }

// ITL is the smoothed inter-token latency, 0 until observed.
func (r *Route) ITL() time.Duration { return time.Duration(r.itlEWMA.Load()) }

// PrefillRate is the smoothed prompt tokens per second, 0 until observed.
func (r *Route) PrefillRate() float64 { return math.Float64frombits(r.prefillEWMA.Load()) }
