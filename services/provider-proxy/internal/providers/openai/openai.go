// Package openai is the provider for OpenAI's Chat Completions API and any
// OpenAI-compatible server (Ollama, vLLM, llama.cpp server, OpenRouter),
// over the official SDK with its own retries turned off.
package openai

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers"
)

// Provider streams chat completions.
type Provider struct {
	client sdk.Client
	key    string
	// Compatible servers often take max_tokens but not max_completion_tokens.
	compatible bool
	name       string
}

var _ providers.Provider = (*Provider)(nil)

// New returns a provider for baseURL (empty: OpenAI's) with apiKey.
func New(name, baseURL, apiKey string, compatible bool, hc *http.Client) *Provider {
	opts := []option.RequestOption{option.WithAPIKey(apiKey), option.WithMaxRetries(0), option.WithHTTPClient(hc)}
	if baseURL != "" {
		opts = append(opts, option.WithBaseURL(baseURL))
	}
	return &Provider{client: sdk.NewClient(opts...), key: apiKey, compatible: compatible, name: name}
}

// Stream starts a streaming chat completion with usage requested.
func (p *Provider) Stream(ctx context.Context, r providers.Request) (providers.Stream, error) {
	params := sdk.ChatCompletionNewParams{
		Model:         r.Model,
		StreamOptions: sdk.ChatCompletionStreamOptionsParam{IncludeUsage: sdk.Bool(true)},
	}
	for _, m := range r.Messages {
		switch m.Role {
		case "system":
			params.Messages = append(params.Messages, sdk.SystemMessage(m.Content))
		case "assistant":
			params.Messages = append(params.Messages, sdk.AssistantMessage(m.Content))
		default:
			params.Messages = append(params.Messages, sdk.UserMessage(m.Content))
		}
	}
	if r.MaxTokens > 0 {
		if p.compatible {
			params.MaxTokens = sdk.Int(int64(r.MaxTokens))
		} else {
			params.MaxCompletionTokens = sdk.Int(int64(r.MaxTokens))
		}
	}
	if r.Temperature != nil {
		params.Temperature = sdk.Float(*r.Temperature)
	}
	if r.TopP != nil {
		params.TopP = sdk.Float(*r.TopP)
	}
	if r.Seed != nil {
		params.Seed = sdk.Int(*r.Seed)
	}
	if len(r.Stop) > 0 {
		params.Stop = sdk.ChatCompletionNewParamsStopUnion{OfStringArray: r.Stop}
	}
	ctx, cancel := context.WithCancel(ctx)
	s := p.client.Chat.Completions.NewStreaming(ctx, params)
	if err := s.Err(); err != nil {
		cancel()
		return nil, p.mapErr(err)
	}
	return &stream{p: p, s: s, cancel: cancel}, nil
}

type stream struct {
	p       *Provider
	s       *ssestream.Stream[sdk.ChatCompletionChunk]
	cancel  context.CancelFunc
	pending []providers.Chunk
	finish  generationv1.FinishReason
	done    bool
	chunks  int
}

func (s *stream) Next() (providers.Chunk, error) {
	for len(s.pending) == 0 {
		if s.done {
			return providers.Chunk{Done: true, Finish: s.finish}, nil
		}
		if !s.s.Next() {
			if err := s.s.Err(); err != nil {
				return providers.Chunk{}, s.cut(s.p.mapErr(err))
			}
			// [DONE] without a usage chunk: end with what we know.
			if s.finish == generationv1.FinishReason_FINISH_REASON_UNSPECIFIED {
				return providers.Chunk{}, s.cut(rpcerr.Unavailable("%s: stream ended without a finish reason", s.p.name))
			}
			s.done = true
			continue
		}
		c := s.s.Current()
		for _, ch := range c.Choices {
			if ch.Delta.Content != "" {
				s.chunks++
				s.pending = append(s.pending, providers.Chunk{Text: ch.Delta.Content})
			}
			switch ch.FinishReason {
			case "length":
				s.finish = generationv1.FinishReason_FINISH_REASON_LENGTH
			case "stop", "content_filter", "tool_calls", "function_call":
				s.finish = generationv1.FinishReason_FINISH_REASON_STOP
			}
		}
		if c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
			s.pending = append(s.pending, providers.Chunk{Done: true, Finish: s.finish,
				PromptTokens: int(c.Usage.PromptTokens), CompletionTokens: int(c.Usage.CompletionTokens)})
			s.done = true
			for s.s.Next() { // read to [DONE] and EOF so the connection is reused
			}
		}
	}
	c := s.pending[0]
	s.pending = s.pending[1:]
	return c, nil
}

// cut reports a stream that broke after chunks with the partial count.
func (s *stream) cut(err error) error {
	if s.chunks == 0 {
		return err
	}
	return rpcerr.Unavailable("%s: stream cut after %d chunks (partial usage: about %d completion tokens): %v", s.p.name, s.chunks, s.chunks, err)
}

// Close closes the body before cancelling, so that a finished response
// leaves its connection in the pool.
func (s *stream) Close() {
	s.s.Close()
	s.cancel()
}

func (p *Provider) mapErr(err error) error {
	var apiErr *sdk.Error
	if errors.As(err, &apiErr) {
		msg := apiErr.Message
		if msg == "" {
			msg = http.StatusText(apiErr.StatusCode)
		}
		var h http.Header
		if apiErr.Response != nil {
			h = apiErr.Response.Header
		}
		return providers.HTTPError(p.name, apiErr.StatusCode, h, providers.Redact(msg, p.key))
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return rpcerr.Unavailable("%s: %s", p.name, providers.Redact(fmt.Sprint(err), p.key))
}
