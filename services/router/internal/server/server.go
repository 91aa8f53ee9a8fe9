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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/strategy"
)

// maxFallbacks bounds fallback_models.
const maxFallbacks = 8

// Config configures the server.
type Config struct {
	// DefaultStrategy applies when a request names none.
	DefaultStrategy string
	// MaxAttempts bounds the workers tried for one request, over all models.
	MaxAttempts int
}

// Server is the Router service.
type Server struct {
	routerv1.UnimplementedRouterServiceServer
	pool       *pool.Pool
	strategies *strategy.Registry
	cfg        Config
	limits     enginehost.Limits
	now        func() time.Time
}

var _ routerv1.RouterServiceServer = (*Server)(nil)

// New returns a server over p.
func New(p *pool.Pool, r *strategy.Registry, cfg Config) (*Server, error) {
	if _, ok := r.Get(cfg.DefaultStrategy); !ok {
		return nil, fmt.Errorf("default strategy %q is unknown (known: %s)", cfg.DefaultStrategy, strings.Join(r.Names(), ", "))
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	return &Server{pool: p, strategies: r, cfg: cfg, limits: enginehost.DefaultLimits, now: time.Now}, nil
}

// Generate routes and relays one generation.
func (s *Server) Generate(req *routerv1.GenerateRequest, stream routerv1.RouterService_GenerateServer) error {
	return rpcerr.ToStatus(s.generate(stream.Context(), req, stream))
}

func (s *Server) validate(req *routerv1.GenerateRequest) (strategy.Picker, error) {
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
	name := ro.GetStrategy()
	if name == "" {
		name = s.cfg.DefaultStrategy
	}
	picker, ok := s.strategies.Get(name)
	if !ok {
		return nil, rpcerr.InvalidArgument("routing.strategy %q is unknown (known: %s)", name, strings.Join(s.strategies.Names(), ", "))
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
	return picker, nil
}

// tally counts why endpoints were not candidates, for the final error.
type tally struct {
	serving, unhealthy, constrained int
}

func (s *Server) candidates(model string, c *routerv1.Constraints, tried map[*pool.Endpoint]bool, t *tally) []*pool.Endpoint {
	now := s.now()
	var out []*pool.Endpoint
	for _, e := range s.pool.Endpoints() {
		m := e.Model(model)
		if m == nil {
			continue
		}
		t.serving++
		switch {
		case !e.Healthy() || e.Ejected(now):
			t.unhealthy++
		case !satisfies(m, e, c):
			t.constrained++
		case !tried[e]:
			out = append(out, e)
		}
	}
	return out
}

func satisfies(m *enginev1.ModelInfo, e *pool.Endpoint, c *routerv1.Constraints) bool {
	if c == nil {
		return true
	}
	if max := c.GetMaxCostPer_1K(); max > 0 && (m.GetCostPer_1KInput() > max || m.GetCostPer_1KOutput() > max) {
		return false
	}
	if c.GetMinQuality() > 0 && m.GetQuality() < c.GetMinQuality() {
		return false
	}
	if lat := c.GetMaxLatency().AsDuration(); lat > 0 && e.TTFT() > lat {
		return false
	}
	return true
}

func (s *Server) generate(ctx context.Context, req *routerv1.GenerateRequest, stream routerv1.RouterService_GenerateServer) error {
	picker, err := s.validate(req)
	if err != nil {
		return err
	}
	id := req.GetRequestId()
	if id == "" {
		id = newRequestID()
	}
	ro := req.GetRouting()
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(
		attribute.String("llm.request_id", id),
		attribute.String("llm.model", req.GetModel()),
		attribute.String("llm.strategy", cmpOr(ro.GetStrategy(), s.cfg.DefaultStrategy)),
	)
	models := append([]string{req.GetModel()}, ro.GetFallbackModels()...)
	tried := map[*pool.Endpoint]bool{}
	var (
		t        tally
		lastErr  error
		attempts int
	)
	for _, model := range models {
		for attempts < s.cfg.MaxAttempts {
			cands := s.candidates(model, ro.GetConstraints(), tried, &t)
			if len(cands) == 0 {
				break
			}
			var ep *pool.Endpoint
			if ro.GetSessionId() != "" {
				ep = strategy.Affine(ro.GetSessionId(), cands)
			} else {
				ep = picker.Pick(&strategy.Request{Model: model, SessionID: ro.GetSessionId()}, cands)
			}
			attempts++
			tried[ep] = true
			span.AddEvent("route", trace.WithAttributes(
				attribute.String("llm.endpoint", ep.Address), attribute.String("llm.routed_model", model),
				attribute.Int("llm.candidates", len(cands)), attribute.Int("llm.attempt", attempts)))
			err := s.relay(ctx, ep, model, id, req, stream)
			if err == nil {
				span.SetAttributes(attribute.String("llm.endpoint", ep.Address), attribute.String("llm.routed_model", model), attribute.Int("llm.attempts", attempts))
				return nil
			}
			var retry *retriableError
			if !errors.As(err, &retry) {
				return err
			}
			lastErr = retry.err
		}
	}
	span.SetAttributes(attribute.Int("llm.attempts", attempts))
	names := strings.Join(models, ", ")
	switch {
	case lastErr != nil:
		st := status.Convert(rpcerr.ToStatus(lastErr))
		return status.Errorf(st.Code(), "no worker could serve %s after %d attempts; last error: %s", names, attempts, st.Message())
	case t.serving == 0:
		return rpcerr.NotFound("no worker serves model %s (routable models: %s)", names, strings.Join(s.routableNames(), ", "))
	case t.unhealthy == t.serving:
		return rpcerr.Unavailable("model %s is served by %d workers, none healthy now", names, t.serving)
	default:
		return rpcerr.FailedPrecondition("model %s: %d of %d workers are excluded by routing.constraints and the rest are unhealthy", names, t.constrained, t.serving)
	}
}

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
func (s *Server) relay(ctx context.Context, ep *pool.Endpoint, model, id string, req *routerv1.GenerateRequest, out routerv1.RouterService_GenerateServer) error {
	defer ep.Begin()()
	began := s.now()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in, err := ep.Client.Generate(cctx, &enginev1.GenerateRequest{
		Model: model, Prompt: req.GetPrompt(), Sampling: req.GetSampling(), RequestId: id,
	})
	var (
		start     *enginev1.GenerateResponse_Start
		forwarded bool
		tokens    int
		ended     bool
		msg       = &enginev1.GenerateResponse{}
	)
	for err == nil {
		msg.Reset()
		if err = in.RecvMsg(msg); err != nil {
			break
		}
		var ev routerv1.GenerateResponse
		switch e := msg.GetEvent().(type) {
		case *enginev1.GenerateResponse_Start:
			start = e
			continue
		case *enginev1.GenerateResponse_Delta:
			ev.Event = &routerv1.GenerateResponse_Delta{Delta: e.Delta}
			tokens += len(e.Delta.GetTokenIds())
		case *enginev1.GenerateResponse_End:
			ev.Event = &routerv1.GenerateResponse_End{End: e.End}
			ended = true
		default:
			continue
		}
		if !forwarded {
			forwarded = true
			ep.ObserveSuccess(s.now().Sub(began))
			if start != nil {
				if err := out.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Start{Start: start.Start}}); err != nil {
					return err
				}
			}
		}
		if err := out.Send(&ev); err != nil {
			return err
		}
	}
	if errors.Is(err, io.EOF) {
		if ended {
			return nil
		}
		err = status.Error(codes.Unavailable, "worker closed the stream without an end event")
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	st := status.Convert(err)
	if st.Code() == codes.Unavailable {
		ep.ObserveFailure(s.now())
	}
	if !forwarded {
		if retriable(st.Code()) {
			return &retriableError{err: fmt.Errorf("worker %s: %w", ep.Address, err)}
		}
		return err // the worker's status, unchanged
	}
	if st.Code() == codes.Unavailable {
		return status.Errorf(codes.Unavailable, "worker %s failed mid-stream after %d tokens: %s", ep.Address, tokens, st.Message())
	}
	return err
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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
func (s *Server) ListModels(context.Context, *routerv1.ListModelsRequest) (*routerv1.ListModelsResponse, error) {
	return &routerv1.ListModelsResponse{Models: s.routable()}, nil
}

// ListEndpoints lists every known worker.
func (s *Server) ListEndpoints(context.Context, *routerv1.ListEndpointsRequest) (*routerv1.ListEndpointsResponse, error) {
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
