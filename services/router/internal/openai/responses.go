package openai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
)

// responsesRequest is OpenAI's Responses API request (POST /v1/responses),
// for text and function tools. Stored state and built-in tools are not
// supported: they answer 400 rather than being ignored.
type responsesRequest struct {
	Model             string            `json:"model"`
	Input             json.RawMessage   `json:"input"`
	Instructions      string            `json:"instructions"`
	Tools             []json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage   `json:"tool_choice"`
	ParallelToolCalls *bool             `json:"parallel_tool_calls"`
	MaxOutputTokens   *int32            `json:"max_output_tokens"`
	Temperature       *float32          `json:"temperature"`
	TopP              *float32          `json:"top_p"`
	Stream            bool              `json:"stream"`
	User              string            `json:"user"`
	Metadata          map[string]string `json:"metadata"`
	Text              *struct {
		Format *struct {
			Type        string          `json:"type"`
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Schema      json.RawMessage `json:"schema"`
			Strict      bool            `json:"strict"`
		} `json:"format"`
		Verbosity string `json:"verbosity"`
	} `json:"text"`
	// Refused (stored state, background runs, reasoning, other outputs).
	Store              *bool           `json:"store"`
	PreviousResponseID string          `json:"previous_response_id"`
	Conversation       json.RawMessage `json:"conversation"`
	Background         bool            `json:"background"`
	Include            []string        `json:"include"`
	Reasoning          *struct {
		Effort  *string `json:"effort"`
		Summary *string `json:"summary"`
		// GenerateSummary is summary's deprecated name.
		GenerateSummary *string `json:"generate_summary"`
	} `json:"reasoning"`
	Truncation   string          `json:"truncation"`
	TopLogprobs  *int            `json:"top_logprobs"`
	MaxToolCalls *int            `json:"max_tool_calls"`
	Prompt       json.RawMessage `json:"prompt"`
	// Hints without effect here (caching is by prefix, there is one tier),
	// accepted as OpenAI accepts them; safety_identifier stands for user.
	ServiceTier      string          `json:"service_tier"`
	PromptCacheKey   string          `json:"prompt_cache_key"`
	PromptCacheRet   string          `json:"prompt_cache_retention"`
	SafetyIdentifier string          `json:"safety_identifier"`
	StreamOptions    json.RawMessage `json:"stream_options"`
	// Extensions understood by this router, as in Chat Completions.
	Seed      *uint64        `json:"seed"`
	Strategy  string         `json:"strategy"`
	Fallbacks []string       `json:"fallback_models"`
	SessionID string         `json:"session_id"`
	Cache     string         `json:"cache"`
	Ensemble  *ensembleField `json:"ensemble"`
}

// refused answers the Responses features this router does not have.
func (req *responsesRequest) refused() *fieldError {
	switch {
	case req.Store != nil && *req.Store:
		return &fieldError{"store", "store: true is not supported: this router keeps no response state; send store: false (or leave it out) and the whole conversation as input"}
	case req.PreviousResponseID != "":
		return &fieldError{"previous_response_id", "previous_response_id is not supported: this router keeps no response state; send the whole conversation as input"}
	case isSet(req.Conversation):
		return &fieldError{"conversation", "conversation is not supported: this router keeps no conversation state; send the whole conversation as input"}
	case req.Background:
		return &fieldError{"background", "background responses are not supported: they need stored state"}
	case len(req.Include) > 0:
		return &fieldError{"include", "include is not supported (it asks for outputs of built-in tools, reasoning or logprobs this endpoint does not return): got " + strconv.Quote(req.Include[0])}
	case req.Reasoning != nil && (req.Reasoning.Effort != nil || req.Reasoning.Summary != nil || req.Reasoning.GenerateSummary != nil):
		return &fieldError{"reasoning", "reasoning is not supported: the models this router serves are not reasoning models"}
	case req.Truncation != "" && req.Truncation != "disabled":
		return &fieldError{"truncation", "truncation must be \"disabled\" (a prompt over the context is an error), got " + strconv.Quote(req.Truncation)}
	case req.TopLogprobs != nil:
		return &fieldError{"top_logprobs", "top_logprobs is not supported on /v1/responses; use /v1/chat/completions with logprobs"}
	case req.Text != nil && req.Text.Verbosity != "" && req.Text.Verbosity != "medium":
		return &fieldError{"text.verbosity", "text.verbosity is not supported (the models this router serves have no verbosity setting): got " + strconv.Quote(req.Text.Verbosity)}
	case req.MaxToolCalls != nil:
		return &fieldError{"max_tool_calls", "max_tool_calls is not supported (it bounds built-in tool calls, which this router does not run); use parallel_tool_calls: false for one function call"}
	case isSet(req.Prompt):
		return &fieldError{"prompt", "prompt (a stored prompt template) is not supported: this router keeps no prompts; send instructions and input"}
	case req.ServiceTier != "" && req.ServiceTier != "auto" && req.ServiceTier != "default":
		return &fieldError{"service_tier", "service_tier must be \"auto\" or \"default\" (this router has one tier), got " + strconv.Quote(req.ServiceTier)}
	}
	return nil
}

// responsesParam renames a Chat Completions field path into the Responses
// API's: its tools and tool_choice are flat (no "function" object) and
// its response format is text.format.
func responsesParam(fe *fieldError) *fieldError {
	r := strings.NewReplacer(".function.", ".", "response_format.json_schema.", "text.format.", "response_format.", "text.format.", "response_format", "text.format")
	return &fieldError{r.Replace(fe.param), r.Replace(fe.msg)}
}

// builtinTools are the Responses API's hosted tools, refused by name.
var builtinTools = map[string]bool{
	"web_search": true, "web_search_preview": true, "file_search": true, "code_interpreter": true, "computer_use_preview": true,
	"image_generation": true, "mcp": true, "local_shell": true, "shell": true, "custom": true, "apply_patch": true,
}

// chatTools converts the Responses API's flat function tools and tool
// choice into the Chat Completions shapes.
func (req *responsesRequest) chatTools() ([]tool, json.RawMessage, *fieldError) {
	out := make([]tool, 0, len(req.Tools))
	for i, raw := range req.Tools {
		var t struct {
			Type        string          `json:"type"`
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
			Strict      *bool           `json:"strict"`
		}
		p := "tools[" + itoa(i) + "]"
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, nil, &fieldError{p, p + " must be a tool object: " + err.Error()}
		}
		switch {
		case builtinTools[t.Type]:
			return nil, nil, &fieldError{p + ".type", p + " is the built-in tool " + strconv.Quote(t.Type) + ", which this router does not provide; declare function tools and run them yourself"}
		case t.Type != "function":
			return nil, nil, &fieldError{p + ".type", p + ".type must be \"function\", got " + strconv.Quote(t.Type)}
		}
		ct := tool{Type: "function"}
		ct.Function = &toolFunction{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict == nil || *t.Strict}
		out = append(out, ct)
	}
	choice := req.ToolChoice
	if isSet(choice) && strings.HasPrefix(strings.TrimSpace(string(choice)), "{") {
		var c struct {
			Type string `json:"type"`
			Name string `json:"name"`
		}
		if err := json.Unmarshal(choice, &c); err != nil || c.Type != "function" {
			if builtinTools[c.Type] {
				return nil, nil, &fieldError{"tool_choice", "tool_choice names the built-in tool " + strconv.Quote(c.Type) + ", which this router does not provide"}
			}
			return nil, nil, &fieldError{"tool_choice", `tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}`}
		}
		choice, _ = json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": c.Name}})
	}
	return out, choice, nil
}

// inputItem is one item of input: a message (role, content), a function
// call the model made, or a function call's output.
type inputItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

// messages converts instructions and input into chat turns: consecutive
// function calls join one assistant turn (after its text, if any), each
// output is a tool turn.
func (req *responsesRequest) messages() ([]*genv1.ChatMessage, *fieldError) {
	var msgs []*genv1.ChatMessage
	if req.Instructions != "" {
		msgs = append(msgs, &genv1.ChatMessage{Role: genv1.Role_ROLE_SYSTEM, Content: req.Instructions})
	}
	raw := strings.TrimSpace(string(req.Input))
	switch {
	case raw == "" || raw == "null":
		return nil, &fieldError{"input", "input is required: a string or an array of input items"}
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(req.Input, &s); err != nil {
			return nil, &fieldError{"input", "input is not a valid JSON string"}
		}
		return append(msgs, &genv1.ChatMessage{Role: genv1.Role_ROLE_USER, Content: s}), nil
	case raw[0] != '[':
		return nil, &fieldError{"input", "input must be a string or an array of input items"}
	}
	var items []inputItem
	if err := json.Unmarshal(req.Input, &items); err != nil {
		return nil, &fieldError{"input", "input must be an array of input items: " + err.Error()}
	}
	if len(items) == 0 {
		return nil, &fieldError{"input", "input must hold at least one item"}
	}
	for i, it := range items {
		p := "input[" + itoa(i) + "]"
		switch it.Type {
		case "", "message":
			role, ok := roles[it.Role]
			if !ok || role == genv1.Role_ROLE_TOOL {
				return nil, &fieldError{p + ".role", p + ".role must be system, developer, user or assistant, got " + strconv.Quote(it.Role)}
			}
			text, fe := contentText(it.Content, p+".content")
			if fe != nil {
				return nil, fe
			}
			msgs = append(msgs, &genv1.ChatMessage{Role: role, Content: text})
		case "function_call":
			if it.CallID == "" {
				return nil, &fieldError{p + ".call_id", p + " is a function_call: call_id is required"}
			}
			call := &genv1.ToolCall{Id: it.CallID, Name: it.Name, Arguments: it.Arguments}
			if n := len(msgs); n > 0 && msgs[n-1].GetRole() == genv1.Role_ROLE_ASSISTANT && (i > 0 && items[i-1].Type == "function_call" || len(msgs[n-1].GetToolCalls()) == 0) {
				msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, call)
			} else {
				msgs = append(msgs, &genv1.ChatMessage{Role: genv1.Role_ROLE_ASSISTANT, ToolCalls: []*genv1.ToolCall{call}})
			}
			if !enginehost.ToolNameRE.MatchString(it.Name) {
				return nil, &fieldError{p + ".name", p + ".name must be 1 to 64 letters, digits, underscores or dashes, got " + strconv.Quote(enginehost.Clip(it.Name))}
			}
			if !json.Valid([]byte(it.Arguments)) {
				return nil, &fieldError{p + ".arguments", p + ".arguments must be a JSON text (a string holding the arguments object)"}
			}
		case "function_call_output":
			if it.CallID == "" {
				return nil, &fieldError{p + ".call_id", p + " is a function_call_output: call_id is required"}
			}
			out, fe := contentText(it.Output, p+".output")
			if fe != nil {
				return nil, fe
			}
			msgs = append(msgs, &genv1.ChatMessage{Role: genv1.Role_ROLE_TOOL, ToolCallId: it.CallID, Content: out})
		case "item_reference":
			return nil, &fieldError{p + ".type", p + " is an item_reference: this router keeps no stored items; send the item itself"}
		case "reasoning":
			return nil, &fieldError{p + ".type", p + " is a reasoning item: the models this router serves do not reason in items; leave it out"}
		default:
			return nil, &fieldError{p + ".type", p + " has an unsupported type " + strconv.Quote(it.Type) + " (supported: message, function_call, function_call_output)"}
		}
	}
	return msgs, nil
}

// contentText is a Responses content (a string or input_text /
// output_text parts) as text; images, files and audio are 400s.
func contentText(raw json.RawMessage, param string) (string, *fieldError) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return "", &fieldError{param, param + " is required"}
	}
	if s[0] == '"' {
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return "", &fieldError{param, param + " is not a valid JSON string"}
		}
		return text, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", &fieldError{param, param + " must be a string or an array of content parts: " + err.Error()}
	}
	texts := make([]string, 0, len(parts))
	for j, part := range parts {
		pp := param + "[" + itoa(j) + "]"
		switch part.Type {
		case "input_text", "output_text", "text":
			if part.Text == nil {
				return "", &fieldError{pp, pp + " is a " + part.Type + " part without a \"text\" string"}
			}
			texts = append(texts, *part.Text)
		case "input_image":
			return "", &fieldError{pp, pp + " is an input_image part: image input (vision) is not supported by the models this router serves"}
		case "input_file":
			return "", &fieldError{pp, pp + " is an input_file part: file input is not supported by the models this router serves"}
		case "input_audio":
			return "", &fieldError{pp, pp + " is an input_audio part: audio input is not supported by the models this router serves"}
		case "refusal":
			texts = append(texts, "")
		default:
			return "", &fieldError{pp, pp + " has an unknown content part type " + strconv.Quote(part.Type) + " (supported: input_text, output_text)"}
		}
	}
	return strings.Join(texts, "\n"), nil
}

func (h *Handler) responses(w http.ResponseWriter, r *http.Request) {
	var req responsesRequest
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.User == "" {
		req.User = req.SafetyIdentifier
	}
	if fe := req.refused(); fe != nil {
		fe.write(w)
		return
	}
	if req.MaxOutputTokens != nil && *req.MaxOutputTokens < 1 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "max_output_tokens", "", fmt.Sprintf("max_output_tokens must be at least 1, got %d", *req.MaxOutputTokens))
		return
	}
	c := common{Model: req.Model, MaxTokens: req.MaxOutputTokens, Temperature: req.Temperature, TopP: req.TopP, Seed: req.Seed, User: req.User,
		Strategy: req.Strategy, Fallbacks: req.Fallbacks, SessionID: req.SessionID, Cache: req.Cache, Ensemble: req.Ensemble}
	sampling, routing, ok := c.toRouter(w)
	if !ok {
		return
	}
	if f := req.Text; f != nil && f.Format != nil {
		rf := &responseFormat{Type: f.Format.Type}
		if f.Format.Type == "json_schema" {
			rf.JSONSchema = &jsonSchema{f.Format.Name, f.Format.Schema, f.Format.Strict}
		}
		pf, fe := rf.toProto()
		if fe != nil {
			responsesParam(fe).write(w)
			return
		}
		sampling.ResponseFormat = pf
	}
	msgs, fe := req.messages()
	if fe != nil {
		fe.write(w)
		return
	}
	tools, choice, fe := req.chatTools()
	if fe != nil {
		fe.write(w)
		return
	}
	chat := &genv1.ChatMessages{Messages: msgs}
	creq := chatRequest{Tools: tools, ToolChoice: choice, ParallelToolCalls: req.ParallelToolCalls}
	if fe := creq.tools(chat); fe != nil {
		responsesParam(fe).write(w)
		return
	}
	rr := &routerv1.GenerateRequest{Model: req.Model, Sampling: sampling, Routing: routing, User: req.User,
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: chat}}}
	rs := &responseState{req: &req, created: h.now().Unix()}
	blame := fields{"text.format.schema", "text.format", "tools"}
	if req.Stream {
		out := newSSE(w)
		sink := &responsesSink{out: out, st: rs}
		if err := h.router.Route(r.Context(), rr, sink); err != nil {
			if r.Context().Err() != nil {
				return // the client hung up
			}
			if !out.started {
				writeStatusParam(w, err, blame.param(err))
				return
			}
			sink.failed(err)
		}
		return
	}
	// The whole answer's items are the stream's, built by the same sink
	// without writing its events, so both orders agree.
	sink := &responsesSink{st: rs}
	if err := h.router.Route(r.Context(), rr, sink); err != nil {
		writeStatusParam(w, err, blame.param(err))
		return
	}
	writeJSON(w, rs.response(sink.items, sink.end))
}

// responseState is what a Responses API answer's objects share.
type responseState struct {
	req       *responsesRequest
	id, model string
	created   int64
}

func (s *responseState) messageItem(id, text, status string) map[string]any {
	content := []map[string]any{}
	if status == "completed" || text != "" {
		content = append(content, map[string]any{"type": "output_text", "text": text, "annotations": []any{}, "logprobs": []any{}})
	}
	return map[string]any{"type": "message", "id": id, "status": status, "role": "assistant", "content": content}
}

func (s *responseState) callItem(i int, callID, name, args, status string) map[string]any {
	return map[string]any{"type": "function_call", "id": "fc_" + s.id + "_" + itoa(i), "call_id": callID, "name": name, "arguments": args, "status": status}
}

// response is the Response object; end nil means still in progress.
func (s *responseState) response(output []map[string]any, end *genv1.EndEvent) map[string]any {
	if output == nil {
		output = []map[string]any{}
	}
	status, incomplete := "in_progress", any(nil)
	var usage any
	if end != nil {
		status = "completed"
		switch end.GetFinishReason() {
		case genv1.FinishReason_FINISH_REASON_LENGTH:
			status, incomplete = "incomplete", map[string]any{"reason": "max_output_tokens"}
		case genv1.FinishReason_FINISH_REASON_CONTENT_FILTER:
			status, incomplete = "incomplete", map[string]any{"reason": "content_filter"}
		}
		u := end.GetUsage()
		usage = map[string]any{"input_tokens": u.GetPromptTokens(), "input_tokens_details": map[string]any{"cached_tokens": u.GetCachedPromptTokens()},
			"output_tokens": u.GetCompletionTokens(), "output_tokens_details": map[string]any{"reasoning_tokens": 0}, "total_tokens": u.GetTotalTokens()}
	}
	tools := s.req.Tools
	if tools == nil {
		tools = []json.RawMessage{}
	}
	choice := any("auto")
	if isSet(s.req.ToolChoice) {
		choice = s.req.ToolChoice
	}
	format := any(map[string]any{"type": "text"})
	if f := s.req.Text; f != nil && f.Format != nil {
		format = f.Format
	}
	metadata := s.req.Metadata
	if metadata == nil {
		metadata = map[string]string{}
	}
	var instructions any
	if s.req.Instructions != "" {
		instructions = s.req.Instructions
	}
	resp := map[string]any{
		"id": "resp_" + s.id, "object": "response", "created_at": s.created, "status": status, "model": s.model,
		"output": output, "usage": usage, "error": nil, "incomplete_details": incomplete, "instructions": instructions,
		"max_output_tokens": s.req.MaxOutputTokens, "temperature": s.req.Temperature, "top_p": s.req.TopP,
		"parallel_tool_calls": s.req.ParallelToolCalls == nil || *s.req.ParallelToolCalls, "tool_choice": choice, "tools": tools,
		"text": map[string]any{"format": format}, "store": false, "metadata": metadata, "previous_response_id": nil,
		"reasoning": map[string]any{"effort": nil, "summary": nil}, "truncation": "disabled", "user": nilIfEmpty(s.req.User),
	}
	if end != nil {
		resp["llmrouter"] = routingReport(end)
	}
	return resp
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// responsesSink streams a Responses API answer as its typed events:
// response.created and .in_progress, then per output item .added, its
// text or arguments deltas and .done events, then response.completed (or
// .incomplete), each with a sequence_number. Without out it only builds
// the items (a whole answer).
type responsesSink struct {
	out    *sse
	st     *responseState
	seq    int
	items  []map[string]any // finished output items
	text   strings.Builder  // the open message's text
	inText bool             // a message item is open
	call   *genv1.ToolCall  // the open function call
	calls  int
	msgs   int // message items opened
	end    *genv1.EndEvent
}

// msgID is the id of the open (or next) message item: msg_<request id>,
// then msg_<request id>_<n> for text after calls.
func (k *responsesSink) msgID() string {
	if k.msgs <= 1 {
		return "msg_" + k.st.id
	}
	return "msg_" + k.st.id + "_" + itoa(k.msgs-1)
}

func (k *responsesSink) emit(typ string, fields map[string]any) error {
	if k.out == nil {
		return nil
	}
	fields["type"] = typ
	fields["sequence_number"] = k.seq
	k.seq++
	return k.out.named(typ, fields)
}

func (k *responsesSink) Send(m *routerv1.GenerateResponse) error {
	switch e := m.GetEvent().(type) {
	case *routerv1.GenerateResponse_Progress:
		return k.out.comment(progressComment(e.Progress))
	case *routerv1.GenerateResponse_Start:
		k.st.id, k.st.model = e.Start.GetRequestId(), e.Start.GetModel()
		if err := k.emit("response.created", map[string]any{"response": k.st.response(nil, nil)}); err != nil {
			return err
		}
		return k.emit("response.in_progress", map[string]any{"response": k.st.response(nil, nil)})
	case *routerv1.GenerateResponse_Delta:
		// A delta's text comes after the open call's last arguments (the
		// call ended in it) and before any call it starts.
		calls := e.Delta.GetToolCalls()
		more := 0
		for more < len(calls) && calls[more].GetId() == "" {
			more++
		}
		if err := k.callDeltas(calls[:more]); err != nil {
			return err
		}
		if t := e.Delta.GetText(); t != "" {
			if err := k.openText(); err != nil {
				return err
			}
			k.text.WriteString(t)
			if err := k.emit("response.output_text.delta", map[string]any{"item_id": k.msgID(), "output_index": len(k.items), "content_index": 0, "delta": t, "logprobs": []any{}}); err != nil {
				return err
			}
		}
		return k.callDeltas(calls[more:])
	case *routerv1.GenerateResponse_End:
		if err := k.closeOpen(); err != nil {
			return err
		}
		k.st.model = answeredBy(k.st.model, e.End)
		k.end = e.End
		resp := k.st.response(k.items, e.End)
		typ := "response.completed"
		if resp["status"] == "incomplete" {
			typ = "response.incomplete"
		}
		return k.emit(typ, map[string]any{"response": resp})
	}
	return nil
}

// callDeltas applies tool call deltas: one with an id opens a function
// call item, arguments go to the open one.
func (k *responsesSink) callDeltas(calls []*genv1.ToolCallDelta) error {
	for _, d := range calls {
		if d.GetId() != "" {
			if err := k.closeOpen(); err != nil {
				return err
			}
			k.call = &genv1.ToolCall{Id: d.GetId(), Name: d.GetName()}
			if err := k.emit("response.output_item.added", map[string]any{"output_index": len(k.items), "item": k.st.callItem(k.calls, d.GetId(), d.GetName(), "", "in_progress")}); err != nil {
				return err
			}
		}
		if k.call == nil || d.GetArguments() == "" {
			continue
		}
		k.call.Arguments += d.GetArguments()
		if err := k.emit("response.function_call_arguments.delta", map[string]any{"item_id": "fc_" + k.st.id + "_" + itoa(k.calls), "output_index": len(k.items), "delta": d.GetArguments()}); err != nil {
			return err
		}
	}
	return nil
}

// openText opens a message item: the first, or another for text after
// calls.
func (k *responsesSink) openText() error {
	if k.inText {
		return nil
	}
	if err := k.closeOpen(); err != nil {
		return err
	}
	k.inText = true
	k.msgs++
	k.text.Reset()
	if err := k.emit("response.output_item.added", map[string]any{"output_index": len(k.items), "item": k.st.messageItem(k.msgID(), "", "in_progress")}); err != nil {
		return err
	}
	return k.emit("response.content_part.added", map[string]any{"item_id": k.msgID(), "output_index": len(k.items), "content_index": 0,
		"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}}})
}

// closeOpen finishes the open message or function call item.
func (k *responsesSink) closeOpen() error {
	switch {
	case k.inText:
		k.inText = false
		text, id, at := k.text.String(), k.msgID(), len(k.items)
		if err := k.emit("response.output_text.done", map[string]any{"item_id": id, "output_index": at, "content_index": 0, "text": text, "logprobs": []any{}}); err != nil {
			return err
		}
		if err := k.emit("response.content_part.done", map[string]any{"item_id": id, "output_index": at, "content_index": 0,
			"part": map[string]any{"type": "output_text", "text": text, "annotations": []any{}}}); err != nil {
			return err
		}
		item := k.st.messageItem(id, text, "completed")
		k.items = append(k.items, item)
		return k.emit("response.output_item.done", map[string]any{"output_index": at, "item": item})
	case k.call != nil:
		c, at := k.call, len(k.items)
		k.call = nil
		id := "fc_" + k.st.id + "_" + itoa(k.calls)
		if err := k.emit("response.function_call_arguments.done", map[string]any{"item_id": id, "output_index": at, "arguments": c.GetArguments()}); err != nil {
			return err
		}
		item := k.st.callItem(k.calls, c.GetId(), c.GetName(), c.GetArguments(), "completed")
		k.calls++
		k.items = append(k.items, item)
		return k.emit("response.output_item.done", map[string]any{"output_index": at, "item": item})
	}
	return nil
}

// failed ends a stream that broke after its first event with
// response.failed, which carries the error.
func (k *responsesSink) failed(err error) {
	_, e := statusError(err)
	resp := k.st.response(k.items, nil)
	resp["status"] = "failed"
	code := e.Type
	if e.Code != nil {
		code = *e.Code
	}
	resp["error"] = map[string]any{"code": code, "message": e.Message}
	_ = k.emit("response.failed", map[string]any{"response": resp})
}
