package openai

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
)

// chatMessage is one message; content is a string, null, or an array of
// content parts.
type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  []toolCall      `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
	Name       string          `json:"name"`
}

// toolCall is an assistant turn's call, as OpenAI writes it.
type toolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// tool is one entry of tools.
type tool struct {
	Type     string        `json:"type"`
	Function *toolFunction `json:"function"`
}

// toolFunction is a function tool's declaration.
type toolFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      bool            `json:"strict"`
}

// contentPart is one element of an array content.
type contentPart struct {
	Type    string  `json:"type"`
	Text    *string `json:"text"`
	Refusal *string `json:"refusal"`
}

// partCapabilities names what a non-text content part would need.
var partCapabilities = map[string]string{
	"image_url":   "image input (vision)",
	"input_audio": "audio input",
	"file":        "file input",
}

// text returns a message's content as text: a string as is, text parts
// joined with newlines; anything else is a 400 naming the part.
func (m chatMessage) text(i int) (string, *fieldError) {
	param := "messages[" + itoa(i) + "].content"
	raw := strings.TrimSpace(string(m.Content))
	switch {
	case raw == "" || raw == "null":
		if m.Role == "assistant" && (len(m.ToolCalls) > 0 || raw == "null") {
			return "", nil
		}
		return "", &fieldError{param, param + " is required"}
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(m.Content, &s); err != nil {
			return "", &fieldError{param, param + " is not a valid JSON string"}
		}
		return s, nil
	case raw[0] != '[':
		return "", &fieldError{param, param + " must be a string or an array of content parts"}
	}
	var parts []contentPart
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", &fieldError{param, param + " must be an array of content parts ({\"type\": \"text\", \"text\": ...}): " + err.Error()}
	}
	texts := make([]string, 0, len(parts))
	for j, p := range parts {
		pp := param + "[" + itoa(j) + "]"
		switch {
		case p.Type == "text":
			if p.Text == nil {
				return "", &fieldError{pp, pp + " is a text part without a \"text\" string"}
			}
			texts = append(texts, *p.Text)
		case p.Type == "refusal" && m.Role == "assistant" && p.Refusal != nil:
			texts = append(texts, *p.Refusal) // an earlier refusal, part of the conversation
		case partCapabilities[p.Type] != "":
			article := "a "
			if strings.ContainsRune("aeiou", rune(p.Type[0])) {
				article = "an "
			}
			return "", &fieldError{pp, pp + " is " + article + p.Type + " part: " + partCapabilities[p.Type] + " is not supported by the models this router serves; send text parts only"}
		default:
			return "", &fieldError{pp, pp + " has an unknown content part type \"" + p.Type + "\" (supported: text)"}
		}
	}
	return strings.Join(texts, "\n"), nil
}

// tools converts tools, tool_choice and parallel_tool_calls into chat,
// checking what the router can check without the model: names, unique
// names, that schemas are JSON objects, that a named choice is one of the
// tools. Schema features a local model's grammar cannot express are the
// engine's to refuse (a hosted model may take them).
func (req *chatRequest) tools(chat *genv1.ChatMessages) *fieldError {
	seen := map[string]bool{}
	for i, t := range req.Tools {
		p := "tools[" + itoa(i) + "]"
		switch {
		case t.Type != "function":
			return &fieldError{p + ".type", p + ".type must be \"function\", got " + strconv.Quote(t.Type)}
		case t.Function == nil:
			return &fieldError{p + ".function", p + ".function is required"}
		case !enginehost.ToolNameRE.MatchString(t.Function.Name):
			return &fieldError{p + ".function.name", p + ".function.name must be 1 to 64 letters, digits, underscores or dashes, got " + strconv.Quote(enginehost.Clip(t.Function.Name))}
		case seen[t.Function.Name]:
			return &fieldError{p + ".function.name", p + ".function.name " + strconv.Quote(t.Function.Name) + " is not unique"}
		case len(req.Tools) > enginehost.MaxTools:
			return &fieldError{"tools", fmt.Sprintf("tools holds %d tools, over the limit of %d", len(req.Tools), enginehost.MaxTools)}
		}
		seen[t.Function.Name] = true
		var params string
		if isSet(t.Function.Parameters) {
			var v any
			if err := json.Unmarshal(t.Function.Parameters, &v); err != nil {
				return &fieldError{p + ".function.parameters", p + ".function.parameters is not valid JSON: " + err.Error()}
			}
			if _, ok := v.(map[string]any); !ok {
				return &fieldError{p + ".function.parameters", p + ".function.parameters must be a JSON Schema object"}
			}
			if len(t.Function.Parameters) > structured.MaxSchemaBytes {
				return &fieldError{p + ".function.parameters", fmt.Sprintf("%s.function.parameters is %d bytes, over the limit of %d", p, len(t.Function.Parameters), structured.MaxSchemaBytes)}
			}
			params = string(t.Function.Parameters)
		}
		chat.Tools = append(chat.Tools, &genv1.Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: params, Strict: t.Function.Strict})
	}
	if req.ParallelToolCalls != nil {
		chat.ParallelToolCalls = proto.Bool(*req.ParallelToolCalls)
	}
	if !isSet(req.ToolChoice) {
		return nil
	}
	choice, fe := toolChoice(req.ToolChoice, seen)
	if fe != nil {
		return fe
	}
	if len(req.Tools) == 0 && choice.GetMode() != genv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE && choice.GetMode() != genv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO {
		return &fieldError{"tool_choice", "tool_choice needs tools"}
	}
	chat.ToolChoice = choice
	return nil
}

// toolChoice parses tool_choice: "auto", "none", "required", or
// {"type": "function", "function": {"name": ...}} naming one of tools.
func toolChoice(raw json.RawMessage, tools map[string]bool) (*genv1.ToolChoice, *fieldError) {
	var mode string
	if json.Unmarshal(raw, &mode) == nil {
		switch mode {
		case "auto":
			return &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO}, nil
		case "none":
			return &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE}, nil
		case "required":
			return &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}, nil
		}
		return nil, &fieldError{"tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or a function, got " + strconv.Quote(enginehost.Clip(mode))}
	}
	var named struct {
		Type     string `json:"type"`
		Function *struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &named); err != nil || named.Type != "function" || named.Function == nil {
		return nil, &fieldError{"tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}"}
	}
	if !tools[named.Function.Name] {
		return nil, &fieldError{"tool_choice.function.name", "tool_choice names function " + strconv.Quote(enginehost.Clip(named.Function.Name)) + ", which is not in tools"}
	}
	return &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION, Name: named.Function.Name}, nil
}

// toolTurn converts an assistant turn's calls and a tool turn's id.
func (m chatMessage) toolTurn(i int, msg *genv1.ChatMessage) *fieldError {
	p := "messages[" + itoa(i) + "]"
	if len(m.ToolCalls) > 0 && m.Role != "assistant" {
		return &fieldError{p + ".tool_calls", p + ".tool_calls is only for assistant messages"}
	}
	for j, c := range m.ToolCalls {
		cp := p + ".tool_calls[" + itoa(j) + "]"
		switch {
		case c.Type != "" && c.Type != "function":
			return &fieldError{cp + ".type", cp + ".type must be \"function\""}
		case c.ID == "":
			return &fieldError{cp + ".id", cp + ".id is required"}
		case !enginehost.ToolNameRE.MatchString(c.Function.Name):
			return &fieldError{cp + ".function.name", cp + ".function.name must be 1 to 64 letters, digits, underscores or dashes, got " + strconv.Quote(enginehost.Clip(c.Function.Name))}
		case !json.Valid([]byte(c.Function.Arguments)):
			return &fieldError{cp + ".function.arguments", cp + ".function.arguments must be a JSON text (a string holding the arguments object)"}
		}
		msg.ToolCalls = append(msg.ToolCalls, &genv1.ToolCall{Id: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
	}
	if m.Role == "tool" {
		if m.ToolCallID == "" {
			return &fieldError{p + ".tool_call_id", p + " is a tool message: tool_call_id is required"}
		}
		msg.ToolCallId = m.ToolCallID
	}
	return nil
}

// fieldError is a 400 about one request field.
type fieldError struct{ param, msg string }

func (e *fieldError) write(w http.ResponseWriter) {
	writeError(w, http.StatusBadRequest, "invalid_request_error", e.param, "", e.msg)
}

type chatRequest struct {
	common
	Messages          []chatMessage   `json:"messages"`
	Logprobs          bool            `json:"logprobs"`
	TopLogprobs       *int32          `json:"top_logprobs"`
	Tools             []tool          `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	// Not supported: refused rather than ignored.
	Functions      json.RawMessage `json:"functions"`
	FunctionCall   json.RawMessage `json:"function_call"`
	ResponseFormat *responseFormat `json:"response_format"`
	Modalities     []string        `json:"modalities"`
	Audio          json.RawMessage `json:"audio"`
}

// responseFormat is OpenAI's response_format.
type responseFormat struct {
	Type       string      `json:"type"`
	JSONSchema *jsonSchema `json:"json_schema"`
}

// jsonSchema is a json_schema response format's schema and name.
type jsonSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
	Strict bool            `json:"strict"`
}

// toProto checks the format's shape and converts it. The router compiles
// the schema: an invalid one is a 400, features the local grammar cannot
// express a capability only some models have.
func (f *responseFormat) toProto() (*genv1.ResponseFormat, *fieldError) {
	switch f.Type {
	case "", "text":
		return nil, nil
	case "json_object":
		return &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT}, nil
	case "json_schema":
		js := f.JSONSchema
		if js == nil || len(js.Schema) == 0 || string(js.Schema) == "null" {
			return nil, &fieldError{"response_format.json_schema.schema", "response_format json_schema needs json_schema.schema"}
		}
		if !enginehost.ToolNameRE.MatchString(js.Name) {
			return nil, &fieldError{"response_format.json_schema.name", "response_format.json_schema.name must be 1 to 64 letters, digits, underscores or dashes, got " + strconv.Quote(js.Name)}
		}
		if len(js.Schema) > structured.MaxSchemaBytes {
			return nil, &fieldError{"response_format.json_schema.schema", fmt.Sprintf("response_format.json_schema.schema is %d bytes, over the limit of %d", len(js.Schema), structured.MaxSchemaBytes)}
		}
		return &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA, JsonSchema: string(js.Schema), Name: js.Name, Strict: js.Strict}, nil
	}
	return nil, &fieldError{"response_format.type", "response_format.type must be text, json_object or json_schema, got " + strconv.Quote(f.Type)}
}

var roles = map[string]genv1.Role{
	"system": genv1.Role_ROLE_SYSTEM, "developer": genv1.Role_ROLE_SYSTEM,
	"user": genv1.Role_ROLE_USER, "assistant": genv1.Role_ROLE_ASSISTANT, "tool": genv1.Role_ROLE_TOOL,
}

// unsupported refuses the chat fields this router does not implement.
func (req *chatRequest) unsupported() *fieldError {
	switch {
	case isSet(req.Functions):
		return &fieldError{"functions", "functions (the deprecated form of function calling) is not supported; send tools"}
	case isSet(req.FunctionCall):
		return &fieldError{"function_call", "function_call (the deprecated form of tool_choice) is not supported; send tool_choice"}
	case isSet(req.Audio) || slices.ContainsFunc(req.Modalities, func(m string) bool { return m != "text" }):
		return &fieldError{"modalities", "audio output is not supported: the models this router serves produce text"}
	}
	return nil
}

func isSet(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s != "" && s != "null" && s != "[]"
}

func (h *Handler) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decode(w, r, &req) {
		return
	}
	sampling, routing, ok := req.toRouter(w)
	if !ok {
		return
	}
	if fe := req.unsupported(); fe != nil {
		fe.write(w)
		return
	}
	if req.TopLogprobs != nil {
		if *req.TopLogprobs < 0 || *req.TopLogprobs > 20 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "top_logprobs", "", fmt.Sprintf("top_logprobs must be 0 to 20, got %d", *req.TopLogprobs))
			return
		}
		if !req.Logprobs && *req.TopLogprobs > 0 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "top_logprobs", "", "top_logprobs needs logprobs: true")
			return
		}
		sampling.TopLogprobs = *req.TopLogprobs
	}
	sampling.Logprobs = req.Logprobs
	if req.ResponseFormat != nil {
		f, fe := req.ResponseFormat.toProto()
		if fe != nil {
			fe.write(w)
			return
		}
		sampling.ResponseFormat = f
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "messages", "", "messages must hold at least one message")
		return
	}
	msgs := make([]*genv1.ChatMessage, len(req.Messages))
	for i, m := range req.Messages {
		role, ok := roles[m.Role]
		if !ok {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "messages["+itoa(i)+"].role", "",
				"messages["+itoa(i)+"].role must be system, developer, user, assistant or tool, got \""+m.Role+"\"")
			return
		}
		text, fe := m.text(i)
		if fe != nil {
			fe.write(w)
			return
		}
		if len(m.Name) > enginehost.MaxMessageName || !utf8.ValidString(m.Name) {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "messages["+itoa(i)+"].name", "",
				fmt.Sprintf("messages[%d].name must be valid UTF-8 of at most %d bytes, got %d bytes", i, enginehost.MaxMessageName, len(m.Name)))
			return
		}
		msgs[i] = &genv1.ChatMessage{Role: role, Content: text, Name: m.Name}
		if fe := m.toolTurn(i, msgs[i]); fe != nil {
			fe.write(w)
			return
		}
	}
	chat := &genv1.ChatMessages{Messages: msgs}
	if fe := req.tools(chat); fe != nil {
		fe.write(w)
		return
	}
	rr := &routerv1.GenerateRequest{Model: req.Model, Sampling: sampling, Routing: routing, User: req.User,
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: chat}}}
	req.blame = fields{"response_format.json_schema.schema", "response_format", "tools"}
	h.respond(w, r, rr, &req.common, true)
}

// fields names, for an OpenAI error's param, the request fields behind
// the capabilities a request may need.
type fields struct{ schema, format, tools string }

// param is the field to name for err: the one behind the capability its
// first model lacks (rpcerr.MetaCapability), or "".
func (f fields) param(err error) string {
	if rpcerr.Reason(err) != rpcerr.ReasonCapabilityMissing {
		return ""
	}
	switch rpcerr.Metadata(err, rpcerr.MetaCapability) {
	case "any_json_schema":
		if rpcerr.Metadata(err, rpcerr.MetaSchemaOf) == "tools" {
			return f.tools
		}
		return f.schema
	case "structured_output":
		return f.format
	case "tools":
		return f.tools
	case "logprobs":
		return "logprobs"
	}
	return ""
}

// maxChoices bounds n.
const maxChoices = 8

// choices returns the n requests of a response: rr itself for n = 1, else
// copies with request ids id-0 … id-(n-1), one session (so one worker)
// unless the client chose one, and, when a seed is set, seeds seed+i, so
// that the choices differ and each is reproducible.
func choices(rr *routerv1.GenerateRequest, n int) (string, []*routerv1.GenerateRequest) {
	if n <= 1 {
		return "", []*routerv1.GenerateRequest{rr}
	}
	id := rr.GetRequestId()
	if id == "" {
		id = enginehost.NewRequestID()
	}
	out := make([]*routerv1.GenerateRequest, n)
	for i := range out {
		c := proto.CloneOf(rr)
		c.RequestId = id + "-" + itoa(i)
		if c.GetRouting().GetSessionId() == "" {
			// One worker for every choice (session affinity), so that
			// engine-gguf computes the prompt's KV once and shares it.
			if c.Routing == nil {
				c.Routing = &routerv1.RoutingOptions{}
			}
			c.Routing.SessionId = "n-" + id
		}
		if c.GetSampling().Seed != nil {
			c.Sampling.Seed = proto.Uint64(c.GetSampling().GetSeed() + uint64(i))
		}
		out[i] = c
	}
	return id, out
}

// respond routes rr (n times for n choices, concurrently) and writes a
// whole response, or streams chunks.
func (h *Handler) respond(w http.ResponseWriter, r *http.Request, rr *routerv1.GenerateRequest, c *common, chat bool) {
	object, prefix := "text_completion", "cmpl-"
	if chat {
		object, prefix = "chat.completion", "chatcmpl-"
	}
	id, reqs := choices(rr, c.choices())
	if c.Stream {
		if chat {
			object += ".chunk"
		}
		h.stream(w, r, reqs, id, object, c.StreamOptions != nil && c.StreamOptions.IncludeUsage, chat, c.blame)
		return
	}
	cols := make([]*collector, len(reqs))
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, q := range reqs {
		cols[i] = &collector{}
		wg.Go(func() {
			if errs[i] = h.router.Route(ctx, q, cols[i]); errs[i] != nil {
				cancel() // one failed choice fails the response: stop the others
			}
		})
	}
	wg.Wait()
	if err := firstError(errs); err != nil {
		writeStatusParam(w, err, c.blame.param(err))
		return
	}
	if id == "" {
		id = cols[0].id
	}
	out := make([]map[string]any, len(cols))
	u := &usage{}
	for i, col := range cols {
		choice := map[string]any{"index": i, "finish_reason": finishReason(col.end.GetFinishReason()), "logprobs": nil}
		if chat {
			msg := map[string]any{"role": "assistant", "content": col.text.String(), "refusal": nil}
			if len(col.calls) > 0 {
				calls := make([]map[string]any, len(col.calls))
				for j, c := range col.calls {
					calls[j] = map[string]any{"id": c.GetId(), "type": "function", "function": map[string]any{"name": c.GetName(), "arguments": c.GetArguments()}}
				}
				msg["tool_calls"] = calls
				if col.text.Len() == 0 {
					msg["content"] = nil
				}
			}
			choice["message"] = msg
			if q := reqs[i].GetSampling(); q.GetLogprobs() {
				choice["logprobs"] = map[string]any{"content": chatLogprobs(col.logprobs, int(q.GetTopLogprobs())), "refusal": nil}
			}
		} else {
			choice["text"] = col.text.String()
			if q := reqs[i].GetSampling(); q.GetLogprobs() {
				choice["logprobs"] = completionLogprobs(col.logprobs, 0)
			}
		}
		out[i] = choice
		u.add(col.end.GetUsage(), i == 0)
	}
	resp := map[string]any{
		"id": prefix + id, "object": object, "created": h.now().Unix(), "model": answeredBy(cols[0].model, cols[0].end),
		"choices": out, "usage": u, "llmrouter": routingReport(cols[0].end),
	}
	if len(cols) > 1 {
		reports := make([]map[string]any, len(cols))
		for i, col := range cols {
			reports[i] = routingReport(col.end)
		}
		resp["llmrouter"] = map[string]any{"choices": reports}
	}
	if chat {
		resp["system_fingerprint"] = nil
	}
	writeJSON(w, resp)
}

// firstError is the error that ended a fan-out: the first that is not
// the cancellation caused by another choice's failure.
func firstError(errs []error) error {
	var cancelled error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Canceled {
			return err
		}
		cancelled = err
	}
	return cancelled
}

type completionRequest struct {
	common
	Prompt   any    `json:"prompt"`
	Logprobs *int32 `json:"logprobs"`
	Echo     bool   `json:"echo"`
	BestOf   *int   `json:"best_of"`
	Suffix   string `json:"suffix"`
	// Chat Completions fields, refused here rather than ignored.
	ResponseFormat json.RawMessage `json:"response_format"`
	Tools          json.RawMessage `json:"tools"`
	ToolChoice     json.RawMessage `json:"tool_choice"`
}

func (h *Handler) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if !decode(w, r, &req) {
		return
	}
	sampling, routing, ok := req.toRouter(w)
	if !ok {
		return
	}
	switch {
	case req.Echo:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "echo", "", "echo is not supported")
		return
	case req.BestOf != nil && *req.BestOf != 1:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "best_of", "", "best_of is not supported; use n")
		return
	case req.Suffix != "":
		writeError(w, http.StatusBadRequest, "invalid_request_error", "suffix", "", "suffix (fill-in-the-middle) is not supported")
		return
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"response_format", req.ResponseFormat}, {"tools", req.Tools}, {"tool_choice", req.ToolChoice}} {
		if isSet(f.raw) {
			writeError(w, http.StatusBadRequest, "invalid_request_error", f.name, "", f.name+" is not supported on /v1/completions; use /v1/chat/completions")
			return
		}
	}
	if req.Logprobs != nil {
		if *req.Logprobs < 0 || *req.Logprobs > 5 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "logprobs", "", fmt.Sprintf("logprobs must be 0 to 5, got %d", *req.Logprobs))
			return
		}
		sampling.Logprobs, sampling.TopLogprobs = true, *req.Logprobs
	}
	prompt, ok := req.Prompt.(string)
	if list, isList := req.Prompt.([]any); isList && len(list) == 1 {
		prompt, ok = list[0].(string)
	}
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "prompt", "", "prompt must be a string (or an array of one string)")
		return
	}
	if sampling.MaxTokens == 0 && req.MaxTokens == nil {
		sampling.MaxTokens = 16 // OpenAI's default for completions
	}
	rr := &routerv1.GenerateRequest{Model: req.Model, Sampling: sampling, Routing: routing, User: req.User,
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}}}
	h.respond(w, r, rr, &req.common, false)
}

// tokenText is a token's bytes as a JSON string (invalid UTF-8, from a
// token that ends inside a character, becomes U+FFFD; bytes keeps it exact).
func tokenText(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }

func byteList(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

// chatLogprobs is OpenAI's choices[].logprobs.content.
func chatLogprobs(lps []*genv1.TokenLogprobs, top int) []map[string]any {
	out := make([]map[string]any, 0, len(lps))
	for _, lp := range lps {
		alts := make([]map[string]any, 0, min(top, len(lp.GetTop())))
		for _, a := range lp.GetTop()[:min(top, len(lp.GetTop()))] {
			alts = append(alts, map[string]any{"token": tokenText(a.GetToken()), "logprob": a.GetLogprob(), "bytes": byteList(a.GetToken())})
		}
		c := lp.GetChosen()
		out = append(out, map[string]any{"token": tokenText(c.GetToken()), "logprob": c.GetLogprob(), "bytes": byteList(c.GetToken()), "top_logprobs": alts})
	}
	return out
}

// completionLogprobs is the legacy completions' logprobs object; offset is
// the text offset of the first token.
func completionLogprobs(lps []*genv1.TokenLogprobs, offset int) map[string]any {
	tokens, lp, offsets := make([]string, 0, len(lps)), make([]float32, 0, len(lps)), make([]int, 0, len(lps))
	top := make([]map[string]float32, 0, len(lps))
	for _, l := range lps {
		t := tokenText(l.GetChosen().GetToken())
		tokens, lp, offsets = append(tokens, t), append(lp, l.GetChosen().GetLogprob()), append(offsets, offset)
		offset += len(t)
		m := map[string]float32{}
		for _, a := range l.GetTop() {
			m[tokenText(a.GetToken())] = a.GetLogprob()
		}
		top = append(top, m)
	}
	return map[string]any{"tokens": tokens, "token_logprobs": lp, "top_logprobs": top, "text_offset": offsets}
}

// streamSink turns one choice's router events into OpenAI chunks, on a
// stream that n choices may share.
type streamSink struct {
	s        *sharedStream
	index    int
	model    string
	top      int  // top_logprobs asked for
	logprobs bool // logprobs asked for
	pending  []*genv1.TokenLogprobs
	offset   int // text offset, for the legacy completions' logprobs
	end      *genv1.EndEvent
}

// sharedStream is the SSE stream and what every choice's chunks share.
type sharedStream struct {
	mu           sync.Mutex
	out          *sse
	object, id   string
	created      int64
	chat         bool
	includeUsage bool
}

func (s *sharedStream) chunk(model string, choice map[string]any, u *usage) map[string]any {
	c := map[string]any{"id": s.id, "object": s.object, "created": s.created, "model": model}
	if choice != nil {
		c["choices"] = []map[string]any{choice}
	} else {
		c["choices"] = []map[string]any{}
	}
	if s.chat {
		c["system_fingerprint"] = nil
	}
	if s.includeUsage {
		c["usage"] = nil
		if u != nil {
			c["usage"] = u
		}
	}
	return c
}

func (s *sharedStream) comment(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.comment(text)
}

func (s *sharedStream) event(v any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.event(v)
}

// takeLogprobs returns the choice's logprobs object for the tokens since
// the last chunk, in the endpoint's shape (nil when none were asked for).
func (k *streamSink) takeLogprobs() any {
	if !k.logprobs {
		return nil
	}
	lps := k.pending
	k.pending = nil
	if k.s.chat {
		return map[string]any{"content": chatLogprobs(lps, k.top), "refusal": nil}
	}
	lp := completionLogprobs(lps, k.offset)
	for _, l := range lps {
		k.offset += len(tokenText(l.GetChosen().GetToken()))
	}
	return lp
}

func (k *streamSink) Send(m *routerv1.GenerateResponse) error {
	s := k.s
	switch e := m.GetEvent().(type) {
	case *routerv1.GenerateResponse_Progress:
		return s.comment(progressComment(e.Progress))
	case *routerv1.GenerateResponse_Start:
		k.model = e.Start.GetModel()
		s.mu.Lock()
		if s.id == "" {
			s.id = "cmpl-" + e.Start.GetRequestId()
			if s.chat {
				s.id = "chat" + s.id
			}
		}
		s.mu.Unlock()
		if s.chat {
			return s.event(s.chunk(k.model, map[string]any{"index": k.index, "delta": map[string]any{"role": "assistant", "content": "", "refusal": nil}, "finish_reason": nil, "logprobs": nil}, nil))
		}
	case *routerv1.GenerateResponse_Delta:
		k.pending = append(k.pending, e.Delta.GetLogprobs()...)
		calls := e.Delta.GetToolCalls()
		if e.Delta.GetText() == "" && (len(calls) == 0 || !s.chat) {
			return nil // held-back bytes: nothing to show yet (their logprobs go with the next chunk)
		}
		if s.chat {
			delta := map[string]any{}
			if t := e.Delta.GetText(); t != "" {
				delta["content"] = t
			}
			if len(calls) > 0 {
				delta["tool_calls"] = toolCallDeltas(calls)
			}
			return s.event(s.chunk(k.model, map[string]any{"index": k.index, "delta": delta, "finish_reason": nil, "logprobs": k.takeLogprobs()}, nil))
		}
		return s.event(s.chunk(k.model, map[string]any{"index": k.index, "text": e.Delta.GetText(), "finish_reason": nil, "logprobs": k.takeLogprobs()}, nil))
	case *routerv1.GenerateResponse_End:
		k.end = e.End
		fr := finishReason(e.End.GetFinishReason())
		var lp any
		if len(k.pending) > 0 {
			lp = k.takeLogprobs()
		}
		var last map[string]any
		if s.chat {
			last = map[string]any{"index": k.index, "delta": map[string]any{}, "finish_reason": fr, "logprobs": lp}
		} else {
			last = map[string]any{"index": k.index, "text": "", "finish_reason": fr, "logprobs": lp}
		}
		c := s.chunk(answeredBy(k.model, e.End), last, nil)
		c["llmrouter"] = routingReport(e.End)
		return s.event(c)
	}
	return nil
}

// toolCallDeltas are OpenAI's delta.tool_calls: a call's first delta has
// its id, type and name (and empty arguments so far), later ones pieces of
// its arguments.
func toolCallDeltas(calls []*genv1.ToolCallDelta) []map[string]any {
	out := make([]map[string]any, len(calls))
	for i, c := range calls {
		d := map[string]any{"index": c.GetIndex(), "function": map[string]any{"arguments": c.GetArguments()}}
		if c.GetId() != "" {
			d["id"], d["type"] = c.GetId(), "function"
			d["function"].(map[string]any)["name"] = c.GetName()
		}
		out[i] = d
	}
	return out
}

func (h *Handler) stream(w http.ResponseWriter, r *http.Request, reqs []*routerv1.GenerateRequest, id, object string, includeUsage, chat bool, blame fields) {
	out := newSSE(w)
	shared := &sharedStream{out: out, object: object, created: h.now().Unix(), chat: chat, includeUsage: includeUsage}
	if id != "" {
		shared.id = "cmpl-" + id
		if chat {
			shared.id = "chat" + shared.id
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sinks := make([]*streamSink, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, q := range reqs {
		sinks[i] = &streamSink{s: shared, index: i, logprobs: q.GetSampling().GetLogprobs(), top: int(q.GetSampling().GetTopLogprobs())}
		wg.Go(func() {
			if errs[i] = h.router.Route(ctx, q, sinks[i]); errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := firstError(errs); err != nil {
		if r.Context().Err() != nil {
			return // the client hung up
		}
		// Before the first chunk: an HTTP error. After it: an error event
		// and no [DONE], so that no client takes a cut stream for a
		// complete one.
		out.fail(err, blame.param(err))
		return
	}
	if includeUsage {
		u := &usage{}
		for i, k := range sinks {
			u.add(k.end.GetUsage(), i == 0)
		}
		if err := out.event(shared.chunk(answeredBy(sinks[0].model, sinks[0].end), nil, u)); err != nil {
			return
		}
	}
	out.done()
}

func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	resp, err := h.router.ListModels(r.Context(), &routerv1.ListModelsRequest{})
	if err != nil {
		writeStatus(w, err)
		return
	}
	data := []map[string]any{}
	for _, m := range resp.GetModels() {
		data = append(data, map[string]any{
			"id": m.GetInfo().GetName(), "object": "model", "created": 0, "owned_by": "llmrouter",
			"format": m.GetInfo().GetFormat(), "context_length": m.GetInfo().GetContextLength(), "endpoints": len(m.GetEndpoints()),
		})
	}
	writeJSON(w, map[string]any{"object": "list", "data": data})
}

type embeddingsRequest struct {
	Model          string `json:"model"`
	Input          any    `json:"input"`
	EncodingFormat string `json:"encoding_format"`
}

func (h *Handler) embeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingsRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "model", "", "you must provide a model parameter")
		return
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "encoding_format", "", "encoding_format must be \"float\" or \"base64\"")
		return
	}
	var inputs []string
	switch v := req.Input.(type) {
	case string:
		inputs = []string{v}
	case []any:
		for i, x := range v {
			s, ok := x.(string)
			if !ok {
				writeError(w, http.StatusBadRequest, "invalid_request_error", "input", "", "input["+itoa(i)+"] must be a string")
				return
			}
			inputs = append(inputs, s)
		}
	default:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "input", "", "input must be a string or an array of strings")
		return
	}
	resp, err := h.router.Embed(r.Context(), req.Model, inputs)
	if err != nil {
		writeStatus(w, err)
		return
	}
	data := make([]map[string]any, len(resp.GetEmbeddings()))
	for i, e := range resp.GetEmbeddings() {
		var v any = e.GetValues()
		if req.EncodingFormat == "base64" { // little-endian float32s, as OpenAI sends them
			b := make([]byte, 0, 4*len(e.GetValues()))
			for _, f := range e.GetValues() {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
			}
			v = base64.StdEncoding.EncodeToString(b)
		}
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": v}
	}
	u := resp.GetUsage()
	writeJSON(w, map[string]any{"object": "list", "data": data, "model": req.Model,
		"usage": map[string]any{"prompt_tokens": u.GetPromptTokens(), "total_tokens": u.GetTotalTokens()}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func itoa(i int) string { return strconv.Itoa(i) }

// answeredBy is the response's model: the one that finished the answer
// (after a fallback, not the one asked for).
func answeredBy(started string, end *genv1.EndEvent) string {
	if m := end.GetModels(); len(m) > 0 {
		return m[len(m)-1]
	}
	return started
}

// routingReport is the router's account of a request, as an extension
// field OpenAI clients ignore: the models that answered, failovers, and
// every attempt with its outcome and cost; for an answer from the cache,
// the hit (kind, similarity, time and cost saved, age).
func routingReport(end *genv1.EndEvent) map[string]any {
	attempts := make([]map[string]any, 0, len(end.GetAttempts()))
	for _, a := range end.GetAttempts() {
		m := map[string]any{
			"endpoint": a.GetEndpoint(), "model": a.GetModel(),
			"reason":            strings.ToLower(strings.TrimPrefix(a.GetReason().String(), "ATTEMPT_REASON_")),
			"outcome":           strings.ToLower(strings.TrimPrefix(a.GetOutcome().String(), "ATTEMPT_OUTCOME_")),
			"completion_tokens": a.GetCompletionTokens(), "cost_usd": a.GetCostUsd(),
			"duration_ms": a.GetDuration().AsDuration().Milliseconds(),
		}
		if a.GetError() != "" {
			m["error"] = a.GetError()
		}
		attempts = append(attempts, m)
	}
	report := map[string]any{"models": end.GetModels(), "failovers": end.GetFailovers(), "cost_usd": end.GetCostUsd(), "attempts": attempts}
	if c := end.GetCache(); c != nil {
		report["cache"] = map[string]any{
			"kind": c.GetKind(), "similarity": c.GetSimilarity(), "saved_cost_usd": c.GetSavedCostUsd(),
			"saved_ms": c.GetSaved().AsDuration().Milliseconds(), "age_ms": c.GetAge().AsDuration().Milliseconds(),
		}
	}
	if m := end.GetSemanticMiss(); m != nil {
		report["semantic_miss"] = map[string]any{"similarity": m.GetSimilarity(), "refused": m.GetRefused(), "threshold": m.GetThreshold()}
	}
	if e := end.GetEnsemble(); e != nil {
		member := func(m *genv1.EnsembleMember) map[string]any {
			r := map[string]any{"model": m.GetModel(), "routed_model": m.GetRoutedModel(), "outcome": m.GetOutcome(),
				"prompt_tokens": m.GetUsage().GetPromptTokens(), "completion_tokens": m.GetUsage().GetCompletionTokens(), "cost_usd": m.GetCostUsd()}
			if m.GetError() != "" {
				r["error"] = m.GetError()
			}
			if m.GetVotes() > 0 {
				r["votes"] = m.GetVotes()
			}
			if m.GetMeanLogprob() != 0 {
				r["mean_logprob"] = m.GetMeanLogprob()
			}
			return r
		}
		members := make([]map[string]any, 0, len(e.GetMembers()))
		for _, m := range e.GetMembers() {
			members = append(members, member(m))
		}
		ens := map[string]any{"combiner": e.GetCombiner(), "winner": e.GetWinner(), "decision": e.GetDecision(), "members": members}
		if j := e.GetJudge(); j != nil {
			ens["judge"] = member(j)
		}
		report["ensemble"] = ens
	}
	return report
}
