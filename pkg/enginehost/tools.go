package enginehost

import (
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/ardanlabs/jinja"
	"google.golang.org/protobuf/proto"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
)

// Limits of a chat's tools.
const (
	MaxTools               = 128
	MaxToolDescription     = 4096
	MaxToolCallsPerMessage = 128
)

// ToolNameRE is OpenAI's pattern for function names.
var ToolNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// Tools is a chat prompt's validated tool use.
type Tools struct {
	// Mode is AUTO, NONE, REQUIRED or FUNCTION (UNSPECIFIED with tools
	// becomes AUTO).
	Mode generationv1.ToolChoiceMode
	// Parallel allows more than one call in the answer.
	Parallel bool
	// Syntax is how the answer's calls are written and parsed.
	Syntax structured.ToolCallSyntax
	// Grammar is the grammar of the answer that engines hosting models
	// enforce: with REQUIRED or FUNCTION only calls, with AUTO free text
	// that may end in calls (structured.ToolCallsAuto).
	Grammar *structured.Grammar
}

// Parses reports whether the answer is parsed for tool calls.
func (t *Tools) Parses() bool {
	return t != nil && t.Mode != generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE
}

// forced reports whether the answer must be calls.
func (t *Tools) forced() bool {
	return t != nil && (t.Mode == generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED || t.Mode == generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION)
}

// answerFormat is the response format an answer takes when it calls no
// tool, or nil for free text.
func answerFormat(f *generationv1.ResponseFormat) *structured.Format {
	switch f.GetType() {
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT:
		return &structured.Format{}
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
		return &structured.Format{Schema: f.GetJsonSchema()}
	}
	return nil
}

// SchemaUnsupported reports whether err is a schema that the local grammar
// cannot express (reason ReasonSchemaUnsupported), which a model that
// takes any JSON Schema may still serve.
func SchemaUnsupported(err error) bool {
	return rpcerr.Reason(err) == rpcerr.ReasonSchemaUnsupported
}

// schemaError is InvalidArgument for a schema compile error, with reason
// ReasonSchemaUnsupported when the features it names are the only fault.
func schemaError(err error, format string, args ...any) error {
	out := rpcerr.InvalidArgument(format, append(args, err)...)
	var se *structured.Error
	if errors.As(err, &se) && len(se.Unsupported) > 0 {
		return rpcerr.WithReason(out, rpcerr.ReasonSchemaUnsupported)
	}
	return out
}

// ValidateTools checks a chat's tools, tool choice and tool turns. It
// returns nil for a chat without tools. With compile, the answer gets its
// grammar (Tools.Grammar); a strict tool's parameter schema that the
// grammar cannot express is InvalidArgument naming the features, with
// reason ReasonSchemaUnsupported (a non-strict tool's arguments are then
// any object).
func ValidateTools(chat *generationv1.ChatMessages, format *generationv1.ResponseFormat, compile bool) (*Tools, error) {
	for i, m := range chat.GetMessages() {
		if err := validateToolTurn(i, m); err != nil {
			return nil, err
		}
	}
	tools := chat.GetTools()
	choice := chat.GetToolChoice()
	if len(tools) == 0 {
		if m := choice.GetMode(); m == generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED || m == generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION {
			return nil, rpcerr.InvalidArgument("prompt.chat.tool_choice is %s but the chat has no tools", m)
		}
		return nil, nil
	}
	if len(tools) > MaxTools {
		return nil, rpcerr.InvalidArgument("prompt.chat has %d tools, over the limit of %d", len(tools), MaxTools)
	}
	seen := map[string]bool{}
	specs := make([]structured.Tool, len(tools))
	for i, t := range tools {
		switch {
		case !ToolNameRE.MatchString(t.GetName()):
			return nil, rpcerr.InvalidArgument("prompt.chat.tools[%d].name %q must match %s", i, Clip(t.GetName()), ToolNameRE)
		case seen[t.GetName()]:
			return nil, rpcerr.InvalidArgument("prompt.chat.tools[%d].name %q is not unique", i, t.GetName())
		case len(t.GetDescription()) > MaxToolDescription:
			return nil, rpcerr.InvalidArgument("prompt.chat.tools[%d].description is %d bytes, over the limit of %d", i, len(t.GetDescription()), MaxToolDescription)
		case len(t.GetParameters()) > structured.MaxSchemaBytes:
			return nil, rpcerr.InvalidArgument("prompt.chat.tools[%d].parameters is %d bytes, over the limit of %d", i, len(t.GetParameters()), structured.MaxSchemaBytes)
		}
		if p := t.GetParameters(); p != "" {
			var v any
			if err := json.Unmarshal([]byte(p), &v); err != nil {
				return nil, rpcerr.InvalidArgument("prompt.chat.tools[%d].parameters is not valid JSON: %v", i, err)
			}
			if _, ok := v.(map[string]any); !ok {
				return nil, rpcerr.InvalidArgument("prompt.chat.tools[%d].parameters must be a JSON Schema object", i)
			}
		}
		seen[t.GetName()] = true
		specs[i] = structured.Tool{Name: t.GetName(), Parameters: t.GetParameters(), Strict: t.GetStrict()}
	}
	out := &Tools{Mode: choice.GetMode(), Parallel: chat.ParallelToolCalls == nil || chat.GetParallelToolCalls(), Syntax: structured.Hermes}
	switch out.Mode {
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_UNSPECIFIED:
		out.Mode = generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO, generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE, generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED:
	case generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION:
		if !seen[choice.GetName()] {
			return nil, rpcerr.InvalidArgument("prompt.chat.tool_choice names function %q, which is not one of the tools", Clip(choice.GetName()))
		}
		for _, s := range specs {
			if s.Name == choice.GetName() {
				specs = []structured.Tool{s}
				break
			}
		}
	default:
		return nil, rpcerr.InvalidArgument("prompt.chat.tool_choice.mode %d is not a known mode", out.Mode)
	}
	if compile && out.Mode != generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE {
		g, err := structured.ToolCallsCached(specs, out.Syntax, out.Parallel, !out.forced(), answerFormat(format))
		if err != nil {
			return nil, schemaError(err, "prompt.chat.tools: %v")
		}
		out.Grammar = g
	}
	return out, nil
}

func validateToolTurn(i int, m *generationv1.ChatMessage) error {
	calls := m.GetToolCalls()
	if len(calls) > 0 && m.GetRole() != generationv1.Role_ROLE_ASSISTANT {
		return rpcerr.InvalidArgument("prompt.chat.messages[%d] has tool_calls but is not an assistant turn", i)
	}
	if len(calls) > MaxToolCallsPerMessage {
		return rpcerr.InvalidArgument("prompt.chat.messages[%d] has %d tool_calls, over the limit of %d", i, len(calls), MaxToolCallsPerMessage)
	}
	for j, c := range calls {
		switch {
		case c.GetId() == "" || len(c.GetId()) > 256:
			return rpcerr.InvalidArgument("prompt.chat.messages[%d].tool_calls[%d].id must be 1 to 256 bytes", i, j)
		case !ToolNameRE.MatchString(c.GetName()):
			return rpcerr.InvalidArgument("prompt.chat.messages[%d].tool_calls[%d].name %q must match %s", i, j, Clip(c.GetName()), ToolNameRE)
		}
		var v any
		if err := json.Unmarshal([]byte(c.GetArguments()), &v); err != nil {
			return rpcerr.InvalidArgument("prompt.chat.messages[%d].tool_calls[%d].arguments is not valid JSON: %v", i, j, err)
		}
	}
	tool := m.GetRole() == generationv1.Role_ROLE_TOOL
	switch {
	case tool && (m.GetToolCallId() == "" || len(m.GetToolCallId()) > 256):
		return rpcerr.InvalidArgument("prompt.chat.messages[%d] is a tool turn: tool_call_id must be 1 to 256 bytes", i)
	case !tool && m.GetToolCallId() != "":
		return rpcerr.InvalidArgument("prompt.chat.messages[%d] sets tool_call_id but is not a tool turn", i)
	case len(m.GetName()) > MaxMessageName:
		return rpcerr.InvalidArgument("prompt.chat.messages[%d].name is over %d bytes", i, MaxMessageName)
	}
	return nil
}

// Clip shortens s to 80 bytes for an error message.
func Clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// UsesTools reports whether a chat needs a template that knows tools: it
// offers tools or holds tool calls or tool turns.
func UsesTools(chat *generationv1.ChatMessages) bool {
	if len(chat.GetTools()) > 0 {
		return true
	}
	for _, m := range chat.GetMessages() {
		if len(m.GetToolCalls()) > 0 || m.GetRole() == generationv1.Role_ROLE_TOOL {
			return true
		}
	}
	return false
}

// templates caches compiled chat templates by source (a worker hosts few).
var templates sync.Map // string → *jinja.Template or error

// RenderChat renders a conversation that uses tools with a model's Jinja
// chat template (the HF chat_template a GGUF or tokenizer_config.json
// carries), ending with the start of the assistant's turn. A template
// that writes calls in Hermes syntax (<tool_call> tags, which the host
// parses) sees messages (with tool_calls, their arguments as objects, and
// tool_call_id), tools (OpenAI's {"type":"function","function":{...}}
// shape), add_generation_prompt and eos_token; bos_token is empty, since
// the tokenizer adds it. Any other template (one without tools, or with
// another call syntax) sees text turns only (textTurns): the tools in a
// prompt of ours that asks for Hermes syntax, calls as that text, results
// as user turns.
func RenderChat(source, eos string, chat *generationv1.ChatMessages) (string, error) {
	if source == "" {
		return "", rpcerr.FailedPrecondition("the model has no chat template to render tools with")
	}
	t, err := compileTemplate(source)
	if err != nil {
		return "", rpcerr.FailedPrecondition("the model's chat template does not compile: %v", err)
	}
	out, err := render(t, source, eos, chat)
	if err != nil {
		return "", rpcerr.InvalidArgument("the model's chat template refused the conversation: %v", err)
	}
	return out, nil
}

// TemplateRendersTools reports why a model's chat template cannot render
// a conversation with tools (nil when it can): there is none, it does not
// compile, or it refuses a sample exchange (a call and its results). A
// model's Tools capability is this being nil.
func TemplateRendersTools(source string) error {
	if source == "" {
		return rpcerr.FailedPrecondition("the model has no chat template to render tools with")
	}
	t, err := compileTemplate(source)
	if err != nil {
		return rpcerr.FailedPrecondition("the model's chat template does not compile: %v", err)
	}
	if _, err := render(t, source, "", sampleToolChat); err != nil {
		return rpcerr.FailedPrecondition("the model's chat template cannot render a conversation with tools: %v", err)
	}
	return nil
}

// sampleToolChat is the exchange TemplateRendersTools tries.
var sampleToolChat = &generationv1.ChatMessages{
	Messages: []*generationv1.ChatMessage{
		{Role: generationv1.Role_ROLE_USER, Content: "Weather in Paris and Rome?"},
		{Role: generationv1.Role_ROLE_ASSISTANT, ToolCalls: []*generationv1.ToolCall{{Id: "c1", Name: "get_weather", Arguments: `{"city":"Paris"}`}, {Id: "c2", Name: "get_weather", Arguments: `{"city":"Rome"}`}}},
		{Role: generationv1.Role_ROLE_TOOL, ToolCallId: "c1", Content: "21C"},
		{Role: generationv1.Role_ROLE_TOOL, ToolCallId: "c2", Content: "18C"},
		{Role: generationv1.Role_ROLE_USER, Content: "Thanks."},
	},
	Tools: []*generationv1.Tool{{Name: "get_weather", Parameters: `{"type":"object","properties":{"city":{"type":"string"}}}`}},
}

// hermes reports whether a template writes tool calls in Hermes syntax.
func hermes(source string) bool {
	return strings.Contains(source, "tools") && strings.Contains(source, "<tool_call>")
}

func render(t *jinja.Template, source, eos string, chat *generationv1.ChatMessages) (string, error) {
	knows := hermes(source)
	in := chat.GetMessages()
	if !knows {
		prompt := ""
		if len(chat.GetTools()) > 0 {
			prompt = toolSystemPrompt(chat.GetTools())
		}
		in = textTurns(in, prompt, takesSystem(t, source))
	}
	msgs := make([]jinja.Value, len(in))
	for i, m := range in {
		msgs[i] = jinjaMessage(m)
	}
	data := map[string]jinja.Value{
		"messages":              jinja.NewList(msgs),
		"add_generation_prompt": jinja.NewBool(true),
		"bos_token":             jinja.NewString(""),
		"eos_token":             jinja.NewString(eos),
	}
	if knows && len(chat.GetTools()) > 0 {
		tools := make([]jinja.Value, len(chat.GetTools()))
		for i, tl := range chat.GetTools() {
			tools[i] = jinjaTool(tl)
		}
		data["tools"] = jinja.NewList(tools)
	}
	return t.RenderValues(data)
}

// systemTurns memoizes takesSystem per template source.
var systemTurns sync.Map

// takesSystem reports whether a template renders a system turn (some,
// such as Gemma's, raise an error on one).
func takesSystem(t *jinja.Template, source string) bool {
	if v, ok := systemTurns.Load(source); ok {
		return v.(bool)
	}
	_, err := t.RenderValues(map[string]jinja.Value{
		"messages": jinja.NewList([]jinja.Value{
			jinjaMessage(&generationv1.ChatMessage{Role: generationv1.Role_ROLE_SYSTEM, Content: "s"}),
			jinjaMessage(&generationv1.ChatMessage{Role: generationv1.Role_ROLE_USER, Content: "u"}),
		}),
		"add_generation_prompt": jinja.NewBool(true), "bos_token": jinja.NewString(""), "eos_token": jinja.NewString(""),
	})
	systemTurns.Store(source, err == nil)
	return err == nil
}

// textTurns is a conversation for a template that shows no Hermes tool
// calls: an assistant's calls become the <tool_call> text the model is
// told to write, and tool results <tool_response> text in the user's
// turn (one turn for consecutive results and the user's next words, so
// that roles still alternate). prompt (the tools and how to call them)
// joins the first system turn, or opens one when the template takes
// system turns, or else opens the first user turn.
func textTurns(msgs []*generationv1.ChatMessage, prompt string, system bool) []*generationv1.ChatMessage {
	out := make([]*generationv1.ChatMessage, 0, len(msgs)+1)
	fromTool := false // the last turn of out holds tool results
	for _, m := range msgs {
		switch {
		case len(m.GetToolCalls()) > 0:
			var b strings.Builder
			b.WriteString(m.GetContent())
			for _, c := range m.GetToolCalls() {
				if b.Len() > 0 {
					b.WriteByte('\n')
				}
				b.WriteString("<tool_call>\n")
				b.WriteString(jsonText(jinjaCall(c)))
				b.WriteString("\n</tool_call>")
			}
			out = append(out, &generationv1.ChatMessage{Role: m.GetRole(), Content: b.String(), Name: m.GetName()})
			fromTool = false
		case m.GetRole() == generationv1.Role_ROLE_TOOL:
			text := "<tool_response>\n" + m.GetContent() + "\n</tool_response>"
			if fromTool {
				last := out[len(out)-1]
				last.Content += "\n" + text
				continue
			}
			out = append(out, &generationv1.ChatMessage{Role: generationv1.Role_ROLE_USER, Content: text})
			fromTool = true
		case m.GetRole() == generationv1.Role_ROLE_USER && fromTool:
			last := out[len(out)-1]
			last.Content += "\n" + m.GetContent()
			fromTool = false
		default:
			out = append(out, m)
			fromTool = false
		}
	}
	leadsWithSystem := len(out) > 0 && out[0].GetRole() == generationv1.Role_ROLE_SYSTEM
	switch {
	case prompt == "":
	case system && leadsWithSystem:
		first := proto.CloneOf(out[0])
		first.Content += "\n\n" + prompt
		out[0] = first
	case system:
		out = append([]*generationv1.ChatMessage{{Role: generationv1.Role_ROLE_SYSTEM, Content: prompt}}, out...)
	default:
		// The template refuses system turns: the caller's system words and
		// the prompt open the first user turn (or one of their own).
		if leadsWithSystem {
			prompt = out[0].GetContent() + "\n\n" + prompt
			out = out[1:]
		}
		i := slices.IndexFunc(out, func(m *generationv1.ChatMessage) bool { return m.GetRole() == generationv1.Role_ROLE_USER })
		if i < 0 {
			return append([]*generationv1.ChatMessage{{Role: generationv1.Role_ROLE_USER, Content: prompt}}, out...)
		}
		first := proto.CloneOf(out[i])
		first.Content = prompt + "\n\n" + first.Content
		out[i] = first
	}
	return out
}

// jinjaCall is a call as the Hermes syntax writes it: name and arguments.
func jinjaCall(c *generationv1.ToolCall) jinja.Value {
	d := jinja.NewDict()
	d.AsDict().Set("name", jinja.NewString(c.GetName()))
	d.AsDict().Set("arguments", jsonValue(c.GetArguments()))
	return d
}

func compileTemplate(source string) (*jinja.Template, error) {
	if v, ok := templates.Load(source); ok {
		if t, ok := v.(*jinja.Template); ok {
			return t, nil
		}
		return nil, v.(error)
	}
	t, err := jinja.Compile(source)
	if err != nil {
		templates.Store(source, err)
		return nil, err
	}
	templates.Store(source, t)
	return t, nil
}

// toolSystemPrompt shows tools to a model whose template does not.
func toolSystemPrompt(tools []*generationv1.Tool) string {
	var b strings.Builder
	b.WriteString("You can call functions. Their signatures, one JSON object per line, are inside <tools></tools>:\n<tools>\n")
	for _, t := range tools {
		v := jinjaTool(t)
		b.WriteString(jsonText(v))
		b.WriteByte('\n')
	}
	b.WriteString("</tools>\nTo call one, write a JSON object with its name and arguments between <tool_call></tool_call> tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <arguments-object>}\n</tool_call>")
	return b.String()
}

func jinjaMessage(m *generationv1.ChatMessage) jinja.Value {
	d := jinja.NewDict()
	role := strings.ToLower(strings.TrimPrefix(m.GetRole().String(), "ROLE_"))
	d.AsDict().Set("role", jinja.NewString(role))
	if m.GetContent() == "" && len(m.GetToolCalls()) > 0 {
		d.AsDict().Set("content", jinja.None())
	} else {
		d.AsDict().Set("content", jinja.NewString(m.GetContent()))
	}
	if calls := m.GetToolCalls(); len(calls) > 0 {
		list := make([]jinja.Value, len(calls))
		for i, c := range calls {
			fn := jinja.NewDict()
			fn.AsDict().Set("name", jinja.NewString(c.GetName()))
			fn.AsDict().Set("arguments", jsonValue(c.GetArguments()))
			call := jinja.NewDict()
			call.AsDict().Set("id", jinja.NewString(c.GetId()))
			call.AsDict().Set("type", jinja.NewString("function"))
			call.AsDict().Set("function", fn)
			list[i] = call
		}
		d.AsDict().Set("tool_calls", jinja.NewList(list))
	}
	if id := m.GetToolCallId(); id != "" {
		d.AsDict().Set("tool_call_id", jinja.NewString(id))
	}
	if n := m.GetName(); n != "" {
		d.AsDict().Set("name", jinja.NewString(n))
	}
	return d
}

func jinjaTool(t *generationv1.Tool) jinja.Value {
	fn := jinja.NewDict()
	fn.AsDict().Set("name", jinja.NewString(t.GetName()))
	if t.GetDescription() != "" {
		fn.AsDict().Set("description", jinja.NewString(t.GetDescription()))
	}
	params := t.GetParameters()
	if params == "" {
		params = `{"type":"object","properties":{}}`
	}
	fn.AsDict().Set("parameters", jsonValue(params))
	d := jinja.NewDict()
	d.AsDict().Set("type", jinja.NewString("function"))
	d.AsDict().Set("function", fn)
	return d
}

// jsonValue converts JSON text (already validated) to a template value,
// keeping the order of object keys.
func jsonValue(text string) jinja.Value {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return jinja.NewString(text)
	}
	return v
}

func decodeValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Value{}, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			var items []jinja.Value
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Value{}, err
				}
				items = append(items, v)
			}
			_, err := dec.Token()
			return jinja.NewList(items), err
		}
		d := jinja.NewDict()
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return jinja.Value{}, err
			}
			v, err := decodeValue(dec)
			if err != nil {
				return jinja.Value{}, err
			}
			d.AsDict().Set(k.(string), v)
		}
		_, err := dec.Token()
		return d, err
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return jinja.NewInt(i), nil
		}
		f, err := t.Float64()
		return jinja.NewFloat(f), err
	case string:
		return jinja.NewString(t), nil
	case bool:
		return jinja.NewBool(t), nil
	case nil:
		return jinja.None(), nil
	}
	return jinja.Value{}, errors.New("unexpected JSON token")
}

// tojson renders a value as a template's tojson filter shows it.
var tojson = func() *jinja.Template {
	t, err := jinja.Compile("{{ v | tojson }}")
	if err != nil {
		panic(err)
	}
	return t
}()

// jsonText is a template value as JSON, with Python's json.dumps spacing
// (what a template's tojson shows).
func jsonText(v jinja.Value) string {
	s, err := tojson.RenderValues(map[string]jinja.Value{"v": v})
	if err != nil {
		return "{}"
	}
	return s
}
