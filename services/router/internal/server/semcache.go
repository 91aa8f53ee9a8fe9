package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"google.golang.org/protobuf/proto"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/services/router/internal/cache"
)

// SemanticConfig turns on the semantic layer of the response cache: after
// an exact miss, the request's last user turn is embedded by a worker
// serving Model (chosen like any request's worker) and compared with the
// last user turns of stored answers that match it in everything else
// (key, requested model, system prompt, earlier turns, tools, sampling,
// response format). The nearest is served when its cosine similarity
// reaches the model's threshold and Guard finds no negation, number or
// name that differs. Hybrid by construction: exact first, then semantic.
type SemanticConfig struct {
	// Index holds the vectors; nil: no semantic layer.
	Index *cache.Semantic
	// Model is the embedding model (e.g. use-lite, a sentence encoder
	// engine-onnx serves).
	Model string
	// Threshold is the similarity a hit needs; Thresholds overrides it per
	// requested model (or alias).
	Threshold  float32
	Thresholds map[string]float32
	// Timeout bounds the embedding call (default 500 ms): past it the
	// request goes to a worker as a miss.
	Timeout time.Duration
	// Only skips the exact lookup (answers are still stored under their
	// exact keys): a semantic-only cache, for comparing the layers.
	Only bool
}

// semanticKeyVersion leads the hashed space name.
const semanticKeyVersion = "llmrouter-semantic-v1\x00"

func (c *SemanticConfig) threshold(model string) float32 {
	if t, ok := c.Thresholds[model]; ok {
		return t
	}
	return c.Threshold
}

// semanticQuery splits a chat request into what is compared semantically
// (the last message, when it is the user's and plain text) and the name of
// the space it is compared in: a hash of everything else. ok is false for
// requests the semantic layer does not take.
func semanticQuery(req *routerv1.GenerateRequest, namespace string) (text, space string, ok bool) {
	chat := req.GetPrompt().GetChat()
	msgs := chat.GetMessages()
	if len(msgs) == 0 || req.GetPrefill() != "" {
		return "", "", false
	}
	last := msgs[len(msgs)-1]
	if last.GetRole() != generationv1.Role_ROLE_USER || len(last.GetToolCalls()) > 0 || last.GetContent() == "" {
		return "", "", false
	}
	rest := proto.Clone(req).(*routerv1.GenerateRequest)
	rest.RequestId, rest.User, rest.Routing = "", "", nil
	if f := req.GetRouting().GetFallbackModels(); len(f) > 0 {
		rest.Routing = &routerv1.RoutingOptions{FallbackModels: f}
	}
	restChat := rest.GetPrompt().GetChat()
	restChat.Messages[len(restChat.Messages)-1] = &generationv1.ChatMessage{Role: generationv1.Role_ROLE_USER, Name: last.GetName()}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rest)
	h := sha256.New()
	h.Write([]byte(semanticKeyVersion))
	h.Write([]byte(namespace))
	h.Write([]byte{0})
	h.Write(b)
	return last.GetContent(), hex.EncodeToString(h.Sum(nil)), true
}

// semantic looks for a stored answer to a close question after an exact
// miss. It returns the entry to replay, or nil with the plan's
// semanticMiss saying why not.
func (s *Server) semantic(ctx context.Context, p *cachePlan, req *routerv1.GenerateRequest) *cache.Entry {
	cfg := &s.cfg.Cache.Semantic
	if cfg.Index == nil {
		return nil
	}
	text, space, ok := semanticQuery(req, p.key.Namespace)
	if !ok {
		return nil
	}
	ectx, cancel := context.WithTimeout(ctx, cmpOr(cfg.Timeout, 500*time.Millisecond))
	resp, err := s.Embed(ectx, cfg.Model, []string{text})
	cancel()
	if err != nil || len(resp.GetEmbeddings()) != 1 {
		s.cfg.Log.Warn("semantic cache: no embedding", "model", cfg.Model, "err", err)
		s.cfg.Metrics.SemanticLookup(req.GetModel(), "embed_failed")
		return nil
	}
	vec := resp.GetEmbeddings()[0].GetValues()
	p.space, p.text, p.vec = space, text, vec
	threshold := cfg.threshold(req.GetModel())
	miss := func(sim float32, why string) *cache.Entry {
		p.semanticMiss = &generationv1.SemanticMiss{Similarity: sim, Refused: why, Threshold: threshold}
		s.cfg.Metrics.SemanticLookup(req.GetModel(), why)
		return nil
	}
	near, sim, found := cfg.Index.Nearest(space, vec)
	switch {
	case !found:
		return miss(0, "empty")
	case sim < threshold:
		return miss(sim, "below threshold")
	}
	if why := cache.Guard(near.Text, text); why != "" {
		return miss(sim, why)
	}
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	e, ok, err := s.cfg.Cache.Store.Get(gctx, near.Key)
	cancel()
	if err != nil || !ok {
		if err == nil {
			cfg.Index.Remove(near.Key) // its answer expired or was evicted
		}
		return miss(sim, "empty")
	}
	p.similarity = sim
	s.cfg.Metrics.SemanticLookup(req.GetModel(), "hit")
	return e
}

// indexSemantic adds a stored answer's vector (computed at lookup).
func (s *Server) indexSemantic(p *cachePlan) {
	if idx := s.cfg.Cache.Semantic.Index; idx != nil && p.vec != nil {
		idx.Add(cache.SemanticEntry{Space: p.space, Key: p.key, Text: p.text, Vec: p.vec}, s.cfg.Cache.TTL)
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
