// Package openai is the provider for OpenAI's Chat Completions API and any
// OpenAI-compatible server (Ollama, vLLM, llama.cpp server, OpenRouter),
// over the official SDK with its own retries turned off.
package openai

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/shared"

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
	observer   Observer
}

var _ providers.Provider = (*Provider)(nil)

// Factory makes the provider for OpenAI (compatible: false) or an
// OpenAI-compatible server, for the proxy's registry; obs counts the events
// streams skip (nil: none).
func Factory(compatible bool, obs Observer) providers.Factory {
	return func(s providers.Spec) (providers.Provider, error) {
		if compatible && s.BaseURL == "" {
			return nil, errors.New("openai-compatible needs base_url")
		}
		p := New(s.Name, s.BaseURL, s.APIKey, compatible, s.HTTP)
		p.observer = obs
		return p, nil
	}
}

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
		var name param.Opt[string]
		if m.Name != "" {
			name = sdk.String(m.Name)
		}
		switch m.Role {
		case "system":
			u := sdk.SystemMessage(m.Content)
			u.OfSystem.Name = name
			params.Messages = append(params.Messages, u)
		case "assistant":
			a := &sdk.ChatCompletionAssistantMessageParam{Name: name}
			if m.Content != "" || len(m.ToolCalls) == 0 {
				a.Content.OfString = sdk.String(m.Content)
			}
			for _, c := range m.ToolCalls {
				a.ToolCalls = append(a.ToolCalls, sdk.ChatCompletionMessageToolCallUnionParam{OfFunction: &sdk.ChatCompletionMessageFunctionToolCallParam{
					ID: c.GetId(), Function: sdk.ChatCompletionMessageFunctionToolCallFunctionParam{Name: c.GetName(), Arguments: c.GetArguments()}}})
			}
			params.Messages = append(params.Messages, sdk.ChatCompletionMessageParamUnion{OfAssistant: a})
		case "tool":
			params.Messages = append(params.Messages, sdk.ToolMessage(m.Content, m.ToolCallID))
		default:
			u := sdk.UserMessage(m.Content)
			u.OfUser.Name = name
			params.Messages = append(params.Messages, u)
		}
	}
	if err := setTools(&params, r); err != nil {
		return nil, err
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
	if r.FrequencyPenalty != 0 {
		params.FrequencyPenalty = sdk.Float(r.FrequencyPenalty)
	}
	if r.PresencePenalty != 0 {
		params.PresencePenalty = sdk.Float(r.PresencePenalty)
	}
	if len(r.LogitBias) > 0 {
		params.LogitBias = make(map[string]int64, len(r.LogitBias))
		for id, b := range r.LogitBias {
			params.LogitBias[strconv.FormatUint(uint64(id), 10)] = int64(math.Round(float64(b))) // OpenAI takes whole numbers
		}
	}
	if r.User != "" {
		params.User = sdk.String(r.User)
	}
	switch r.Format.GetType() {
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT:
		params.ResponseFormat = sdk.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
		var schema map[string]any
		if err := json.Unmarshal([]byte(r.Format.GetJsonSchema()), &schema); err != nil {
			return nil, rpcerr.InvalidArgument("response_format.json_schema: %v", err)
		}
		name := r.Format.GetName()
		if name == "" {
			name = "response"
		}
		params.ResponseFormat = sdk.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: name, Schema: schema, Strict: sdk.Bool(r.Format.GetStrict())}}}
	}
	if len(r.Stop) > 0 {
		params.Stop = sdk.ChatCompletionNewParamsStopUnion{OfStringArray: r.Stop}
	}
	if r.Prefill != "" {
		// A trailing assistant message: servers that continue it (the
		// model is configured accepts_prefill) answer with what follows.
		params.Messages = append(params.Messages, sdk.AssistantMessage(r.Prefill))
	}
	ctx, cancel := context.WithCancel(ctx)
	var resp *http.Response
	if err := p.client.Post(ctx, "chat/completions", params, &resp, option.WithJSONSet("stream", true)); err != nil {
		cancel()
		return nil, p.mapErr(err)
	}
	st := &stream{p: p, body: resp.Body, cancel: cancel}
	if err := st.checkContentType(resp); err != nil {
		st.Close()
		return nil, err
	}
	st.r = bufio.NewReaderSize(resp.Body, 64<<10)
	return st, nil
}

// setTools passes the tools, the tool choice and parallel_tool_calls on.
func setTools(params *sdk.ChatCompletionNewParams, r providers.Request) error {
	for i, t := range r.Tools {
		fn := shared.FunctionDefinitionParam{Name: t.GetName()}
		if t.GetDescription() != "" {
			fn.Description = sdk.String(t.GetDescription())
		}
		if t.GetParameters() != "" {
			if err := json.Unmarshal([]byte(t.GetParameters()), &fn.Parameters); err != nil {
				return rpcerr.InvalidArgument("tools[%d].parameters: %v", i, err)
			}
		}
		if t.GetStrict() {
			fn.Strict = sdk.Bool(true)
		}
		params.Tools = append(params.Tools, sdk.ChatCompletionFunctionTool(fn))
	}
	switch r.ToolChoice.GetMode() {
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO:
		params.ToolChoice.OfAuto = sdk.String("auto")
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE:
		params.ToolChoice.OfAuto = sdk.String("none")
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED:
		params.ToolChoice.OfAuto = sdk.String("required")
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION:
		params.ToolChoice = sdk.ToolChoiceOptionFunctionToolChoice(sdk.ChatCompletionNamedToolChoiceFunctionParam{Name: r.ToolChoice.GetName()})
	}
	if r.ParallelToolCalls != nil && len(r.Tools) > 0 {
		params.ParallelToolCalls = sdk.Bool(*r.ParallelToolCalls)
	}
	return nil
}

// Limits of a stream's tolerance: a line longer than MaxEventBytes, or
// data that is not a chunk, is skipped and counted; more than MaxBadEvents
// of them end the stream with an error.
const (
	MaxEventBytes = 1 << 20
	MaxBadEvents  = 8
)

// stream reads Chat Completions server-sent events itself (rather than
// through the SDK's decoder, which ends a stream at the first malformed
// event), so that a bad chunk is skipped, an error event is an error, and
// the stream ends as soon as the usage chunk arrives.
type stream struct {
	p       *Provider
	body    io.ReadCloser
	r       *bufio.Reader
	cancel  context.CancelFunc
	pending []providers.Chunk
	finish  generationv1.FinishReason
	done    bool
	chunks  int
	bad     int
	calls   int // tool calls begun (their first delta sent)
	// byIndex maps the upstream's call index to ours and the call's id.
	byIndex map[int64]upstreamCall
}

// upstreamCall is a call as the upstream numbered it.
type upstreamCall struct {
	index int32
	id    string
}

// checkContentType turns a 200 that is not an event stream into the error
// it is: an error body, or an unexpected content type.
func (s *stream) checkContentType(resp *http.Response) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "text/event-stream" {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error *sdk.ErrorObject `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != nil {
		return providers.HTTPError(s.p.name, errorStatus(e.Error), resp.Header, e.Error.Code,
			providers.Redact(e.Error.Message+" (an error body with HTTP 200)", s.p.key))
	}
	return providers.Unavailable("%s: answered HTTP %d with content type %q instead of an event stream", s.p.name, resp.StatusCode, mt)
}

// errorStatus guesses the HTTP status an error object stands for.
func errorStatus(e *sdk.ErrorObject) int {
	switch {
	case e.Code == "rate_limit_exceeded" || e.Type == "rate_limit_error" || e.Type == "requests" || e.Type == "tokens":
		return http.StatusTooManyRequests
	case e.Type == "invalid_request_error":
		return http.StatusBadRequest
	}
	return http.StatusBadGateway
}

// Observer counts the events streams skip.
type Observer interface{ BadEvent() }

func (s *stream) Next() (providers.Chunk, error) {
	for len(s.pending) == 0 {
		if s.done {
			return providers.Chunk{Done: true, Finish: s.finish}, nil
		}
		data, err := s.event()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if s.finish != generationv1.FinishReason_FINISH_REASON_UNSPECIFIED {
					// No [DONE] (or no usage chunk): finish with what we know.
					s.done = true
					continue
				}
				return providers.Chunk{}, s.cut(providers.Unavailable("%s: stream ended without a finish reason", s.p.name))
			}
			return providers.Chunk{}, s.cut(s.p.mapErr(err))
		}
		if data == "[DONE]" {
			if s.finish == generationv1.FinishReason_FINISH_REASON_UNSPECIFIED {
				return providers.Chunk{}, s.cut(providers.Unavailable("%s: stream ended without a finish reason", s.p.name))
			}
			s.done = true
			continue
		}
		var c sdk.ChatCompletionChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil || (c.Object != "" && c.Object != "chat.completion.chunk") {
			var e struct {
				Error *sdk.ErrorObject `json:"error"`
			}
			if json.Unmarshal([]byte(data), &e) == nil && e.Error != nil {
				return providers.Chunk{}, s.cut(providers.HTTPError(s.p.name, errorStatus(e.Error), nil, e.Error.Code, providers.Redact(e.Error.Message, s.p.key)))
			}
			if err := s.skip("a malformed chunk"); err != nil {
				return providers.Chunk{}, err
			}
			continue
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != "" || len(ch.Delta.ToolCalls) > 0 {
				calls, err := s.toolCalls(ch.Delta.ToolCalls)
				if err != nil {
					return providers.Chunk{}, s.cut(err)
				}
				s.chunks++
				s.pending = append(s.pending, providers.Chunk{Text: ch.Delta.Content, ToolCalls: calls})
			}
			switch ch.FinishReason {
			case "length":
				s.finish = generationv1.FinishReason_FINISH_REASON_LENGTH
			case "content_filter":
				if s.chunks == 0 {
					return providers.Chunk{}, providers.HTTPError(s.p.name, http.StatusBadRequest, nil, "content_filter", "the answer was withheld by the provider's content filter")
				}
				s.finish = generationv1.FinishReason_FINISH_REASON_CONTENT_FILTER // a partial answer, said so
			case "tool_calls", "function_call":
				s.finish = generationv1.FinishReason_FINISH_REASON_TOOL_CALLS
			case "stop":
				s.finish = generationv1.FinishReason_FINISH_REASON_STOP
			}
		}
		// Some servers report usage on every chunk: only the last one
		// (no choices, or after the finish reason) ends the stream.
		if c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 && (len(c.Choices) == 0 || s.finish != generationv1.FinishReason_FINISH_REASON_UNSPECIFIED) {
			// The usage chunk is the last: finish now, not when (or if)
			// [DONE] comes.
			s.pending = append(s.pending, providers.Chunk{Done: true, Finish: s.finish,
				PromptTokens: int(c.Usage.PromptTokens), CompletionTokens: int(c.Usage.CompletionTokens)})
			s.done = true
		}
	}
	c := s.pending[0]
	s.pending = s.pending[1:]
	return c, nil
}

// toolCalls converts a chunk's tool-call deltas: a call's first delta
// carries its id and name, later ones only arguments (a compatible server
// may repeat the id, or send a fresh one on every delta). A call begins at
// an index not seen before, or at a seen one with another id and a name
// (servers that number every call 0); calls are renumbered 0, 1, ... in
// the order they begin.
func (s *stream) toolCalls(in []sdk.ChatCompletionChunkChoiceDeltaToolCall) ([]*generationv1.ToolCallDelta, error) {
	var out []*generationv1.ToolCallDelta
	for _, tc := range in {
		if tc.Index < 0 {
			return nil, providers.Unavailable("%s: a delta for tool call %d", s.p.name, tc.Index)
		}
		d := &generationv1.ToolCallDelta{Arguments: tc.Function.Arguments}
		c, seen := s.byIndex[tc.Index]
		if !seen || tc.ID != "" && tc.ID != c.id && tc.Function.Name != "" {
			if tc.ID == "" || tc.Function.Name == "" {
				return nil, providers.Unavailable("%s: tool call %d began without an id or a name", s.p.name, tc.Index)
			}
			if s.byIndex == nil {
				s.byIndex = map[int64]upstreamCall{}
			}
			c = upstreamCall{index: int32(s.calls), id: tc.ID}
			s.byIndex[tc.Index] = c
			d.Id, d.Name = tc.ID, tc.Function.Name
			s.calls++
		}
		d.Index = c.index
		out = append(out, d)
	}
	return out, nil
}

// event returns the next event's data, skipping comments, other fields and
// oversized lines.
func (s *stream) event() (string, error) {
	var data []string
	for {
		line, err := s.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Longer than the buffer: read on to the line's end, within
			// MaxEventBytes, and skip the event if it is longer.
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= MaxEventBytes {
				line, err = s.r.ReadSlice('\n')
				long = append(long, line...)
			}
			if len(long) > MaxEventBytes {
				for errors.Is(err, bufio.ErrBufferFull) {
					_, err = s.r.ReadSlice('\n')
				}
				if err != nil {
					return "", err
				}
				if serr := s.skip(fmt.Sprintf("an event over %d bytes", MaxEventBytes)); serr != nil {
					return "", serr
				}
				data = nil
				continue
			}
			line = long
		}
		if err != nil && len(line) == 0 {
			if len(data) > 0 && errors.Is(err, io.EOF) {
				return strings.Join(data, "\n"), nil
			}
			return "", err
		}
		l := strings.TrimRight(string(line), "\r\n")
		switch {
		case l == "":
			if len(data) > 0 {
				return strings.Join(data, "\n"), nil
			}
		case strings.HasPrefix(l, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(l, "data:"), " "))
		}
		if err != nil { // the last line had no newline
			if len(data) > 0 {
				return strings.Join(data, "\n"), nil
			}
			return "", err
		}
	}
}

// skip counts a bad event and fails the stream after MaxBadEvents.
func (s *stream) skip(what string) error {
	s.bad++
	if s.p.observer != nil {
		s.p.observer.BadEvent()
	}
	if s.bad > MaxBadEvents {
		return s.cut(providers.Unavailable("%s: more than %d malformed or oversized events in the stream (the last was %s)", s.p.name, MaxBadEvents, what))
	}
	return nil
}

// cut reports a stream that broke after chunks with the partial count.
func (s *stream) cut(err error) error {
	if s.chunks == 0 {
		return err
	}
	return rpcerr.WithReason(rpcerr.Unavailable("%s: stream cut after %d chunks (partial usage: about %d completion tokens): %v", s.p.name, s.chunks, s.chunks, err), rpcerr.ReasonUpstreamUnavailable)
}

// drainLimit bounds how long Close reads a finished stream on to its end.
const drainLimit = 100 * time.Millisecond

// Close ends the stream. A finished stream is read on to its end (the
// [DONE] after the usage chunk) before the body is closed, so its
// connection goes back to the pool; an upstream that holds the connection
// open after its last chunk is cut after drainLimit.
func (s *stream) Close() {
	if s.done && s.r != nil {
		t := time.AfterFunc(drainLimit, s.cancel)
		_, _ = io.Copy(io.Discard, io.LimitReader(s.r, 64<<10))
		t.Stop()
	}
	s.body.Close()
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
		return providers.HTTPError(p.name, apiErr.StatusCode, h, apiErr.Code, providers.Redact(msg, p.key))
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return providers.Unavailable("%s: %s", p.name, providers.Redact(fmt.Sprint(err), p.key))
}
