package engine

import (
	"fmt"
	"math/rand/v2"
	"slices"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/sampling"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/ort"
)

// runner owns one model's session and runs its decode loop (an
// enginehost.Loop) on a single goroutine. New prompts that fit one step are prefilled together as
// left-padded rows, longer ones in chunks; decoding sequences run together as
// the rows of one batch, left-padded to a common KV length. Each step writes
// its present tensors into pooled buffers that become the next step's past
// without a copy; when rows join or leave, the KV rows are repacked once.
// Each loop turn does at most one prefill step and one decode step, so new
// prompts and running streams share the model fairly, and a cancelled
// request leaves within one step.
type runner struct {
	name string
	spec *spec
	sess *ort.Session
	opt  Options
	ctx  int // per-sequence context
	loop *enginehost.Loop[*request]
	// embeds gates a sentence encoder's runs (Embed calls the session
	// directly, outside the loop).
	embeds embedGate

	// Owned by the loop goroutine.
	prefill []*request // admitted, prompt not yet in the cache
	joining []*request // prefilled; own KV waits to join the batch
	batch   batch
	scratch []float32
	logits  []float32 // the last run's logits output
	pool    pool
	prefix  []*cached // finished sequences' caches, for prompt-prefix reuse
	tick    int64
}

var (
	_ enginehost.Resident          = (*runner)(nil)
	_ enginehost.Stepper[*request] = (*runner)(nil)
	_ enginehost.Rester            = (*runner)(nil)
)

// cached is a finished sequence's KV cache ([1, kv_heads, len, head_dim]);
// at most Options.PrefixCache bytes of them are kept.
type cached struct {
	tokens []uint32
	kv     []*ort.Value
	used   int64
}

// minReuse is the shortest prefix worth copying instead of recomputing.
const minReuse = 8

// batch is the decoding sequences' shared state.
type batch struct {
	rows  []*request // nil: a row whose request left (repacked away)
	cols  int        // KV length of every row (left-padded)
	mask  []int64    // [rows, cols]: 1 where a row has a real token
	past  []*ort.Value
	dirty bool // rows left; repack before the next step
}

// request is one sequence; the loop owns the fields beside the embedded
// shared part.
type request struct {
	enginehost.Request
	prompt  []uint32
	sampler *sampling.Sampler
	tokens  []uint32 // the prompt, then each token once decoded
	pos     int      // tokens in the KV cache
	last    uint32   // sampled token not yet decoded
	kv      []*ort.Value
	err     error // why sample ended the sequence early, if it failed
}

func newRunner(name string, s *spec, sess *ort.Session, opt Options) *runner {
	r := &runner{name: name, spec: s, sess: sess, opt: opt, ctx: min(opt.CtxPerSeq, s.ctx)}
	r.pool.limit = 4 * s.layers // two KV sets: past and present
	r.embeds.slots = make(chan struct{}, opt.Parallel)
	r.loop = enginehost.NewLoop[*request](name, opt.Parallel, opt.Queue)
	r.loop.Run(r)
	return r
}

// start queues a request, or refuses it when the queue is full.
func (r *runner) start(prompt []uint32, s enginehost.Sampling) (enginehost.Sequence, error) {
	if err := enginehost.CheckLogitBias(s.LogitBias, r.spec.vocab); err != nil {
		return nil, err
	}
	seed := rand.Uint64()
	if s.SeedSet {
		seed = s.Seed
	}
	p := sampling.Params{
		Temperature: s.Temperature, TopK: s.TopK, TopP: s.TopP, MinP: s.MinP,
		RepeatPenalty: s.RepeatPenalty, FrequencyPenalty: s.FrequencyPenalty, PresencePenalty: s.PresencePenalty,
		LogitBias: s.LogitBias, Seed: seed,
	}
	if s.Grammar != nil {
		c := structured.NewTokenConstraint(s.Grammar, r.spec.tokenVocab())
		for _, t := range prompt[len(prompt)-s.Continued:] {
			if c.Accept(t) != nil {
				return nil, rpcerr.FailedPrecondition("the continuation (%d tokens) does not fit the response format", s.Continued)
			}
		}
		p.Constraint = c
	}
	req := &request{
		Request: enginehost.Request{Sampling: s}, prompt: prompt, tokens: slices.Clone(prompt),
		sampler: sampling.New(p),
	}
	for _, t := range prompt[max(0, len(prompt)-64):] {
		req.sampler.Accept(t) // prompt tokens count for the repeat penalty
	}
	return r.loop.Submit(req)
}

// Busy reports whether sequences run or wait.
func (r *runner) Busy() bool { return r.loop.Busy() || r.embeds.running() }

// Load reports the live counts, KV use against every slot's context.
func (r *runner) Load() *enginev1.ModelLoad { return r.loop.Load(r.ctx * r.opt.Parallel) }

// Close stops the loop (running and queued requests fail with Unavailable)
// and frees the session.
func (r *runner) Close() {
	r.loop.Stop()
	r.embeds.close() // waits for running embeddings
	r.sess.Close()
}

// Rest drops what the last requests left (a batch whose rows were all
// cancelled) and lets the buffers go back to the system while nothing runs.
func (r *runner) Rest() {
	if r.batch.dirty {
		if err := r.repack(); err != nil {
			r.failBatch(err)
		}
	}
	r.countKV()
	r.pool.free = nil
}

// Step runs one turn: at most one prefill step (several new prompts
// together, or one chunk of a long one, round robin), then one decode step
// for the batch.
func (r *runner) Step() {
	if group := r.freshGroup(); len(group) > 1 {
		r.prefill = r.prefill[len(group):]
		if err := r.prefillTogether(group); err != nil {
			for _, q := range group {
				r.finish(q, fmt.Errorf("prefill: %w", err))
			}
		}
	} else if len(r.prefill) > 0 {
		q := r.prefill[0]
		if err := r.prefillChunk(q); err != nil {
			r.prefill = r.prefill[1:]
			r.finish(q, fmt.Errorf("prefill: %w", err))
		} else if q.pos == len(q.prompt) {
			r.prefill = r.prefill[1:]
		} else if len(r.prefill) > 1 {
			r.prefill = append(r.prefill[1:], q) // round robin between long prompts
		}
	}
	if len(r.joining) > 0 || r.batch.dirty {
		if err := r.repack(); err != nil {
			r.failBatch(fmt.Errorf("repack KV cache: %w", err))
		}
	}
	if r.live() > 0 {
		if err := r.decode(); err != nil {
			r.failBatch(fmt.Errorf("decode: %w", err))
		}
	}
	r.countKV()
}

func (r *runner) live() int {
	n := 0
	for _, q := range r.batch.rows {
		if q != nil {
			n++
		}
	}
	return n
}

// Reap drops admitted requests whose consumer closed them.
func (r *runner) Reap() {
	drop := func(list []*request) []*request {
		return slices.DeleteFunc(list, func(q *request) bool {
			if q.Cancelled() {
				r.finish(q, nil)
				return true
			}
			return false
		})
	}
	r.prefill = drop(r.prefill)
	r.joining = drop(r.joining)
	for i, q := range r.batch.rows {
		if q != nil && q.Cancelled() {
			r.leave(i, nil)
		}
	}
}

// Admit takes q into the prefill list, from the longest cached prefix.
func (r *runner) Admit(q *request) bool {
	r.reuse(q)
	q.Stats.Admit(len(q.prompt) - q.Reused())
	r.prefill = append(r.prefill, q)
	return true
}

// reuse starts q from the cached sequence sharing the longest prefix with
// its prompt (all but the prompt's last token, whose logits are needed).
func (r *runner) reuse(q *request) {
	var best *cached
	keep := 0
	for _, c := range r.prefix {
		if n := min(commonPrefix(c.tokens, q.prompt), len(q.prompt)-1); n > keep {
			best, keep = c, n
		}
	}
	if best == nil || keep < minReuse {
		return
	}
	kv, err := r.newKV(1, keep)
	if err != nil {
		return // prefill from scratch
	}
	hd, n := r.spec.headDim, len(best.tokens)
	for t := range kv {
		from, to := best.kv[t].Floats(), kv[t].Floats()
		for h := range r.spec.kvHeads {
			copy(to[h*keep*hd:(h+1)*keep*hd], from[h*n*hd:h*n*hd+keep*hd])
		}
	}
	r.tick++
	best.used = r.tick
	q.kv, q.pos = kv, keep
	q.SetReused(keep)
}

// remember keeps a finished sequence's cache for prefix reuse, replacing
// entries it extends and evicting the least recently used beyond the
// PrefixCache byte budget. It takes ownership of kv.
func (r *runner) remember(tokens []uint32, kv []*ort.Value) {
	if len(tokens) < minReuse || r.tokenBytes()*len(tokens) > r.opt.PrefixCache {
		r.free(kv)
		return
	}
	r.prefix = slices.DeleteFunc(r.prefix, func(c *cached) bool {
		if len(c.tokens) <= len(tokens) && commonPrefix(c.tokens, tokens) == len(c.tokens) {
			r.free(c.kv)
			return true
		}
		return false
	})
	r.tick++
	r.prefix = append(r.prefix, &cached{tokens: slices.Clone(tokens), kv: kv, used: r.tick})
	for {
		total := 0
		for _, c := range r.prefix {
			total += len(c.tokens)
		}
		if total*r.tokenBytes() <= r.opt.PrefixCache {
			return
		}
		old := 0
		for i, c := range r.prefix {
			if c.used < r.prefix[old].used {
				old = i
			}
		}
		r.free(r.prefix[old].kv)
		r.prefix = slices.Delete(r.prefix, old, old+1)
	}
}

// tokenBytes is the KV cache size of one token.
func (r *runner) tokenBytes() int { return 2 * r.spec.layers * r.spec.kvHeads * r.spec.headDim * 4 }

// rowKV copies batch row i's cache out as [1, kv_heads, pos, head_dim].
func (r *runner) rowKV(i int) []*ort.Value {
	b, q := &r.batch, r.batch.rows[i]
	kv, err := r.newKV(1, q.pos)
	if err != nil {
		return nil
	}
	hd := r.spec.headDim
	for t := range kv {
		from, to := b.past[t].Floats(), kv[t].Floats()
		for h := range r.spec.kvHeads {
			at := ((i*r.spec.kvHeads+h)*b.cols + b.cols - q.pos) * hd
			copy(to[h*q.pos*hd:(h+1)*q.pos*hd], from[at:at+q.pos*hd])
		}
	}
	return kv
}

func commonPrefix(a, b []uint32) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// prefillChunk runs up to PrefillChunk prompt tokens of q through the model
// on q's own KV cache; after the last chunk it samples the first token.
func (r *runner) prefillChunk(q *request) error {
	q.Stats.Batch(1) // alone in its step
	n := min(r.opt.PrefillChunk, len(q.prompt)-q.pos)
	ids := make([]int64, n)
	pos := make([]int64, n)
	for i := range n {
		ids[i] = int64(q.prompt[q.pos+i])
		pos[i] = int64(q.pos + i)
	}
	mask := make([]int64, q.pos+n)
	for i := range mask {
		mask[i] = 1
	}
	past := q.kv
	if past == nil {
		var err error
		if past, err = r.emptyKV(); err != nil {
			return err
		}
	}
	logits, present, err := r.run(1, n, ids, mask, pos, past)
	r.free(past)
	q.kv = nil
	if err != nil {
		return err
	}
	q.kv = present
	q.pos += n
	if q.pos < len(q.prompt) {
		return nil
	}
	if r.sample(q, r.lastLogits(logits, 0, n)) {
		r.joining = append(r.joining, q)
	} else {
		r.finish(q, q.err)
	}
	return nil
}

// freshGroup is the run of new requests at the head of the prefill list
// whose whole prompts fit together in one step of PrefillChunk tokens
// (counting the left padding to the longest).
func (r *runner) freshGroup() []*request {
	longest, n := 0, 0
	for _, q := range r.prefill {
		l := max(longest, len(q.prompt))
		if q.pos != 0 || l*(n+1) > r.opt.PrefillChunk {
			break
		}
		longest, n = l, n+1
	}
	return r.prefill[:n]
}

// prefillTogether prefills several new prompts in one step as left-padded
// rows, then gives each request its own KV cache and its first token. An
// error returned means no request of the group was touched.
func (r *runner) prefillTogether(group []*request) error {
	rows, length := len(group), 0
	for _, q := range group {
		length = max(length, len(q.prompt))
		q.Stats.Batch(rows)
	}
	ids, pos, mask := make([]int64, rows*length), make([]int64, rows*length), make([]int64, rows*length)
	for i, q := range group {
		pad := length - len(q.prompt)
		for j, id := range q.prompt {
			ids[i*length+pad+j], pos[i*length+pad+j], mask[i*length+pad+j] = int64(id), int64(j), 1
		}
	}
	past, err := r.newKV(rows, 0)
	if err != nil {
		return err
	}
	logits, present, err := r.run(rows, length, ids, mask, pos, past)
	r.free(past)
	if err != nil {
		return err
	}
	defer r.free(present)
	heads, hd := r.spec.kvHeads, r.spec.headDim
	for i, q := range group {
		n := len(q.prompt)
		kv, err := r.newKV(1, n)
		if err != nil {
			r.finish(q, fmt.Errorf("prefill: %w", err))
			continue
		}
		for t := range kv {
			from, to := present[t].Floats(), kv[t].Floats()
			for h := range heads {
				at := ((i*heads+h)*length + length - n) * hd
				copy(to[h*n*hd:(h+1)*n*hd], from[at:at+n*hd])
			}
		}
		q.kv, q.pos = kv, n
		if r.sample(q, r.lastLogits(logits, i, length)) {
			r.joining = append(r.joining, q)
		} else {
			r.finish(q, q.err)
		}
	}
	return nil
}

// emptyKV is a zero-length past for one sequence.
func (r *runner) emptyKV() ([]*ort.Value, error) { return r.newKV(1, 0) }

// newKV makes a past/present set: 2 per layer, [rows, kv_heads, cols,
// head_dim] each, over pooled buffers.
func (r *runner) newKV(rows, cols int) ([]*ort.Value, error) {
	kv := make([]*ort.Value, 2*r.spec.layers)
	shape := []int64{int64(rows), int64(r.spec.kvHeads), int64(cols), int64(r.spec.headDim)}
	for i := range kv {
		// Room for 64 more columns: a batch reuses its buffers for 64 steps.
		col := rows * r.spec.kvHeads * r.spec.headDim
		v, err := ort.NewFloat(shape, r.pool.get(col*cols, col*64))
		if err != nil {
			r.free(kv[:i])
			return nil, err
		}
		kv[i] = v
	}
	return kv, nil
}

// free closes KV values and returns their buffers to the pool.
func (r *runner) free(kv []*ort.Value) {
	for _, v := range kv {
		if v == nil {
			continue
		}
		b := v.Floats()
		v.Close()
		r.pool.put(b[:cap(b)])
	}
}

// run evaluates one step: rows × length new tokens over past. The logits
// are valid until the next run.
func (r *runner) run(rows, length int, ids, mask, pos []int64, past []*ort.Value) ([]float32, []*ort.Value, error) {
	cols := len(mask) / rows
	var own []*ort.Value // inputs over Go memory and the logits output
	defer func() { closeAll(own) }()
	add := func(shape []int64, data []int64) error {
		v, err := ort.NewInt64(shape, data)
		if err == nil {
			own = append(own, v)
		}
		return err
	}
	if err := add([]int64{int64(rows), int64(length)}, ids); err != nil {
		return nil, nil, err
	}
	if err := add([]int64{int64(rows), int64(cols)}, mask); err != nil {
		return nil, nil, err
	}
	if r.spec.positionIDs {
		if err := add([]int64{int64(rows), int64(length)}, pos); err != nil {
			return nil, nil, err
		}
	}
	inputs := append(slices.Clone(own), past...)
	if r.spec.cacheBranch {
		v, err := ort.NewBool([]int64{1}, []bool{cols > length})
		if err != nil {
			return nil, nil, err
		}
		own = append(own, v)
		inputs = append(inputs, v)
	}
	outLen := length
	if r.spec.lastOnly {
		outLen = 1
	}
	if n := rows * outLen * r.spec.vocab; cap(r.logits) < n {
		r.logits = make([]float32, n)
	} else {
		r.logits = r.logits[:n]
	}
	logits, err := ort.NewFloat([]int64{int64(rows), int64(outLen), int64(r.spec.vocab)}, r.logits)
	if err != nil {
		return nil, nil, err
	}
	own = append(own, logits)
	present, err := r.newKV(rows, cols)
	if err != nil {
		return nil, nil, err
	}
	if err := r.sess.RunInto(inputs, append([]*ort.Value{logits}, present...)); err != nil {
		r.free(present)
		return nil, nil, err
	}
	return r.logits, present, nil
}

// lastLogits is row's logits at the last of length positions (the graph
// may output only the last position).
func (r *runner) lastLogits(logits []float32, row, length int) []float32 {
	if r.spec.lastOnly {
		length = 1
	}
	off := (row*length + length - 1) * r.spec.vocab
	return logits[off : off+r.spec.vocab]
}

// sample picks q's next token from logits and streams it; false when the
// sequence ends there (end of generation or context): the caller finishes it.
func (r *runner) sample(q *request, logits []float32) bool {
	r.scratch = append(r.scratch[:0], logits...)
	id, err := q.sampler.Sample(r.scratch)
	if err != nil {
		q.err = fmt.Errorf("model %q: %w", r.name, err)
		return false
	}
	t := enginehost.Token{ID: id, Piece: r.spec.tok.Decode([]uint32{id}), EOG: r.spec.eos[id]}
	if q.Sampling.Logprobs {
		lp, alts := sampling.Logprobs(logits, id, q.Sampling.TopLogprobs)
		t.Logprob = lp
		for _, a := range alts {
			t.Top = append(t.Top, enginehost.Alternative{ID: a.ID, Piece: r.spec.tok.Decode([]uint32{a.ID}), Logprob: a.Logprob})
		}
	}
	q.Stats.Token()
	q.Out.Push(t)
	r.loop.Rate.Add(1)
	if t.EOG || q.pos >= r.ctx {
		return false
	}
	q.last = id
	return true
}

// decode runs one step for every batch row: each row's last token.
func (r *runner) decode() error {
	b := &r.batch
	n := len(b.rows)
	live := 0
	for _, q := range b.rows {
		if q != nil {
			live++
		}
	}
	for _, q := range b.rows {
		if q != nil {
			q.Stats.Batch(live)
		}
	}
	ids := make([]int64, n)
	pos := make([]int64, n)
	mask := make([]int64, n*(b.cols+1))
	for i, q := range b.rows {
		copy(mask[i*(b.cols+1):], b.mask[i*b.cols:(i+1)*b.cols])
		mask[i*(b.cols+1)+b.cols] = 1
		ids[i], pos[i] = int64(q.last), int64(q.pos)
	}
	logits, present, err := r.run(n, 1, ids, mask, pos, b.past)
	if err != nil {
		return err
	}
	r.free(b.past)
	b.past, b.mask = present, mask
	b.cols++
	for i, q := range b.rows {
		q.tokens = append(q.tokens, q.last)
		q.pos++
		if !r.sample(q, r.lastLogits(logits, i, 1)) {
			r.leave(i, q.err)
		}
	}
	return nil
}

// leave removes row i's request from the batch (err nil: normally, and its
// cache is kept for prefix reuse).
func (r *runner) leave(i int, err error) {
	q := r.batch.rows[i]
	if err == nil && r.opt.PrefixCache > 0 {
		q.kv = r.rowKV(i)
	}
	r.batch.rows[i] = nil
	r.batch.dirty = true
	r.finish(q, err)
}

// repack builds the batch's KV tensors for its remaining rows plus the
// joining requests, left-padded to the longest. On error every one of them
// is left in the batch for failBatch.
func (r *runner) repack() error {
	b := &r.batch
	type src struct {
		q    *request
		kv   []*ort.Value
		row  int // the request's row in kv
		cols int // kv's length
	}
	var srcs []src
	for i, q := range b.rows {
		if q != nil {
			srcs = append(srcs, src{q, b.past, i, b.cols})
		}
	}
	for _, q := range r.joining {
		srcs = append(srcs, src{q, q.kv, 0, q.pos})
	}
	r.joining = r.joining[:0]
	cols := 0
	for _, s := range srcs {
		cols = max(cols, s.q.pos)
	}
	heads, hd := r.spec.kvHeads, r.spec.headDim
	past, err := r.newKV(len(srcs), cols)
	if err == nil {
		for t := range past {
			data := past[t].Floats()
			for i, s := range srcs {
				from, pad, n := s.kv[t].Floats(), cols-s.q.pos, s.q.pos*hd
				for h := range heads {
					at := ((s.row*heads+h)*s.cols + s.cols - s.q.pos) * hd
					to := ((i*heads+h)*cols + pad) * hd
					clear(data[to-pad*hd : to]) // padding: masked, but keep it finite
					copy(data[to:to+n], from[at:at+n])
				}
			}
		}
	}
	// The sources are copied (or abandoned): free them.
	r.free(b.past)
	b.rows, b.mask, b.past, b.cols, b.dirty = b.rows[:0], make([]int64, len(srcs)*cols), nil, cols, false
	for i, s := range srcs {
		r.free(s.q.kv)
		s.q.kv = nil
		for c := cols - s.q.pos; c < cols; c++ {
			b.mask[i*cols+c] = 1
		}
		b.rows = append(b.rows, s.q)
	}
	if err != nil {
		return err
	}
	if len(b.rows) > 0 {
		b.past = past
	} else {
		r.free(past)
	}
	return nil
}

// failBatch ends every batch row with err and drops the batch's cache.
func (r *runner) failBatch(err error) {
	for i, q := range r.batch.rows {
		if q != nil {
			r.leave(i, err)
		}
	}
	r.free(r.batch.past)
	r.batch = batch{}
}

// finish ends an admitted request and frees its slot; a request ending
// normally leaves its cache for prefix reuse.
func (r *runner) finish(q *request, err error) {
	if err == nil && q.kv != nil {
		r.remember(q.tokens[:q.pos], q.kv)
	} else {
		r.free(q.kv)
	}
	q.kv = nil
	r.loop.Finish(q, err)
}

// Fail ends every admitted request with err and drops the prefix cache:
// the loop is stopping.
func (r *runner) Fail(err error) {
	r.failBatch(err)
	for _, q := range append(r.prefill, r.joining...) {
		r.finish(q, err)
	}
	r.prefill, r.joining = nil, nil
	for _, c := range r.prefix {
		r.free(c.kv)
	}
	r.prefix = nil
	r.countKV()
}

// countKV publishes how many tokens the sequences hold in KV caches.
func (r *runner) countKV() {
	n := 0
	for _, q := range r.batch.rows {
		if q != nil {
			n += q.pos
		}
	}
	for _, q := range append(r.prefill, r.joining...) {
		n += q.pos
	}
	r.loop.KVTokens.Store(int64(n))
}

// pool recycles KV buffers: a step's present set is a little larger than
// its past, so buffers get headroom and serve many steps. Owned by the loop.
type pool struct {
	free  [][]float32
	limit int // buffers kept
}

// get returns a buffer of length n, the smallest free one that fits or a new
// one with room for growth more.
func (p *pool) get(n, growth int) []float32 {
	best := -1
	for i, b := range p.free {
		if cap(b) >= n && (best < 0 || cap(b) < cap(p.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return make([]float32, n, n+growth)
	}
	b := p.free[best]
	p.free = slices.Delete(p.free, best, best+1)
	return b[:n]
}

// put keeps a buffer for reuse; beyond a few sets' worth the smallest go.
func (p *pool) put(b []float32) {
	if cap(b) == 0 {
		return
	}
	p.free = append(p.free, b)
	if len(p.free) > p.limit {
		small := 0
		for i, f := range p.free {
			if cap(f) < cap(p.free[small]) {
				small = i
			}
		}
		p.free = slices.Delete(p.free, small, small+1)
	}
}

func closeAll(vs []*ort.Value) {
	for _, v := range vs {
		v.Close()
	}
}
