package enginehost

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Eventually waits up to 5s for cond (the external tests use it too).
func Eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fakeReq generates tokens 0..n-1, the last marked end of generation; n < 0
// never ends.
type fakeReq struct {
	Request
	id, n, next int
}

// stepper is a fake engine: slots run their requests one token per step.
type stepper struct {
	loop    *Loop[*fakeReq]
	slots   int
	running []*fakeReq
	rests   atomic.Int32
	// Loop-owned; read after the loop is idle.
	admitted []int // ids in admission order
	most     int   // the most requests running at once
}

func (s *stepper) Admit(q *fakeReq) bool {
	if len(s.running) == s.slots {
		return false
	}
	q.SetReused(3)
	q.Stats.Admit(q.n)
	s.running = append(s.running, q)
	s.admitted = append(s.admitted, q.id)
	s.most = max(s.most, len(s.running))
	return true
}

func (s *stepper) Reap() {
	s.running = slices.DeleteFunc(s.running, func(q *fakeReq) bool {
		if q.Cancelled() {
			s.loop.Finish(q, nil)
			return true
		}
		return false
	})
}

func (s *stepper) Step() {
	time.Sleep(time.Millisecond)
	s.running = slices.DeleteFunc(s.running, func(q *fakeReq) bool {
		q.Stats.Token()
		end := q.n >= 0 && q.next == q.n-1
		q.Out.Push(Token{ID: uint32(q.next), EOG: end})
		q.next++
		if end {
			s.loop.Finish(q, nil)
		}
		return end
	})
}

func (s *stepper) Fail(err error) {
	for _, q := range s.running {
		s.loop.Finish(q, err)
	}
	s.running = nil
}

func (s *stepper) Rest() { s.rests.Add(1) }

func newLoop(t *testing.T, parallel, queue int) (*Loop[*fakeReq], *stepper) {
	t.Helper()
	l := NewLoop[*fakeReq]("m", parallel, queue)
	s := &stepper{loop: l, slots: parallel}
	l.Run(s)
	t.Cleanup(l.Stop)
	return l, s
}

// drain reads a sequence to its end: the token ids and the error it ended
// with (nil after an end-of-generation token).
func drain(t *testing.T, seq Sequence) ([]uint32, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ids []uint32
	for {
		tok, err := seq.Next(ctx)
		if err != nil {
			return ids, err
		}
		ids = append(ids, tok.ID)
		if tok.EOG {
			return ids, nil
		}
	}
}

func TestLoopRunsRequestsThroughSlotsInOrder(t *testing.T) {
	l, s := newLoop(t, 2, 8)
	var seqs []Sequence
	for i, n := range []int{3, 5, 2, 4} {
		seq, err := l.Submit(&fakeReq{id: i, n: n})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	for i, n := range []int{3, 5, 2, 4} {
		ids, err := drain(t, seqs[i])
		want := []uint32{0, 1, 2, 3, 4}[:n]
		if err != nil || !slices.Equal(ids, want) {
			t.Fatalf("request %d: %v %v, want %v", i, ids, err, want)
		}
		if c := seqs[i].(interface{ CachedTokens() int }).CachedTokens(); c != 3 {
			t.Fatalf("cached tokens %d", c)
		}
		if st := seqs[i].(StatsReporter).Stats(); st.QueueWait <= 0 || st.Prefill < 0 || st.PrefillTokens != n {
			t.Fatalf("stats %+v", st)
		}
		seqs[i].Close()
	}
	Eventually(t, func() bool { return !l.Busy() && s.rests.Load() > 0 })
	if !slices.Equal(s.admitted, []int{0, 1, 2, 3}) || s.most != 2 {
		t.Fatalf("admitted %v, at most %d at once (2 slots)", s.admitted, s.most)
	}
	if ml := l.Load(100); ml.GetActiveSequences() != 0 || ml.GetQueueDepth() != 0 {
		t.Fatalf("idle load %v", ml)
	}
	// An idle loop wakes for the next request.
	seq, err := l.Submit(&fakeReq{n: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := drain(t, seq); err != nil || len(ids) != 1 {
		t.Fatalf("after idle: %v %v", ids, err)
	}
}

func TestLoopRefusesBeyondItsQueue(t *testing.T) {
	l, _ := newLoop(t, 1, 1)
	running, err := l.Submit(&fakeReq{n: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	waiting, err := l.Submit(&fakeReq{n: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	_, err = l.Submit(&fakeReq{n: 1})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "at capacity") {
		t.Fatalf("third request: %v", err)
	}
	if ml := l.Load(0); ml.GetActiveSequences()+ml.GetQueueDepth() != 2 {
		t.Fatalf("load %v", ml)
	}
}

func TestLoopEndsCancelledRequestsWhereverTheyAre(t *testing.T) {
	l, _ := newLoop(t, 1, 4)
	running, err := l.Submit(&fakeReq{n: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	waiting, err := l.Submit(&fakeReq{n: 2})
	if err != nil {
		t.Fatal(err)
	}
	// A queued request closed by its consumer ends at once (no hang) and
	// leaves the queue.
	waiting.Close()
	if _, err := drain(t, waiting); status.Code(err) != codes.Unavailable {
		t.Fatalf("cancelled queued request: %v", err)
	}
	Eventually(t, func() bool { return l.Load(0).GetQueueDepth() == 0 })
	// A running one stops counting in the reported load as it closes, and
	// its slot is freed at the next step.
	running.Close()
	if ml := l.Load(0); ml.GetActiveSequences() != 0 {
		t.Fatalf("closed sequence still reported: %v", ml)
	}
	Eventually(t, func() bool { return !l.Busy() })
	if _, err := drain(t, running); status.Code(err) != codes.Unavailable {
		t.Fatalf("cancelled running request: %v", err)
	}
}

func TestLoopStopFailsRunningAndWaitingRequests(t *testing.T) {
	l := NewLoop[*fakeReq]("m", 1, 4)
	l.Run(&stepper{loop: l, slots: 1})
	running, err := l.Submit(&fakeReq{n: -1})
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := l.Submit(&fakeReq{n: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.Next(context.Background()); err != nil { // admitted and decoding
		t.Fatal(err)
	}
	l.Stop()
	for name, seq := range map[string]Sequence{"running": running, "waiting": waiting} {
		_, err := drain(t, seq)
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "was unloaded") {
			t.Fatalf("%s request after stop: %v", name, err)
		}
		seq.Close()
	}
	if _, err := l.Submit(&fakeReq{n: 1}); status.Code(err) != codes.Unavailable {
		t.Fatalf("submit after stop: %v", err)
	}
	if l.Busy() {
		t.Fatalf("stopped loop busy: %v", l.Load(0))
	}
}
