package server_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
	"github.com/llm-runner-router/llmrouter/services/router/internal/cache"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

// stream is one routed stream as the client saw it: every event, in
// order, and the x-cache response header.
type stream struct {
	events []*routerv1.GenerateResponse
	xcache string
	saved  string
}

func (s stream) start() *genv1.StartEvent { return s.events[0].GetStart() }
func (s stream) end() *genv1.EndEvent     { return s.events[len(s.events)-1].GetEnd() }

// deltas are the stream's chunks: each delta's text and token ids.
func (s stream) deltas() []string {
	var out []string
	for _, e := range s.events {
		if d := e.GetDelta(); d != nil {
			out = append(out, d.GetText()+"|"+idsOf(d.GetTokenIds()))
		}
	}
	return out
}

func idsOf(ids []uint32) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(strconv.Itoa(int(id)) + ",")
	}
	return b.String()
}

func generate(ctx context.Context, t *testing.T, c routerv1.RouterServiceClient, r *routerv1.GenerateRequest) (stream, error) {
	t.Helper()
	var hdr metadata.MD
	s, err := c.Generate(ctx, r, grpc.Header(&hdr))
	if err != nil {
		return stream{}, err
	}
	var out stream
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, err
		}
		out.events = append(out.events, m)
	}
	if v := hdr.Get("x-cache"); len(v) > 0 {
		out.xcache = v[0]
	}
	if v := hdr.Get("x-cache-saved-ms"); len(v) > 0 {
		out.saved = v[0]
	}
	return out, nil
}

// metric returns the value of the metric line starting with prefix (0 if
// there is none).
func metric(t *testing.T, m *mesh, prefix string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			v, err := strconv.ParseFloat(strings.TrimPrefix(line, prefix+" "), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

func memCache() server.CacheConfig {
	return server.CacheConfig{Store: cache.NewMemory(1 << 20)}
}

// A repeated deterministic request is answered from the cache without a
// worker, as the same stream: same chunks, same usage, marked as a hit.
func TestCacheReplaysStreams(t *testing.T) {
	cfg := simCfg()
	cfg.TTFT = 30 * time.Millisecond
	w := startWorker(t, cfg)
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Cache: memCache()}, ep(w.addr))
	ctx := context.Background()
	first, err := generate(ctx, t, m.client, req("m", 30))
	if err != nil {
		t.Fatal(err)
	}
	if first.xcache != "MISS" || first.end().GetCache() != nil || w.backend.Started() != 1 {
		t.Fatalf("first request: x-cache %q, end %v, %d generations", first.xcache, first.end(), w.backend.Started())
	}
	hit, err := generate(ctx, t, m.client, req("m", 30))
	if err != nil {
		t.Fatal(err)
	}
	if w.backend.Started() != 1 {
		t.Fatalf("the hit reached the worker: %d generations", w.backend.Started())
	}
	if hit.xcache != "HIT" || hit.saved == "" {
		t.Fatalf("hit headers: x-cache %q, x-cache-saved-ms %q", hit.xcache, hit.saved)
	}
	if got, want := strings.Join(hit.deltas(), "\n"), strings.Join(first.deltas(), "\n"); got != want || len(first.deltas()) < 2 {
		t.Fatalf("replayed chunks differ:\n%s\nfirst:\n%s", got, want)
	}
	if !proto.Equal(hit.end().GetUsage(), first.end().GetUsage()) || hit.end().GetUsage().GetCompletionTokens() != 30 {
		t.Fatalf("usage %v, first %v", hit.end().GetUsage(), first.end().GetUsage())
	}
	c := hit.end().GetCache()
	if c.GetKind() != "exact" || c.GetSimilarity() != 1 || c.GetSaved().AsDuration() < 30*time.Millisecond || len(hit.end().GetAttempts()) != 0 ||
		hit.end().GetCostUsd() != 0 || c.GetSavedCostUsd() != first.end().GetCostUsd() || first.end().GetCostUsd() == 0 {
		t.Fatalf("hit end event %v (first cost %v)", hit.end(), first.end().GetCostUsd())
	}
	if hit.start().GetRequestId() == first.start().GetRequestId() || hit.start().GetModel() != "m" || hit.start().GetEndpoint() != "" {
		t.Fatalf("hit start %v, first %v", hit.start(), first.start())
	}
	if got := metric(t, m, `llmrouter_cache_requests_total{model="m",result="hit"}`); got != 1 {
		t.Fatalf("hits counted: %v", got)
	}
	if got := metric(t, m, `llmrouter_cache_saved_tokens_total{kind="completion",model="m"}`); got != 30 {
		t.Fatalf("saved completion tokens: %v", got)
	}

	// A seeded sampled request is reproducible, so cached; an unseeded
	// one never is (and carries no x-cache header).
	seeded := req("m", 10)
	seeded.Sampling.Temperature, seeded.Sampling.Seed = proto.Float32(0.9), proto.Uint64(7)
	for _, want := range []string{"MISS", "HIT"} {
		if s, err := generate(ctx, t, m.client, seeded); err != nil || s.xcache != want {
			t.Fatalf("seeded: %q %v, want %s", s.xcache, err, want)
		}
	}
	sampled := req("m", 10)
	sampled.Sampling.Temperature = proto.Float32(0.9)
	before := w.backend.Started()
	for range 2 {
		if s, err := generate(ctx, t, m.client, sampled); err != nil || s.xcache != "" {
			t.Fatalf("sampled: %q %v", s.xcache, err)
		}
	}
	if w.backend.Started() != before+2 {
		t.Fatal("a sampled request was answered from the cache")
	}
}

// Answers are per API key unless shared; every field that changes the
// answer is in the key; off and refresh do what they say, from the option
// or Cache-Control; the options are refused where they cannot apply.
func TestCacheKeysAndOptions(t *testing.T) {
	w := startWorker(t, simCfg())
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte(`{"keys": [{"name": "a", "key": "sk-a-secret"}, {"name": "b", "key": "sk-b-secret"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := auth.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	as := func(key string, kv ...string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), append([]string{"authorization", "Bearer " + key}, kv...)...)
	}
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Keys: keys, Cache: memCache()}, ep(w.addr))
	withMode := func(r *routerv1.GenerateRequest, mode routerv1.CacheMode) *routerv1.GenerateRequest {
		r.Routing = &routerv1.RoutingOptions{Cache: &routerv1.CacheOptions{Mode: mode}}
		return r
	}
	withUser := func(r *routerv1.GenerateRequest) *routerv1.GenerateRequest {
		r.User, r.RequestId = "someone", "my-id"
		return r
	}
	steps := []struct {
		name  string
		ctx   context.Context
		req   *routerv1.GenerateRequest
		cache string
	}{
		{"a first", as("sk-a-secret"), req("m", 8), "MISS"},
		{"a again", as("sk-a-secret"), req("m", 8), "HIT"},
		{"b has its own", as("sk-b-secret"), req("m", 8), "MISS"},
		{"other max_tokens", as("sk-a-secret"), req("m", 9), "MISS"},
		{"user and request id do not matter", as("sk-a-secret"), withUser(req("m", 8)), "HIT"},
		{"off", as("sk-a-secret"), withMode(req("m", 8), routerv1.CacheMode_CACHE_MODE_OFF), "OFF"},
		{"refresh", as("sk-a-secret"), withMode(req("m", 8), routerv1.CacheMode_CACHE_MODE_REFRESH), "REFRESH"},
		{"refreshed", as("sk-a-secret"), req("m", 8), "HIT"},
		{"cache-control no-cache", as("sk-a-secret", "cache-control", "no-cache"), req("m", 8), "REFRESH"},
		{"cache-control no-store", as("sk-a-secret", "cache-control", "max-age=0, no-store"), req("m", 8), "OFF"},
	}
	for _, s := range steps {
		before := w.backend.Started()
		got, err := generate(s.ctx, t, m.client, s.req)
		if err != nil || got.xcache != s.cache {
			t.Fatalf("%s: x-cache %q, %v; want %s", s.name, got.xcache, err, s.cache)
		}
		if generated := w.backend.Started() - before; (s.cache == "HIT") != (generated == 0) {
			t.Fatalf("%s: %s with %d generations", s.name, s.cache, generated)
		}
	}

	sampled := withMode(req("m", 8), routerv1.CacheMode_CACHE_MODE_REFRESH)
	sampled.Sampling.Temperature = proto.Float32(0.7)
	_, err = generate(as("sk-a-secret"), t, m.client, sampled)
	if status.Code(err) != codes.InvalidArgument || rpcerr.Reason(err) != rpcerr.ReasonCacheOption || !strings.Contains(status.Convert(err).Message(), "never cached") {
		t.Fatalf("cache mode on a sampled request: %v", err)
	}
	bad := withMode(req("m", 8), routerv1.CacheMode(9))
	if _, err := generate(as("sk-a-secret"), t, m.client, bad); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown cache mode: %v", err)
	}
	// Cache-Control on a request the cache cannot take is ignored.
	sampled.Routing = nil
	if got, err := generate(as("sk-a-secret", "cache-control", "no-cache"), t, m.client, sampled); err != nil || got.xcache != "" {
		t.Fatalf("cache-control on a sampled request: %q %v", got.xcache, err)
	}

	none := startRouterCfg(t, server.Config{MaxAttempts: 3}, ep(w.addr))
	_, err = generate(context.Background(), t, none.client, withMode(req("m", 8), routerv1.CacheMode_CACHE_MODE_OFF))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "no response cache") {
		t.Fatalf("cache mode without a cache: %v", err)
	}

	shared := startRouterCfg(t, server.Config{MaxAttempts: 3, Keys: keys, Cache: server.CacheConfig{Store: cache.NewMemory(1 << 20), SharedAcrossKeys: true}}, ep(w.addr))
	for _, want := range []struct{ key, cache string }{{"sk-a-secret", "MISS"}, {"sk-b-secret", "HIT"}} {
		if got, err := generate(as(want.key), t, shared.client, req("m", 8)); err != nil || got.xcache != want.cache {
			t.Fatalf("shared across keys, %s: %q %v", want.key, got.xcache, err)
		}
	}
}

// Only whole answers within the entry limit are stored: a stream that
// broke, or one past MaxEntryBytes (counted), is generated again.
func TestCacheStoresOnlyWholeAnswers(t *testing.T) {
	cfg := simCfg()
	cfg.TokensPerSecond = 50
	a, b := startWorker(t, cfg), startWorker(t, simCfg())
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, NoFailover: true, Cache: server.CacheConfig{Store: cache.NewMemory(1 << 20), MaxEntryBytes: 1200}}, ep(a.addr))
	s, err := m.client.Generate(context.Background(), req("m", 40))
	if err != nil {
		t.Fatal(err)
	}
	for got := 0; got < 3; {
		msg, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got += len(msg.GetDelta().GetTokenIds())
	}
	a.srv.GRPC.Stop() // the worker dies mid-stream
	for err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("broken stream: %v", err)
	}
	m.set(t, ep(b.addr))
	if got, err := generate(context.Background(), t, m.client, req("m", 40)); err != nil || got.xcache != "MISS" || b.backend.Started() != 1 {
		t.Fatalf("after a broken stream: %q %v, %d generations", got.xcache, err, b.backend.Started())
	}
	if got, err := generate(context.Background(), t, m.client, req("m", 40)); err != nil || got.xcache != "HIT" {
		t.Fatalf("the whole answer: %q %v", got.xcache, err)
	}
	// 120 tokens of events are over 1200 bytes.
	for _, want := range []string{"MISS", "MISS"} {
		if got, err := generate(context.Background(), t, m.client, req("m", 120)); err != nil || got.xcache != want {
			t.Fatalf("oversized: %q %v", got.xcache, err)
		}
	}
	if got := metric(t, m, `llmrouter_cache_stores_total{result="oversized"}`); got != 2 {
		t.Fatalf("oversized answers counted: %v", got)
	}
	if got := metric(t, m, `llmrouter_cache_stores_total{result="stored"}`); got != 1 {
		t.Fatalf("stored answers counted: %v", got)
	}
}

// Replicas share answers through Redis; with Redis down the cache is
// bypassed (counted) and requests are served all the same.
func TestCacheRedisSharedAndDown(t *testing.T) {
	redisSrv := testkit.StartRedis(t)
	w := startWorker(t, simCfg())
	newRouter := func() *mesh {
		rc := cache.NewRedis(redisSrv.Addr, "test:cache:")
		t.Cleanup(func() { rc.Close() })
		return startRouterCfg(t, server.Config{MaxAttempts: 3, Cache: server.CacheConfig{Store: rc}, AdminToken: "admin-token-0123456789"}, ep(w.addr))
	}
	one, two := newRouter(), newRouter()
	first, err := generate(context.Background(), t, one.client, req("m", 12))
	if err != nil || first.xcache != "MISS" {
		t.Fatalf("replica one: %q %v", first.xcache, err)
	}
	hit, err := generate(context.Background(), t, two.client, req("m", 12))
	if err != nil || hit.xcache != "HIT" || w.backend.Started() != 1 || strings.Join(hit.deltas(), "\n") != strings.Join(first.deltas(), "\n") {
		t.Fatalf("replica two: %q %v, %d generations", hit.xcache, err, w.backend.Started())
	}
	admin := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer admin-token-0123456789")
	if _, err := generate(context.Background(), t, one.client, req("m", 13)); err != nil {
		t.Fatal(err)
	}
	if p, err := two.client.PurgeCache(admin, &routerv1.PurgeCacheRequest{Model: "m"}); err != nil || p.GetPurged() != 2 {
		t.Fatalf("purge: %v %v", p, err)
	}
	if got, err := generate(context.Background(), t, two.client, req("m", 12)); err != nil || got.xcache != "MISS" {
		t.Fatalf("after the purge: %q %v", got.xcache, err)
	}

	redisSrv.Kill()
	<-redisSrv.Exited()
	for range 3 {
		if got, err := generate(context.Background(), t, one.client, req("m", 12)); err != nil || got.xcache != "BYPASS" || got.end().GetUsage().GetCompletionTokens() != 12 {
			t.Fatalf("redis down: %q %v", got.xcache, err)
		}
	}
	if got := metric(t, one, `llmrouter_cache_requests_total{model="m",result="bypass"}`); got != 3 {
		t.Fatalf("bypasses counted: %v", got)
	}
	if got := metric(t, one, `llmrouter_cache_store_errors_total`); got < 1 {
		t.Fatalf("store errors counted: %v", got)
	}
	if _, err := two.client.PurgeCache(admin, &routerv1.PurgeCacheRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("purge with redis down: %v", err)
	}
}

// PurgeCache is for the admin only; it says what it removed.
func TestPurgeCacheAuthorization(t *testing.T) {
	w := startWorker(t, simCfg())
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Cache: memCache(), AdminToken: "admin-token-0123456789"}, ep(w.addr))
	for _, n := range []int32{5, 6} {
		if _, err := generate(context.Background(), t, m.client, req("m", n)); err != nil {
			t.Fatal(err)
		}
	}
	bearer := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		req  *routerv1.PurgeCacheRequest
		code codes.Code
	}{
		{"no credential", context.Background(), &routerv1.PurgeCacheRequest{}, codes.Unauthenticated},
		{"wrong token", bearer("admin-token-guess"), &routerv1.PurgeCacheRequest{}, codes.Unauthenticated},
		{"bad model", bearer("admin-token-0123456789"), &routerv1.PurgeCacheRequest{Model: strings.Repeat("m", 300)}, codes.InvalidArgument},
	} {
		if _, err := m.client.PurgeCache(tt.ctx, tt.req); status.Code(err) != tt.code {
			t.Fatalf("%s: %v, want %v", tt.name, err, tt.code)
		}
	}
	if got, err := generate(context.Background(), t, m.client, req("m", 5)); err != nil || got.xcache != "HIT" {
		t.Fatalf("refused purges removed answers: %q %v", got.xcache, err)
	}
	p, err := m.client.PurgeCache(bearer("admin-token-0123456789"), &routerv1.PurgeCacheRequest{})
	if err != nil || p.GetPurged() != 2 {
		t.Fatalf("admin purge: %v %v", p, err)
	}
	if got, err := generate(context.Background(), t, m.client, req("m", 5)); err != nil || got.xcache != "MISS" {
		t.Fatalf("after the purge: %q %v", got.xcache, err)
	}

	noToken := startRouterCfg(t, server.Config{MaxAttempts: 3, Cache: memCache()}, ep(w.addr))
	if _, err := noToken.client.PurgeCache(bearer("admin-token-0123456789"), &routerv1.PurgeCacheRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a router without an admin token: %v", err)
	}
	noCache := startRouterCfg(t, server.Config{MaxAttempts: 3, AdminToken: "admin-token-0123456789"}, ep(w.addr))
	if _, err := noCache.client.PurgeCache(bearer("admin-token-0123456789"), &routerv1.PurgeCacheRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a router without a cache: %v", err)
	}
}
