package pool

import (
	"sync/atomic"
	"time"
)

// Load is a worker's count of sequences decoding and requests queued, as
// this router last learnt it (from a status poll or the trailer of one of
// its streams), plus the requests this router started or finished there
// since. An Endpoint keeps one for the whole worker and each Route one for
// its model. Safe for concurrent use.
type Load struct {
	inFlight atomic.Int32
	report   atomic.Pointer[loadReport]
}

// loadReport is the worker's count, this router's in-flight count when the
// worker counted, and when that was (for a poll: when it was sent, so that
// requests this router started meanwhile count once more rather than not
// at all).
type loadReport struct {
	busy, own int32
	at        time.Time
}

// Begin marks one of this router's requests started; call the returned
// func when it ends.
func (l *Load) Begin() func() {
	l.inFlight.Add(1)
	return func() { l.inFlight.Add(-1) }
}

// InFlight is the number of this router's requests there.
func (l *Load) InFlight() int32 { return l.inFlight.Load() }

// Report records the worker's count busy (active + queued), made at about
// at, when this router had own requests in flight there. A report older
// than the one held (a poll answer overtaken by a stream's trailer) is
// dropped.
func (l *Load) Report(busy, own int32, at time.Time) {
	next := &loadReport{busy: busy, own: own, at: at}
	for {
		old := l.report.Load()
		if old != nil && old.at.After(at) {
			return
		}
		if l.report.CompareAndSwap(old, next) {
			return
		}
	}
}

// Ended records a count from the trailer of one of this router's streams,
// which the worker no longer counts but InFlight still does.
func (l *Load) Ended(busy int32) { l.Report(busy, l.inFlight.Load()-1, time.Now()) }

// Busy is the last report plus this router's requests started there since,
// minus those ended since, never less than this router's own in flight.
// With several routers the report is the only view of the others'
// requests; it is as fresh as the last stream to end there.
func (l *Load) Busy() int {
	own := l.inFlight.Load()
	busy := own
	if r := l.report.Load(); r != nil {
		busy = max(busy, r.busy+own-r.own)
	}
	return int(busy)
}
