// Package anthropic is the provider for Anthropic's Messages API over the
// official SDK, with its own retries turned off.
package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/anthropics/anthropic-sdk-go/packages/param"
	"github.com/anthropics/anthropic-sdk-go/packages/ssestream"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers"
)

// DefaultMaxTokens is sent when a request names none (the API requires one).
const DefaultMaxTokens = 4096

// Provider streams messages.
type Provider struct {
	client sdk.Client
	key    string
	name   string
}

var _ providers.Provider = (*Provider)(nil)

// Factory makes the provider from a spec, for the proxy's registry.
func Factory(s providers.Spec) (providers.Provider, error) {
	return New(s.Name, s.BaseURL, s.APIKey, s.HTTP), nil
}

// New returns a provider for baseURL (empty: Anthropic's) with apiKey.
func New(name, baseURL, apiKey string, hc *http.Client) *Provider {
	opts := []option.RequestOption{option.WithAPIKey(apiKey), option.WithMaxRetries(0), option.WithHTTPClient(hc)}
	if baseURL != "" {
		opts = append(opts, option.WithBaseURL(baseURL))
	}
	return &Provider{client: sdk.NewClient(opts...), key: apiKey, name: name}
}

// Stream starts a streaming message.
func (p *Provider) Stream(ctx context.Context, r providers.Request) (providers.Stream, error) {
	params, err := p.params(r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := p.client.Messages.NewStreaming(ctx, params)
	if err := s.Err(); err != nil {
		cancel()
		return nil, p.mapErr(err)
	}
	return &stream{p: p, s: s, cancel: cancel}, nil
}

// CountTokens counts the request's prompt with Anthropic's count_tokens
// endpoint (the system prompt, turns and tools of the message it would
// send).
func (p *Provider) CountTokens(ctx context.Context, r providers.Request) (int, error) {
	params, err := p.params(r)
	if err != nil {
		return 0, err
	}
	cp := sdk.MessageCountTokensParams{Model: params.Model, Messages: params.Messages, ToolChoice: params.ToolChoice}
	if len(params.System) > 0 {
		cp.System = sdk.MessageCountTokensParamsSystemUnion{OfTextBlockArray: params.System}
	}
	for _, t := range params.Tools {
		cp.Tools = append(cp.Tools, sdk.MessageCountTokensToolUnionParam{OfTool: t.OfTool})
	}
	n, err := p.client.Messages.CountTokens(ctx, cp)
	if err != nil {
		return 0, p.mapErr(err)
	}
	return int(n.InputTokens), nil
}

// params is the Messages request for r.
func (p *Provider) params(r providers.Request) (sdk.MessageNewParams, error) {
	params := sdk.MessageNewParams{Model: sdk.Model(r.Model), MaxTokens: int64(r.MaxTokens), StopSequences: r.Stop}
	if params.MaxTokens == 0 {
		params.MaxTokens = DefaultMaxTokens
	}
	var system []string
	for i, m := range r.Messages {
		switch m.Role {
		case "system":
			system = append(system, m.Content)
		case "assistant":
			var blocks []sdk.ContentBlockParamUnion
			if m.Content != "" || len(m.ToolCalls) == 0 {
				blocks = append(blocks, sdk.NewTextBlock(m.Content))
			}
			for j, c := range m.ToolCalls {
				var input any
				if err := json.Unmarshal([]byte(c.GetArguments()), &input); err != nil {
					return params, rpcerr.InvalidArgument("messages[%d].tool_calls[%d].arguments: %v", i, j, err)
				}
				blocks = append(blocks, sdk.NewToolUseBlock(c.GetId(), input, c.GetName()))
			}
			params.Messages = append(params.Messages, sdk.NewAssistantMessage(blocks...))
		case "tool":
			// Anthropic's tool results are blocks of a user turn; the
			// results of one turn's calls go in one.
			block := sdk.NewToolResultBlock(m.ToolCallID, m.Content, false)
			if n := len(params.Messages); n > 0 && i > 0 && r.Messages[i-1].Role == "tool" {
				params.Messages[n-1].Content = append(params.Messages[n-1].Content, block)
				break
			}
			params.Messages = append(params.Messages, sdk.NewUserMessage(block))
		default:
			params.Messages = append(params.Messages, sdk.NewUserMessage(sdk.NewTextBlock(m.Content)))
		}
	}
	if err := setTools(&params, r); err != nil {
		return params, err
	}
	if r.Prefill != "" {
		// Anthropic continues a trailing assistant message natively.
		params.Messages = append(params.Messages, sdk.NewAssistantMessage(sdk.NewTextBlock(r.Prefill)))
	}
	if len(system) > 0 {
		params.System = []sdk.TextBlockParam{{Text: strings.Join(system, "\n\n")}}
	}
	if r.Temperature != nil {
		params.Temperature = sdk.Float(min(*r.Temperature, 1)) // Anthropic's range is [0, 1]
	}
	if r.TopP != nil {
		params.TopP = sdk.Float(*r.TopP)
	}
	if r.TopK > 0 {
		params.TopK = sdk.Int(int64(r.TopK))
	}
	switch {
	case r.FrequencyPenalty != 0:
		return params, rpcerr.InvalidArgument("%s: Anthropic's Messages API has no frequency_penalty", p.name)
	case r.PresencePenalty != 0:
		return params, rpcerr.InvalidArgument("%s: Anthropic's Messages API has no presence_penalty", p.name)
	case len(r.LogitBias) > 0:
		return params, rpcerr.InvalidArgument("%s: Anthropic's Messages API has no logit_bias", p.name)
	case r.Format != nil && r.Format.GetType() > generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_TEXT:
		return params, rpcerr.InvalidArgument("%s: Anthropic's Messages API has no response_format (structured output)", p.name)
	}
	if r.User != "" {
		params.Metadata = sdk.MetadataParam{UserID: sdk.String(r.User)}
	}
	return params, nil
}

// setTools maps OpenAI's tools onto Anthropic's: parameters become
// input_schema, tool_choice auto / none / required / a function becomes
// auto / none / any / tool, and parallel_tool_calls false becomes
// disable_parallel_tool_use.
func setTools(params *sdk.MessageNewParams, r providers.Request) error {
	for i, t := range r.Tools {
		var schema map[string]any
		if t.GetParameters() != "" {
			if err := json.Unmarshal([]byte(t.GetParameters()), &schema); err != nil {
				return rpcerr.InvalidArgument("tools[%d].parameters: %v", i, err)
			}
		}
		in := sdk.ToolInputSchemaParam{ExtraFields: map[string]any{}}
		for k, v := range schema {
			switch k {
			case "type":
			case "properties":
				in.Properties = v
			case "required":
				for _, x := range asList(v) {
					if s, ok := x.(string); ok {
						in.Required = append(in.Required, s)
					}
				}
			default:
				in.ExtraFields[k] = v
			}
		}
		tool := sdk.ToolParam{Name: t.GetName(), InputSchema: in}
		if t.GetDescription() != "" {
			tool.Description = sdk.String(t.GetDescription())
		}
		params.Tools = append(params.Tools, sdk.ToolUnionParam{OfTool: &tool})
	}
	if len(r.Tools) == 0 {
		return nil
	}
	var disable param.Opt[bool]
	if r.ParallelToolCalls != nil && !*r.ParallelToolCalls {
		disable = sdk.Bool(true)
	}
	switch r.ToolChoice.GetMode() {
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE:
		none := sdk.NewToolChoiceNoneParam()
		params.ToolChoice = sdk.ToolChoiceUnionParam{OfNone: &none}
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED:
		params.ToolChoice = sdk.ToolChoiceUnionParam{OfAny: &sdk.ToolChoiceAnyParam{DisableParallelToolUse: disable}}
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION:
		params.ToolChoice = sdk.ToolChoiceUnionParam{OfTool: &sdk.ToolChoiceToolParam{Name: r.ToolChoice.GetName(), DisableParallelToolUse: disable}}
	default:
		params.ToolChoice = sdk.ToolChoiceUnionParam{OfAuto: &sdk.ToolChoiceAutoParam{DisableParallelToolUse: disable}}
	}
	return nil
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

type stream struct {
	p      *Provider
	s      *ssestream.Stream[sdk.MessageStreamEventUnion]
	cancel context.CancelFunc
	input  int
	output int
	finish generationv1.FinishReason
	stop   string // the stop sequence, when it ended the message
	chunks int
	done   bool
	// Tool calls: the call index of each tool_use content block, and
	// whether a call's input has streamed.
	blocks   map[int64]int
	calls    int
	streamed map[int]bool
}

func (s *stream) Next() (providers.Chunk, error) {
	for {
		if s.done {
			return providers.Chunk{Done: true, Finish: s.finish, StopSequence: s.stop, PromptTokens: s.input, CompletionTokens: s.output}, nil
		}
		if !s.s.Next() {
			if err := s.s.Err(); err != nil {
				return providers.Chunk{}, s.cut(s.p.mapErr(err))
			}
			return providers.Chunk{}, s.cut(providers.Unavailable("%s: stream ended without message_stop", s.p.name))
		}
		switch e := s.s.Current().AsAny().(type) {
		case sdk.MessageStartEvent:
			s.input = int(e.Message.Usage.InputTokens)
			s.output = int(e.Message.Usage.OutputTokens)
		case sdk.ContentBlockStartEvent:
			if e.ContentBlock.Type == "tool_use" {
				if s.blocks == nil {
					s.blocks, s.streamed = map[int64]int{}, map[int]bool{}
				}
				s.blocks[e.Index] = s.calls
				s.calls++
				s.chunks++
				return providers.Chunk{ToolCalls: []*generationv1.ToolCallDelta{{Index: int32(s.calls - 1), Id: e.ContentBlock.ID, Name: e.ContentBlock.Name}}}, nil
			}
		case sdk.ContentBlockDeltaEvent:
			if t := e.Delta.AsTextDelta(); t.Text != "" {
				s.chunks++
				return providers.Chunk{Text: t.Text}, nil
			}
			if j := e.Delta.AsInputJSONDelta(); j.PartialJSON != "" {
				call, ok := s.blocks[e.Index]
				if !ok {
					return providers.Chunk{}, s.cut(providers.Unavailable("%s: input_json_delta for content block %d, which is not a tool_use block", s.p.name, e.Index))
				}
				s.streamed[call] = true
				s.chunks++
				return providers.Chunk{ToolCalls: []*generationv1.ToolCallDelta{{Index: int32(call), Arguments: j.PartialJSON}}}, nil
			}
		case sdk.ContentBlockStopEvent:
			if call, ok := s.blocks[e.Index]; ok && !s.streamed[call] {
				// A call without input: its arguments are an empty object.
				s.streamed[call] = true
				return providers.Chunk{ToolCalls: []*generationv1.ToolCallDelta{{Index: int32(call), Arguments: "{}"}}}, nil
			}
		case sdk.MessageDeltaEvent:
			s.output = int(e.Usage.OutputTokens)
			if e.Usage.InputTokens > 0 {
				s.input = int(e.Usage.InputTokens)
			}
			switch e.Delta.StopReason {
			case sdk.StopReasonMaxTokens:
				s.finish = generationv1.FinishReason_FINISH_REASON_LENGTH
			case sdk.StopReasonStopSequence:
				s.finish = generationv1.FinishReason_FINISH_REASON_STOP_SEQUENCE
				s.stop = e.Delta.StopSequence
			case sdk.StopReasonToolUse:
				s.finish = generationv1.FinishReason_FINISH_REASON_TOOL_CALLS
			default:
				s.finish = generationv1.FinishReason_FINISH_REASON_STOP
			}
		case sdk.MessageStopEvent:
			s.done = true
			for s.s.Next() { // read to EOF so the connection is reused
			}
		}
	}
}

func (s *stream) cut(err error) error {
	if s.chunks == 0 {
		return err
	}
	return providers.Unavailable("%s: stream cut after %d chunks (partial usage: %d prompt, %d completion tokens): %v", s.p.name, s.chunks, s.input, max(s.output, s.chunks), err)
}

// Close closes the body before cancelling, so that a finished response
// leaves its connection in the pool.
func (s *stream) Close() {
	s.s.Close()
	s.cancel()
}

// errorBody is Anthropic's error JSON.
type errorBody struct {
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func (p *Provider) mapErr(err error) error {
	var apiErr *sdk.Error
	if errors.As(err, &apiErr) {
		var b errorBody
		_ = json.Unmarshal([]byte(apiErr.RawJSON()), &b)
		msg := b.Error.Message
		if b.Error.Type != "" {
			msg = b.Error.Type + ": " + msg
		}
		if msg == "" {
			msg = http.StatusText(apiErr.StatusCode)
		}
		var h http.Header
		if apiErr.Response != nil {
			h = apiErr.Response.Header
		}
		status := apiErr.StatusCode
		if status == 529 { // overloaded
			status = http.StatusServiceUnavailable
		}
		return providers.HTTPError(p.name, status, h, b.Error.Type, providers.Redact(msg, p.key))
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return providers.Unavailable("%s: %s", p.name, providers.Redact(fmt.Sprint(err), p.key))
}
