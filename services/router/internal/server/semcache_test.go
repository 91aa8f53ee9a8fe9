package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/services/router/internal/cache"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

func chatReq(system, user string) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{Model: "m", Sampling: &genv1.SamplingParams{MaxTokens: 12, Temperature: proto.Float32(0)},
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{
			{Role: genv1.Role_ROLE_SYSTEM, Content: system}, {Role: genv1.Role_ROLE_USER, Content: user}}}}}}
}

// The semantic layer serves a close question's answer (the sim worker's
// embeddings follow word overlap, as a sentence encoder's roughly do), and
// refuses, with the reason and similarity in the end event, questions that
// differ in a negation, a number or a name, questions under another system
// prompt, and questions below the threshold.
func TestSemanticCache(t *testing.T) {
	w := startWorker(t, simCfg(sim.ModelConfig{Name: "m", Quality: 0.5, CostPer1KOutput: 1}, sim.ModelConfig{Name: "emb", Quality: 0.5, EmbeddingDim: 256}))
	cfg := memCache()
	cfg.Semantic = server.SemanticConfig{Index: cache.NewSemantic(100), Model: "emb", Threshold: 0.8}
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Cache: cfg, AdminToken: "admin-token-0123456789"}, ep(w.addr, "m", "emb"))
	ctx := context.Background()
	ask := func(system, user string) stream {
		t.Helper()
		s, err := generate(ctx, t, m.client, chatReq(system, user))
		if err != nil {
			t.Fatalf("%q: %v", user, err)
		}
		return s
	}
	first := ask("Be brief.", "What is the capital of France?")
	if miss := first.end().GetSemanticMiss(); first.xcache != "MISS" || miss.GetRefused() != "empty" || miss.GetThreshold() != 0.8 {
		t.Fatalf("first: x-cache %q, semantic miss %v", first.xcache, miss)
	}
	generations := w.backend.Started()

	hit := ask("Be brief.", "what is the capital of france")
	c := hit.end().GetCache()
	if hit.xcache != "HIT" || c.GetKind() != "semantic" || c.GetSimilarity() < 0.99 || w.backend.Started() != generations {
		t.Fatalf("paraphrase: x-cache %q, cache %v, %d generations (was %d)", hit.xcache, c, w.backend.Started(), generations)
	}
	if got, want := strings.Join(hit.deltas(), ""), strings.Join(first.deltas(), ""); got != want || hit.end().GetSemanticMiss() != nil {
		t.Fatalf("semantic hit replayed %q, the answer was %q (miss %v)", got, want, hit.end().GetSemanticMiss())
	}

	for _, tc := range []struct{ system, user, refused string }{
		{"Be brief.", "What is not the capital of France?", "negation"},
		{"Be brief.", "What is the capital of France in 1900?", "number"},
		{"Be brief.", "What is the capital of Germany?", "entity"},
		{"Be verbose.", "What is the capital of France?", "empty"},
		{"Be brief.", "How do I bake sourdough bread at home?", "below_threshold"},
	} {
		before := w.backend.Started()
		s := ask(tc.system, tc.user)
		miss := s.end().GetSemanticMiss()
		if s.xcache != "MISS" || s.end().GetCache() != nil || miss.GetRefused() != tc.refused || w.backend.Started() != before+1 {
			t.Errorf("%q under %q: x-cache %q, cache %v, semantic miss %v; want refused %q and a generation", tc.user, tc.system, s.xcache, s.end().GetCache(), miss, tc.refused)
		}
		if tc.refused != "empty" && tc.refused != "below_threshold" && miss.GetSimilarity() < 0.8 {
			t.Errorf("%q: a guard refused it at similarity %v, below the threshold", tc.user, miss.GetSimilarity())
		}
	}
	for result, want := range map[string]float64{"hit": 1, "negation": 1, "number": 1, "entity": 1} {
		if got := metric(t, m, `llmrouter_semantic_cache_lookups_total{model="m",result="`+result+`"}`); got != want {
			t.Errorf("semantic lookups %s: %v, want %v", result, got, want)
		}
	}
	// A purge removes the vectors with the answers: the paraphrase then
	// finds nothing to compare with.
	admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer admin-token-0123456789")
	if _, err := m.client.PurgeCache(admin, &routerv1.PurgeCacheRequest{Model: "m"}); err != nil {
		t.Fatal(err)
	}
	if s := ask("Be brief.", "what is the capital of france"); s.xcache != "MISS" || s.end().GetSemanticMiss().GetRefused() != "empty" {
		t.Fatalf("after the purge: x-cache %q, semantic miss %v", s.xcache, s.end().GetSemanticMiss())
	}
}

// A sentence encoder (embeddings_only) is never given a generation: asked
// for one, the router refuses it as it refuses any request a model lacks
// the capability for (InvalidArgument naming it) before trying a worker;
// the encoder still embeds for the semantic cache.
func TestEncoderGetsNoGenerations(t *testing.T) {
	w := startWorker(t, simCfg(sim.ModelConfig{Name: "m", Quality: 0.5}, sim.ModelConfig{Name: "emb", Quality: 0.5, EmbeddingDim: 64}))
	e := ep(w.addr, "m", "emb")
	e.Models[1].Capabilities = &enginev1.Capabilities{Embeddings: true, EmbeddingsOnly: true}
	cfg := memCache()
	cfg.Semantic = server.SemanticConfig{Index: cache.NewSemantic(10), Model: "emb", Threshold: 0.9}
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Cache: cfg}, e)
	req := chatReq("s", "hello")
	req.Model = "emb"
	if _, err := generate(context.Background(), t, m.client, req); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "sentence encoder") || w.backend.Started() != 0 {
		t.Fatalf("generation on an encoder: %v (%d generations reached it)", err, w.backend.Started())
	}
	for i, text := range []string{"Hello there", "hello, there!"} {
		s, err := generate(context.Background(), t, m.client, chatReq("s", text))
		if err != nil || (i == 1) != (s.end().GetCache().GetKind() == "semantic") {
			t.Fatalf("%q: %v, cache %v", text, err, s.end().GetCache())
		}
	}
}

// Without an encoder answering, the semantic layer steps aside: the
// request is served as a miss, the end event says why, and the exact layer
// still works.
func TestSemanticCacheWithoutEncoder(t *testing.T) {
	w := startWorker(t, simCfg())
	cfg := memCache()
	cfg.Semantic = server.SemanticConfig{Index: cache.NewSemantic(10), Model: "no-such-encoder", Threshold: 0.8, Timeout: 200 * time.Millisecond}
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Cache: cfg}, ep(w.addr))
	for i, want := range []string{"MISS", "HIT"} {
		s, err := generate(context.Background(), t, m.client, chatReq("s", "hello"))
		if err != nil || s.xcache != want {
			t.Fatalf("request %d: x-cache %q, %v; want %s", i, s.xcache, err, want)
		}
		if miss := s.end().GetSemanticMiss(); i == 0 && miss.GetRefused() != "embed_failed" {
			t.Fatalf("semantic miss %v, want embed_failed", miss)
		}
	}
	if got := metric(t, m, `llmrouter_semantic_cache_lookups_total{model="m",result="embed_failed"}`); got != 1 {
		t.Fatalf("embed_failed counted %v times", got)
	}
}
