package openai

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Anthropic's Messages API (POST /v1/messages and
// /v1/messages/count_tokens): its request shape, decoded strictly as
// Anthropic decodes it; its SSE event sequence; its error bodies and
// status codes (529 when the router is overloaded). Requests become the
// same router requests as Chat Completions ones.

// messagesBody is what a message and a token count share.
type messagesBody struct {
	Model        string             `json:"model"`
	Messages     []anthropicMessage `json:"messages"`
	System       json.RawMessage    `json:"system"`
	Tools        []json.RawMessage  `json:"tools"`
	ToolChoice   json.RawMessage    `json:"tool_choice"`
	OutputConfig *struct {
		Format *struct {
			Type   string          `json:"type"`
			Schema json.RawMessage `json:"schema"`
		} `json:"format"`
		Effort *string `json:"effort"`
	} `json:"output_config"`
	// Hints without effect here, accepted as Anthropic accepts them:
	// prompt caching is automatic (prefix reuse on the worker), there is
	// one tier and one speed.
	CacheControl json.RawMessage `json:"cache_control"`
	ServiceTier  string          `json:"service_tier"`
	Speed        string          `json:"speed"`
	// Refused: extended thinking and Anthropic's server-side features.
	Thinking      json.RawMessage `json:"thinking"`
	MCPServers    json.RawMessage `json:"mcp_servers"`
	Container     json.RawMessage `json:"container"`
	InferenceGeo  string          `json:"inference_geo"`
	Diagnostics   json.RawMessage `json:"diagnostics"`
	UserProfileID string          `json:"user_profile_id"`
	WorkspaceID   string          `json:"workspace_id"`
}

// messagesRequest is POST /v1/messages.
type messagesRequest struct {
	messagesBody
	MaxTokens     *int32   `json:"max_tokens"`
	StopSequences []string `json:"stop_sequences"`
	Stream        bool     `json:"stream"`
	Temperature   *float32 `json:"temperature"`
	TopP          *float32 `json:"top_p"`
	TopK          *int32   `json:"top_k"`
	Metadata      *struct {
		UserID string `json:"user_id"`
	} `json:"metadata"`
	// Extensions understood by this router, as in Chat Completions.
	Seed      *uint64        `json:"seed"`
	Strategy  string         `json:"strategy"`
	Fallbacks []string       `json:"fallback_models"`
	SessionID string         `json:"session_id"`
	Cache     string         `json:"cache"`
	Ensemble  *ensembleField `json:"ensemble"`
}

// anthropicMessage is one turn: a string or content blocks.
type anthropicMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// contentBlock is one block of a turn's content (the fields of the kinds
// this router reads; others are refused by type).
type contentBlock struct {
	Type      string          `json:"type"`
	Text      *string         `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

// blockCapabilities names what a block kind this router refuses would need.
var blockCapabilities = map[string]string{
	"image":            "image input (vision) is not supported by the models this router serves",
	"document":         "document input is not supported by the models this router serves",
	"search_result":    "search result blocks are not supported by this router",
	"container_upload": "container uploads need Anthropic's code execution, which this router does not provide",
}

// refused answers the Messages features this router does not have.
func (b *messagesBody) refused() *fieldError {
	switch {
	case isSet(b.Thinking) && thinkingType(b.Thinking) != "disabled":
		return &fieldError{"thinking", "thinking: extended thinking is not supported: the models this router serves do not think in blocks; leave thinking out (or set {\"type\": \"disabled\"})"}
	case isSet(b.MCPServers):
		return &fieldError{"mcp_servers", "mcp_servers: the MCP connector is not supported: this router runs no tools; declare tools and run them yourself"}
	case isSet(b.Container):
		return &fieldError{"container", "container: containers (code execution) are not supported by this router"}
	case b.InferenceGeo != "":
		return &fieldError{"inference_geo", "inference_geo: this router does not choose where inference runs; its workers run where they are deployed"}
	case isSet(b.Diagnostics):
		return &fieldError{"diagnostics", "diagnostics: not supported by this router"}
	case b.UserProfileID != "" || b.WorkspaceID != "":
		return &fieldError{"user_profile_id", "user_profile_id and workspace_id are not supported: this router has API keys, not workspaces; use metadata.user_id for the end user"}
	case b.ServiceTier != "" && b.ServiceTier != "auto" && b.ServiceTier != "standard_only":
		return &fieldError{"service_tier", "service_tier: must be \"auto\" or \"standard_only\", got " + strconv.Quote(b.ServiceTier)}
	case b.Speed != "" && b.Speed != "standard":
		return &fieldError{"speed", "speed: this router has one speed, \"standard\"; got " + strconv.Quote(b.Speed)}
	case b.OutputConfig != nil && b.OutputConfig.Effort != nil:
		return &fieldError{"output_config.effort", "output_config.effort: the models this router serves have no effort setting"}
	}
	return nil
}

// thinkingType is the type of a thinking configuration.
func thinkingType(raw json.RawMessage) string {
	var t struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(raw, &t)
	return t.Type
}

// blocks reads a content: a string is one text block.
func blocks(raw json.RawMessage, param string) ([]contentBlock, *fieldError) {
	s := strings.TrimSpace(string(raw))
	switch {
	case s == "" || s == "null":
		return nil, &fieldError{param, param + ": Field required"}
	case s[0] == '"':
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return nil, &fieldError{param, param + ": not a valid JSON string"}
		}
		return []contentBlock{{Type: "text", Text: &text}}, nil
	case s[0] != '[':
		return nil, &fieldError{param, param + ": must be a string or an array of content blocks"}
	}
	var out []contentBlock
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, &fieldError{param, param + ": must be an array of content blocks: " + err.Error()}
	}
	return out, nil
}

// blockText is a text block's text, checked.
func blockText(b contentBlock, param string) (string, *fieldError) {
	if b.Text == nil {
		return "", &fieldError{param + ".text", param + ".text: Field required"}
	}
	return *b.Text, nil
}

// textOf joins the text blocks of a system prompt or tool result; other
// kinds are refused.
func textOf(raw json.RawMessage, param string, allowEmpty bool) (string, *fieldError) {
	if allowEmpty && !isSet(raw) {
		return "", nil
	}
	bs, fe := blocks(raw, param)
	if fe != nil {
		return "", fe
	}
	texts := make([]string, 0, len(bs))
	for i, b := range bs {
		p := param + "." + itoa(i)
		if b.Type != "text" {
			if why := blockCapabilities[b.Type]; why != "" {
				return "", &fieldError{p, p + ": " + b.Type + " block: " + why}
			}
			return "", &fieldError{p + ".type", p + ".type: expected a text block here, got " + strconv.Quote(b.Type)}
		}
		t, fe := blockText(b, p)
		if fe != nil {
			return "", fe
		}
		texts = append(texts, t)
	}
	return strings.Join(texts, "\n"), nil
}

// chat converts the system prompt and turns into chat messages: text
// blocks join one turn; an assistant turn's tool_use blocks become its
// calls; a user turn's tool_result blocks become tool turns, before its
// text. Thinking blocks of earlier turns are dropped, as Anthropic drops
// them from the context.
func (b *messagesBody) chat() ([]*genv1.ChatMessage, *fieldError) {
	var msgs []*genv1.ChatMessage
	if isSet(b.System) {
		sys, fe := textOf(b.System, "system", false)
		if fe != nil {
			return nil, fe
		}
		msgs = append(msgs, &genv1.ChatMessage{Role: genv1.Role_ROLE_SYSTEM, Content: sys})
	}
	if len(b.Messages) == 0 {
		return nil, &fieldError{"messages", "messages: at least one message is required"}
	}
	for i, m := range b.Messages {
		p := "messages." + itoa(i)
		if m.Role == "system" {
			sys, fe := textOf(m.Content, p+".content", false)
			if fe != nil {
				return nil, fe
			}
			msgs = append(msgs, &genv1.ChatMessage{Role: genv1.Role_ROLE_SYSTEM, Content: sys})
			continue
		}
		if m.Role != "user" && m.Role != "assistant" {
			return nil, &fieldError{p + ".role", p + ".role: must be \"user\" or \"assistant\", got " + strconv.Quote(m.Role)}
		}
		bs, fe := blocks(m.Content, p+".content")
		if fe != nil {
			return nil, fe
		}
		if len(bs) == 0 {
			return nil, &fieldError{p + ".content", p + ".content: at least one content block is required"}
		}
		turn := &genv1.ChatMessage{Role: genv1.Role_ROLE_USER}
		if m.Role == "assistant" {
			turn.Role = genv1.Role_ROLE_ASSISTANT
		}
		var texts []string
		for j, blk := range bs {
			bp := p + ".content." + itoa(j)
			switch {
			case blk.Type == "text":
				t, fe := blockText(blk, bp)
				if fe != nil {
					return nil, fe
				}
				texts = append(texts, t)
			case blk.Type == "tool_use" && m.Role == "assistant":
				call, fe := toolUse(blk, bp)
				if fe != nil {
					return nil, fe
				}
				turn.ToolCalls = append(turn.ToolCalls, call)
			case blk.Type == "tool_result" && m.Role == "user":
				if blk.ToolUseID == "" {
					return nil, &fieldError{bp + ".tool_use_id", bp + ".tool_use_id: Field required"}
				}
				out, fe := textOf(blk.Content, bp+".content", true)
				if fe != nil {
					return nil, fe
				}
				if blk.IsError {
					out = "Error: " + out
				}
				msgs = append(msgs, &genv1.ChatMessage{Role: genv1.Role_ROLE_TOOL, ToolCallId: blk.ToolUseID, Content: out})
			case (blk.Type == "thinking" || blk.Type == "redacted_thinking") && m.Role == "assistant":
			case blockCapabilities[blk.Type] != "":
				return nil, &fieldError{bp, bp + ": " + blk.Type + " block: " + blockCapabilities[blk.Type]}
			case blk.Type == "tool_use" || blk.Type == "tool_result" || blk.Type == "thinking" || blk.Type == "redacted_thinking":
				return nil, &fieldError{bp + ".type", bp + ": a " + blk.Type + " block cannot be in a " + m.Role + " turn"}
			default:
				return nil, &fieldError{bp + ".type", bp + ".type: unsupported content block type " + strconv.Quote(blk.Type) + " (supported: text, tool_use, tool_result)"}
			}
		}
		turn.Content = strings.Join(texts, "\n")
		if len(texts) > 0 || len(turn.ToolCalls) > 0 {
			msgs = append(msgs, turn)
		}
	}
	return msgs, nil
}

// prefill takes a final assistant turn off msgs: the answer's beginning,
// which the model continues (text only, as Anthropic requires).
func (b *messagesBody) prefill(msgs []*genv1.ChatMessage) ([]*genv1.ChatMessage, string, *fieldError) {
	i := len(b.Messages) - 1
	if b.Messages[i].Role != "assistant" {
		return msgs, "", nil
	}
	if len(msgs) == 0 {
		return nil, "", &fieldError{"messages", "messages: nothing to answer: the conversation holds only thinking blocks"}
	}
	last := msgs[len(msgs)-1]
	p := fmt.Sprintf("messages.%d", i)
	switch {
	case last.GetRole() != genv1.Role_ROLE_ASSISTANT:
		return msgs, "", nil // thinking blocks only: nothing to continue
	case len(last.GetToolCalls()) > 0:
		return nil, "", &fieldError{p + ".content", p + ".content: a final assistant turn to continue holds text only, not tool_use blocks"}
	case strings.TrimRightFunc(last.GetContent(), unicode.IsSpace) != last.GetContent():
		return nil, "", &fieldError{p + ".content", p + ".content: final assistant content cannot end with trailing whitespace"}
	}
	return msgs[:len(msgs)-1], last.GetContent(), nil
}

// toolUse is an assistant turn's call.
func toolUse(b contentBlock, param string) (*genv1.ToolCall, *fieldError) {
	switch {
	case b.ID == "":
		return nil, &fieldError{param + ".id", param + ".id: Field required"}
	case b.Name == "":
		return nil, &fieldError{param + ".name", param + ".name: Field required"}
	}
	in := strings.TrimSpace(string(b.Input))
	if in == "" || in[0] != '{' || !json.Valid(b.Input) {
		return nil, &fieldError{param + ".input", param + ".input: must be a JSON object"}
	}
	return &genv1.ToolCall{Id: b.ID, Name: b.Name, Arguments: in}, nil
}

// chatTools converts Anthropic's tools and tool_choice into the Chat
// Completions shapes, whose checks then apply.
func (b *messagesBody) chatTools() ([]tool, json.RawMessage, *bool, *fieldError) {
	out := make([]tool, 0, len(b.Tools))
	for i, raw := range b.Tools {
		var t struct {
			Type        string          `json:"type"`
			Name        string          `json:"name"`
			Description string          `json:"description"`
			InputSchema json.RawMessage `json:"input_schema"`
			Strict      bool            `json:"strict"`
		}
		p := "tools." + itoa(i)
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, nil, nil, &fieldError{p, p + ": must be a tool object: " + err.Error()}
		}
		switch {
		case t.Type != "" && t.Type != "custom":
			return nil, nil, nil, &fieldError{p + ".type", p + ": " + strconv.Quote(t.Type) + " is one of Anthropic's server or client-defined tools, which this router does not provide; declare a custom tool with an input_schema"}
		case !isSet(t.InputSchema):
			return nil, nil, nil, &fieldError{p + ".input_schema", p + ".input_schema: Field required"}
		}
		ct := tool{Type: "function"}
		ct.Function = &toolFunction{Name: t.Name, Description: t.Description, Parameters: t.InputSchema, Strict: t.Strict}
		out = append(out, ct)
	}
	if !isSet(b.ToolChoice) {
		return out, nil, nil, nil
	}
	var c struct {
		Type                   string `json:"type"`
		Name                   string `json:"name"`
		DisableParallelToolUse *bool  `json:"disable_parallel_tool_use"`
	}
	if err := json.Unmarshal(b.ToolChoice, &c); err != nil {
		return nil, nil, nil, &fieldError{"tool_choice", "tool_choice: must be an object with a type"}
	}
	var choice any
	switch c.Type {
	case "auto":
		choice = "auto"
	case "any":
		choice = "required"
	case "none":
		choice = "none"
	case "tool":
		if c.Name == "" {
			return nil, nil, nil, &fieldError{"tool_choice.name", "tool_choice.name: Field required"}
		}
		choice = map[string]any{"type": "function", "function": map[string]string{"name": c.Name}}
	default:
		return nil, nil, nil, &fieldError{"tool_choice.type", "tool_choice.type: must be \"auto\", \"any\", \"tool\" or \"none\", got " + strconv.Quote(c.Type)}
	}
	rawChoice, _ := json.Marshal(choice)
	var parallel *bool
	if c.DisableParallelToolUse != nil {
		parallel = new(!*c.DisableParallelToolUse)
	}
	return out, rawChoice, parallel, nil
}

// anthropicParam renames a Chat Completions field path into Anthropic's:
// dotted indices, flat tools with an input_schema, output_config.format.
var anthropicParam = func() func(string) string {
	index := regexp.MustCompile(`\[(\d+)\]`)
	r := strings.NewReplacer(".function.parameters", ".input_schema", ".function.", ".", "response_format.json_schema.", "output_config.format.",
		"response_format.", "output_config.format.", "response_format", "output_config.format", "user is ", "metadata.user_id is ")
	return func(s string) string { return r.Replace(index.ReplaceAllString(s, ".$1")) }
}()

// prompt builds the router's chat from the body, and the prefill of a
// final assistant turn.
func (b *messagesBody) prompt() (*genv1.ChatMessages, *genv1.ResponseFormat, string, *fieldError) {
	if fe := b.refused(); fe != nil {
		return nil, nil, "", fe
	}
	msgs, fe := b.chat()
	if fe != nil {
		return nil, nil, "", fe
	}
	msgs, prefill, fe := b.prefill(msgs)
	if fe != nil {
		return nil, nil, "", fe
	}
	var format *genv1.ResponseFormat
	if oc := b.OutputConfig; oc != nil && oc.Format != nil {
		if oc.Format.Type != "json_schema" {
			return nil, nil, "", &fieldError{"output_config.format.type", "output_config.format.type: must be \"json_schema\", got " + strconv.Quote(oc.Format.Type)}
		}
		rf := &responseFormat{Type: "json_schema"}
		rf.JSONSchema = &jsonSchema{"output", oc.Format.Schema, true}
		if format, fe = rf.toProto(); fe != nil {
			return nil, nil, "", fe
		}
	}
	tools, choice, parallel, fe := b.chatTools()
	if fe != nil {
		return nil, nil, "", fe
	}
	chat := &genv1.ChatMessages{Messages: msgs}
	creq := chatRequest{Tools: tools, ToolChoice: choice, ParallelToolCalls: parallel}
	if fe := creq.tools(chat); fe != nil {
		return nil, nil, "", fe
	}
	return chat, format, prefill, nil
}

// anthropicError writes Anthropic's error body, with the request id its
// SDKs report.
func anthropicError(w http.ResponseWriter, httpStatus int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}, "request_id": w.Header().Get("Request-Id")})
}

// writeAnthropic writes the error as Anthropic does: a message that
// begins with the field's path.
func (fe *fieldError) writeAnthropic(w http.ResponseWriter) {
	msg, param := anthropicParam(fe.msg), anthropicParam(fe.param)
	if param != "" && !strings.HasPrefix(msg, param) {
		msg = param + ": " + msg
	}
	anthropicError(w, http.StatusBadRequest, "invalid_request_error", msg)
}

// anthropicStatus maps a gRPC status to Anthropic's HTTP status and error
// type: capacity (the router's admission limit, busy workers, no worker
// able to serve now) is 529 overloaded_error, a key's quota or an
// upstream's rate limit 429 rate_limit_error.
func anthropicStatus(err error) (int, string) {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented:
		return http.StatusBadRequest, "invalid_request_error"
	case codes.Unauthenticated:
		return http.StatusUnauthorized, "authentication_error"
	case codes.PermissionDenied:
		return http.StatusForbidden, "permission_error"
	case codes.NotFound:
		return http.StatusNotFound, "not_found_error"
	case codes.ResourceExhausted:
		// A key's quota or an upstream's rate limit is the caller's 429;
		// capacity (the router's admission, busy workers) is 529.
		if r := rpcerr.Reason(err); r == rpcerr.ReasonQuota || r == rpcerr.ReasonRateLimited {
			return http.StatusTooManyRequests, "rate_limit_error"
		}
		return 529, "overloaded_error"
	case codes.Unavailable:
		return 529, "overloaded_error"
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout, "timeout_error"
	case codes.Canceled:
		return 499, "api_error"
	}
	return http.StatusInternalServerError, "api_error"
}

func writeAnthropicStatus(w http.ResponseWriter, err error) {
	code, typ := anthropicStatus(err)
	if code == http.StatusTooManyRequests || code == 529 {
		secs := int64(1)
		if d := rpcerr.RetryAfter(err); d > 0 {
			secs = int64((d + time.Second - 1) / time.Second)
		}
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	anthropicError(w, code, typ, status.Convert(err).Message())
}

// anthropicHeaders checks anthropic-version and sets the response's
// request-id; false means an error was written.
func anthropicHeaders(w http.ResponseWriter, r *http.Request) bool {
	var b [12]byte
	_, _ = rand.Read(b[:])
	w.Header().Set("Request-Id", "req_"+hex.EncodeToString(b[:]))
	v := r.Header.Get("Anthropic-Version")
	if v == "" {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required")
		return false
	}
	if _, err := time.Parse(time.DateOnly, v); err != nil {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: "+strconv.Quote(v)+" is not a valid version (a date such as 2023-06-01)")
		return false
	}
	return true
}

// decodeAnthropic reads a body strictly, with Anthropic's errors.
func decodeAnthropic(w http.ResponseWriter, r *http.Request, v any) bool {
	e := readBody(w, r, v, true)
	switch {
	case e == nil:
		return true
	case e.code == "unknown_parameter":
		anthropicError(w, e.status, "invalid_request_error", anthropicParam(e.param)+": Extra inputs are not permitted")
	case e.status == http.StatusRequestEntityTooLarge:
		anthropicError(w, e.status, "request_too_large", e.msg)
	default:
		anthropicError(w, e.status, "invalid_request_error", e.msg)
	}
	return false
}

func (h *Handler) messages(w http.ResponseWriter, r *http.Request) {
	if !anthropicHeaders(w, r) {
		return
	}
	var req messagesRequest
	if !decodeAnthropic(w, r, &req) {
		return
	}
	switch {
	case req.Model == "":
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "model: Field required")
		return
	case req.MaxTokens == nil:
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "max_tokens: Field required")
		return
	case *req.MaxTokens < 1:
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("max_tokens: must be at least 1, got %d", *req.MaxTokens))
		return
	case req.Temperature != nil && !(*req.Temperature >= 0 && *req.Temperature <= 1):
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("temperature: must be 0 to 1, got %v", *req.Temperature))
		return
	case req.TopP != nil && !(*req.TopP >= 0 && *req.TopP <= 1):
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("top_p: must be 0 to 1, got %v", *req.TopP))
		return
	case req.TopK != nil && *req.TopK < 0:
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("top_k: must be at least 0, got %d", *req.TopK))
		return
	}
	c := common{Model: req.Model, MaxTokens: req.MaxTokens, Temperature: req.Temperature, TopP: req.TopP, Seed: req.Seed,
		Stop: req.StopSequences, Strategy: req.Strategy, Fallbacks: req.Fallbacks, SessionID: req.SessionID, Cache: req.Cache, Ensemble: req.Ensemble}
	if req.TopK != nil {
		c.TopK = *req.TopK
	}
	if req.Metadata != nil {
		c.User = req.Metadata.UserID
	}
	rec := &bufferedError{header: http.Header{}}
	sampling, routing, ok := c.toRouter(rec)
	if !ok {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", anthropicParam(rec.message()))
		return
	}
	chat, format, prefill, fe := req.prompt()
	if fe != nil {
		fe.writeAnthropic(w)
		return
	}
	sampling.ResponseFormat = format
	rr := &routerv1.GenerateRequest{Model: req.Model, Sampling: sampling, Routing: routing, User: c.User, Prefill: prefill,
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: chat}}}
	if !req.Stream {
		sink := &messagesSink{}
		if err := h.router.Route(r.Context(), rr, sink); err != nil {
			writeAnthropicStatus(w, err)
			return
		}
		msg, err := sink.message()
		if err != nil {
			writeAnthropicStatus(w, err)
			return
		}
		writeJSON(w, msg)
		return
	}
	sink := &messagesSink{out: newSSE(w)}
	ctx, cancel := context.WithCancel(r.Context())
	var pings sync.WaitGroup
	// Pings space a stream that has started but gone quiet (a slow model
	// between tokens), so that proxies do not cut it as idle. (The router
	// sends message_start with the first token, so a long queue wait or
	// prefill is silent before it.)
	pings.Go(func() { sink.pings(ctx, h.opt.PingInterval) })
	err := h.router.Route(ctx, rr, sink)
	cancel()
	pings.Wait()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	switch {
	case err == nil || r.Context().Err() != nil:
	case !sink.out.started:
		writeAnthropicStatus(w, err)
	default:
		// After message_start: an error event, and no message_stop.
		_, typ := anthropicStatus(err)
		_ = sink.emitLocked("error", map[string]any{"error": map[string]string{"type": typ, "message": status.Convert(err).Message()}})
	}
}

type countTokensRequest struct {
	messagesBody
}

func (h *Handler) countTokens(w http.ResponseWriter, r *http.Request) {
	if !anthropicHeaders(w, r) {
		return
	}
	var req countTokensRequest
	if !decodeAnthropic(w, r, &req) {
		return
	}
	if req.Model == "" {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "model: Field required")
		return
	}
	chat, _, prefill, fe := req.prompt()
	if fe != nil {
		fe.writeAnthropic(w)
		return
	}
	if prefill != "" {
		// Counted as the turn it is (a template renders it whole).
		chat.Messages = append(chat.Messages, &genv1.ChatMessage{Role: genv1.Role_ROLE_ASSISTANT, Content: prefill})
	}
	n, err := h.router.CountTokens(r.Context(), req.Model, &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: chat}})
	if err != nil {
		writeAnthropicStatus(w, err)
		return
	}
	writeJSON(w, map[string]any{"input_tokens": n})
}

// bufferedError captures the OpenAI error toRouter writes, to say it
// Anthropic's way.
type bufferedError struct {
	header http.Header
	body   []byte
}

func (b *bufferedError) Header() http.Header { return b.header }
func (b *bufferedError) WriteHeader(int)     {}
func (b *bufferedError) Write(p []byte) (int, error) {
	b.body = append(b.body, p...)
	return len(p), nil
}

func (b *bufferedError) message() string {
	var e struct {
		Error apiError `json:"error"`
	}
	_ = json.Unmarshal(b.body, &e)
	if e.Error.Param != nil && !strings.HasPrefix(e.Error.Message, *e.Error.Param) {
		return *e.Error.Param + ": " + e.Error.Message
	}
	return e.Error.Message
}

// stopReason is Anthropic's stop_reason for a finish reason.
func stopReason(f genv1.FinishReason) string {
	switch f {
	case genv1.FinishReason_FINISH_REASON_LENGTH:
		return "max_tokens"
	case genv1.FinishReason_FINISH_REASON_STOP_SEQUENCE:
		return "stop_sequence"
	case genv1.FinishReason_FINISH_REASON_TOOL_CALLS:
		return "tool_use"
	case genv1.FinishReason_FINISH_REASON_CONTENT_FILTER:
		return "refusal"
	}
	return "end_turn"
}

// anthropicUsage is Anthropic's usage: input_tokens excludes the prompt
// tokens read from the worker's prefix cache, which are
// cache_read_input_tokens (nothing is written to a cache at a price).
func anthropicUsage(promptTokens, cached, output int32) map[string]any {
	return map[string]any{"input_tokens": promptTokens - cached, "output_tokens": output,
		"cache_read_input_tokens": cached, "cache_creation_input_tokens": 0, "service_tier": "standard"}
}

// messagesSink turns router events into a Message: whole (out nil) or as
// Anthropic's stream (message_start, then per content block
// content_block_start, its deltas and content_block_stop, then
// message_delta and message_stop; ping events while it is quiet).
type messagesSink struct {
	out     *sse
	mu      sync.Mutex // out's writes: pings come from another goroutine
	id      string
	model   string
	prompt  int32
	blocks  []map[string]any // content blocks, the open one last
	open    string           // the open block's type: "", "text" or "tool_use"
	args    strings.Builder  // the open tool_use block's arguments
	end     *genv1.EndEvent
	written time.Time
}

func (k *messagesSink) emitLocked(typ string, fields map[string]any) error {
	if k.out == nil {
		return nil
	}
	fields["type"] = typ
	k.written = time.Now()
	return k.out.named(typ, fields)
}

// pings sends a ping whenever the stream has been quiet for every, once
// it has started, until ctx ends.
func (k *messagesSink) pings(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.mu.Lock()
			if ctx.Err() == nil && k.out.started && time.Since(k.written) >= every {
				_ = k.emitLocked("ping", map[string]any{})
			}
			k.mu.Unlock()
		}
	}
}

// shell is the Message without its content, as message_start carries it.
func (k *messagesSink) shell() map[string]any {
	return map[string]any{"id": "msg_" + k.id, "type": "message", "role": "assistant", "model": k.model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "stop_details": nil, "container": nil, "usage": anthropicUsage(k.prompt, 0, 0)}
}

func (k *messagesSink) Send(m *routerv1.GenerateResponse) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch e := m.GetEvent().(type) {
	case *routerv1.GenerateResponse_Progress:
		return k.out.comment(progressComment(e.Progress))
	case *routerv1.GenerateResponse_Start:
		k.id, k.model, k.prompt = e.Start.GetRequestId(), e.Start.GetModel(), e.Start.GetPromptTokens()
		if err := k.emitLocked("message_start", map[string]any{"message": k.shell()}); err != nil {
			return err
		}
		return k.emitLocked("ping", map[string]any{})
	case *routerv1.GenerateResponse_Delta:
		// A delta's text comes after the open call's last arguments and
		// before any call it starts.
		calls := e.Delta.GetToolCalls()
		more := 0
		for more < len(calls) && calls[more].GetId() == "" {
			more++
		}
		if err := k.callDeltas(calls[:more]); err != nil {
			return err
		}
		if t := e.Delta.GetText(); t != "" {
			if k.open != "text" {
				if err := k.openBlock(map[string]any{"type": "text", "text": "", "citations": nil}); err != nil {
					return err
				}
				k.open = "text"
			}
			b := k.blocks[len(k.blocks)-1]
			b["text"] = b["text"].(string) + t
			if err := k.emitLocked("content_block_delta", map[string]any{"index": len(k.blocks) - 1, "delta": map[string]any{"type": "text_delta", "text": t}}); err != nil {
				return err
			}
		}
		return k.callDeltas(calls[more:])
	case *routerv1.GenerateResponse_End:
		if err := k.closeBlock(); err != nil {
			return err
		}
		k.end = e.End
		k.model = answeredBy(k.model, e.End)
		u := e.End.GetUsage()
		return k.finish(u)
	}
	return nil
}

func (k *messagesSink) finish(u *genv1.Usage) error {
	if k.out == nil {
		return nil
	}
	if err := k.emitLocked("message_delta", map[string]any{
		"delta": map[string]any{"stop_reason": stopReason(k.end.GetFinishReason()), "stop_sequence": nilIfEmpty(k.end.GetStopSequence()), "stop_details": nil},
		"usage": anthropicUsage(u.GetPromptTokens(), u.GetCachedPromptTokens(), u.GetCompletionTokens()),
	}); err != nil {
		return err
	}
	return k.emitLocked("message_stop", map[string]any{})
}

// callDeltas applies tool call deltas: one with an id opens a tool_use
// block, arguments go to the open one as input_json_delta.
func (k *messagesSink) callDeltas(calls []*genv1.ToolCallDelta) error {
	for _, d := range calls {
		if d.GetId() != "" {
			if err := k.openBlock(map[string]any{"type": "tool_use", "id": d.GetId(), "name": d.GetName(), "input": map[string]any{}}); err != nil {
				return err
			}
			k.open = "tool_use"
			k.args.Reset()
		}
		if k.open != "tool_use" || d.GetArguments() == "" {
			continue
		}
		k.args.WriteString(d.GetArguments())
		if err := k.emitLocked("content_block_delta", map[string]any{"index": len(k.blocks) - 1, "delta": map[string]any{"type": "input_json_delta", "partial_json": d.GetArguments()}}); err != nil {
			return err
		}
	}
	return nil
}

func (k *messagesSink) openBlock(b map[string]any) error {
	if err := k.closeBlock(); err != nil {
		return err
	}
	k.blocks = append(k.blocks, b)
	start := map[string]any{}
	for key, v := range b {
		start[key] = v
	}
	return k.emitLocked("content_block_start", map[string]any{"index": len(k.blocks) - 1, "content_block": start})
}

// closeBlock ends the open block; a tool_use block's input becomes its
// arguments' object.
func (k *messagesSink) closeBlock() error {
	if k.open == "" {
		return nil
	}
	if k.open == "tool_use" {
		args := strings.TrimSpace(k.args.String())
		if args == "" {
			args = "{}"
		}
		k.blocks[len(k.blocks)-1]["input"] = json.RawMessage(args)
	}
	k.open = ""
	return k.emitLocked("content_block_stop", map[string]any{"index": len(k.blocks) - 1})
}

// message is the whole Message, after the stream ended.
func (k *messagesSink) message() (map[string]any, error) {
	msg := k.shell()
	content := make([]map[string]any, 0, len(k.blocks))
	for _, b := range k.blocks {
		if in, ok := b["input"].(json.RawMessage); ok && !json.Valid(in) {
			return nil, status.Errorf(codes.Internal, "model %s wrote tool arguments that are not JSON: %s", k.model, strconv.Quote(string(in)))
		}
		content = append(content, b)
	}
	u := k.end.GetUsage()
	msg["content"] = content
	msg["stop_reason"] = stopReason(k.end.GetFinishReason())
	msg["stop_sequence"] = nilIfEmpty(k.end.GetStopSequence())
	msg["usage"] = anthropicUsage(u.GetPromptTokens(), u.GetCachedPromptTokens(), u.GetCompletionTokens())
	msg["llmrouter"] = routingReport(k.end)
	return msg, nil
}
