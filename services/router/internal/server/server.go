// Package server implements the Router gRPC service: it validates a request,
// filters the pool's endpoints to those that can serve it, lets the chosen
// strategy pick one, and relays the worker's stream. A request that fails
// before its first token is retried on another endpoint, then on the next
// fallback model; after the first token the worker's errors pass through.
//
// The server is stateless beyond the pool's observations and safe for
// concurrent use.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
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
	"github.com/llm-runner-router/llmrouter/services/router/internal/rawcodec"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// maxFallbacks bounds fallback_models.
const maxFallbacks = 8

// Config configures the server.
type Config struct {
	// MaxAttempts bounds the workers tried for one request, over all models.
	MaxAttempts int
	// FirstTokenTimeout gives up on a worker that has not produced a first
	// token in time and retries elsewhere; 0 waits as long as the client.
	FirstTokenTimeout time.Duration
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
	// Limiter enforces their quotas (default: in memory).
	Keys    *auth.Keyring
	Limiter auth.Limiter
	// Metrics records Prometheus metrics; nil records none.
	Metrics *metrics.Metrics
	// RawRelay forwards token events to gRPC clients as the worker's bytes;
	// the gRPC server must use rawcodec (grpc.ForceServerCodecV2).
	RawRelay bool
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
}

var _ routerv1.RouterServiceServer = (*Server)(nil)

// New returns a server over p that routes with sched's strategies.
func New(p *pool.Pool, sched *scheduling.Scheduler, cfg Config) *Server {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Admission == nil {
		cfg.Admission = admission.New(0, 0, 0)
	}
	if cfg.Limiter == nil {
		cfg.Limiter = auth.NewMemory()
	}
	if cfg.RetryRatio <= 0 && cfg.RetryFloor <= 0 {
		cfg.RetryRatio, cfg.RetryFloor = 0.2, 10
	}
	return &Server{pool: p, sched: sched, cfg: cfg, limits: enginehost.DefaultLimits, now: time.Now,
		budget: newRetryBudget(cfg.RetryRatio, cfg.RetryFloor, time.Now)}
}

// Sink receives a routed stream's events (the gRPC stream, or the HTTP API's
// encoder).
type Sink = interface {
	Send(*routerv1.GenerateResponse) error
}

// Generate routes and relays one generation.
func (s *Server) Generate(req *routerv1.GenerateRequest, stream routerv1.RouterService_GenerateServer) error {
	return s.Route(stream.Context(), req, stream)
}

// Route routes one generation and sends its events to sink; the error is a
// gRPC status error.
func (s *Server) Route(ctx context.Context, req *routerv1.GenerateRequest, sink Sink) error {
	began := s.now()
	err := rpcerr.ToStatus(s.generate(ctx, req, sink))
	s.cfg.Metrics.Request(req.GetModel(), status.Code(err).String(), s.now().Sub(began))
	return err
}

func (s *Server) validate(req *routerv1.GenerateRequest) (*scheduling.Profile, error) {
	if err := enginehost.ValidateModelName(req.GetModel()); err != nil {
		return nil, err
	}
	if err := enginehost.ValidateRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := enginehost.ValidatePrompt(req.GetPrompt(), s.limits); err != nil {
		return nil, err
	}
	if _, err := enginehost.ValidateSampling(req.GetSampling()); err != nil {
		return nil, err
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
	return profile, nil
}

// candidates lists untried endpoints serving any of models, and how many
// endpoints serve them at all.
func (s *Server) candidates(models []string, tried map[*pool.Endpoint]bool) (cands []scheduling.Candidate, serving int) {
	for _, e := range s.pool.Endpoints() {
		for _, name := range models {
			m := e.Model(name)
			if m == nil {
				continue
			}
			serving++
			if !tried[e] {
				cands = append(cands, scheduling.Candidate{Endpoint: e, Model: m})
			}
			break
		}
	}
	return cands, serving
}

func (s *Server) generate(ctx context.Context, req *routerv1.GenerateRequest, stream Sink) error {
	profile, err := s.validate(req)
	if err != nil {
		return err
	}
	key, err := s.authorize(ctx, append([]string{req.GetModel()}, req.GetRouting().GetFallbackModels()...)...)
	if err != nil {
		return err
	}
	release, err := s.cfg.Admission.Acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	s.budget.request()
	id := req.GetRequestId()
	if id == "" {
		id = enginehost.NewRequestID()
	}
	ro := req.GetRouting()
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("llm.request_id", id),
			attribute.String("llm.model", req.GetModel()),
			attribute.String("llm.strategy", profile.Name),
		)
	}
	sr := &scheduling.Request{
		Model: req.GetModel(), SessionID: ro.GetSessionId(), Constraints: ro.GetConstraints(),
		PrefixBlocks: PrefixBlocks(req.GetPrompt()),
	}
	groups := [][]string{s.sched.Resolve(req.GetModel())}
	fallbacks := ro.GetFallbackModels()
	if len(fallbacks) == 0 {
		fallbacks = s.sched.Fallbacks(req.GetModel())
	}
	for _, f := range fallbacks {
		groups = append(groups, s.sched.Resolve(f))
	}
	tried := map[*pool.Endpoint]bool{}
	rs := &relayState{received: s.now()}
	if key != nil {
		span.SetAttributes(attribute.String("llm.api_key_name", key.Name))
		defer func() { s.cfg.Limiter.Spend(key, rs.tokensUsed(len(req.GetPrompt().GetText())), s.now()) }()
	}
	var (
		lastErr    error
		filtered   *scheduling.FilteredError
		attempts   int
		anyServing bool
	)
	for gi := 0; gi < len(groups); gi++ {
		models := groups[gi]
		for attempts < s.cfg.MaxAttempts {
			cands, serving := s.candidates(models, tried)
			anyServing = anyServing || serving > 0
			if len(cands) == 0 {
				break
			}
			sr.Now = s.now()
			var d scheduling.Decision
			if sr.SessionID != "" {
				eligible, ferr := profile.Eligible(sr, cands)
				if ferr != nil {
					errors.As(ferr, &filtered)
					break
				}
				d = scheduling.Decision{Strategy: profile.Name, Candidates: len(eligible), Chosen: eligible[scheduling.Affine(sr.SessionID, eligible)]}
			} else if d, err = profile.Schedule(sr, cands); err != nil {
				errors.As(err, &filtered)
				break
			}
			ep, model := d.Chosen.Endpoint, d.Chosen.Model.GetName()
			s.cfg.Metrics.Decision(profile.Name)
			attempts++
			tried[ep] = true
			if span.IsRecording() {
				span.AddEvent("route", trace.WithAttributes(
					attribute.String("llm.endpoint", ep.Address), attribute.String("llm.routed_model", model),
					attribute.Int("llm.candidates", d.Candidates), attribute.Float64("llm.score", d.Score),
					attribute.Int("llm.attempt", attempts)))
			}
			began := s.now()
			first, err := s.relay(ctx, ep, model, id, req, stream, rs)
			profile.Observe(sr, d.Chosen, scheduling.Outcome{FirstToken: first, TTFT: s.now().Sub(began)})
			if err == nil {
				s.cfg.Metrics.Tokens(model, int(rs.usage.GetPromptTokens()), int(rs.usage.GetCompletionTokens()))
				if gi > 0 || !slices.Contains(groups[0], model) {
					s.cfg.Metrics.Fallback(req.GetModel(), model)
				}
				if !span.IsRecording() {
					return nil
				}
				span.SetAttributes(attribute.String("llm.endpoint", ep.Address), attribute.String("llm.routed_model", model),
					attribute.Int("llm.candidates", d.Candidates), attribute.Float64("llm.score", d.Score),
					attribute.Int("llm.attempts", attempts), attribute.Int("llm.failovers", rs.failovers))
				return nil
			}
			var mid *midStreamError
			if errors.As(err, &mid) {
				// The worker died after tokens reached the client: continue on
				// another worker serving the same model (token ids are the
				// model's), from exactly the tokens already sent.
				if !s.cfg.NoFailover && attempts < s.cfg.MaxAttempts && s.budget.retry() {
					rs.failovers++
					s.cfg.Metrics.Failover()
					span.AddEvent("failover", trace.WithAttributes(attribute.String("llm.from_endpoint", ep.Address), attribute.Int("llm.tokens_sent", len(rs.emitted))))
					groups, gi, models = [][]string{{model}}, 0, []string{model}
					lastErr = mid.err
					continue
				}
				return mid.err
			}
			var retry *retriableError
			if !errors.As(err, &retry) {
				return err
			}
			lastErr = retry.err
			s.cfg.Metrics.Retry()
			if !s.budget.retry() {
				span.AddEvent("retry budget exhausted")
				return status.Errorf(status.Code(rpcerr.ToStatus(retry.err)), "%s (the router's retry budget is exhausted)", status.Convert(rpcerr.ToStatus(retry.err)).Message())
			}
		}
	}
	span.SetAttributes(attribute.Int("llm.attempts", attempts))
	names := strings.Join(slices.Concat(groups...), ", ")
	switch {
	case lastErr != nil && rs.startSent:
		st := status.Convert(rpcerr.ToStatus(lastErr))
		return status.Errorf(st.Code(), "%s; no other worker could take the stream over after %d tokens", st.Message(), len(rs.emitted))
	case lastErr != nil:
		st := status.Convert(rpcerr.ToStatus(lastErr))
		return status.Errorf(st.Code(), "no worker could serve %s after %d attempts; last error: %s", names, attempts, st.Message())
	case !anyServing:
		return rpcerr.NotFound("no worker serves model %s (routable models: %s)", names, strings.Join(s.routableNames(), ", "))
	case filtered != nil && filtered.Filter == "constraints":
		return rpcerr.FailedPrecondition("model %s: every healthy worker is excluded by routing.constraints", names)
	default:
		return rpcerr.Unavailable("model %s: no healthy worker can serve it now", names)
	}
}

// forward sends an event to the client: decoded if given, else as the
// worker's bytes when the sink's codec takes frames, else decoded here.
func (s *Server) forward(out Sink, f *rawcodec.Frame, decoded *routerv1.GenerateResponse) error {
	if decoded != nil {
		return out.Send(decoded)
	}
	if raw, ok := out.(interface{ SendMsg(any) error }); ok && s.cfg.RawRelay {
		return raw.SendMsg(f)
	}
	var m routerv1.GenerateResponse
	if err := proto.Unmarshal(f.B, &m); err != nil {
		return fmt.Errorf("decode worker event: %w", err)
	}
	return out.Send(&m)
}

// relayState is what a stream has delivered so far, kept across workers.
type relayState struct {
	received  time.Time // when the router received the request
	startSent bool
	emitted   []uint32 // token ids sent to the client
	failovers int
	usage     *generationv1.Usage // from the end event
}

// tokensUsed is what a request costs against a token quota: the worker's
// count when it finished, else the tokens sent (and a rough prompt size).
func (rs *relayState) tokensUsed(promptBytes int) int {
	if rs.usage != nil {
		return int(rs.usage.GetTotalTokens())
	}
	return len(rs.emitted) + promptBytes/4
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
	if wait, ok := s.cfg.Limiter.Admit(key, s.now()); !ok {
		return nil, rpcerr.ResourceExhausted(wait, "API key %q is over its quota (%d requests/min, %d tokens/min); retry in %v",
			key.Name, key.RequestsPerMinute, key.TokensPerMinute, wait.Round(time.Millisecond))
	}
	return key, nil
}

// midStreamError marks a worker failure after tokens reached the client.
type midStreamError struct{ err error }

func (m *midStreamError) Error() string { return m.err.Error() }
func (m *midStreamError) Unwrap() error { return m.err }

// retriableError marks a failure before the first token that another worker
// may not have.
type retriableError struct{ err error }

func (r *retriableError) Error() string { return r.err.Error() }
func (r *retriableError) Unwrap() error { return r.err }

func retriable(code codes.Code) bool {
	return code == codes.Unavailable || code == codes.ResourceExhausted
}

// relay runs the request on ep and copies its events to the client. The
// worker's StartEvent is held until its first token or end event, so a retry
// before the first token is invisible to the client.
func (s *Server) relay(ctx context.Context, ep *pool.Endpoint, model, id string, req *routerv1.GenerateRequest, out Sink, rs *relayState) (forwarded bool, err error) {
	defer ep.Begin()()
	began := s.now()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var firstTokenLate atomic.Bool
	if d := s.cfg.FirstTokenTimeout; d > 0 {
		t := time.AfterFunc(d, func() {
			firstTokenLate.Store(true)
			cancel()
		})
		defer t.Stop()
	}
	in, err := ep.Client.Generate(cctx, &enginev1.GenerateRequest{
		Model: model, Prompt: req.GetPrompt(), Sampling: req.GetSampling(), RequestId: id,
		Continuation: rs.emitted,
	})
	var (
		tokens            int
		ended             bool
		firstTok, lastTok time.Time
		start             *rawcodec.Frame
	)
	for err == nil {
		var f rawcodec.Frame
		if err = in.RecvMsg(&f); err != nil {
			break
		}
		num, body := f.Event()
		var end *routerv1.GenerateResponse
		switch num {
		case 1: // start: held until the first token
			start = &f
			continue
		case 2: // delta: forwarded as bytes
			before := len(rs.emitted)
			var ok bool
			if rs.emitted, ok = rawcodec.AppendTokenIDs(rs.emitted, body); !ok {
				err = status.Error(codes.Internal, "worker sent a malformed token delta")
				continue
			}
			if n := len(rs.emitted) - before; n > 0 {
				lastTok = s.now()
				if tokens == 0 {
					firstTok = lastTok
				}
				tokens += n
			}
		case 3: // end: decoded to record usage and failovers
			var e enginev1.GenerateResponse
			if err = proto.Unmarshal(f.B, &e); err != nil {
				continue
			}
			e.GetEnd().Failovers = int32(rs.failovers)
			rs.usage = e.GetEnd().GetUsage()
			end = &routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_End{End: e.GetEnd()}}
			ended = true
		default:
			continue
		}
		if !forwarded {
			if firstTokenLate.Load() {
				break // lost the race with the timer: treated as late below
			}
			forwarded = true
			ep.ObserveSuccess(s.now().Sub(began))
			if !rs.startSent {
				s.cfg.Metrics.FirstToken(req.GetModel(), s.now().Sub(rs.received))
				if start != nil {
					if err := s.forward(out, start, nil); err != nil {
						return true, err
					}
				}
			}
			rs.startSent = true
		}
		if err := s.forward(out, &f, end); err != nil {
			return true, err
		}
	}
	if errors.Is(err, io.EOF) {
		if ended {
			if tokens > 1 {
				ep.ObserveITL(lastTok.Sub(firstTok) / time.Duration(tokens-1))
			}
			return true, nil
		}
		err = status.Error(codes.Unavailable, "worker closed the stream without an end event")
	}
	if ctx.Err() != nil {
		return forwarded, ctx.Err()
	}
	if !forwarded && firstTokenLate.Load() {
		ep.ObserveFailure(s.now())
		return false, &retriableError{err: status.Errorf(codes.DeadlineExceeded, "worker %s: no first token within %v", ep.Address, s.cfg.FirstTokenTimeout)}
	}
	st := status.Convert(err)
	if st.Code() == codes.Canceled {
		// Our context is alive, so the connection was torn down under the
		// stream: the worker is gone as far as this request is concerned.
		st = status.New(codes.Unavailable, st.Message())
		err = st.Err()
	}
	if st.Code() == codes.Unavailable {
		ep.ObserveFailure(s.now())
	}
	if !forwarded {
		if retriable(st.Code()) {
			return false, &retriableError{err: fmt.Errorf("worker %s: %w", ep.Address, err)}
		}
		return false, err // the worker's status, unchanged
	}
	if st.Code() == codes.Unavailable {
		return true, &midStreamError{err: status.Errorf(codes.Unavailable, "worker %s failed mid-stream after %d tokens: %s", ep.Address, tokens, st.Message())}
	}
	return true, err
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

// ListEndpoints lists every known worker.
func (s *Server) ListEndpoints(ctx context.Context, _ *routerv1.ListEndpointsRequest) (*routerv1.ListEndpointsResponse, error) {
	if s.cfg.Keys.Enabled() {
		if _, err := s.cfg.Keys.Authenticate(ctx); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	resp := &routerv1.ListEndpointsResponse{}
	for _, e := range s.pool.Endpoints() {
		ep := &routerv1.Endpoint{
			Id: e.ID, Address: e.Address, Models: e.Models(), Healthy: e.Healthy(),
			InFlight: e.InFlight(), ConsecutiveFailures: e.Failures(),
		}
		if d := e.TTFT(); d > 0 {
			ep.TtftEwma = durationpb.New(d)
		}
		resp.Endpoints = append(resp.Endpoints, ep)
	}
	return resp, nil
}

// Embed routes an embeddings request to a healthy worker serving model (or
// an alias's models), retrying once elsewhere when a worker is unavailable.
func (s *Server) Embed(ctx context.Context, model string, inputs []string) (*enginev1.EmbedResponse, error) {
	if err := enginehost.ValidateModelName(model); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	key, err := s.authorize(ctx, model)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}

	profile, _ := s.sched.Profile("")
	models := s.sched.Resolve(model)
	tried := map[*pool.Endpoint]bool{}
	var lastErr error
	for range 2 {
		cands, serving := s.candidates(models, tried)
		if serving == 0 {
			return nil, rpcerr.ToStatus(rpcerr.NotFound("no worker serves model %s (routable models: %s)", model, strings.Join(s.routableNames(), ", ")))
		}
		if len(cands) == 0 {
			break
		}
		d, err := profile.Schedule(&scheduling.Request{Model: model, Now: s.now()}, cands)
		if err != nil {
			return nil, rpcerr.ToStatus(rpcerr.Unavailable("model %s: no healthy worker can serve it now", model))
		}
		tried[d.Chosen.Endpoint] = true
		done := d.Chosen.Endpoint.Begin()
		resp, err := d.Chosen.Endpoint.Client.Embed(ctx, &enginev1.EmbedRequest{Model: d.Chosen.Model.GetName(), Inputs: inputs})
		done()
		if err == nil && key != nil {
			s.cfg.Limiter.Spend(key, int(resp.GetUsage().GetTotalTokens()), s.now())
		}
		if err == nil || status.Code(err) != codes.Unavailable {
			return resp, err
		}
		lastErr = err
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return nil, rpcerr.ToStatus(rpcerr.Unavailable("model %s: no healthy worker can serve it now", model))
}
