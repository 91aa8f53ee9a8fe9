package server

import (
	"context"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
)

// quotaLogEvery spaces out the log lines of a failing quota store.
const quotaLogEvery = 10 * time.Second

// reserve admits a keyed request against its quotas: a request slot and its
// token estimate (the prompt's, plus max_tokens, which a generation under a
// token quota gets when it sets none: the configured cap, within the
// model's context). It returns the settle step, which charges what the
// request really used, or an error that spent nothing.
func (s *Server) reserve(ctx context.Context, key *auth.Key, r *request) (settle func(), err error) {
	req := r.req
	if key.TokensPerMinute > 0 && r.embed == nil && req.GetSampling().GetMaxTokens() == 0 {
		// Each attempt asks for at most this, within its model's context
		// (attemptMaxTokens); the reservation holds the whole of it.
		r.quotaCap = s.cfg.QuotaMaxTokens
		if p := s.sched.Policy(req.GetModel(), req.GetModel()); p.QuotaMaxTokens > 0 {
			r.quotaCap = p.QuotaMaxTokens
		}
	}
	tokens := estimateTokens(req, r.embed) + r.quotaCap
	if key.TokensPerMinute > 0 && tokens > key.TokensPerMinute {
		// Never admissible: the caller's mistake, not a wait.
		return nil, rpcerr.WithReason(rpcerr.InvalidArgument("API key %q: this request may use %d tokens (prompt estimate + max_tokens), over the key's whole quota of %d tokens/min; lower max_tokens",
			key.Name, tokens, key.TokensPerMinute), rpcerr.ReasonQuota)
	}
	reserved, err := s.admitKey(ctx, key, tokens)
	if err != nil {
		return nil, err
	}
	if !reserved {
		return func() {}, nil
	}
	return func() {
		// The request's context may be gone (the client hung up): settle
		// anyway, briefly.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if err := s.cfg.Limiter.Settle(sctx, key, tokens, r.tokensUsed()); err != nil {
			s.quotaFailed(key, err)
		}
	}, nil
}

// admitKey reserves one request and tokens of key's quotas. reserved is
// false when the quota store failed and the router admits the request
// anyway (fail-open): there is nothing to settle.
func (s *Server) admitKey(ctx context.Context, key *auth.Key, tokens int) (reserved bool, err error) {
	wait, ok, err := s.cfg.Limiter.Reserve(ctx, key, tokens)
	switch {
	case err != nil && s.cfg.QuotaFailClosed:
		s.quotaFailed(key, err)
		return false, rpcerr.Unavailable("the quota store is unreachable and the router refuses requests until it answers (fail-closed)")
	case err != nil:
		s.quotaFailed(key, err)
		return false, nil
	case !ok:
		return false, rpcerr.WithReason(rpcerr.ResourceExhausted(wait, "API key %q is over its quota (%d requests/min, %d tokens/min; this request reserves %d tokens); retry in %v",
			key.Name, key.RequestsPerMinute, key.TokensPerMinute, tokens, wait.Round(time.Millisecond)), rpcerr.ReasonQuota)
	}
	return true, nil
}

// attemptMaxTokens is the max_tokens an attempt on model m asks for: the
// request's own, or under a token quota the quota's cap, kept within m's
// context with room for the prompt (estimated generously, at 2 bytes a
// token plus a chat template's markup, so the worker does not refuse it).
// 0: up to the context's end.
func (r *request) attemptMaxTokens(m *enginev1.ModelInfo) int32 {
	if mt := r.req.GetSampling().GetMaxTokens(); mt > 0 || r.quotaCap == 0 {
		return mt
	}
	limit := r.quotaCap
	if ctxLen := int(m.GetContextLength()); ctxLen > 0 {
		p := r.req.GetPrompt()
		prompt := promptBytes(p)/2 + 8*len(p.GetChat().GetMessages()) + 8
		if t, ok := p.GetKind().(*generationv1.Prompt_Tokens); ok {
			prompt = len(t.Tokens.GetIds())
		}
		limit = min(limit, ctxLen-prompt)
	}
	return int32(max(limit, 1))
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
// counted, text at 4 bytes a token, 4 per chat message) plus max_tokens; an
// embeddings request's inputs at 4 bytes a token, plus one each.
func estimateTokens(req *routerv1.GenerateRequest, embed []string) int {
	if embed != nil {
		n := 0
		for _, in := range embed {
			n += 1 + (len(in)+3)/4
		}
		return n
	}
	n := int(req.GetSampling().GetMaxTokens())
	switch k := req.GetPrompt().GetKind().(type) {
	case *generationv1.Prompt_Tokens:
		return n + len(k.Tokens.GetIds())
	case *generationv1.Prompt_Chat:
		n += 4 * len(k.Chat.GetMessages())
	}
	return n + (promptBytes(req.GetPrompt())+3)/4
}
