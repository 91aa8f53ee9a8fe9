package enginehost

import (
	"context"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Catalog is what every backend reports.
type Catalog interface {
	Models() []*enginev1.ModelInfo
	Status() *enginev1.GetStatusResponse
}

// TextBackend is a backend that produces text rather than token ids, such
// as a hosted API behind provider-proxy. The host still validates requests,
// enforces stop sequences on the text, and accounts usage, timings and cost.
type TextBackend interface {
	Catalog
	// StreamText starts a generation. Errors made with package rpcerr keep
	// their code.
	StreamText(ctx context.Context, model string, r TextRequest) (TextStream, error)
}

// TextRequest is a validated request for a text backend.
type TextRequest struct {
	Prompt   *generationv1.Prompt
	Sampling Sampling
	// MaxTokens is the request's limit; 0 leaves it to the backend.
	MaxTokens int
	Stop      []string
	// Prefill is a partial answer to continue (an assistant prefill), for
	// models that advertise accepts_prefill; the stream yields only what
	// follows it.
	Prefill string
	// SingleAttempt: the caller retries (the router), so the backend makes
	// one upstream attempt.
	SingleAttempt bool
	// User is the end user the request is made for, passed upstream.
	User string
}

// TextStream yields text chunks. One goroutine calls Next, then Close.
type TextStream interface {
	Next(ctx context.Context) (TextChunk, error)
	// Close ends the stream (and the upstream call) early.
	Close()
}

// TextChunk is new text and tool-call pieces (as the upstream streams its
// calls; the first piece of a call has its id and name), or the end with
// the upstream's accounting.
type TextChunk struct {
	Text      string
	ToolCalls []*generationv1.ToolCallDelta
	Done      bool
	Finish    generationv1.FinishReason
	// StopSequence is the stop sequence the upstream stopped at, when it
	// says (Finish FINISH_REASON_STOP_SEQUENCE).
	StopSequence string
	// PromptTokens and CompletionTokens as the upstream reports them.
	PromptTokens, CompletionTokens int
}

// NewText returns a host over a text backend.
func NewText(tb TextBackend, endpoint string, l Limits) *Host {
	h := New(nil, endpoint, l)
	h.cat, h.text = tb, tb
	return h
}

func (h *Host) generateText(ctx context.Context, req *enginev1.GenerateRequest, send func(*enginev1.GenerateResponse) error) error {
	c, err := h.check(ctx, req)
	if err != nil {
		return err
	}
	m, sampling, id, received, span := c.model, c.sampling, c.id, c.received, c.span
	if _, ok := req.GetPrompt().GetKind().(*generationv1.Prompt_Tokens); ok {
		return rpcerr.InvalidArgument("model %q is served by a hosted provider, which takes text or chat prompts, not token ids", m.GetName())
	}
	if len(req.GetContinuation()) > 0 {
		return rpcerr.InvalidArgument("model %q is served by a hosted provider, which cannot continue from token ids", m.GetName())
	}
	if sampling.Logprobs {
		return rpcerr.InvalidArgument("model %q is served by a hosted provider: logprobs are not relayed from hosted providers", m.GetName())
	}
	maxTokens := int(req.GetSampling().GetMaxTokens())
	if ctxLen := int(m.GetContextLength()); ctxLen > 0 && maxTokens >= ctxLen {
		return rpcerr.WithReason(rpcerr.InvalidArgument("max_tokens (%d) must be below model %q's context of %d tokens", maxTokens, m.GetName(), ctxLen), rpcerr.ReasonContextLength)
	}

	stream, err := h.text.StreamText(ctx, m.GetName(), TextRequest{Prompt: req.GetPrompt(), Sampling: sampling, MaxTokens: maxTokens,
		Stop: req.GetSampling().GetStop(), Prefill: req.GetContinuationText(), SingleAttempt: SingleAttempt(ctx), User: req.GetUser()})
	if err != nil {
		return err
	}
	defer stream.Close()
	started := h.now()
	if err := send(&enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_Start{Start: &generationv1.StartEvent{
		RequestId: id, Model: m.GetName(), Endpoint: h.Endpoint,
	}}}); err != nil {
		return err
	}
	text := newTextStream(req.GetSampling().GetStop())
	var (
		chunks      int
		first, last time.Time
		end         TextChunk
	)
	for {
		c, err := stream.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if c.Done {
			end = c
			break
		}
		if c.Text == "" && len(c.ToolCalls) == 0 {
			continue
		}
		last = h.now()
		if chunks == 0 {
			first = last
		}
		chunks++
		delta, stopped := text.push([]byte(c.Text))
		if delta != "" || len(c.ToolCalls) > 0 {
			if err := send(&enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_Delta{Delta: &generationv1.TokenDelta{Text: delta, ToolCalls: c.ToolCalls}}}); err != nil {
				return err
			}
		}
		if stopped {
			end = TextChunk{Finish: generationv1.FinishReason_FINISH_REASON_STOP_SEQUENCE, StopSequence: text.matched, CompletionTokens: chunks}
			break
		}
	}
	if rest := text.flush(); rest != "" {
		if err := send(&enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_Delta{Delta: &generationv1.TokenDelta{Text: rest}}}); err != nil {
			return err
		}
	}
	if end.Finish == generationv1.FinishReason_FINISH_REASON_UNSPECIFIED {
		end.Finish = generationv1.FinishReason_FINISH_REASON_STOP
	}
	t := timings(received, started, first, last, max(end.CompletionTokens, chunks))
	if !first.IsZero() && end.CompletionTokens > 1 {
		if d := last.Sub(first).Seconds(); d > 0 {
			t.TokensPerSecond = float64(end.CompletionTokens-1) / d
		}
	}
	p, n := end.PromptTokens, end.CompletionTokens
	if n == 0 {
		n = chunks // the upstream reported no usage: count what it sent
	}
	ev := &generationv1.EndEvent{
		FinishReason: end.Finish,
		Usage:        &generationv1.Usage{PromptTokens: int32(p), CompletionTokens: int32(n), TotalTokens: int32(p + n)},
		Timings:      t,
		CostUsd:      float64(p)/1000*m.GetCostPer_1KInput() + float64(n)/1000*m.GetCostPer_1KOutput(),
		StopSequence: end.StopSequence,
	}
	// The upstream's queue and prefill are inside its time to first chunk.
	span.SetAttributes(generationAttrs(ev, 0, n, first, last, received)...)
	return send(&enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_End{End: ev}})
}
