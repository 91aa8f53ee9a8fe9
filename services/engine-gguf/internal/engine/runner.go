package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/sampling"
	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/llama"
)

// runner owns one model context and runs its continuous-batching decode
// loop on a single goroutine. Requests reach the loop over a channel; their
// tokens come back through each request's queue.
type runner struct {
	name  string
	model *llama.Model
	ctx   *llama.Context
	opt   Options

	submit chan *request
	queued atomic.Int32 // submitted but not yet in a slot
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}

	active atomic.Int32
	// closing counts active requests closed by their consumer that the
	// loop has not freed yet; the reported load leaves them out.
	closing  atomic.Int32
	kvTokens atomic.Int64
	rate     enginehost.RateMeter

	// Owned by the loop goroutine.
	slots   []*slot
	waiting []*request
	logits  []float32
	inBatch []*request // the sequences the current step decodes (reused)
}

type slot struct {
	id     int
	cached []int32 // tokens whose KV is in the cache for this sequence
	req    *request
}

// request is one sequence's state; the loop owns the fields above mu.
type request struct {
	prompt   []int32
	sampling enginehost.Sampling
	sampler  *llama.Sampler
	pending  []int32 // prompt tokens still to prefill
	last     int32   // sampled token not yet decoded; -1 before the first
	reused   int

	cancelled atomic.Bool
	slot      enginehost.SlotState
	out       *enginehost.TokenQueue
	stats     *enginehost.SeqClock
}

func newRunner(name string, m *llama.Model, opt Options) (*runner, error) {
	ctx, err := llama.NewContext(m, llama.ContextParams{
		NCtx: opt.CtxPerSeq * opt.Parallel, NBatch: opt.Batch, NSeqMax: opt.Parallel,
		Threads: opt.Threads, ThreadsBatch: opt.ThreadsBatch, KVUnified: opt.KVUnified,
	})
	if err != nil {
		return nil, err
	}
	r := &runner{
		name: name, model: m, ctx: ctx, opt: opt,
		submit: make(chan *request, opt.Queue+opt.Parallel), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for i := range opt.Parallel {
		r.slots = append(r.slots, &slot{id: i})
	}
	go r.loop()
	return r, nil
}

// ctxPerSeq is the context limit of one sequence.
func (r *runner) ctxPerSeq() int {
	if r.opt.KVUnified {
		return r.ctx.NCtx()
	}
	return r.ctx.NCtxSeq()
}

// start queues a request, or refuses it when the queue is full.
func (r *runner) start(ctx context.Context, prompt []int32, s enginehost.Sampling) (*sequence, error) {
	if int(r.queued.Add(1)) > r.opt.Queue+r.freeSlots() {
		r.queued.Add(-1)
		return nil, rpcerr.ResourceExhausted(time.Second, "model %q is at capacity: %d sequences running and %d queued; retry later", r.name, r.opt.Parallel, r.opt.Queue)
	}
	seed := uint32(rand.Uint32())
	if s.SeedSet {
		seed = uint32(s.Seed ^ s.Seed>>32)
	}
	req := &request{
		prompt: prompt, sampling: s, last: -1, out: enginehost.NewTokenQueue(), stats: enginehost.NewSeqClock(),
		sampler: llama.NewSampler(r.model, llama.SamplerParams{
			Temperature: s.Temperature, TopK: s.TopK, TopP: s.TopP, MinP: s.MinP,
			RepeatPenalty: s.RepeatPenalty, Seed: seed,
		}),
	}
	select {
	case r.submit <- req:
	case <-r.stop:
		r.queued.Add(-1)
		req.sampler.Close()
		return nil, rpcerr.Unavailable("model %q is unloading", r.name)
	}
	return &sequence{r: r, req: req}, nil
}

// freeSlots is approximate (read outside the loop) and only widens admission
// by the slots that will take requests immediately.
func (r *runner) freeSlots() int { return max(r.opt.Parallel-int(r.active.Load()), 0) }

func (r *runner) busy() bool { return r.active.Load() > 0 || r.queued.Load() > 0 }

// close stops the loop; running and queued requests fail with Unavailable.
func (r *runner) close() {
	close(r.stop)
	<-r.done
	r.ctx.Close()
	r.model.Close()
}

func (r *runner) loop() {
	defer close(r.done)
	defer r.failAll(rpcerr.Unavailable("model %q was unloaded", r.name))
	for {
		if r.active.Load() == 0 && len(r.waiting) == 0 {
			select {
			case req := <-r.submit:
				r.waiting = append(r.waiting, req)
			case <-r.stop:
				return
			}
		}
		select {
		case <-r.stop:
			return
		default:
		}
	drain:
		for {
			select {
			case req := <-r.submit:
				r.waiting = append(r.waiting, req)
			default:
				break drain
			}
		}
		r.reap()
		r.admit()
		if err := r.step(); err != nil {
			// The batch's sequences are in an unknown state: fail them and
			// forget their caches.
			for _, s := range r.slots {
				if s.req != nil {
					r.finish(s, fmt.Errorf("decode: %w", err))
					r.ctx.SeqRm(s.id, 0, -1)
					s.cached = s.cached[:0]
				}
			}
		}
		if r.active.Load() > 0 {
			continue
		}
		// Nothing runs: wait for a request, a cancellation or stop.
		select {
		case <-r.wake:
		default:
		}
	}
}

// reap frees slots and queue entries whose requests were cancelled.
func (r *runner) reap() {
	for _, s := range r.slots {
		if s.req != nil && s.req.cancelled.Load() {
			r.finish(s, nil)
		}
	}
	r.waiting = slices.DeleteFunc(r.waiting, func(q *request) bool {
		if q.cancelled.Load() {
			r.queued.Add(-1)
			q.sampler.Close()
			return true
		}
		return false
	})
}

// admit moves waiting requests (first come, first served) into free slots,
// each to the free slot whose cached tokens share the longest prefix with its
// prompt; only the rest of the prompt is prefilled.
func (r *runner) admit() {
	for len(r.waiting) > 0 {
		var best *slot
		bestLen := -1
		q := r.waiting[0]
		for _, s := range r.slots {
			if s.req != nil {
				continue
			}
			if n := commonPrefix(s.cached, q.prompt); n > bestLen {
				best, bestLen = s, n
			}
		}
		if best == nil {
			return
		}
		r.waiting = r.waiting[1:]
		r.queued.Add(-1)
		keep := min(bestLen, len(q.prompt)-1) // the last prompt token is decoded again for its logits
		if keep < len(best.cached) && !r.ctx.SeqRm(best.id, keep, -1) {
			r.ctx.SeqRm(best.id, 0, -1)
			keep = 0
		}
		best.cached = best.cached[:keep]
		q.pending = q.prompt[keep:]
		q.reused = keep
		q.stats.Admit(len(q.pending))
		for _, t := range q.prompt[max(0, len(q.prompt)-64):] {
			q.sampler.Accept(t) // prompt tokens count for the repeat penalty
		}
		best.req = q
		r.active.Add(1)
		q.slot.Admit()
	}
}

// step decodes one batch: one token for every decoding sequence, then
// prompt chunks of prefilling sequences up to the batch size.
func (r *runner) step() error {
	r.ctx.BatchClear()
	type out struct {
		s   *slot
		idx int
	}
	var outs []out
	inBatch := r.inBatch[:0]
	for _, s := range r.slots {
		if s.req == nil || len(s.req.pending) > 0 || s.req.last < 0 {
			continue
		}
		inBatch = append(inBatch, s.req)
		idx := r.ctx.BatchAdd(s.req.last, len(s.cached), s.id, true)
		s.cached = append(s.cached, s.req.last)
		outs = append(outs, out{s, idx})
	}
	for _, s := range r.slots {
		if s.req == nil || len(s.req.pending) == 0 {
			continue
		}
		budget := min(r.ctx.NBatch()-r.ctx.BatchLen(), r.opt.PrefillChunk)
		if budget <= 0 {
			break
		}
		n := min(budget, len(s.req.pending))
		inBatch = append(inBatch, s.req)
		for i, t := range s.req.pending[:n] {
			last := n == len(s.req.pending) && i == n-1
			idx := r.ctx.BatchAdd(t, len(s.cached), s.id, last)
			s.cached = append(s.cached, t)
			if last {
				outs = append(outs, out{s, idx})
			}
		}
		s.req.pending = s.req.pending[n:]
	}
	if r.ctx.BatchLen() == 0 {
		return nil
	}
	for _, q := range inBatch {
		q.stats.Batch(len(inBatch))
	}
	clear(inBatch) // no references to finished requests kept
	r.inBatch = inBatch
	defer r.countKV()
	if err := r.ctx.Decode(); err != nil {
		if errors.Is(err, llama.ErrNoKVSlot) {
			return rpcerr.ResourceExhausted(time.Second, "model %q: KV cache is full", r.name)
		}
		return err
	}
	for _, o := range outs {
		q := o.s.req
		tok := q.sampler.Sample(r.ctx, o.idx)
		t := enginehost.Token{ID: uint32(tok), Piece: r.model.Piece(tok), EOG: r.model.IsEOG(tok)}
		if q.sampling.Logprobs {
			r.logits = r.ctx.Logits(o.idx, r.logits)
			t.Logprob, t.Top = logprobs(r.model, r.logits, tok, q.sampling.TopLogprobs)
		}
		q.stats.Token()
		q.out.Push(t)
		r.rate.Add(1)
		if t.EOG {
			r.finish(o.s, nil)
			continue
		}
		q.last = tok
	}
	return nil
}

// finish ends a slot's request (err nil: normally) and frees the slot; the
// slot keeps its cached tokens for prefix reuse.
func (r *runner) finish(s *slot, err error) {
	q := s.req
	s.req = nil
	q.slot.Finish(&r.closing) // before active: a report may overcount, never go below 0
	r.active.Add(-1)
	q.sampler.Close()
	q.out.End(err)
}

func (r *runner) failAll(err error) {
	for _, s := range r.slots {
		if s.req != nil {
			r.finish(s, err)
		}
	}
	for {
		select {
		case q := <-r.submit:
			r.waiting = append(r.waiting, q)
			continue
		default:
		}
		break
	}
	for _, q := range r.waiting {
		r.queued.Add(-1)
		q.sampler.Close()
		q.out.End(err)
	}
	r.waiting = nil
}

// countKV publishes how many tokens the slots hold in the KV cache.
func (r *runner) countKV() {
	n := 0
	for _, s := range r.slots {
		n += len(s.cached)
	}
	r.kvTokens.Store(int64(n))
}

func commonPrefix(a, b []int32) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// logprobs computes the chosen token's log-probability and the top
// alternatives from raw logits.
func logprobs(m *llama.Model, logits []float32, chosen int32, top int) (float32, []enginehost.Alternative) {
	lp, alts := sampling.Logprobs(logits, uint32(chosen), top)
	out := make([]enginehost.Alternative, len(alts))
	for i, a := range alts {
		out[i] = enginehost.Alternative{ID: a.ID, Piece: m.Piece(int32(a.ID)), Logprob: a.Logprob}
	}
	return lp, out
}

// sequence is the enginehost.Sequence over a request.
type sequence struct {
	r    *runner
	req  *request
	once sync.Once
}

var _ enginehost.Sequence = (*sequence)(nil)

func (s *sequence) Next(ctx context.Context) (enginehost.Token, error) {
	return s.req.out.Next(ctx)
}

// Close cancels the request; the loop frees its slot at its next step.
func (s *sequence) Close() {
	s.once.Do(func() {
		s.req.cancelled.Store(true)
		s.req.slot.Close(&s.r.closing)
		select {
		case s.r.wake <- struct{}{}:
		default:
		}
	})
}

// CachedTokens reports how many prompt tokens were reused from the cache.
func (s *sequence) CachedTokens() int { return s.req.reused }

// Stats reports the sequence's queue wait, prefill and batching.
func (s *sequence) Stats() enginehost.SeqStats { return s.req.stats.Stats() }

var _ enginehost.StatsReporter = (*sequence)(nil)
