package enginehost

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Request is the part of a decode loop's request that the loop and the
// request's consumer share. Engines embed it in their own request type,
// whose other fields their loop goroutine owns.
type Request struct {
	// Sampling is the request's validated sampling configuration.
	Sampling Sampling
	// Out carries the tokens; Stats the timing. Submit sets both.
	Out   *TokenQueue
	Stats *SeqClock

	cancelled atomic.Bool
	slot      SlotState
	reused    atomic.Int32
}

// Cancelled reports whether the consumer closed the request.
func (r *Request) Cancelled() bool { return r.cancelled.Load() }

// SetReused records how many prompt tokens came from a cache.
func (r *Request) SetReused(n int) { r.reused.Store(int32(n)) }

// Reused is how many prompt tokens came from a cache.
func (r *Request) Reused() int { return int(r.reused.Load()) }

func (r *Request) loopRequest() *Request { return r }

// Queued is an engine's request type: a pointer to a struct that embeds
// Request.
type Queued interface{ loopRequest() *Request }

// Stepper is an engine's side of a decode loop. Loop calls it only from
// the loop goroutine, which owns the engine's slots and caches.
type Stepper[Q Queued] interface {
	// Admit gives q, the oldest waiting request, a slot, or reports false
	// when no slot is free. The loop counts q active once admitted.
	Admit(q Q) bool
	// Reap frees the slots of admitted requests whose consumer closed them
	// (Request.Cancelled), calling Loop.Finish for each.
	Reap()
	// Step runs one step over the admitted requests (prefill chunks and a
	// decode), calling Loop.Finish for each that ends.
	Step()
	// Fail ends every admitted request with err (through Loop.Finish): the
	// loop is stopping.
	Fail(err error)
}

// Rester is a Stepper that releases buffers while the loop has nothing to
// do.
type Rester interface{ Rest() }

// Loop is the request side of a native engine's decode loop, shared by the
// engines: admission against a bounded queue, one goroutine that takes
// submitted requests, drops cancelled ones, admits the rest first come
// first served and steps the engine, and the counts the worker reports as
// load. A Submit or a consumer's Close wakes an idle loop; stopping the
// loop ends every running and waiting request with Unavailable. Methods
// other than those a Stepper calls are safe for concurrent use.
type Loop[Q Queued] struct {
	name            string
	parallel, queue int

	submit chan Q
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}

	queued, active atomic.Int32
	// closing counts active requests closed by their consumer that the
	// loop has not freed yet; the reported load leaves them out.
	closing atomic.Int32
	// KVTokens is the engine's count of tokens held in KV caches; Rate
	// counts generated tokens. Load reports both.
	KVTokens atomic.Int64
	Rate     RateMeter

	waiting []Q // owned by the loop goroutine
}

// NewLoop returns a loop for model name with parallel slots and room for
// queue waiting requests; Run starts it.
func NewLoop[Q Queued](name string, parallel, queue int) *Loop[Q] {
	return &Loop[Q]{
		name: name, parallel: parallel, queue: queue,
		submit: make(chan Q, queue+parallel), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// Run starts the loop goroutine over s.
func (l *Loop[Q]) Run(s Stepper[Q]) { go l.run(s) }

// Submit queues q (setting its Out and Stats), or refuses it with
// ResourceExhausted when the queue is full or Unavailable when the loop is
// stopping.
func (l *Loop[Q]) Submit(q Q) (Sequence, error) {
	if int(l.queued.Add(1)) > l.queue+max(l.parallel-int(l.active.Load()), 0) {
		l.queued.Add(-1)
		return nil, rpcerr.ResourceExhausted(time.Second, "model %q is at capacity: %d sequences running and %d queued; retry later", l.name, l.parallel, l.queue)
	}
	r := q.loopRequest()
	r.Out, r.Stats = NewTokenQueue(), NewSeqClock()
	select {
	case <-l.stop:
		l.queued.Add(-1)
		return nil, rpcerr.Unavailable("model %q is unloading", l.name)
	default:
	}
	select {
	case l.submit <- q:
	case <-l.stop:
		l.queued.Add(-1)
		return nil, rpcerr.Unavailable("model %q is unloading", l.name)
	}
	l.poke()
	return &loopSequence{req: r, closing: &l.closing, wake: l.wake}, nil
}

func (l *Loop[Q]) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Finish ends an admitted request (err nil: normally) and frees its slot
// in the counts. Only a Stepper calls it, after its own cleanup.
func (l *Loop[Q]) Finish(q Q, err error) {
	r := q.loopRequest()
	r.slot.Finish(&l.closing) // before active: a report may overcount, never go below 0
	l.active.Add(-1)
	r.Out.End(err)
}

// Stop ends the loop and waits for it: running and waiting requests end
// with Unavailable. The engine frees its native state after Stop.
func (l *Loop[Q]) Stop() {
	close(l.stop)
	<-l.done
}

// Busy reports whether requests run or wait.
func (l *Loop[Q]) Busy() bool { return l.active.Load() > 0 || l.queued.Load() > 0 }

// Active is the number of admitted requests.
func (l *Loop[Q]) Active() int { return int(l.active.Load()) }

// Load is the model's live counts, with KV use against kvCapacity tokens.
func (l *Loop[Q]) Load(kvCapacity int) *enginev1.ModelLoad {
	ml := &enginev1.ModelLoad{
		ActiveSequences: max(l.active.Load()-l.closing.Load(), 0), // closed streams count no more
		QueueDepth:      l.queued.Load(),
		TokensPerSecond: l.Rate.PerSecond(),
	}
	if kvCapacity > 0 {
		ml.KvCacheUsage = float64(l.KVTokens.Load()) / float64(kvCapacity)
	}
	return ml
}

func (l *Loop[Q]) run(s Stepper[Q]) {
	defer close(l.done)
	defer l.failAll(s, rpcerr.Unavailable("model %q was unloaded", l.name))
	for {
		if len(l.waiting) == 0 && l.active.Load() == 0 {
			if r, ok := s.(Rester); ok {
				r.Rest()
			}
			select {
			case q := <-l.submit:
				l.waiting = append(l.waiting, q)
			case <-l.wake:
				continue // a stale wake-up: look again
			case <-l.stop:
				return
			}
		}
		select {
		case <-l.stop:
			return
		default:
		}
		l.drain()
		l.waiting = slices.DeleteFunc(l.waiting, func(q Q) bool {
			r := q.loopRequest()
			if r.Cancelled() {
				l.queued.Add(-1)
				r.Out.End(nil)
				return true
			}
			return false
		})
		s.Reap()
		for len(l.waiting) > 0 && int(l.active.Load()) < l.parallel {
			q := l.waiting[0]
			if !s.Admit(q) {
				break
			}
			var zero Q
			l.waiting[0] = zero
			l.waiting = l.waiting[1:]
			l.active.Add(1) // before queued: never reported idle in between
			l.queued.Add(-1)
			q.loopRequest().slot.Admit()
		}
		if l.active.Load() > 0 {
			s.Step()
		}
	}
}

// drain moves every submitted request to the waiting list.
func (l *Loop[Q]) drain() {
	for {
		select {
		case q := <-l.submit:
			l.waiting = append(l.waiting, q)
		default:
			return
		}
	}
}

func (l *Loop[Q]) failAll(s Stepper[Q], err error) {
	s.Fail(err)
	l.drain()
	for _, q := range l.waiting {
		l.queued.Add(-1)
		q.loopRequest().Out.End(err)
	}
	l.waiting = nil
}

// loopSequence is the Sequence over a loop's request.
type loopSequence struct {
	req     *Request
	closing *atomic.Int32
	wake    chan struct{}
	once    sync.Once
}

var (
	_ Sequence      = (*loopSequence)(nil)
	_ StatsReporter = (*loopSequence)(nil)
)

func (s *loopSequence) Next(ctx context.Context) (Token, error) { return s.req.Out.Next(ctx) }

// Close cancels the request; the loop frees its slot at its next step.
func (s *loopSequence) Close() {
	s.once.Do(func() {
		s.req.cancelled.Store(true)
		s.req.slot.Close(s.closing)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	})
}

// CachedTokens reports how many prompt tokens were reused from a cache.
func (s *loopSequence) CachedTokens() int { return s.req.Reused() }

// Stats reports the sequence's queue wait, prefill and batching.
func (s *loopSequence) Stats() SeqStats { return s.req.Stats.Stats() }
