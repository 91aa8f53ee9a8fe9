package server

import (
	"context"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/fits"
)

// failure kinds, from a failed attempt's status.
type failureKind int

const (
	// failFatal: the request itself is at fault (bad parameters, a content
	// policy, an unknown model) or the failure is not ours to judge: the
	// worker's status goes to the client unchanged.
	failFatal failureKind = iota
	// failTransport: the connection to the worker failed; every model on
	// that endpoint is affected.
	failTransport
	// failModel: the model's upstream failed and may recover (5xx, reset).
	failModel
	// failRateLimited: the model's upstream asked to slow down.
	failRateLimited
	// failBusy: a local worker's queue is full.
	failBusy
	// failContext: the request does not fit the model's context.
	failContext
	// failSilent: no first token in time, or a stream that stalled.
	failSilent
	// failGone: the worker does not host the model any more (unloaded):
	// the router's view was stale.
	failGone
)

func classify(err error, outcome generationv1.AttemptOutcome) failureKind {
	if outcome == generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FIRST_TOKEN_TIMEOUT || outcome == generationv1.AttemptOutcome_ATTEMPT_OUTCOME_STALLED {
		return failSilent
	}
	reason := rpcerr.Reason(err)
	switch reason {
	case rpcerr.ReasonContextLength:
		return failContext
	case rpcerr.ReasonContentFiltered:
		return failFatal
	case rpcerr.ReasonRateLimited:
		return failRateLimited
	case rpcerr.ReasonUpstreamUnavailable:
		return failModel
	case rpcerr.ReasonModelNotHosted:
		return failGone
	}
	switch rpcerr.Code(err) {
	case codes.Unavailable, codes.Canceled:
		// Without a reason the worker (or its connection) failed as a whole.
		return failTransport
	case codes.ResourceExhausted:
		return failBusy
	case codes.Unimplemented:
		// This worker cannot do it (an RPC it lacks, such as CountTokens
		// on a proxy for OpenAI, or an older binary): another may.
		return failBusy
	case codes.DeadlineExceeded:
		return failModel
	}
	return failFatal
}

// failed records a failed attempt and decides what follows: a wait before
// the next attempt (which next() then picks), or the error that ends the
// request.
func (r *request) failed(ctx context.Context, a *attempt, res result) (time.Duration, error) {
	s := r.s
	if ctx.Err() != nil || res.clientGone { // the client went away or its deadline passed
		a.err = res.err
		a.route.Release(a.probe)
		a.outcome = generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return 0, res.err
	}
	r.markFailed(a, res)
	kind := classify(res.err, res.outcome)
	now := s.now()
	key := routeKey{a.endpoint, a.model}
	r.settle(a, kind, now)

	if r.startSent {
		// Tokens reached the client: continue elsewhere from what it has,
		// unless the failure is the request's own.
		a.cost = r.estimateCost(a)
		r.observe(a, true)
		rescue := a.reason == generationv1.AttemptReason_ATTEMPT_REASON_FAILOVER && !res.forwarded
		if (kind == failFatal || kind == failContext) && !rescue {
			return 0, res.err
		}
		// A rescue the fallback refused tries another; if none is left,
		// the original failure is the one reported, not the fallback's.
		r.exclude(key)
		if rescue && r.lastErr != nil {
			return 0, nil
		}
		r.lastErr = rpcerr.Unavailable("model %s on %s failed mid-stream after %d tokens: %s", a.model, a.endpoint.Address, r.delivered, message(res.err))
		if s.cfg.NoFailover {
			return 0, r.lastErr
		}
		r.failovers++
		s.cfg.Metrics.Failover()
		return 0, nil
	}

	r.observe(a, false)
	r.lastErr = res.err
	switch kind {
	case failFatal:
		return 0, res.err // the worker's status, unchanged
	case failContext:
		r.excludeModel(a.model) // no worker of this model can fit it
		return 0, nil
	case failGone:
		s.pool.Forget(a.endpoint, a.model)
		r.exclude(key)
		return 0, nil
	}
	s.cfg.Metrics.Retry()
	switch kind {
	case failSilent, failBusy:
		// Do not retry a route that did not answer, or a busy worker.
		r.exclude(key)
		return 0, nil
	case failTransport:
		return 0, nil // settle excluded the endpoint
	}

	// failModel, failRateLimited: the model's upstream may recover. Retry
	// the same route while the model's attempts allow, unless another
	// route of the same model can take it now.
	pol := s.sched.Policy(a.model, r.req.GetModel())
	maxPerModel := s.cfg.MaxAttemptsPerModel
	if pol.MaxAttempts > 0 {
		maxPerModel = pol.MaxAttempts
	}
	retrySame := r.attemptsOn(a.model) < maxPerModel && !(kind == failRateLimited && pol.FallbackOnRateLimit) &&
		!a.route.Open() && !r.otherRoute(a)
	if !retrySame {
		r.exclude(key)
		return 0, nil
	}
	wait := s.backoff(r.attemptsOn(a.model))
	if hint := rpcerr.RetryAfter(res.err); hint > 0 {
		wait = hint
	}
	if wait > s.cfg.MaxRetryAfter || !fitsDeadline(ctx, wait) {
		r.exclude(key) // longer than we may wait: move on at once
		return 0, nil
	}
	r.pinned = a.info
	return wait, nil
}

// markFailed records a failed attempt's error and outcome, in metrics and
// on the trace.
func (r *request) markFailed(a *attempt, res result) {
	a.err = res.err
	switch {
	case res.outcome != generationv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED:
		a.outcome = res.outcome
	case res.forwarded:
		a.outcome = generationv1.AttemptOutcome_ATTEMPT_OUTCOME_CUT
	default:
		a.outcome = generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED
	}
	r.s.cfg.Metrics.Attempt(a.model, reasonNames[int32(a.reason)], outcomeNames[int32(a.outcome)])
	if r.span.IsRecording() {
		r.span.AddEvent("attempt failed", trace.WithAttributes(
			attribute.String("llm.endpoint", a.endpoint.Address), attribute.String("llm.routed_model", a.model),
			attribute.String("llm.outcome", a.outcome.String()), attribute.String("llm.error", message(res.err)),
			attribute.Int("llm.tokens_sent", r.delivered)))
	}
}

// settle reports a failed attempt to its route and endpoint: a failure of
// the model's upstream (or its silence) counts on the route's circuit, a
// connection failure on the endpoint, which the request then avoids; any
// other failure says nothing of their health and only frees the probe slot.
func (r *request) settle(a *attempt, kind failureKind, now time.Time) {
	switch kind {
	case failModel, failSilent:
		a.route.Failure(now, a.probe)
		return
	case failTransport:
		a.endpoint.ObserveFailure(now)
		r.excludeEndpoint(a.endpoint)
	}
	a.route.Release(a.probe)
}

// otherRoute reports whether another usable route serves a's model now.
func (r *request) otherRoute(a *attempt) bool {
	for _, c := range r.candidates([]string{a.model}, nil) {
		if c.Endpoint != a.endpoint && c.Endpoint.Healthy() { // candidates are Available already
			return true
		}
	}
	return false
}

// backoff is exponential with full jitter: the n-th attempt of a model
// waits up to BackoffBase × 2^(n-1), capped at 2 s.
func (s *Server) backoff(n int) time.Duration {
	d := min(s.cfg.BackoffBase<<max(n-1, 0), 2*time.Second)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func fitsDeadline(ctx context.Context, wait time.Duration) bool {
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > wait
}

// limits are one attempt's time limits.
type limits struct {
	firstToken time.Duration
	stall      time.Duration
	trickle    float64
	usualITL   time.Duration
}

// limitsFor derives an attempt's limits from the model's policy, the
// server's defaults and what the route has shown.
func (s *Server) limitsFor(r *request, route *pool.Route, m *enginev1.ModelInfo) limits {
	pol := s.sched.Policy(m.GetName(), r.req.GetModel())
	l := limits{trickle: s.cfg.TrickleFactor, usualITL: route.ITL()}
	hosted := m.GetFormat() == "api"
	switch {
	case pol.FirstTokenTimeout > 0:
		l.firstToken = time.Duration(pol.FirstTokenTimeout)
	case s.cfg.FirstTokenTimeout > 0:
		l.firstToken = s.cfg.FirstTokenTimeout
	case hosted:
		l.firstToken = s.cfg.HostedFirstToken
	default:
		l.firstToken = localFirstToken(s.cfg.LocalFirstToken, route, expectedTokens(r.req.GetPrompt()))
	}
	switch {
	case pol.StallTimeout > 0:
		l.stall = time.Duration(pol.StallTimeout)
	case !hosted && route.ITL() > 0:
		l.stall = max(5*time.Second, 50*route.ITL())
	default:
		l.stall = s.cfg.StallTimeout
	}
	return l
}

// localFirstToken is the first-token deadline of a local route: the floor,
// plus three times its usual time to first token (queueing included), plus
// four times the prompt's expected prefill time at its measured rate. A
// route not yet measured gets six times the floor (its model may be loading).
func localFirstToken(floor time.Duration, route *pool.Route, promptTokens int) time.Duration {
	rate := route.PrefillRate()
	if rate <= 0 || route.TTFT() <= 0 {
		return 6 * floor
	}
	return floor + 3*route.TTFT() + time.Duration(4*float64(promptTokens)/rate*float64(time.Second))
}

// expectedTokens is a typical count of the prompt's tokens (about four bytes
// of text per token).
func expectedTokens(p *generationv1.Prompt) int {
	if t := p.GetTokens(); t != nil {
		return len(t.GetIds())
	}
	return promptBytes(p) / 4
}

// promptBytes is the size of the prompt's text.
func promptBytes(p *generationv1.Prompt) int {
	switch k := p.GetKind().(type) {
	case *generationv1.Prompt_Text:
		return len(k.Text)
	case *generationv1.Prompt_Chat:
		n := 0
		for _, m := range k.Chat.GetMessages() {
			n += len(m.GetContent())
		}
		return n
	case *generationv1.Prompt_Tokens:
		return 4 * len(k.Tokens.GetIds())
	}
	return 0
}

// minPromptTokens is the conservative lower bound the fits filter uses.
func minPromptTokens(p *generationv1.Prompt) int { return fits.MinTokens(p, fits.DefaultBytesPerToken) }
