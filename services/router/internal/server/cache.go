package server

import (
	"context"
	"crypto/sha256"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
	"github.com/llm-runner-router/llmrouter/services/router/internal/cache"
	"github.com/llm-runner-router/llmrouter/services/router/internal/rawcodec"
)

// CacheConfig configures the response cache. Only deterministic requests
// (temperature 0, or a fixed seed) are cached; each answer is stored as the
// events its client received and replayed as a stream with the same
// chunking and usage. Billing: a hit uses one of its key's requests and
// none of its tokens, costs nothing (cost_usd 0; the stored answer's cost
// is reported as saved) and is not counted in llmrouter_tokens_total.
type CacheConfig struct {
	// Store holds the answers; nil: no cache.
	Store cache.Store
	// TTL of a stored answer (default 1 h).
	TTL time.Duration
	// MaxEntryBytes: a longer answer is not stored (default 1 MiB).
	MaxEntryBytes int
	// SharedAcrossKeys lets callers with different API keys share answers;
	// by default each key's answers are its own.
	SharedAcrossKeys bool
	// Semantic is the layer that serves close questions' answers.
	Semantic SemanticConfig
}

// Cache statuses, as the x-cache header (gRPC response header, HTTP
// header) gives them.
const (
	cacheHit     = "HIT"
	cacheMiss    = "MISS"
	cacheRefresh = "REFRESH"
	cacheBypass  = "BYPASS" // the store failed: not read, not stored
	cacheOff     = "OFF"
)

// cacheKeyVersion leads the hashed request: a change to what the key
// covers changes it, so older answers are never read.
const cacheKeyVersion = "llmrouter-cache-v1\x00"

// cacheable reports whether the request's answer is reproducible: greedy
// decoding, or sampling with a fixed seed.
func cacheable(req *routerv1.GenerateRequest) bool {
	sp := req.GetSampling()
	if req.GetRouting().GetEnsemble() != nil {
		return false // its answer depends on which members answer in time
	}
	return sp != nil && (sp.Temperature != nil && sp.GetTemperature() == 0 || sp.Seed != nil)
}

// validateCache checks routing.cache: a mode only where the router has a
// cache and the request is cacheable.
func (s *Server) validateCache(req *routerv1.GenerateRequest) error {
	mode := req.GetRouting().GetCache().GetMode()
	switch {
	case mode == routerv1.CacheMode_CACHE_MODE_UNSPECIFIED:
		return nil
	case routerv1.CacheMode_name[int32(mode)] == "":
		return rpcerr.InvalidArgument("routing.cache.mode %d is unknown (known: off, refresh)", mode)
	case s.cfg.Cache.Store == nil:
		return rpcerr.WithReason(rpcerr.InvalidArgument("routing.cache.mode is set, but this router has no response cache"), rpcerr.ReasonCacheOption)
	case req.GetRouting().GetEnsemble() != nil:
		return rpcerr.WithReason(rpcerr.InvalidArgument("routing.cache.mode is set on an ensemble, whose answer is never cached (it depends on which members answer in time)"), rpcerr.ReasonCacheOption)
	case !cacheable(req):
		return rpcerr.WithReason(rpcerr.InvalidArgument("routing.cache.mode is set on a request that is never cached: only deterministic requests are (temperature 0, or a seed)"), rpcerr.ReasonCacheOption)
	}
	return nil
}

// cachePlan is one request's use of the cache.
type cachePlan struct {
	mode   routerv1.CacheMode
	out    Sink // the client's
	rec    *recorder
	began  time.Time
	key    cache.Key
	status string
	// The semantic layer's: the last user turn, its space and vector (to
	// index the answer under), a hit's similarity, or why there was none.
	space, text  string
	vec          []float32
	kind         string // of a hit: "exact" or "semantic"
	similarity   float32
	semanticMiss *generationv1.SemanticMiss
}

// planCache returns the request's cache plan, or nil when the request does
// not use the cache. Without routing.cache, a Cache-Control request header
// (metadata) may choose: no-store is off, no-cache or max-age=0 refresh; it
// is ignored where it cannot apply.
func (s *Server) planCache(ctx context.Context, req *routerv1.GenerateRequest, out Sink, began time.Time) *cachePlan {
	if s.cfg.Cache.Store == nil || !cacheable(req) {
		return nil
	}
	mode := req.GetRouting().GetCache().GetMode()
	if mode == routerv1.CacheMode_CACHE_MODE_UNSPECIFIED {
		mode = cacheControl(ctx)
	}
	p := &cachePlan{mode: mode, out: out, began: began}
	if mode != routerv1.CacheMode_CACHE_MODE_OFF {
		p.rec = &recorder{out: out, s: s, max: s.cfg.Cache.MaxEntryBytes}
	}
	return p
}

// cacheControl reads the request's Cache-Control directives.
func cacheControl(ctx context.Context) routerv1.CacheMode {
	md, _ := metadata.FromIncomingContext(ctx)
	mode := routerv1.CacheMode_CACHE_MODE_UNSPECIFIED
	for _, v := range md.Get("cache-control") {
		for d := range strings.SplitSeq(v, ",") {
			switch strings.ToLower(strings.TrimSpace(d)) {
			case "no-store":
				return routerv1.CacheMode_CACHE_MODE_OFF
			case "no-cache", "max-age=0":
				mode = routerv1.CacheMode_CACHE_MODE_REFRESH
			}
		}
	}
	return mode
}

// lookup runs once the caller's key is known: it names the answer and,
// unless the request refreshes or opts out, serves a stored one. It
// reports whether it served the request (or failed it: err).
func (s *Server) lookup(ctx context.Context, key *auth.Key, p *cachePlan, req *routerv1.GenerateRequest) (bool, error) {
	model := req.GetModel()
	if p.mode == routerv1.CacheMode_CACHE_MODE_OFF {
		s.reportCache(ctx, p, model, cacheOff, nil)
		return false, nil
	}
	p.key = cacheKey(req)
	if key != nil && !s.cfg.Cache.SharedAcrossKeys {
		p.key.Namespace = key.Name
	}
	if p.mode == routerv1.CacheMode_CACHE_MODE_REFRESH {
		if s.embedQuery(ctx, p, req) { // so that the new answer is indexed too
			p.semanticMiss = nil
		}
		s.reportCache(ctx, p, model, cacheRefresh, nil)
		return false, nil
	}
	var e *cache.Entry
	var ok bool
	var err error
	if sem := &s.cfg.Cache.Semantic; !sem.Only || sem.Index == nil {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		e, ok, err = s.cfg.Cache.Store.Get(gctx, p.key)
		cancel()
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return true, ctx.Err()
	case err != nil:
		p.rec = nil // the store is failing: do not store either
		s.storeFailed(err)
		s.reportCache(ctx, p, model, cacheBypass, nil)
		return false, nil
	case !ok:
		if e = s.semantic(ctx, p, req); e == nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if p.rec != nil {
				p.rec.miss = p.semanticMiss
			}
			s.reportCache(ctx, p, model, cacheMiss, nil)
			return false, nil
		}
	}
	if key != nil {
		// A hit uses one request of the key's quota, no tokens.
		if _, err := s.admitKey(ctx, key, 0); err != nil {
			return true, err
		}
	}
	s.reportCache(ctx, p, model, cacheHit, e)
	return true, s.replay(ctx, p, e, req)
}

// cacheKey names req's answer: a hash of the request with what does not
// change the answer left out (request id, user, strategy, session,
// constraints, cache options). The requested model is kept both in the
// hash and in the key, for purges.
func cacheKey(req *routerv1.GenerateRequest) cache.Key {
	n := &routerv1.GenerateRequest{Model: req.GetModel(), Prompt: req.GetPrompt(), Sampling: req.GetSampling(), Prefill: req.GetPrefill()}
	if f := req.GetRouting().GetFallbackModels(); len(f) > 0 {
		n.Routing = &routerv1.RoutingOptions{FallbackModels: f}
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(n)
	h := sha256.New()
	h.Write([]byte(cacheKeyVersion))
	h.Write(b)
	k := cache.Key{Model: req.GetModel()}
	h.Sum(k.Hash[:0])
	return k
}

// replay sends a stored answer as the stream it was: the start event with
// this request's id, the deltas as stored, and the end event marked as a
// hit (no attempts, no cost).
func (s *Server) replay(ctx context.Context, p *cachePlan, e *cache.Entry, req *routerv1.GenerateRequest) error {
	id := req.GetRequestId()
	if id == "" {
		id = enginehost.NewRequestID()
	}
	last := len(e.Events) - 1
	for i, b := range e.Events {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i > 0 && i < last {
			if err := s.forward(p.out, &rawcodec.Frame{B: b}, nil); err != nil {
				return err
			}
			continue
		}
		var m routerv1.GenerateResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			return status.Errorf(codes.Internal, "cached answer: %v", err)
		}
		switch ev := m.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			ev.Start.RequestId, ev.Start.Endpoint = id, ""
		case *routerv1.GenerateResponse_End:
			end := ev.End
			kind, sim := "exact", float32(1)
			if p.kind == "semantic" {
				kind, sim = "semantic", p.similarity
			}
			end.Cache = &generationv1.CacheHit{Kind: kind, Saved: durationpb.New(e.Took), Age: durationpb.New(s.now().Sub(e.Stored)),
				Similarity: sim, SavedCostUsd: end.GetCostUsd()}
			end.SemanticMiss = nil
			end.CostUsd, end.Attempts, end.Failovers = 0, nil, 0
			u := end.GetUsage()
			s.cfg.Metrics.CacheSaved(req.GetModel(), e.Took, int(u.GetPromptTokens()), int(u.GetCompletionTokens()))
		}
		if err := p.out.Send(&m); err != nil {
			return err
		}
	}
	return nil
}

// reportCache sets the x-cache response header (and x-cache-saved-ms on
// a hit) and counts the lookup.
func (s *Server) reportCache(ctx context.Context, p *cachePlan, model, st string, e *cache.Entry) {
	p.status = st
	md := metadata.Pairs("x-cache", st)
	if e != nil {
		md.Set("x-cache-saved-ms", strconv.FormatInt(e.Took.Milliseconds(), 10))
		if p.kind == "semantic" {
			md.Set("x-cache-kind", "semantic")
			md.Set("x-cache-similarity", strconv.FormatFloat(float64(p.similarity), 'f', 4, 32))
		} else {
			md.Set("x-cache-kind", "exact")
		}
	}
	_ = grpc.SetHeader(ctx, md) // not a gRPC call (a test), or headers already sent
	s.cfg.Metrics.CacheLookup(model, strings.ToLower(st))
}

// store saves the answer the recorder holds, after the request succeeded.
func (s *Server) store(ctx context.Context, p *cachePlan) {
	if p == nil || p.rec == nil || p.key == (cache.Key{}) {
		return
	}
	rec := p.rec
	if rec.over {
		s.cfg.Metrics.CacheStore("oversized")
		return
	}
	if len(rec.events) < 2 || eventOf(rec.events[0]) != 1 || eventOf(rec.events[len(rec.events)-1]) != 3 {
		return // not a whole answer (cannot happen for a finished request)
	}
	e := &cache.Entry{Events: rec.events, Took: s.now().Sub(p.began), Stored: s.now()}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := s.cfg.Cache.Store.Put(sctx, p.key, e, s.cfg.Cache.TTL); err != nil {
		s.storeFailed(err)
		s.cfg.Metrics.CacheStore("error")
		return
	}
	s.cfg.Metrics.CacheStore("stored")
	s.indexSemantic(p)
}

func eventOf(b []byte) int {
	f := rawcodec.Frame{B: b}
	n, _ := f.Event()
	return int(n)
}

// storeFailed logs a cache-store failure, at most every quotaLogEvery.
func (s *Server) storeFailed(err error) {
	s.cfg.Metrics.CacheStoreError()
	now := s.now().UnixNano()
	if last := s.cacheLog.Load(); now-last >= int64(quotaLogEvery) && s.cacheLog.CompareAndSwap(last, now) {
		s.cfg.Log.Warn("response cache store failed; bypassing it", "err", err)
	}
}

// recorder passes a stream's events to the client and keeps their bytes,
// up to max (past it the answer is not stored).
type recorder struct {
	out    Sink
	miss   *generationv1.SemanticMiss // added to the end event the client gets, not to the stored one
	s      *Server
	max    int
	size   int
	over   bool
	events [][]byte
}

func (r *recorder) keep(b []byte) {
	if r.over {
		return
	}
	if r.size += len(b); r.size > r.max {
		r.over, r.events = true, nil
		return
	}
	r.events = append(r.events, b)
}

// Send implements Sink.
func (r *recorder) Send(m *routerv1.GenerateResponse) error {
	if !r.over {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			return err
		}
		r.keep(b)
	}
	if end := m.GetEnd(); end != nil && r.miss != nil {
		end.SemanticMiss = r.miss
	}
	return r.out.Send(m)
}

// SendMsg takes the relay's raw frames, passed on as they are when the
// client's sink takes them, else decoded.
func (r *recorder) SendMsg(m any) error {
	f, ok := m.(*rawcodec.Frame)
	if !ok {
		return status.Errorf(codes.Internal, "recorder: unexpected message %T", m)
	}
	r.keep(f.B)
	if raw, ok := r.out.(interface{ SendMsg(any) error }); ok {
		return raw.SendMsg(f)
	}
	var d routerv1.GenerateResponse
	if err := proto.Unmarshal(f.B, &d); err != nil {
		return status.Errorf(codes.Internal, "decode worker event: %v", err)
	}
	return r.out.Send(&d)
}

// PurgeCache removes stored answers (an admin RPC).
func (s *Server) PurgeCache(ctx context.Context, req *routerv1.PurgeCacheRequest) (*routerv1.PurgeCacheResponse, error) {
	if err := s.authorizeAdmin(ctx, "PurgeCache"); err != nil {
		return nil, err
	}
	if s.cfg.Cache.Store == nil {
		return nil, rpcerr.ToStatus(rpcerr.FailedPrecondition("this router has no response cache (start it with -cache memory or -cache redis)"))
	}
	for _, f := range []struct{ name, v string }{{"key_name", req.GetKeyName()}, {"model", req.GetModel()}} {
		if len(f.v) > 256 || !utf8.ValidString(f.v) {
			return nil, rpcerr.ToStatus(rpcerr.InvalidArgument("%s must be valid UTF-8 of at most 256 bytes", f.name))
		}
	}
	if req.GetKeyName() != "" && s.cfg.Cache.SharedAcrossKeys {
		return nil, rpcerr.ToStatus(rpcerr.InvalidArgument("key_name: this router shares answers across API keys (-cache-shared-across-keys), so they are not stored per key; purge by model"))
	}
	if idx := s.cfg.Cache.Semantic.Index; idx != nil {
		idx.Purge(req.GetKeyName(), req.GetModel())
	}
	n, err := s.cfg.Cache.Store.Purge(ctx, req.GetKeyName(), req.GetModel())
	if err != nil {
		s.storeFailed(err)
		return nil, rpcerr.ToStatus(rpcerr.Unavailable("the cache store did not answer; %d answers were purged before it failed", n))
	}
	return &routerv1.PurgeCacheResponse{Purged: n}, nil
}

// authorizeAdmin admits the router's admin: the admin token as a bearer
// token, or a verified admin certificate.
func (s *Server) authorizeAdmin(ctx context.Context, method string) error {
	if mtls.PeerIdentity(ctx) == mtls.RoleAdmin || mtls.BearerMatches(ctx, s.cfg.AdminToken) {
		return nil
	}
	switch id := mtls.PeerIdentity(ctx); {
	case id != "":
		return rpcerr.ToStatus(rpcerr.PermissionDenied("%s is an admin RPC and %s is not the admin identity", method, id))
	case s.cfg.AdminToken == "":
		return rpcerr.ToStatus(rpcerr.PermissionDenied("%s is an admin RPC: this router has no admin token (-admin-token-file), so only an admin certificate may call it", method))
	default:
		return rpcerr.ToStatus(rpcerr.Unauthenticated("%s is an admin RPC: send the router's admin token as \"authorization: Bearer TOKEN\"", method))
	}
}
