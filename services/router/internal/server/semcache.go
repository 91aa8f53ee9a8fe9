package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
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
	if len(last.GetContent()) > maxSemanticBytes {
		return "", "", false
	}
	// What the exact key covers (cacheKey), with the last user turn's text
	// left out.
	chatRest := proto.Clone(chat).(*generationv1.ChatMessages)
	chatRest.Messages[len(chatRest.Messages)-1] = &generationv1.ChatMessage{Role: generationv1.Role_ROLE_USER, Name: last.GetName()}
	rest := &routerv1.GenerateRequest{Model: req.GetModel(), Sampling: req.GetSampling(),
		Prompt: &generationv1.Prompt{Kind: &generationv1.Prompt_Chat{Chat: chatRest}}}
	if f := req.GetRouting().GetFallbackModels(); len(f) > 0 {
		rest.Routing = &routerv1.RoutingOptions{FallbackModels: f}
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rest)
	h := sha256.New()
	h.Write([]byte(semanticKeyVersion))
	h.Write([]byte(namespace))
	h.Write([]byte{0})
	h.Write(b)
	return last.GetContent(), hex.EncodeToString(h.Sum(nil)), true
}

// maxSemanticBytes bounds the last user turn the semantic layer takes:
// an encoder reads a bounded prefix (USE lite: 128 tokens), so two long
// turns that open alike would look the same; longer ones are exact-only.
const maxSemanticBytes = 512

// maxEmbeds bounds the semantic layer's embedding calls in flight.
const maxEmbeds = 32

// tracerName names the router's own spans.
const tracerName = "github.com/llm-runner-router/llmrouter/services/router"

// embedQuery embeds the request's last user turn for the semantic layer
// (and for indexing its answer); false when the layer does not take the
// request or no embedding came in time (p.semanticMiss then says so).
func (s *Server) embedQuery(ctx context.Context, p *cachePlan, req *routerv1.GenerateRequest) bool {
	cfg := &s.cfg.Cache.Semantic
	if cfg.Index == nil {
		return false
	}
	text, space, ok := semanticQuery(req, p.key.Namespace)
	if !ok {
		return false
	}
	// The router's own call, under its own span, not the caller's request
	// (no key checks, quota or admission), at most maxEmbeds at once: past
	// that the request goes on as a miss rather than wait.
	select {
	case s.embeds <- struct{}{}:
	default:
		p.semanticMiss = &generationv1.SemanticMiss{Refused: "embed_busy", Threshold: cfg.threshold(req.GetModel())}
		s.cfg.Metrics.SemanticLookup(req.GetModel(), "embed_busy")
		return false
	}
	ectx, span := trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName).Start(context.WithValue(ctx, internalCall{}, true), "semantic_cache.embed")
	ectx, cancel := context.WithTimeout(ectx, cmp.Or(cfg.Timeout, 500*time.Millisecond))
	resp, err := s.Embed(ectx, cfg.Model, []string{text})
	cancel()
	<-s.embeds
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	var vec []float32
	if err == nil && len(resp.GetEmbeddings()) == 1 {
		vec, err = unit(resp.GetEmbeddings()[0].GetValues())
	} else if err == nil {
		err = fmt.Errorf("%d embeddings for one input", len(resp.GetEmbeddings()))
	}
	if err != nil {
		if ctx.Err() != nil {
			return false // the client left: nothing to report
		}
		s.embedFailed(cfg.Model, err)
		p.semanticMiss = &generationv1.SemanticMiss{Refused: "embed_failed", Threshold: cfg.threshold(req.GetModel())}
		s.cfg.Metrics.SemanticLookup(req.GetModel(), "embed_failed")
		return false
	}
	// Vectors of different sizes (another encoder under the same name)
	// never meet: the size is part of the space.
	p.space, p.text, p.vec = space+"/"+strconv.Itoa(len(vec)), text, vec
	return true
}

// unit checks an embedding and scales it to unit length, so that the dot
// product is the cosine whatever the encoder returns.
func unit(v []float32) ([]float32, error) {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	if len(v) == 0 || sum == 0 || math.IsNaN(sum) || math.IsInf(sum, 0) {
		return nil, fmt.Errorf("an embedding of %d values that is empty, zero or not finite", len(v))
	}
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(float64(x) / math.Sqrt(sum))
	}
	return out, nil
}

// embedFailed logs a failed embedding, at most every quotaLogEvery.
func (s *Server) embedFailed(model string, err error) {
	now := s.now().UnixNano()
	if last := s.embedLog.Load(); now-last >= int64(quotaLogEvery) && s.embedLog.CompareAndSwap(last, now) {
		s.cfg.Log.Warn("semantic cache: no embedding; serving as a miss", "model", model, "err", err)
	}
}

// semantic looks for a stored answer to a close question after an exact
// miss. It returns the entry to replay, or nil with the plan's
// semanticMiss saying why not.
func (s *Server) semantic(ctx context.Context, p *cachePlan, req *routerv1.GenerateRequest) *cache.Entry {
	if !s.embedQuery(ctx, p, req) {
		return nil
	}
	cfg := &s.cfg.Cache.Semantic
	threshold := cfg.threshold(req.GetModel())
	miss := func(sim float32, why string) *cache.Entry {
		p.semanticMiss = &generationv1.SemanticMiss{Similarity: sim, Refused: why, Threshold: threshold}
		s.cfg.Metrics.SemanticLookup(req.GetModel(), why)
		return nil
	}
	near, sim, found := cfg.Index.Nearest(p.space, p.vec)
	switch {
	case !found:
		return miss(0, "empty")
	case sim < threshold:
		return miss(sim, "below_threshold")
	}
	if why := cache.Guard(near.Text, p.text); why != "" {
		return miss(sim, why)
	}
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	e, ok, err := s.cfg.Cache.Store.Get(gctx, near.Key)
	cancel()
	switch {
	case err != nil:
		s.storeFailed(err)
		return miss(sim, "store_error")
	case !ok:
		cfg.Index.RemoveEntry(near) // its answer expired or was evicted
		return miss(sim, "evicted")
	}
	cfg.Index.Touch(near.Key)
	p.kind, p.similarity = "semantic", sim
	s.cfg.Metrics.SemanticLookup(req.GetModel(), "hit")
	return e
}

// indexSemantic adds a stored answer's vector (computed at lookup).
func (s *Server) indexSemantic(p *cachePlan) {
	if idx := s.cfg.Cache.Semantic.Index; idx != nil && p.vec != nil {
		idx.Add(cache.SemanticEntry{Space: p.space, Key: p.key, Text: p.text, Vec: p.vec}, s.cfg.Cache.TTL)
	}
}
