// Package server implements the Router gRPC service: it validates a
// request, then runs it as a sequence of attempts (attempt.go), each on one
// (endpoint, model) route that the strategy picked, relaying the worker's
// stream (relay.go). A failure before the first token moves to the same
// model again, another endpoint or the next fallback model, as the failure's
// kind says (policy.go); a stream that breaks, stalls or trickles after
// tokens reached the client continues elsewhere from what the client has.
// The router is the one owner of retries: it asks provider-proxy workers to
// make a single upstream attempt per call.
//
// The server is stateless beyond the pool's observations and safe for
// concurrent use.
package server

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/admission"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
	"github.com/llm-runner-router/llmrouter/services/router/internal/metrics"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Config configures the server. Zero fields take the defaults noted.
type Config struct {
	// MaxAttempts bounds the attempts of one request over all models and
	// workers (default 4).
	MaxAttempts int
	// MaxAttemptsPerModel bounds the attempts on one model within a request
	// (default 2); a model's policy may set its own.
	MaxAttemptsPerModel int
	// FirstTokenTimeout, when set, is every model's first-token deadline.
	// Otherwise hosted models (format "api") get HostedFirstToken (default
	// 30 s) and local ones a deadline derived from the prompt's length and
	// the route's measured prefill rate and time to first token, at least
	// LocalFirstToken (default 5 s; 30 s before the route was measured).
	FirstTokenTimeout time.Duration
	HostedFirstToken  time.Duration
	LocalFirstToken   time.Duration
	// StallTimeout: a stream without a new token this long is cancelled
	// and continued elsewhere (default 30 s; for a local route with a
	// measured inter-token latency, 50 of those but at least 5 s).
	StallTimeout time.Duration
	// TrickleFactor: a stream running this many times slower than its
	// route's usual inter-token latency, over a second or more, counts as
	// stalled (default 20).
	TrickleFactor float64
	// BackoffBase is the first retry's backoff before jitter (default
	// 100 ms, doubling per retry of the same model, capped at 2 s).
	BackoffBase time.Duration
	// MaxRetryAfter caps the wait an upstream's Retry-After may ask for
	// (default 10 s); a longer hint moves on to a fallback at once.
	MaxRetryAfter time.Duration
	// RetryRatio and RetryFloor form the retry budget: retries may add at
	// most RetryRatio of recent requests, plus RetryFloor per second.
	RetryRatio float64
	RetryFloor float64
	// NoFailover ends a stream whose worker dies mid-generation instead of
	// continuing it on another worker.
	NoFailover bool
	// Admission bounds concurrent and queued requests; nil admits all.
	Admission *admission.Controller
	// Keys, when it holds keys, requires an API key on every request, and
	// Limiter enforces their quotas (default: in memory). QuotaFailClosed
	// refuses requests while the Limiter cannot answer (default: admit
	// them, counted and logged). QuotaMaxTokens is the max_tokens given to a
	// request without one under a token quota (default 4096; per model in
	// policies).
	Keys            *auth.Keyring
	Limiter         auth.Limiter
	QuotaFailClosed bool
	QuotaMaxTokens  int
	// Log reports quota-store failures; default slog.Default().
	Log *slog.Logger
	// Metrics records Prometheus metrics; nil records none.
	Metrics *metrics.Metrics
	// RawRelay forwards token events to gRPC clients as the worker's bytes;
	// the gRPC server must use rawcodec (grpc.ForceServerCodecV2).
	RawRelay bool
	// WriteTimeout cuts a gRPC stream whose one message blocks this long
	// (the client stopped reading); the server needs CancelableStreams.
	// 0: no limit.
	WriteTimeout time.Duration
	// Cache is the response cache (none without a Store).
	Cache CacheConfig
	// Hedge configures hedged requests (on for local models by default).
	Hedge HedgeConfig
	// AdminToken, when set, lets a caller sending "authorization: Bearer
	// TOKEN" call the admin RPCs (PurgeCache), as an admin certificate does.
	AdminToken string
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 4
	}
	if c.MaxAttemptsPerModel <= 0 {
		c.MaxAttemptsPerModel = 2
	}
	def(&c.HostedFirstToken, 30*time.Second)
	def(&c.LocalFirstToken, 5*time.Second)
	def(&c.StallTimeout, 30*time.Second)
	def(&c.BackoffBase, 100*time.Millisecond)
	def(&c.MaxRetryAfter, 10*time.Second)
	if c.TrickleFactor <= 0 {
		c.TrickleFactor = 20
	}
	if c.Admission == nil {
		c.Admission = admission.New(0, 0, 0)
	}
	if c.Limiter == nil {
		c.Limiter = auth.NewMemory(nil)
	}
	if c.QuotaMaxTokens <= 0 {
		c.QuotaMaxTokens = 4096
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	def(&c.Cache.TTL, time.Hour)
	if c.Cache.MaxEntryBytes <= 0 {
		c.Cache.MaxEntryBytes = 1 << 20
	}
	if c.RetryRatio <= 0 && c.RetryFloor <= 0 {
		c.RetryRatio, c.RetryFloor = 0.2, 10
	}
}

// Server is the Router service.
type Server struct {
	routerv1.UnimplementedRouterServiceServer
	pool   *pool.Pool
	sched  *scheduling.Scheduler
	cfg    Config
	limits enginehost.Limits
	now    func() time.Time
	budget *retryBudget
	hedge  *hedger
	// quotaLog rate-limits quota-store failure logs (unix ns of the last).
	quotaLog atomic.Int64
	// embedLog rate-limits the semantic cache's embedding failure logs.
	embedLog atomic.Int64
	// embeds holds a slot per semantic cache embedding in flight.
	embeds chan struct{}
	// cacheLog rate-limits cache-store failure logs.
	cacheLog atomic.Int64
}

var _ routerv1.RouterServiceServer = (*Server)(nil)

// New returns a server over p that routes with sched's strategies.
func New(p *pool.Pool, sched *scheduling.Scheduler, cfg Config) *Server {
	cfg.setDefaults()
	return &Server{pool: p, sched: sched, cfg: cfg, limits: enginehost.DefaultLimits, now: time.Now, embeds: make(chan struct{}, maxEmbeds),
		budget: newRetryBudget(cfg.RetryRatio, cfg.RetryFloor, time.Now), hedge: newHedger(cfg.Hedge)}
}

// Sink receives a routed stream's events (the gRPC stream, or the HTTP API's
// encoder).
type Sink = interface {
	Send(*routerv1.GenerateResponse) error
}

// Generate routes and relays one generation.
func (s *Server) Generate(req *routerv1.GenerateRequest, stream routerv1.RouterService_GenerateServer) error {
	sink, stop := watchWrites(stream.Context(), stream, s.cfg.WriteTimeout)
	defer stop()
	return s.Route(stream.Context(), req, sink)
}

// Route routes one generation and sends its events to sink; the error is a
// gRPC status error.
func (s *Server) Route(ctx context.Context, req *routerv1.GenerateRequest, sink Sink) error {
	began := s.now()
	profile, err := s.validate(req)
	if err == nil && req.GetRouting().GetEnsemble() != nil {
		err = s.runEnsemble(ctx, profile, req, sink)
	} else if err == nil {
		plan := s.planCache(ctx, req, sink, began)
		out := sink
		if plan != nil && plan.rec != nil {
			out = plan.rec
		}
		if err = s.run(ctx, profile, req, nil, plan, s.relayTo(out, req)); err == nil && plan != nil && plan.status != cacheHit {
			s.store(ctx, plan)
		}
	}
	err = rpcerr.ToStatus(err)
	s.cfg.Metrics.Request(req.GetModel(), status.Code(err).String(), s.now().Sub(began))
	return err
}

func (s *Server) validate(req *routerv1.GenerateRequest) (*scheduling.Profile, error) {
	if err := enginehost.ValidateUTF8(req); err != nil {
		return nil, err
	}
	if err := enginehost.ValidateModelName(req.GetModel()); err != nil {
		return nil, err
	}
	if err := enginehost.ValidateRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := enginehost.ValidateUser(req.GetUser()); err != nil {
		return nil, err
	}
	if err := enginehost.ValidatePrompt(req.GetPrompt(), s.limits); err != nil {
		return nil, err
	}
	// Schemas are compiled as the engines compile them, so that a schema
	// no model can take is a plain 400; features only the local grammar
	// cannot express are a capability (needsOf): a hosted model may take
	// them.
	if _, err := enginehost.ValidateSampling(req.GetSampling()); err != nil && !enginehost.SchemaUnsupported(err) {
		return nil, err
	}
	if _, err := enginehost.ValidateTools(req.GetPrompt().GetChat(), req.GetSampling().GetResponseFormat(), true); err != nil && !enginehost.SchemaUnsupported(err) {
		return nil, err
	}
	if p := req.GetPrefill(); len(p) > s.limits.MaxPromptBytes {
		return nil, rpcerr.InvalidArgument("prefill is %d bytes, over the limit of %d", len(p), s.limits.MaxPromptBytes)
	}
	ro := req.GetRouting()
	profile, ok := s.sched.Profile(ro.GetStrategy())
	if !ok {
		return nil, rpcerr.InvalidArgument("routing.strategy %q is unknown (known: %s)", ro.GetStrategy(), s.sched.Names())
	}
	if len(ro.GetFallbackModels()) > maxFallbacks {
		return nil, rpcerr.InvalidArgument("routing.fallback_models has %d models, over the limit of %d", len(ro.GetFallbackModels()), maxFallbacks)
	}
	for i, m := range ro.GetFallbackModels() {
		if err := enginehost.ValidateModelName(m); err != nil {
			return nil, rpcerr.InvalidArgument("routing.fallback_models[%d]: %v", i, err)
		}
	}
	c := ro.GetConstraints()
	if c.GetMaxCostPer_1K() < 0 || c.GetMinQuality() < 0 || c.GetMinQuality() > 1 || c.GetMaxLatency().AsDuration() < 0 {
		return nil, rpcerr.InvalidArgument("routing.constraints out of range: max_cost_per_1k and max_latency must not be negative, min_quality must be in [0, 1]")
	}
	if len(ro.GetSessionId()) > 256 {
		return nil, rpcerr.InvalidArgument("routing.session_id is %d bytes, over the limit of 256", len(ro.GetSessionId()))
	}
	if err := s.validateCache(req); err != nil {
		return nil, err
	}
	if err := validateEnsemble(req); err != nil {
		return nil, err
	}
	return profile, nil
}

// authorize checks the caller's API key (when keys are configured), its
// access to models, and its request quota.
func (s *Server) authorize(ctx context.Context, models ...string) (*auth.Key, error) {
	if !s.cfg.Keys.Enabled() {
		return nil, nil
	}
	key, err := s.cfg.Keys.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range models {
		if m != "" && !key.Allows(m) {
			return nil, rpcerr.PermissionDenied("API key %q may not use model %q", key.Name, m)
		}
	}
	return key, nil
}

func (s *Server) routableNames() []string {
	var names []string
	for _, m := range s.routable() {
		names = append(names, m.GetInfo().GetName())
	}
	return names
}

// routable aggregates the models of healthy endpoints.
func (s *Server) routable() []*routerv1.RoutedModel {
	by := map[string]*routerv1.RoutedModel{}
	for _, e := range s.pool.Endpoints() {
		if !e.Healthy() {
			continue
		}
		for _, m := range e.Models() {
			rm := by[m.GetName()]
			if rm == nil {
				rm = &routerv1.RoutedModel{Info: m}
				by[m.GetName()] = rm
			}
			rm.Endpoints = append(rm.Endpoints, e.Address)
		}
	}
	out := make([]*routerv1.RoutedModel, 0, len(by))
	for _, rm := range by {
		slices.Sort(rm.Endpoints)
		out = append(out, rm)
	}
	slices.SortFunc(out, func(a, b *routerv1.RoutedModel) int {
		return strings.Compare(a.GetInfo().GetName(), b.GetInfo().GetName())
	})
	return out
}

// ListModels lists models served by at least one healthy worker.
func (s *Server) ListModels(ctx context.Context, _ *routerv1.ListModelsRequest) (*routerv1.ListModelsResponse, error) {
	if s.cfg.Keys.Enabled() {
		key, err := s.cfg.Keys.Authenticate(ctx)
		if err != nil {
			return nil, rpcerr.ToStatus(err)
		}
		models := s.routable()
		return &routerv1.ListModelsResponse{Models: slices.DeleteFunc(models, func(m *routerv1.RoutedModel) bool { return !key.Allows(m.GetInfo().GetName()) })}, nil
	}
	return &routerv1.ListModelsResponse{Models: s.routable()}, nil
}

// ListEndpoints lists every known worker; a caller with an API key sees
// only the models the key may use, and only workers serving one of them.
func (s *Server) ListEndpoints(ctx context.Context, _ *routerv1.ListEndpointsRequest) (*routerv1.ListEndpointsResponse, error) {
	var key *auth.Key
	if s.cfg.Keys.Enabled() {
		var err error
		if key, err = s.cfg.Keys.Authenticate(ctx); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	resp := &routerv1.ListEndpointsResponse{}
	for _, e := range s.pool.Endpoints() {
		models := e.Models()
		if key != nil {
			models = slices.DeleteFunc(slices.Clone(models), func(m *enginev1.ModelInfo) bool { return !key.Allows(m.GetName()) })
			if len(models) == 0 {
				continue
			}
		}
		ep := &routerv1.Endpoint{
			Id: e.ID, Address: e.Address, Models: models, Healthy: e.Healthy(),
			InFlight: e.InFlight(), ConsecutiveFailures: e.Failures(),
		}
		if d := e.TTFT(); d > 0 {
			ep.TtftEwma = durationpb.New(d)
		}
		resp.Endpoints = append(resp.Endpoints, ep)
	}
	return resp, nil
}

// CountTokens counts prompt's tokens for model on a worker that serves it,
// through the same attempts as Embed. It uses one of a key's requests and
// none of its tokens (as Anthropic's count_tokens does). Workers that
// cannot count answer Unimplemented, and the router tries the next.
func (s *Server) CountTokens(ctx context.Context, model string, prompt *generationv1.Prompt) (int32, error) {
	if err := enginehost.ValidateModelName(model); err != nil {
		return 0, rpcerr.ToStatus(err)
	}
	profile, _ := s.sched.Profile("")
	var n int32
	req := &routerv1.GenerateRequest{Model: model, Prompt: prompt}
	err := s.run(ctx, profile, req, []string{}, nil, func(ctx context.Context, r *request, a *attempt) result {
		r.span.SetAttributes(attribute.String("gen_ai.operation.name", "count_tokens"))
		limit := s.limitsFor(r, a.route, a.info.Model).firstToken
		cctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		out, err := a.endpoint.Client.CountTokens(cctx, &enginev1.CountTokensRequest{Model: a.model, Prompt: prompt})
		if err != nil && ctx.Err() == nil && cctx.Err() != nil {
			return result{outcome: generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FIRST_TOKEN_TIMEOUT,
				err: rpcerr.Unavailable("model %s on %s: no token count within %v", a.model, a.endpoint.Address, limit)}
		}
		if err == nil {
			n = out.GetPromptTokens()
		}
		return result{err: err}
	})
	return n, rpcerr.ToStatus(err)
}

// Embed routes an embeddings request through the same attempts as a
// generation (admission, retries, fallback between endpoints and an alias's
// models), without mid-stream rescue.
func (s *Server) Embed(ctx context.Context, model string, inputs []string) (*enginev1.EmbedResponse, error) {
	if err := enginehost.ValidateModelName(model); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	profile, _ := s.sched.Profile("")
	if inputs == nil {
		inputs = []string{} // an embeddings request, even when empty
	}
	var resp *enginev1.EmbedResponse
	err := s.run(ctx, profile, &routerv1.GenerateRequest{Model: model}, inputs, nil, func(ctx context.Context, r *request, a *attempt) result {
		// The whole call within the model's first-token deadline: a silent
		// worker fails over like a silent stream.
		limit := s.limitsFor(r, a.route, a.info.Model).firstToken
		cctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		out, err := a.endpoint.Client.Embed(cctx, &enginev1.EmbedRequest{Model: a.model, Inputs: inputs})
		if err != nil && ctx.Err() == nil && cctx.Err() != nil {
			return result{outcome: generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FIRST_TOKEN_TIMEOUT,
				err: rpcerr.Unavailable("model %s on %s: no embeddings within %v", a.model, a.endpoint.Address, limit)}
		}
		if err == nil {
			resp = out
			r.usage = out.GetUsage()
		}
		return result{err: err}
	})
	return resp, rpcerr.ToStatus(err)
}
