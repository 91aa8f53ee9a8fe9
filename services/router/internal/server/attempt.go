package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// attempt is one try of a request on one (endpoint, model) route.
type attempt struct {
	n        int
	endpoint *pool.Endpoint
	route    *pool.Route
	model    string
	info     *scheduling.Candidate
	reason   generationv1.AttemptReason
	outcome  generationv1.AttemptOutcome
	err      error
	probe    bool // the half-open circuit's probe
	began    time.Time
	ended    time.Time
	// tokens of this attempt that reached the client, and its cost.
	tokens int
	cost   float64
	// continuation sent with it (a failover).
	continuationIDs  int
	continuationText bool
	// firstToken is when its first event reached the client.
	firstToken time.Time
	// race, when it is hedged or a hedge: it delivers only if it claims it.
	race *race
}

func (a *attempt) proto() *generationv1.Attempt {
	p := &generationv1.Attempt{
		Endpoint: a.endpoint.Address, Model: a.model, Reason: a.reason, Outcome: a.outcome,
		CompletionTokens: int32(a.tokens), CostUsd: a.cost, Duration: durationpb.New(a.ended.Sub(a.began)),
	}
	if a.err != nil {
		st := status.Convert(rpcerr.ToStatus(a.err))
		p.Error = st.Code().String() + ": " + st.Message()
	}
	return p
}

// Short names of attempt reasons and outcomes, for metric labels.
var (
	reasonNames  = shortNames(generationv1.AttemptReason_name, "ATTEMPT_REASON_")
	outcomeNames = shortNames(generationv1.AttemptOutcome_name, "ATTEMPT_OUTCOME_")
)

func shortNames(names map[int32]string, prefix string) map[int32]string {
	out := make(map[int32]string, len(names))
	for v, n := range names {
		out[v] = strings.ToLower(strings.TrimPrefix(n, prefix))
	}
	return out
}

// routeKey names a route within one request.
type routeKey struct {
	endpoint *pool.Endpoint
	model    string
}

// request is one client request's state across its attempts.
type request struct {
	s   *Server
	req *routerv1.GenerateRequest
	// embed holds an embeddings request's inputs (nil for a generation).
	embed []string
	// internal: the router's own call (see internalCall).
	internal bool
	// quotaCap is the max_tokens a request without one gets under a token
	// quota (0: none).
	quotaCap int
	id       string
	profile  *scheduling.Profile
	sr       scheduling.Request
	span     trace.Span
	// chain is the requested model's group, then each fallback's.
	chain [][]string
	group int

	attempts []*attempt
	// Exclusions: routes, whole endpoints (their connection failed) and
	// models (their context is too short) this request will not use again.
	skipRoute    map[routeKey]bool
	skipEndpoint map[*pool.Endpoint]bool
	skipModel    map[string]bool
	// pinned is the route to retry next (same model, after a wait).
	pinned   *scheduling.Candidate
	filtered *scheduling.FilteredError
	anyServe bool
	// needs are the capabilities the request needs; incapable names the
	// models skipped for lacking them (model → what), anyCapable says
	// some model had them.
	needs      needs
	incapable  map[string]lack
	anyCapable bool
	lastErr    error

	received time.Time
	// For the trace: the wait for admission, the time spent choosing.
	admissionWait, deciding time.Duration
	// What reached the client so far.
	startSent bool
	// ids are the token ids delivered, valid for continuing (byIDs) while
	// they describe everything the client has, in one model's vocabulary.
	ids   []uint32
	byIDs bool
	// calls: tool-call deltas reached the client, so the text is not the
	// whole answer and only the token ids can continue it.
	calls     bool
	text      []byte
	delivered int // tokens
	models    []string
	failovers int
	usage     *generationv1.Usage
	// hedgesLost counts attempts cancelled because the other of their race
	// answered first (their worker may never have seen them).
	hedgesLost int
}

// op runs one attempt; the generation relay and the embeddings call are the
// two kinds.
type op func(ctx context.Context, r *request, a *attempt) result

// result is how an attempt ended.
type result struct {
	err error
	// forwarded: something of the attempt reached the client.
	forwarded bool
	// outcome, when the attempt ended on a deadline of ours.
	outcome generationv1.AttemptOutcome
	// clientGone: sending to the client failed; the request ends.
	clientGone bool
}

// maxFallbacks bounds fallback_models.
const maxFallbacks = 8

// run authorizes and admits a request, then makes attempts until one
// finishes it or a failure says to stop. A request with a cache plan is
// first looked up in the cache: a hit is served before admission, so
// stored answers keep flowing while the workers are saturated.
func (s *Server) run(ctx context.Context, profile *scheduling.Profile, req *routerv1.GenerateRequest, embed []string, plan *cachePlan, do op) error {
	if isInternal(ctx) {
		return s.attempts(ctx, profile, req, embed, nil, do, 0)
	}
	key, err := s.authorize(ctx, append([]string{req.GetModel()}, req.GetRouting().GetFallbackModels()...)...)
	if err != nil {
		return err
	}
	if key != nil {
		// A key at its cap is refused before it can take admission slots
		// from other keys.
		leave, ok := key.Enter()
		if !ok {
			return rpcerr.WithReason(rpcerr.ResourceExhausted(time.Second, "API key %q already has %d requests in flight, its limit", key.Name, key.MaxConcurrent), rpcerr.ReasonQuota)
		}
		defer leave()
	}
	if plan != nil {
		if served, err := s.lookup(ctx, key, plan, req); served || err != nil {
			return err
		}
	}
	queued := s.now()
	release, err := s.cfg.Admission.Acquire(ctx)
	admitted := s.now()
	if err != nil {
		trace.SpanFromContext(ctx).SetAttributes(attribute.Float64("llm.admission_wait_ms", msOf(admitted.Sub(queued))))
		return err
	}
	defer release()
	return s.attempts(ctx, profile, req, embed, key, do, admitted.Sub(queued))
}

// internalCall marks the router's own calls (the semantic cache's
// embeddings): they run for a request whose key was already checked, so
// they skip the key's checks and quota and admission control; the
// semantic layer bounds how many run at once (maxEmbeds).
type internalCall struct{}

// internalAttempts bounds the router's own calls' attempts.
const internalAttempts = 2

func isInternal(ctx context.Context) bool { return ctx.Value(internalCall{}) != nil }

// attempts makes a request's attempts until one finishes it or a failure
// says to stop (after run authorized and admitted it).
func (s *Server) attempts(ctx context.Context, profile *scheduling.Profile, req *routerv1.GenerateRequest, embed []string, key *auth.Key, do op, admissionWait time.Duration) error {
	r := s.newRequest(ctx, profile, req)
	r.internal = isInternal(ctx)
	r.admissionWait = admissionWait
	defer r.traceTimes()
	r.embed = embed
	r.needs.generate = embed == nil
	if embed != nil {
		r.span.SetAttributes(attribute.String("gen_ai.operation.name", "embeddings"))
	}
	if key != nil {
		r.span.SetAttributes(attribute.String("llm.api_key_name", key.Name))
		settle, err := s.reserve(ctx, key, r)
		if err != nil {
			return err
		}
		defer settle()
	}
	if !isInternal(ctx) {
		s.budget.request()
	}
	// The router owns retries: workers make one attempt per call.
	ctx = metadata.AppendToOutgoingContext(ctx, enginehost.SingleAttemptKey, "1")
	for {
		chose := s.now()
		a, err := r.next()
		r.deciding += s.now().Sub(chose)
		if err != nil {
			r.span.SetAttributes(attribute.Int("llm.attempts", len(r.attempts)))
			return err
		}
		var wait time.Duration
		ends := r.try(ctx, a, do)
		for i, e := range ends {
			if e.res.err == nil {
				e.a.outcome = generationv1.AttemptOutcome_ATTEMPT_OUTCOME_OK
				e.a.route.Success()
				r.observe(e.a, true)
				r.served(e.a)
				return nil
			}
			w, err := r.failed(ctx, e.a, e.res)
			if err != nil {
				for _, rest := range ends[i+1:] {
					r.failedAside(rest.a, rest.res) // its probe and metrics, though the request is over
				}
				r.span.SetAttributes(attribute.Int("llm.attempts", len(r.attempts)))
				return err
			}
			wait = max(wait, w)
		}
		if wait > 0 {
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		}
	}
}

func (s *Server) newRequest(ctx context.Context, profile *scheduling.Profile, req *routerv1.GenerateRequest) *request {
	id := req.GetRequestId()
	if id == "" {
		id = enginehost.NewRequestID()
	}
	ro := req.GetRouting()
	r := &request{
		s: s, req: req, id: id, profile: profile, span: trace.SpanFromContext(ctx), received: s.now(),
		sr: scheduling.Request{
			Model: req.GetModel(), SessionID: ro.GetSessionId(), Constraints: ro.GetConstraints(),
			Prompt: req.GetPrompt(), MaxTokens: int(req.GetSampling().GetMaxTokens()),
		},
		// A prefill is text the worker continues: a failover goes on from
		// the prefill and the text after it, never from token ids.
		byIDs: req.GetPrefill() == "",
		needs: needsOf(req),
	}
	r.chain = [][]string{s.sched.Resolve(req.GetModel())}
	fallbacks := ro.GetFallbackModels()
	if len(fallbacks) == 0 {
		fallbacks = s.sched.Fallbacks(req.GetModel())
	}
	for _, f := range fallbacks {
		r.chain = append(r.chain, s.sched.Resolve(f))
	}
	if r.span.IsRecording() {
		r.span.SetAttributes(
			attribute.String("llm.request_id", id),
			attribute.String("gen_ai.request.model", req.GetModel()),
			attribute.String("gen_ai.operation.name", operation(req)),
			attribute.String("llm.strategy", profile.Name),
		)
		if u := req.GetUser(); u != "" {
			r.span.SetAttributes(attribute.String("user.id", u))
		}
	}
	return r
}

// next chooses the next attempt, or returns the error that ends the
// request.
func (r *request) next() (*attempt, error) {
	s := r.s
	most := s.cfg.MaxAttempts
	if r.internal {
		most = min(most, internalAttempts)
	}
	if len(r.attempts) >= most {
		return nil, r.giveUp(fmt.Sprintf("after %d attempts (the most per request)", len(r.attempts)))
	}
	for {
		a, d, err := r.choose()
		if err != nil {
			return nil, err
		}
		a.probe = a.route.Begin(a.began)
		if a.route.Open() && !a.probe {
			// Open, or half-open with its probe taken by another request
			// since the filters ran: not this route.
			r.exclude(routeKey{a.endpoint, a.model})
			continue
		}
		// The router's own calls retry within internalAttempts, off the
		// budget clients' retries share.
		if len(r.attempts) > 0 && !r.internal && !s.budget.retry() {
			a.route.Release(a.probe)
			r.span.AddEvent("retry budget exhausted")
			return nil, r.giveUp("the router's retry budget is exhausted")
		}
		r.begin(a, d)
		return a, nil
	}
}

// choose picks the route of the next attempt: the pinned retry, a rescue
// after tokens reached the client, or the strategy's choice along the chain.
func (r *request) choose() (*attempt, scheduling.Decision, error) {
	var (
		c      scheduling.Candidate
		reason generationv1.AttemptReason
		d      scheduling.Decision
	)
	switch {
	case r.pinned != nil:
		c, reason = *r.pinned, generationv1.AttemptReason_ATTEMPT_REASON_RETRY
		r.pinned = nil
	case r.startSent:
		var ok bool
		if d, ok = r.rescue(); !ok {
			return nil, d, r.giveUp("")
		}
		c, reason = d.Chosen, generationv1.AttemptReason_ATTEMPT_REASON_FAILOVER
	default:
		var ok bool
		if d, ok = r.schedule(); !ok {
			return nil, d, r.giveUp("")
		}
		c, reason = d.Chosen, generationv1.AttemptReason_ATTEMPT_REASON_FALLBACK
		if len(r.attempts) == 0 {
			reason = generationv1.AttemptReason_ATTEMPT_REASON_FIRST
		}
	}
	return &attempt{
		n: len(r.attempts) + 1, endpoint: c.Endpoint, model: c.Model.GetName(), info: &c,
		route: c.Endpoint.Route(c.Model.GetName()), reason: reason, began: r.s.now(),
	}, d, nil
}

// begin records a chosen attempt.
func (r *request) begin(a *attempt, d scheduling.Decision) {
	s := r.s
	r.attempts = append(r.attempts, a)
	s.cfg.Metrics.Decision(r.profile.Name)
	if r.span.IsRecording() {
		r.span.AddEvent("attempt", trace.WithAttributes(
			attribute.String("llm.endpoint", a.endpoint.Address), attribute.String("llm.routed_model", a.model),
			attribute.String("llm.reason", a.reason.String()), attribute.Int("llm.candidates", d.Candidates),
			attribute.Float64("llm.score", d.Score), attribute.Int("llm.attempt", a.n), attribute.Bool("llm.probe", a.probe)))
	}
}

// Exclusions are made on failures only; the maps are allocated then, so a
// request that succeeds at once allocates none.
func (r *request) exclude(k routeKey) {
	if r.skipRoute == nil {
		r.skipRoute = map[routeKey]bool{}
	}
	r.skipRoute[k] = true
}

func (r *request) excludeEndpoint(e *pool.Endpoint) {
	if r.skipEndpoint == nil {
		r.skipEndpoint = map[*pool.Endpoint]bool{}
	}
	r.skipEndpoint[e] = true
}

func (r *request) excludeModel(m string) {
	if r.skipModel == nil {
		r.skipModel = map[string]bool{}
	}
	r.skipModel[m] = true
}

// attemptsOn counts the request's attempts on model.
func (r *request) attemptsOn(model string) int {
	n := 0
	for _, a := range r.attempts {
		if a.model == model {
			n++
		}
	}
	return n
}

// candidates lists the usable routes serving any of models.
func (r *request) candidates(models []string, usable func(scheduling.Candidate) bool) []scheduling.Candidate {
	var out []scheduling.Candidate
	now := r.s.now()
	for _, e := range r.s.pool.Endpoints() {
		if r.skipEndpoint[e] {
			continue
		}
		for _, name := range models {
			m := e.Model(name)
			if m == nil {
				continue
			}
			r.anyServe = true
			if miss, key := r.needs.missing(m); miss != "" {
				if r.incapable == nil {
					r.incapable = map[string]lack{}
				}
				r.incapable[name] = lack{miss, key}
				continue
			}
			r.anyCapable = true
			c := scheduling.Candidate{Endpoint: e, Model: m}
			// An open circuit passes the endpoint's next model of the group.
			if !r.skipModel[name] && !r.skipRoute[routeKey{e, name}] && e.Route(name).Available(now) && (usable == nil || usable(c)) {
				out = append(out, c) // the endpoint's first usable model of the group
				break
			}
		}
	}
	return out
}

// schedule picks from the current group of the chain, moving down the chain
// while a group has no usable candidate.
func (r *request) schedule() (scheduling.Decision, bool) {
	for ; r.group < len(r.chain); r.group++ {
		cands := r.candidates(r.chain[r.group], nil)
		if len(cands) == 0 {
			continue
		}
		r.sr.Now = r.s.now()
		d, err := r.profile.Schedule(&r.sr, cands)
		if err != nil {
			errors.As(err, &r.filtered)
			continue
		}
		return d, true
	}
	return scheduling.Decision{}, false
}

// rescue picks where a stream that broke mid-answer continues: the same
// model elsewhere (from the token ids the client has, or its text where the
// model takes a prefill), else a model of the chain that takes a prefill.
func (r *request) rescue() (scheduling.Decision, bool) {
	last := r.models[len(r.models)-1] // the model whose tokens the client has last
	byIDs := r.byIDs && len(r.ids) > 0
	sameModel := func(c scheduling.Candidate) bool { return byIDs || !r.calls && c.Model.GetAcceptsPrefill() }
	prefill := func(c scheduling.Candidate) bool { return !r.calls && len(r.text) > 0 && c.Model.GetAcceptsPrefill() }
	groups := append([][]string{{last}}, r.chain...)
	for i, g := range groups {
		usable := prefill
		if i == 0 {
			usable = sameModel
		}
		cands := r.candidates(g, usable)
		if len(cands) == 0 {
			continue
		}
		r.sr.Now = r.s.now()
		if d, err := r.profile.Schedule(&r.sr, cands); err == nil {
			return d, true
		}
	}
	return scheduling.Decision{}, false
}

// finish completes the end event of the attempt that finishes the request:
// usage counts every token delivered over all attempts, the cost sums the
// attempts' costs, and the attempts and answering models are listed.
func (r *request) finish(a *attempt, end *generationv1.EndEvent, tokens int) {
	a.ended, a.outcome, a.tokens, a.cost = r.s.now(), generationv1.AttemptOutcome_ATTEMPT_OUTCOME_OK, tokens, end.GetCostUsd()
	u := proto.CloneOf(end.GetUsage())
	if u == nil {
		u = &generationv1.Usage{}
	}
	if t := end.GetTimings(); t != nil {
		a.route.ObservePrefill(int(u.GetPromptTokens()-u.GetCachedPromptTokens()), t.GetTimeToFirstToken().AsDuration()-t.GetQueue().AsDuration())
	}
	if a.continuationIDs == 0 {
		// A worker continuing from token ids counts them itself; earlier
		// attempts' tokens are added here.
		u.CompletionTokens += int32(r.delivered - tokens)
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	end.Usage, r.usage = u, u
	models := r.models
	if len(models) == 0 || models[len(models)-1] != a.model {
		models = append(slices.Clone(models), a.model)
	}
	end.Models, end.Failovers, end.CostUsd, end.Attempts = models, int32(r.failovers), 0, nil
	now := r.s.now()
	for _, at := range r.attempts {
		if at.race != nil && at != a && at.race == a.race {
			// The other attempt of a's race: being cancelled (or failed
			// before a's first token); it costs nothing.
			end.Attempts = append(end.Attempts, at.race.view(at, now))
			continue
		}
		end.CostUsd += at.cost
		end.Attempts = append(end.Attempts, at.proto())
	}
}

// estimateCost prices an attempt that broke after delivering tokens, from
// the model's advertised prices and the prompt's expected size.
func (r *request) estimateCost(a *attempt) float64 {
	m := a.info.Model
	return float64(expectedTokens(r.req.GetPrompt()))/1000*m.GetCostPer_1KInput() + float64(a.tokens)/1000*m.GetCostPer_1KOutput()
}

// served records the request's success.
func (r *request) served(a *attempt) {
	s := r.s
	s.cfg.Metrics.Attempt(a.model, reasonNames[int32(a.reason)], outcomeNames[int32(a.outcome)])
	s.cfg.Metrics.Tokens(a.model, int(r.usage.GetPromptTokens()), int(r.usage.GetCompletionTokens()))
	s.cfg.Metrics.UserTokens(r.req.GetUser(), int(r.usage.GetPromptTokens()), int(r.usage.GetCompletionTokens()))
	if a.model != r.req.GetModel() && !slices.Contains(r.chain[0], a.model) {
		s.cfg.Metrics.Fallback(r.req.GetModel(), a.model)
	}
	if r.span.IsRecording() {
		r.span.SetAttributes(attribute.String("llm.endpoint", a.endpoint.Address), attribute.String("llm.routed_model", a.model),
			attribute.Int("llm.attempts", len(r.attempts)), attribute.Int("llm.failovers", r.failovers))
	}
}

// traceTimes puts the request's hops on its span: admission wait, the
// time spent choosing routes (every attempt's choice), the relay (first
// attempt to the end, so it contains later choices and any retry wait),
// and the usage delivered.
func (r *request) traceTimes() {
	if !r.span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.Float64("llm.admission_wait_ms", msOf(r.admissionWait)),
		attribute.Float64("llm.decision_ms", msOf(r.deciding)),
	}
	if len(r.attempts) > 0 {
		attrs = append(attrs, attribute.Float64("llm.relay_ms", msOf(r.s.now().Sub(r.attempts[0].began))))
	}
	if r.hedgesLost > 0 {
		attrs = append(attrs, attribute.Int("llm.hedges_lost", r.hedgesLost))
	}
	if u := r.usage; u != nil {
		attrs = append(attrs, attribute.Int("gen_ai.usage.input_tokens", int(u.GetPromptTokens())),
			attribute.Int("gen_ai.usage.output_tokens", int(u.GetCompletionTokens())))
	}
	if len(r.models) > 0 {
		attrs = append(attrs, attribute.String("gen_ai.response.model", r.models[len(r.models)-1]))
	}
	r.span.SetAttributes(attrs...)
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func operation(req *routerv1.GenerateRequest) string {
	return enginehost.OperationName(req.GetPrompt())
}

// observe reports an attempt's outcome to the strategy's learning plugins.
func (r *request) observe(a *attempt, firstToken bool) {
	r.profile.Observe(&r.sr, *a.info, scheduling.Outcome{FirstToken: firstToken, TTFT: a.ended.Sub(a.began)})
}

// giveUp is the error that ends a request no attempt could finish.
func (r *request) giveUp(why string) error {
	names := strings.Join(slices.Concat(r.chain...), ", ")
	n := len(r.attempts)
	switch {
	case r.lastErr != nil && r.startSent:
		return restatus(r.lastErr, "%s; no other worker could take the stream over after %d tokens%s", message(r.lastErr), r.delivered, suffix(why))
	case r.lastErr != nil:
		return restatus(r.lastErr, "no worker could serve %s after %d attempts%s; last error: %s", names, n, suffix(why), message(r.lastErr))
	case !r.anyServe:
		return rpcerr.NotFound("no worker serves model %s (routable models: %s)", names, strings.Join(r.s.routableNames(), ", "))
	case !r.anyCapable && len(r.incapable) > 0:
		return r.incapableError(names)
	case r.filtered != nil && r.filtered.Filter == "constraints":
		return rpcerr.FailedPrecondition("model %s: every healthy worker is excluded by routing.constraints", names)
	case r.filtered != nil && r.filtered.Filter == "fits":
		return rpcerr.WithReason(rpcerr.InvalidArgument("model %s: the prompt (at least %d tokens) and max_tokens (%d) exceed the context length of every model that could serve it",
			names, minPromptTokens(r.req.GetPrompt()), r.sr.MaxTokens), rpcerr.ReasonContextLength)
	default:
		return rpcerr.Unavailable("model %s: no healthy worker can serve it now", names)
	}
}

// incapableError refuses a request that needs what no model of its chain
// advertises, naming each model and what it lacks.
func (r *request) incapableError(names string) error {
	var lacks []string
	first := ""
	for _, m := range slices.Concat(r.chain...) {
		if l, ok := r.incapable[m]; ok && !slices.Contains(lacks, m+" lacks "+l.what) {
			lacks = append(lacks, m+" lacks "+l.what)
			if first == "" {
				first = l.key
			}
		}
	}
	msg := fmt.Sprintf("no model of %s can serve this request: %s", names, strings.Join(lacks, "; "))
	if r.needs.why != nil {
		msg += " (the local grammar refused the schema: " + r.needs.why.Error() + ")"
	}
	err := rpcerr.WithReason(rpcerr.InvalidArgument("%s", msg), rpcerr.ReasonCapabilityMissing)
	err = rpcerr.WithMetadata(err, rpcerr.MetaCapability, first)
	if first == "any_json_schema" {
		err = rpcerr.WithMetadata(err, rpcerr.MetaSchemaOf, r.needs.schemaOf)
	}
	return err
}

// lack is what a model lacks for a request: the phrase, and the first
// capability's key.
type lack struct{ what, key string }

func suffix(why string) string {
	if why == "" {
		return ""
	}
	return " (" + why + ")"
}

// tokensUsed is what a request costs against a token quota: the workers'
// counts when it finished, else the tokens sent (and a rough prompt size).
func (r *request) tokensUsed() int {
	if r.usage != nil {
		return int(r.usage.GetTotalTokens())
	}
	return r.delivered + promptBytes(r.req.GetPrompt())/4
}

// restatus returns err's status with a new message, keeping its code and
// details (a RetryInfo, an ErrorInfo).
func restatus(err error, format string, args ...any) error {
	p := status.Convert(rpcerr.ToStatus(err)).Proto()
	p.Message = fmt.Sprintf(format, args...)
	return status.FromProto(p).Err()
}

func message(err error) string { return status.Convert(rpcerr.ToStatus(err)).Message() }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
