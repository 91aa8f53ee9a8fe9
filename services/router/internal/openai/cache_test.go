package openai_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/services/router/internal/cache"
	"github.com/llm-runner-router/llmrouter/services/router/internal/openai"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

func postHeaders(t *testing.T, url, body string, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	r, _ := http.NewRequest("POST", url, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, r)
}

// The response cache over HTTP: X-Cache on whole and streamed responses,
// the hit in the llmrouter report, Cache-Control and the cache field.
func TestCacheOverHTTP(t *testing.T) {
	url := api(t, server.Config{Cache: server.CacheConfig{Store: cache.NewMemory(1 << 20)}}) + "/v1/chat/completions"
	body := `{"model":"m","temperature":0,"max_tokens":12,"messages":[{"role":"user","content":"hi"}]}`
	first, v1 := postHeaders(t, url, body)
	hit, v2 := postHeaders(t, url, body)
	if first.Header.Get("X-Cache") != "MISS" || hit.Header.Get("X-Cache") != "HIT" || hit.Header.Get("X-Cache-Saved-Ms") == "" {
		t.Fatalf("X-Cache %q then %q (saved %q)", first.Header.Get("X-Cache"), hit.Header.Get("X-Cache"), hit.Header.Get("X-Cache-Saved-Ms"))
	}
	msg := func(v map[string]any) any {
		return v["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]
	}
	if msg(v1) != msg(v2) || fmt.Sprint(v1["usage"]) != fmt.Sprint(v2["usage"]) {
		t.Fatalf("hit %v %v, first %v %v", msg(v2), v2["usage"], msg(v1), v1["usage"])
	}
	if c, _ := v2["llmrouter"].(map[string]any)["cache"].(map[string]any); c["kind"] != "exact" || c["similarity"] != 1.0 {
		t.Fatalf("llmrouter report of a hit: %v", v2["llmrouter"])
	}
	// Two choices of a greedy request: both the stored answer.
	two, _ := postHeaders(t, url, strings.Replace(body, `"temperature":0`, `"temperature":0,"n":2`, 1))
	if two.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("n=2: X-Cache %q", two.Header.Get("X-Cache"))
	}
	refreshed, _ := postHeaders(t, url, body, "Cache-Control", "no-cache")
	if refreshed.Header.Get("X-Cache") != "REFRESH" {
		t.Fatalf("Cache-Control no-cache: X-Cache %q", refreshed.Header.Get("X-Cache"))
	}

	stream := strings.Replace(body, `"max_tokens":12`, `"max_tokens":13,"stream":true`, 1)
	var texts []string
	for _, want := range []string{"MISS", "HIT"} {
		hdr, chunks := streamed(t, url, stream)
		if hdr.Get("X-Cache") != want {
			t.Fatalf("stream: X-Cache %q, want %s", hdr.Get("X-Cache"), want)
		}
		var text strings.Builder
		for _, c := range chunks {
			for _, ch := range c["choices"].([]any) {
				if s, ok := ch.(map[string]any)["delta"].(map[string]any)["content"].(string); ok {
					text.WriteString(s + "|")
				}
			}
		}
		texts = append(texts, text.String())
	}
	if texts[0] != texts[1] || texts[0] == "" {
		t.Fatalf("streamed chunks differ: %q, %q", texts[0], texts[1])
	}

	for _, tt := range []struct{ name, body, msg string }{
		{"unknown value", strings.Replace(body, `"temperature":0`, `"temperature":0,"cache":"sometimes"`, 1), `cache must be "off" or "refresh"`},
		{"sampled request", strings.Replace(body, `"temperature":0`, `"temperature":0.7,"cache":"refresh"`, 1), "never cached"},
	} {
		resp, v := postHeaders(t, url, tt.body)
		e, _ := v["error"].(map[string]any)
		if resp.StatusCode != 400 || e["param"] != "cache" || !strings.Contains(fmt.Sprint(e["message"]), tt.msg) {
			t.Fatalf("%s: %d %v", tt.name, resp.StatusCode, v)
		}
	}
}

// POST /admin/cache/purge passes the bearer token to the RPC and answers
// in the API's shapes.
func TestPurgeHandler(t *testing.T) {
	h := openai.PurgeHandler(func(ctx context.Context, r *routerv1.PurgeCacheRequest) (*routerv1.PurgeCacheResponse, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if a := md.Get("authorization"); len(a) == 0 || a[0] != "Bearer admin-token-0123456789" {
			return nil, rpcerr.ToStatus(rpcerr.Unauthenticated("send the admin token"))
		}
		return &routerv1.PurgeCacheResponse{Purged: int64(len(r.GetModel()))}, nil
	})
	hs := httptest.NewServer(h)
	defer hs.Close()
	if resp, v := postHeaders(t, hs.URL, `{"model":"abc"}`, "Authorization", "Bearer admin-token-0123456789"); resp.StatusCode != 200 || v["purged"] != 3.0 {
		t.Fatalf("purge: %d %v", resp.StatusCode, v)
	}
	if resp, v := postHeaders(t, hs.URL, `{}`); resp.StatusCode != 401 || v["error"] == nil {
		t.Fatalf("purge without the token: %d %v", resp.StatusCode, v)
	}
	if resp, _ := postHeaders(t, hs.URL, `{"modle":"abc"}`, "Authorization", "Bearer admin-token-0123456789"); resp.StatusCode != 400 {
		t.Fatalf("purge with an unknown field: %d", resp.StatusCode)
	}
}

// The semantic layer over HTTP: a close question gets the stored answer,
// marked in the headers and the llmrouter report; a negated one is refused
// with the reason.
func TestSemanticCacheOverHTTP(t *testing.T) {
	cfg := server.Config{Cache: server.CacheConfig{Store: cache.NewMemory(1 << 20),
		Semantic: server.SemanticConfig{Index: cache.NewSemantic(10), Model: "emb", Threshold: 0.8}}}
	url := apiModels(t, cfg, sim.ModelConfig{Name: "m", CostPer1KOutput: 1}, sim.ModelConfig{Name: "emb", EmbeddingDim: 128}) + "/v1/chat/completions"
	ask := func(q string) (*http.Response, map[string]any) {
		return postHeaders(t, url, `{"model":"m","temperature":0,"max_tokens":8,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"`+q+`"}]}`)
	}
	ask("Is coffee bad for you?")
	hit, v := ask("is coffee bad for you")
	if hit.Header.Get("X-Cache") != "HIT" || hit.Header.Get("X-Cache-Kind") != "semantic" || hit.Header.Get("X-Cache-Similarity") == "" {
		t.Fatalf("paraphrase: X-Cache %q, kind %q, similarity %q", hit.Header.Get("X-Cache"), hit.Header.Get("X-Cache-Kind"), hit.Header.Get("X-Cache-Similarity"))
	}
	if c, _ := v["llmrouter"].(map[string]any)["cache"].(map[string]any); c["kind"] != "semantic" {
		t.Fatalf("llmrouter report of a semantic hit: %v", v["llmrouter"])
	}
	miss, v := ask("Is coffee not bad for you?")
	if m, _ := v["llmrouter"].(map[string]any)["semantic_miss"].(map[string]any); miss.Header.Get("X-Cache") != "MISS" || m["refused"] != "negation" {
		t.Fatalf("negation: X-Cache %q, report %v", miss.Header.Get("X-Cache"), v["llmrouter"])
	}
}
