package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
)

// quotaLogEvery spaces out the log lines of a failing quota store.
const quotaLogEvery = 10 * time.Second

// reserve admits a keyed request against its concurrency cap and quotas: a
// request slot and its token estimate (the prompt's, plus max_tokens, which
// a request under a token quota gets when it sets none). It returns the
// settle step, which charges what the request really used, or an error that
// spent nothing.
func (s *Server) reserve(ctx context.Context, key *auth.Key, r *request) (settle func(), err error) {
	leave, ok := key.Enter()
	if !ok {
		return nil, rpcerr.ResourceExhausted(time.Second, "API key %q already has %d requests in flight, its limit", key.Name, key.MaxConcurrent)
	}
	req := r.req
	// (Embeddings come here without a prompt: they reserve nothing.)
	if key.TokensPerMinute > 0 && req.GetPrompt() != nil && req.GetSampling().GetMaxTokens() == 0 {
		limit := s.cfg.QuotaMaxTokens
		if p := s.sched.Policy(req.GetModel(), req.GetModel()); p.QuotaMaxTokens > 0 {
			limit = p.QuotaMaxTokens
		}
		sp := proto.Clone(req.GetSampling()).(*generationv1.SamplingParams)
		if sp == nil {
			sp = &generationv1.SamplingParams{}
		}
		sp.MaxTokens = int32(limit)
		req.Sampling = sp
	}
	tokens := estimateTokens(req)
	if key.TokensPerMinute > 0 && tokens > key.TokensPerMinute {
		leave()
		return nil, rpcerr.ResourceExhausted(0, "API key %q: this request may use %d tokens (prompt estimate + max_tokens), over the key's whole quota of %d tokens/min; lower max_tokens",
			key.Name, tokens, key.TokensPerMinute)
	}
	wait, ok, err := s.cfg.Limiter.Reserve(ctx, key, tokens)
	switch {
	case err != nil && s.cfg.QuotaFailClosed:
		leave()
		s.quotaFailed(key, err)
		return nil, rpcerr.Unavailable("the quota store is unreachable and the router refuses requests until it answers (fail-closed)")
	case err != nil:
		// Fail open: admitted without a reservation, so nothing to settle.
		s.quotaFailed(key, err)
		return leave, nil
	case !ok:
		leave()
		return nil, rpcerr.ResourceExhausted(wait, "API key %q is over its quota (%d requests/min, %d tokens/min; this request reserves %d tokens); retry in %v",
			key.Name, key.RequestsPerMinute, key.TokensPerMinute, tokens, wait.Round(time.Millisecond))
	}
	return func() {
		defer leave()
		// The request's context may be gone (the client hung up): settle
		// anyway, briefly.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if err := s.cfg.Limiter.Settle(sctx, key, tokens, r.tokensUsed()); err != nil {
			s.quotaFailed(key, err)
		}
	}, nil
}

// quotaFailed counts a quota-store failure and logs it, at most every
// quotaLogEvery.
func (s *Server) quotaFailed(key *auth.Key, err error) {
	s.cfg.Metrics.QuotaStoreError()
	now := s.now().UnixNano()
	if last := s.quotaLog.Load(); now-last >= int64(quotaLogEvery) && s.quotaLog.CompareAndSwap(last, now) {
		s.cfg.Log.Warn("quota store failed", "key", key.Name, "fail_closed", s.cfg.QuotaFailClosed, "err", err)
	}
}

// estimateTokens is the tokens a request may use: its prompt (token ids
// counted, text at 4 bytes a token, 4 per chat message) plus max_tokens.
func estimateTokens(req *routerv1.GenerateRequest) int {
	n := int(req.GetSampling().GetMaxTokens())
	switch k := req.GetPrompt().GetKind().(type) {
	case *generationv1.Prompt_Tokens:
		return n + len(k.Tokens.GetIds())
	case *generationv1.Prompt_Chat:
		n += 4 * len(k.Chat.GetMessages())
	}
	return n + (promptBytes(req.GetPrompt())+3)/4
}
