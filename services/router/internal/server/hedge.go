package server

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// HedgeConfig configures hedged requests: when a request's first attempt
// gives no token within its model's recent Quantile of times to first
// token, a second attempt starts on another worker, and the first of the
// two to produce a token wins (the other is cancelled). Local models hedge
// by default, hosted ones (format "api", billed per call) only where their
// policy says "hedge": true; a policy's "hedge": false turns it off.
type HedgeConfig struct {
	// Disabled turns hedging off for every model without a policy asking
	// for it.
	Disabled bool
	// Quantile of the model's recent first attempts' times to first token
	// after which a hedge starts (default 0.96).
	Quantile float64
	// Budget caps hedges at this fraction of hedgeable requests (default
	// 0.05): each request adds Budget to a balance that each hedge spends
	// one of, and the balance holds at most hedgeBurst.
	Budget float64
	// MinDelay is the least delay before a hedge (default 5 ms).
	MinDelay time.Duration
}

func (c *HedgeConfig) setDefaults() {
	if c.Quantile <= 0 || c.Quantile >= 1 {
		c.Quantile = 0.96
	}
	if c.Budget <= 0 {
		c.Budget = 0.05
	}
	if c.MinDelay <= 0 {
		c.MinDelay = 5 * time.Millisecond
	}
}

// Sizes of a model's window of times to first token.
const (
	// hedgeWindow: the most recent first attempts kept.
	hedgeWindow = 1000
	// hedgeMinSamples: no hedge before this many were seen.
	hedgeMinSamples = 50
	// hedgeRefresh: the delay is recomputed after this many more.
	hedgeRefresh = 50
	// hedgeBurst: the most hedges the budget saves up while none is due.
	hedgeBurst = 10
)

// hedger holds each model's recent times to first token and the budget
// hedges spend.
type hedger struct {
	cfg HedgeConfig

	mu     sync.Mutex
	models map[string]*ttftWindow
	// balance is the hedges the budget allows now.
	balance float64
}

func newHedger(cfg HedgeConfig) *hedger {
	cfg.setDefaults()
	return &hedger{cfg: cfg, models: map[string]*ttftWindow{}}
}

// request adds a hedgeable request's share to the budget. Unlike the retry
// budget's window, the balance carries over, so the hedges due after a quiet
// spell are not refused for want of recent requests.
func (h *hedger) request() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.balance = min(h.balance+h.cfg.Budget, hedgeBurst)
}

// spend takes one hedge from the budget, if it has one.
func (h *hedger) spend() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.balance < 1 {
		return false
	}
	h.balance--
	return true
}

// ttftWindow is a ring of one model's recent times to first token, and the
// hedge delay last computed from it.
type ttftWindow struct {
	ring  []time.Duration
	next  int
	fresh int // observations since delay was computed
	delay time.Duration
}

// observe records a first attempt's time to first token. A hedged attempt
// that lost records the time until the hedge's first token: its own would
// have been longer, so the quantile is never biased low by hedging.
func (h *hedger) observe(model string, ttft time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.models[model]
	if w == nil {
		w = &ttftWindow{ring: make([]time.Duration, 0, hedgeWindow)}
		h.models[model] = w
	}
	if len(w.ring) < hedgeWindow {
		w.ring = append(w.ring, ttft)
	} else {
		w.ring[w.next] = ttft
		w.next = (w.next + 1) % hedgeWindow
	}
	w.fresh++
	if len(w.ring) >= hedgeMinSamples && (w.delay == 0 || w.fresh >= hedgeRefresh) {
		sorted := slices.Clone(w.ring)
		slices.Sort(sorted)
		w.delay = max(sorted[min(int(h.cfg.Quantile*float64(len(sorted))), len(sorted)-1)], h.cfg.MinDelay)
		w.fresh = 0
	}
}

// observeFirst records first attempt a's time to first token: until by's
// first token, by being a itself or the hedge that beat it (a's own time
// would have been later still). Nothing when by has none.
func (h *hedger) observeFirst(a, by *attempt) {
	if !by.firstToken.IsZero() {
		h.observe(a.model, by.firstToken.Sub(a.began))
	}
}

// delay is how long a first attempt of model may go without a token before
// a hedge starts; 0 while too few were seen.
func (h *hedger) delay(model string) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w := h.models[model]; w != nil {
		return w.delay
	}
	return 0
}

// race is a first attempt and its hedge racing for the first token. The
// relay of each claims the race before it touches the request's state: the
// first claim wins and cancels the other attempt.
type race struct {
	mu      sync.Mutex
	winner  *attempt
	cancels map[*attempt]context.CancelFunc
	// early holds the results of attempts that ended before any claim.
	early map[*attempt]result
}

// ended records that x's op returned at t.
func (rc *race) ended(x *attempt, res result, t time.Time) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	x.ended = t
	if rc.winner == nil {
		if rc.early == nil {
			rc.early = map[*attempt]result{}
		}
		rc.early[x] = res
	}
}

// failedEarly reports whether x ended on its own before the race was won.
func (rc *race) failedEarly(x *attempt) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	_, ok := rc.early[x]
	return ok
}

// view describes x, which did not win the race, as of now for the end
// event the winner sends while x may still be being cancelled.
func (rc *race) view(x *attempt, now time.Time) *generationv1.Attempt {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	c := *x
	if res, ok := rc.early[x]; ok {
		c.err, c.outcome = res.err, generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED
		if res.outcome != generationv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED {
			c.outcome = res.outcome
		}
	} else {
		c.err, c.outcome = nil, generationv1.AttemptOutcome_ATTEMPT_OUTCOME_HEDGE_LOST
		if c.ended.IsZero() {
			c.ended = now
		}
	}
	return c.proto()
}

// add enters an attempt, with the function that cancels it; rc.mu is held,
// or no attempt of the race runs yet.
func (rc *race) add(a *attempt, cancel context.CancelFunc) {
	if rc.cancels == nil {
		rc.cancels = map[*attempt]context.CancelFunc{}
	}
	rc.cancels[a] = cancel
	a.race = rc
}

// claim reports whether a may deliver to the client: it is not racing, or
// it won the race (now or earlier).
func (a *attempt) claim() bool {
	rc := a.race
	if rc == nil {
		return true
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.winner == nil {
		rc.winner = a
		for other, cancel := range rc.cancels {
			if other != a {
				cancel()
			}
		}
	}
	return rc.winner == a
}

func (rc *race) won() *attempt {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.winner
}

// finished is an attempt that returned, with its result.
type finished struct {
	a   *attempt
	res result
}

// hedgeable reports whether a request's first attempt a may be hedged: a
// generation, on a model whose policy or the server's setting allows it.
func (r *request) hedgeable(a *attempt) bool {
	s := r.s
	if r.embed != nil || a.reason != generationv1.AttemptReason_ATTEMPT_REASON_FIRST || r.startSent {
		return false
	}
	if pol := s.sched.Policy(a.model, r.req.GetModel()); pol.Hedge != nil {
		return *pol.Hedge
	}
	return !s.cfg.Hedge.Disabled && a.info.Model.GetFormat() != "api"
}

// try runs attempt a, hedging it when its model allows: the attempts that
// decide what happens next are returned in the order they ended (one, or
// two hedged attempts that both failed before a token). A hedged attempt
// that lost the race is recorded here and not returned.
func (r *request) try(ctx context.Context, a *attempt, do op) []finished {
	s := r.s
	once := func() finished {
		res := do(ctx, r, a)
		a.ended = s.now()
		return finished{a, res}
	}
	if !r.hedgeable(a) {
		return []finished{once()}
	}
	h := s.hedge
	h.request()
	delay := h.delay(a.model)
	if delay <= 0 {
		e := once()
		h.observeFirst(a, a)
		return []finished{e}
	}

	rc := &race{}
	actx, cancelA := context.WithCancel(ctx)
	defer cancelA()
	rc.add(a, cancelA)
	done := make(chan finished, 2)
	run := func(x *attempt, xctx context.Context) {
		res := do(xctx, r, x)
		rc.ended(x, res, s.now())
		done <- finished{x, res}
	}
	go run(a, actx)
	timer := time.NewTimer(delay)
	select {
	case e := <-done:
		timer.Stop()
		h.observeFirst(a, a)
		return []finished{e}
	case <-timer.C:
	}
	b, bctx, cancelB := r.hedgeFor(ctx, rc, a)
	if b == nil {
		e := <-done
		h.observeFirst(a, a)
		return []finished{e}
	}
	defer cancelB()
	go run(b, bctx)
	first, second := <-done, <-done
	winner := rc.won()
	if winner != nil {
		h.observeFirst(a, winner)
	}
	result := "failed"
	switch {
	case winner == b:
		result = "won"
	case winner == a:
		result = "lost"
	}
	s.cfg.Metrics.Hedge(a.model, result)
	if winner == nil {
		return []finished{first, second}
	}
	for _, e := range []finished{first, second} {
		if e.a == winner {
			continue
		}
		if rc.failedEarly(e.a) {
			r.failedAside(e.a, e.res) // failed on its own before the winner's first token
		} else {
			r.lost(e.a)
		}
	}
	if first.a == winner {
		return []finished{first}
	}
	return []finished{second}
}

// hedgeFor starts a's hedge unless a already has a token, the budget is
// spent, the router is overloaded or no other worker serves the model.
func (r *request) hedgeFor(ctx context.Context, rc *race, a *attempt) (*attempt, context.Context, context.CancelFunc) {
	s := r.s
	// Held while choosing, so a cannot claim (and touch the request) now.
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.winner != nil {
		return nil, nil, nil
	}
	skip := func(why string) (*attempt, context.Context, context.CancelFunc) {
		s.cfg.Metrics.HedgeSkipped(a.model, why)
		r.span.AddEvent("hedge skipped", trace.WithAttributes(attribute.String("llm.reason", why)))
		return nil, nil, nil
	}
	if len(r.attempts) >= s.cfg.MaxAttempts {
		return skip("max_attempts")
	}
	if s.cfg.Admission.Waiting() > 0 {
		return skip("overload")
	}
	cands := r.candidates(r.chain[r.group], func(c scheduling.Candidate) bool {
		return c.Endpoint != a.endpoint && c.Model.GetName() == a.model
	})
	if len(cands) == 0 {
		return skip("no_endpoint")
	}
	r.sr.Now = s.now()
	d, err := r.profile.Schedule(&r.sr, cands)
	if err != nil {
		return skip("no_endpoint")
	}
	c := d.Chosen
	b := &attempt{
		n: len(r.attempts) + 1, endpoint: c.Endpoint, model: c.Model.GetName(), info: &c,
		route: c.Endpoint.Route(c.Model.GetName()), reason: generationv1.AttemptReason_ATTEMPT_REASON_HEDGE, began: s.now(),
	}
	b.probe = b.route.Begin(b.began)
	if b.route.Open() && !b.probe {
		return skip("no_endpoint")
	}
	if !s.hedge.spend() {
		b.route.Release(b.probe)
		return skip("budget")
	}
	r.begin(b, d)
	bctx, cancel := context.WithCancel(ctx)
	rc.add(b, cancel)
	return b, bctx, cancel
}

// lost records an attempt cancelled because the other of its race produced
// a token first: nothing of it reached the client and it is not billed; the
// time and (estimated) cost it took are counted in metrics.
func (r *request) lost(a *attempt) {
	s := r.s
	a.outcome = generationv1.AttemptOutcome_ATTEMPT_OUTCOME_HEDGE_LOST
	a.err, a.tokens, a.cost = nil, 0, 0
	r.hedgesLost++
	a.route.Release(a.probe)
	s.cfg.Metrics.Attempt(a.model, reasonNames[int32(a.reason)], outcomeNames[int32(a.outcome)])
	s.cfg.Metrics.HedgeWaste(a.model, a.ended.Sub(a.began), r.estimateCost(a))
	if r.span.IsRecording() {
		r.span.AddEvent("attempt lost the hedge race", trace.WithAttributes(
			attribute.String("llm.endpoint", a.endpoint.Address), attribute.String("llm.routed_model", a.model),
			attribute.Int("llm.attempt", a.n)))
	}
}

// failedAside records a raced attempt that failed before the other's first
// token while the other went on to decide the request: its route learns of
// the failure, the request takes no decision from it.
func (r *request) failedAside(a *attempt, res result) {
	r.markFailed(a, res)
	r.settle(a, classify(res.err, res.outcome), r.s.now())
	r.observe(a, false)
}
