package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/sampling"
	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/llama"
)

// runner owns one model context and runs its continuous-batching decode
// loop (an enginehost.Loop) on a single goroutine: every admitted sequence
// is in a slot, and each step decodes one token for every decoding slot plus
// prompt chunks of prefilling ones.
type runner struct {
	name  string
	model *llama.Model
	ctx   *llama.Context
	opt   Options
	loop  *enginehost.Loop[*request]

	embedMu sync.Mutex
	embed   *embedder // made on first use; guarded by embedMu
	closed  bool      // guarded by embedMu

	// Owned by the loop goroutine.
	slots   []*slot
	logits  []float32
	inBatch []*request // the sequences the current step decodes (reused)
}

var (
	_ enginehost.Resident          = (*runner)(nil)
	_ enginehost.Stepper[*request] = (*runner)(nil)
)

type slot struct {
	id     int
	cached []int32 // tokens whose KV is in the cache for this sequence
	req    *request
}

// request is one sequence's state; the loop owns the fields beside the
// embedded shared part.
type request struct {
	enginehost.Request
	prompt  []int32
	seed    uint32
	sampler *llama.Sampler // made at admission, closed at finish
	pending []int32        // prompt tokens still to prefill
	last    int32          // sampled token not yet decoded; -1 before the first
	failed  error          // set at admission: finished by the next step
}

func newRunner(name string, m *llama.Model, opt Options) (*runner, error) {
	ctx, err := llama.NewContext(m, llama.ContextParams{
		NCtx: opt.CtxPerSeq * opt.Parallel, NBatch: opt.Batch, NSeqMax: opt.Parallel,
		Threads: opt.Threads, ThreadsBatch: opt.ThreadsBatch, KVUnified: opt.KVUnified,
	})
	if err != nil {
		return nil, err
	}
	r := &runner{name: name, model: m, ctx: ctx, opt: opt, loop: enginehost.NewLoop[*request](name, opt.Parallel, opt.Queue)}
	for i := range opt.Parallel {
		r.slots = append(r.slots, &slot{id: i})
	}
	r.loop.Run(r)
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
func (r *runner) start(prompt []int32, s enginehost.Sampling) (enginehost.Sequence, error) {
	if err := enginehost.CheckLogitBias(s.LogitBias, r.model.NVocab()); err != nil {
		return nil, err
	}
	seed := uint32(rand.Uint32())
	if s.SeedSet {
		seed = uint32(s.Seed ^ s.Seed>>32)
	}
	return r.loop.Submit(&request{Request: enginehost.Request{Sampling: s}, prompt: prompt, seed: seed, last: -1})
}

// Busy reports whether sequences run or wait.
func (r *runner) Busy() bool { return r.loop.Busy() }

// Load reports the live counts, KV use against the whole context.
func (r *runner) Load() *enginev1.ModelLoad { return r.loop.Load(r.ctx.NCtx()) }

// embedder returns the model's embeddings context, making it on first use.
func (r *runner) embedder() (*embedder, error) {
	r.embedMu.Lock()
	defer r.embedMu.Unlock()
	if r.closed {
		return nil, rpcerr.Unavailable("model %q was unloaded", r.name)
	}
	if r.embed == nil {
		e, err := newEmbedder(r.model, r.ctxPerSeq(), r.opt)
		if err != nil {
			return nil, err
		}
		r.embed = e
	}
	return r.embed, nil
}

// Close stops the loop (running and queued requests fail with Unavailable)
// and frees the embedder, context and model.
func (r *runner) Close() {
	r.loop.Stop()
	r.embedMu.Lock()
	r.closed = true
	if r.embed != nil {
		r.embed.close()
		r.embed = nil
	}
	r.embedMu.Unlock()
	r.ctx.Close()
	r.model.Close()
}

// Reap frees the slots of cancelled requests.
func (r *runner) Reap() {
	for _, s := range r.slots {
		if s.req != nil && s.req.Cancelled() {
			r.finish(s, nil)
		}
	}
}

// Step decodes one batch; a failed decode fails the batch's sequences and
// forgets their caches, whose state is unknown.
func (r *runner) Step() {
	if err := r.step(); err != nil {
		for _, s := range r.slots {
			if s.req != nil {
				r.finish(s, fmt.Errorf("decode: %w", err))
				r.ctx.SeqRm(s.id, 0, -1)
				s.cached = s.cached[:0]
			}
		}
	}
}

// Fail ends every running request with err.
func (r *runner) Fail(err error) {
	for _, s := range r.slots {
		if s.req != nil {
			r.finish(s, err)
		}
	}
}

// minShare is the shortest prompt prefix worth copying from, or waiting
// for, another sequence's KV cache.
const minShare = 16

// Admit gives q the free slot whose cached tokens share the longest prefix
// with its prompt; only the rest of the prompt is prefilled. When a running
// sequence holds (or is prefilling) a longer prefix of q's prompt — the
// choices of an n > 1 request, or any requests with a common system
// prompt — q takes that sequence's KV instead of computing it again
// (llama_memory_seq_cp), waiting for the prefill to finish if need be.
func (r *runner) Admit(q *request) bool {
	var best, donor *slot
	bestLen, donorLen := -1, 0
	for _, s := range r.slots {
		if s.req != nil {
			if n := commonPrefix(s.cached, q.prompt); n > donorLen {
				donor, donorLen = s, n
			}
			continue
		}
		if n := commonPrefix(s.cached, q.prompt); n > bestLen {
			best, bestLen = s, n
		}
	}
	if best == nil {
		return false
	}
	have := max(bestLen, donorLen)
	for _, s := range r.slots {
		if s.req != nil && len(s.req.pending) > 0 && commonPrefix(s.req.prompt, q.prompt) >= have+minShare {
			return false // its prefill will hold more of q's prompt: copy it then
		}
	}
	if donorLen >= bestLen+minShare {
		if r.share(donor, best, donorLen) {
			bestLen = donorLen // counted as reused, like any cached prefix
		} else {
			bestLen = 0 // share emptied best's cache before it failed
		}
	}
	keep := min(bestLen, len(q.prompt)-1) // the last prompt token is decoded again for its logits
	if keep < len(best.cached) && !r.ctx.SeqRm(best.id, keep, -1) {
		r.ctx.SeqRm(best.id, 0, -1)
		keep = 0
	}
	best.cached = best.cached[:keep]
	q.pending = q.prompt[keep:]
	q.SetReused(keep)
	q.Stats.Admit(len(q.pending))
	best.req = q
	q.failed = r.newSampler(q)
	return true
}

// newSampler makes q's sampler at admission (a waiting request holds no
// native object): the prompt's last tokens count for the penalties, and a
// continuation's tokens (output already generated elsewhere) advance the
// grammar of a response format.
func (r *runner) newSampler(q *request) error {
	s := q.Sampling
	p := llama.SamplerParams{
		Temperature: s.Temperature, TopK: s.TopK, TopP: s.TopP, MinP: s.MinP,
		RepeatPenalty: s.RepeatPenalty, FrequencyPenalty: s.FrequencyPenalty, PresencePenalty: s.PresencePenalty,
		LogitBias: s.LogitBias, Seed: q.seed,
	}
	if s.Grammar != nil {
		p.Grammar = s.Grammar.GBNF()
	}
	var err error
	if q.sampler, err = llama.NewSampler(r.model, p); err != nil {
		return fmt.Errorf("response format: %w", err)
	}
	for _, t := range q.prompt[max(0, len(q.prompt)-64):] {
		q.sampler.Accept(t) // prompt tokens count for the penalties
	}
	for _, t := range q.prompt[len(q.prompt)-s.Continued:] {
		if !q.sampler.AcceptOutput(r.model, t) {
			return rpcerr.FailedPrecondition("the continuation (%d tokens) does not fit the response format", s.Continued)
		}
	}
	return nil
}

// step decodes one batch: one token for every decoding sequence, then
// prompt chunks of prefilling sequences up to the batch size.
func (r *runner) step() error {
	for _, s := range r.slots {
		if s.req != nil && s.req.failed != nil {
			r.finish(s, s.req.failed)
		}
	}
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
		q.Stats.Batch(len(inBatch))
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
		tok, err := q.sampler.Sample(r.ctx, o.idx)
		if err != nil {
			r.finish(o.s, fmt.Errorf("model %q: %w", r.name, err))
			continue
		}
		t := enginehost.Token{ID: uint32(tok), Piece: r.model.Piece(tok), EOG: r.model.IsEOG(tok)}
		if q.Sampling.Logprobs {
			r.logits = r.ctx.Logits(o.idx, r.logits)
			t.Logprob, t.Top = logprobs(r.model, r.logits, tok, q.Sampling.TopLogprobs)
		}
		q.Stats.Token()
		q.Out.Push(t)
		r.loop.Rate.Add(1)
		if t.EOG {
			r.finish(o.s, nil)
			continue
		}
		q.last = tok
	}
	return nil
}

// share makes dst's cache hold the first n tokens of src's: a metadata
// copy in a unified KV cache, else a copy of src's whole stream (llama.cpp
// copies only whole streams) cut back to n.
func (r *runner) share(src, dst *slot, n int) bool {
	r.ctx.SeqRm(dst.id, 0, -1)
	dst.cached = dst.cached[:0]
	if r.opt.KVUnified {
		if err := r.ctx.SeqCp(src.id, dst.id, 0, n, true); err != nil {
			return false
		}
	} else {
		if err := r.ctx.SeqCp(src.id, dst.id, -1, -1, false); err != nil {
			return false
		}
		if n < len(src.cached) && !r.ctx.SeqRm(dst.id, n, -1) {
			r.ctx.SeqRm(dst.id, 0, -1)
			return false
		}
	}
	dst.cached = append(dst.cached, src.cached[:n]...)
	return true
}

// finish ends a slot's request (err nil: normally) and frees the slot; the
// slot keeps its cached tokens for prefix reuse.
func (r *runner) finish(s *slot, err error) {
	q := s.req
	s.req = nil
	if q.sampler != nil {
		q.sampler.Close()
		q.sampler = nil
	}
	r.loop.Finish(q, err)
}

// countKV publishes how many tokens the slots hold in the KV cache.
func (r *runner) countKV() {
	n := 0
	for _, s := range r.slots {
		n += len(s.cached)
	}
	r.loop.KVTokens.Store(int64(n))
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
