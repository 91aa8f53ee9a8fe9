package enginehost

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

func chatOf(msgs ...*generationv1.ChatMessage) *generationv1.ChatMessages {
	return &generationv1.ChatMessages{Messages: msgs}
}

func msg(role generationv1.Role, content string) *generationv1.ChatMessage {
	return &generationv1.ChatMessage{Role: role, Content: content}
}

// A chat without tools renders with the test models' template exactly as
// llama.cpp's built-in ChatML does (what engine-gguf uses for such chats).
func TestRenderChatPlainIsChatML(t *testing.T) {
	chat := chatOf(msg(generationv1.Role_ROLE_SYSTEM, "Be brief."), msg(generationv1.Role_ROLE_USER, "Hi"), msg(generationv1.Role_ROLE_ASSISTANT, "Hello."), msg(generationv1.Role_ROLE_USER, "Bye"))
	got, err := RenderChat(testmodel.ChatMLTemplate, "<|endoftext|>", chat)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestRenderChatTools(t *testing.T) {
	chat := chatOf(msg(generationv1.Role_ROLE_SYSTEM, "Be brief."), msg(generationv1.Role_ROLE_USER, "Weather in Paris?"),
		&generationv1.ChatMessage{Role: generationv1.Role_ROLE_ASSISTANT, ToolCalls: []*generationv1.ToolCall{{Id: "call_1", Name: "get_weather", Arguments: `{"city":"Paris","unit":"c"}`}}},
		&generationv1.ChatMessage{Role: generationv1.Role_ROLE_TOOL, ToolCallId: "call_1", Content: `{"temp":21}`})
	chat.Tools = []*generationv1.Tool{{Name: "get_weather", Description: "Current weather", Parameters: `{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]}},"required":["city"]}`}}
	got, err := RenderChat(testmodel.ChatMLTemplate, "<|endoftext|>", chat)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nBe brief.\n\nYou can call functions. Their signatures, one JSON object per line, are inside <tools></tools>:\n<tools>\n" +
		`{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}}` +
		"\n</tools>\nTo call one, write a JSON object with its name and arguments between <tool_call></tool_call> tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <arguments-object>}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
		"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\n<tool_response>\n{\"temp\":21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// A template that knows no tools gets them in a system turn of ours; one
// that shows another call syntax is refused.
func TestRenderChatOtherTemplates(t *testing.T) {
	plain := "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
	chat := chatOf(msg(generationv1.Role_ROLE_USER, "Hi"))
	chat.Tools = []*generationv1.Tool{{Name: "f"}}
	got, err := RenderChat(plain, "", chat)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "[system] You can call functions.") || !strings.Contains(got, `{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}`) || !strings.HasSuffix(got, "[user] Hi\n") {
		t.Fatalf("got %q", got)
	}
	// The exchange reaches such a model as the text it was told to write
	// and the results in <tool_response> tags, not as turns the template
	// would drop (it shows no tool_calls and no tool role).
	chat.Messages = append(chat.Messages,
		&generationv1.ChatMessage{Role: generationv1.Role_ROLE_ASSISTANT, Content: "Checking.", ToolCalls: []*generationv1.ToolCall{{Id: "c1", Name: "f", Arguments: `{"a":1}`}, {Id: "c2", Name: "f", Arguments: `{}`}}},
		&generationv1.ChatMessage{Role: generationv1.Role_ROLE_TOOL, ToolCallId: "c1", Content: "one"},
		&generationv1.ChatMessage{Role: generationv1.Role_ROLE_TOOL, ToolCallId: "c2", Content: "two"})
	got, err = RenderChat(plain, "", chat)
	if err != nil {
		t.Fatal(err)
	}
	want := "[user] Hi\n[assistant] Checking.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n" +
		"[user] <tool_response>\none\n</tool_response>\n<tool_response>\ntwo\n</tool_response>\n"
	if !strings.HasSuffix(got, want) {
		t.Fatalf("tool turns through a template without tools: got %q, want it to end %q", got, want)
	}
	// Consecutive results and the user's next words are one user turn, so
	// that roles still alternate for templates that insist on it.
	chat.Messages = append(chat.Messages, msg(generationv1.Role_ROLE_USER, "Thanks."))
	if got, err = RenderChat(plain, "", chat); err != nil || !strings.HasSuffix(got, "[user] <tool_response>\none\n</tool_response>\n<tool_response>\ntwo\n</tool_response>\nThanks.\n") {
		t.Fatalf("results then a user turn: %q, %v", got, err)
	}
	// A template that raises on a system turn (as Gemma's does) gets the
	// tool prompt at the head of the first user turn.
	strict := "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}{% endif %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
	got, err = RenderChat(strict, "", chat)
	if err != nil || !strings.HasPrefix(got, "<user>You can call functions.") || !strings.Contains(got, "</tool_call>\n\nHi\n<assistant>Checking.") {
		t.Fatalf("a template without system turns: %q, %v", got, err)
	}
	// The caller's own system turn joins that head too, rather than
	// reaching a template that refuses it.
	withSystem := proto.CloneOf(chat)
	withSystem.Messages = append([]*generationv1.ChatMessage{msg(generationv1.Role_ROLE_SYSTEM, "Be brief.")}, withSystem.Messages...)
	got, err = RenderChat(strict, "", withSystem)
	if err != nil || !strings.HasPrefix(got, "<user>Be brief.\n\nYou can call functions.") || strings.Contains(got, "<system>") {
		t.Fatalf("a caller's system turn, template without system turns: %q, %v", got, err)
	}
	// A template that knows tools but writes calls in another syntax gets
	// the text route too, rather than a refusal.
	other := "{% if tools %}[TOOL_CALLS]{% endif %}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
	if got, err = RenderChat(other, "", chat); err != nil || strings.Contains(got, "[TOOL_CALLS]") || !strings.Contains(got, "<tool_call>") {
		t.Fatalf("a template with another call syntax: %q, %v", got, err)
	}
	for _, src := range []string{testmodel.ChatMLTemplate, plain, strict, other} {
		if err := TemplateRendersTools(src); err != nil {
			t.Errorf("TemplateRendersTools(%.30q): %v", src, err)
		}
	}
	for _, src := range []string{"", "{% for %}", "{{ raise_exception('never') }}"} {
		if err := TemplateRendersTools(src); err == nil {
			t.Errorf("TemplateRendersTools(%q): nil", src)
		}
	}
	if _, err := RenderChat("", "", chat); err == nil {
		t.Fatal("no template: no error")
	}
	if _, err := RenderChat("{% for %}", "", chat); err == nil || !strings.Contains(err.Error(), "does not compile") {
		t.Fatalf("a broken template: %v", err)
	}
}

// parseAll feeds an answer to a fresh parser in pieces of size step (0:
// whole) and returns the content and the calls, assembled as a client
// assembles OpenAI's deltas.
func parseAll(t *testing.T, answer string, step int) (string, []*generationv1.ToolCall) {
	t.Helper()
	p := newToolParser(structured.Hermes, "req-1")
	var content strings.Builder
	var calls []*generationv1.ToolCall
	take := func(text string, deltas []*generationv1.ToolCallDelta) {
		content.WriteString(text)
		for _, d := range deltas {
			if int(d.GetIndex()) == len(calls) {
				if d.GetId() == "" || d.GetName() == "" {
					t.Fatalf("the first delta of call %d lacks its id or name: %v", d.GetIndex(), d)
				}
				calls = append(calls, &generationv1.ToolCall{Id: d.GetId(), Name: d.GetName()})
			} else if int(d.GetIndex()) != len(calls)-1 || d.GetId() != "" || d.GetName() != "" {
				t.Fatalf("delta %v out of order (%d calls so far)", d, len(calls))
			}
			calls[d.GetIndex()].Arguments += d.GetArguments()
		}
	}
	if step == 0 {
		step = len(answer)
	}
	for i := 0; i < len(answer); i += step {
		take(p.push(answer[i:min(i+step, len(answer))], false))
	}
	take(p.push("", true))
	return content.String(), calls
}

func TestToolParser(t *testing.T) {
	for _, tc := range []struct {
		name, answer, content string
		calls                 []string // name + " " + arguments
	}{
		{"text only", "Paris is in France. a<b", "Paris is in France. a<b", nil},
		{"one call", "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>", "", []string{`get_weather {"city":"Paris"}`}},
		{"text then calls", "Let me look.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": \"}{\\\"\"}}\n</tool_call>\n<tool_call>{\"name\":\"b\",\"arguments\":{}}</tool_call>", "Let me look.\n",
			[]string{`a {"x": "}{\""}`, "b {}"}},
		{"keys swapped", "<tool_call>{\"arguments\": {\"q\": 1}, \"name\": \"s\"}</tool_call>", "", []string{`s {"q": 1}`}},
		{"llama parameters", "<tool_call>{\"name\": \"s\", \"parameters\": {\"q\": [1,2]}}</tool_call>", "", []string{`s {"q": [1,2]}`}},
		{"not a call", "<tool_call>not json</tool_call> done", "<tool_call>not json</tool_call> done", nil},
		{"cut short", "<tool_call>\n{\"name\":\"f\",\"arguments\":{\"a\":\"b", "", []string{`f {"a":"b`}},
		{"tag prefix at the end", "see <tool_c", "see <tool_c", nil},
		{"not a call, cut short", "<tool_call>not json", "<tool_call>not json", nil},
	} {
		for _, step := range []int{0, 1, 2, 3, 7} {
			content, calls := parseAll(t, tc.answer, step)
			if content != tc.content {
				t.Errorf("%s, step %d: content %q, want %q", tc.name, step, content, tc.content)
			}
			var got []string
			for i, c := range calls {
				got = append(got, c.GetName()+" "+c.GetArguments())
				if c.GetId() != ToolCallID("req-1", i) {
					t.Errorf("%s: call %d has id %q", tc.name, i, c.GetId())
				}
			}
			if strings.Join(got, "|") != strings.Join(tc.calls, "|") {
				t.Errorf("%s, step %d: calls %q, want %q", tc.name, step, got, tc.calls)
			}
		}
	}
}

// Call ids are alike for the same request id and prompt (a failover's
// continuation) and differ when a client reuses a request id for another
// prompt.
func TestCallSeed(t *testing.T) {
	a := &generationv1.Prompt{Kind: &generationv1.Prompt_Chat{Chat: chatOf(msg(generationv1.Role_ROLE_USER, "Weather?"))}}
	b := &generationv1.Prompt{Kind: &generationv1.Prompt_Chat{Chat: chatOf(msg(generationv1.Role_ROLE_USER, "Weather?"), msg(generationv1.Role_ROLE_ASSISTANT, "Sunny."))}}
	if callSeed("r", a) != callSeed("r", proto.CloneOf(a)) {
		t.Fatal("the same request and prompt got different call seeds")
	}
	if ToolCallID(callSeed("r", a), 0) == ToolCallID(callSeed("r", b), 0) || ToolCallID(callSeed("r", a), 0) == ToolCallID(callSeed("s", a), 0) {
		t.Fatal("another prompt or request id got the same call id")
	}
}

// With a response format, calls only open the answer: a tag inside the
// JSON's strings is text.
func TestToolParserLeadingOnly(t *testing.T) {
	for _, tc := range []struct {
		answer, content string
		calls           int
	}{
		{`{"answer":"<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>"}`, `{"answer":"<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>"}`, 0},
		{"<tool_call>\n{\"name\":\"f\",\"arguments\":{}}\n</tool_call>", "", 1},
		{" \n<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>", " \n", 1},
	} {
		for _, step := range []int{1, 3, len(tc.answer)} {
			p := newToolParser(structured.Hermes, "r")
			p.leadingOnly = true
			var content strings.Builder
			calls := 0
			for i := 0; i < len(tc.answer); i += step {
				text, deltas := p.push(tc.answer[i:min(i+step, len(tc.answer))], false)
				content.WriteString(text)
				for _, d := range deltas {
					if d.GetId() != "" {
						calls++
					}
				}
			}
			text, _ := p.push("", true)
			content.WriteString(text)
			if content.String() != tc.content || calls != tc.calls {
				t.Errorf("%q step %d: content %q, %d calls; want %q, %d", tc.answer, step, content.String(), calls, tc.content, tc.calls)
			}
		}
	}
}

func TestValidateTools(t *testing.T) {
	tool := func(name, params string) *generationv1.Tool {
		return &generationv1.Tool{Name: name, Parameters: params}
	}
	base := func() *generationv1.ChatMessages { return chatOf(msg(generationv1.Role_ROLE_USER, "hi")) }
	for _, tc := range []struct {
		name string
		edit func(*generationv1.ChatMessages)
		want string // error substring; "" is valid
	}{
		{"no tools", func(*generationv1.ChatMessages) {}, ""},
		{"auto", func(c *generationv1.ChatMessages) { c.Tools = []*generationv1.Tool{tool("f", "")} }, ""},
		{"bad name", func(c *generationv1.ChatMessages) { c.Tools = []*generationv1.Tool{tool("a b", "")} }, `tools[0].name "a b" must match`},
		{"long name", func(c *generationv1.ChatMessages) { c.Tools = []*generationv1.Tool{tool(strings.Repeat("x", 65), "")} }, "must match"},
		{"duplicate", func(c *generationv1.ChatMessages) { c.Tools = []*generationv1.Tool{tool("f", ""), tool("f", "")} }, "not unique"},
		{"bad schema JSON", func(c *generationv1.ChatMessages) { c.Tools = []*generationv1.Tool{tool("f", "{")} }, "parameters is not valid JSON"},
		{"unknown function", func(c *generationv1.ChatMessages) {
			c.Tools = []*generationv1.Tool{tool("f", "")}
			c.ToolChoice = &generationv1.ToolChoice{Mode: generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION, Name: "g"}
		}, `names function "g", which is not one of the tools`},
		{"required without tools", func(c *generationv1.ChatMessages) {
			c.ToolChoice = &generationv1.ToolChoice{Mode: generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}
		}, "has no tools"},
		{"unsupported schema in a strict tool", func(c *generationv1.ChatMessages) {
			c.Tools = []*generationv1.Tool{tool("f", `{"type":"object","properties":{"a":{"type":"string","contentSchema":{}}}}`)}
			c.Tools[0].Strict = true
			c.ToolChoice = &generationv1.ToolChoice{Mode: generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}
		}, "contentSchema"},
		{"unsupported schema in a non-strict tool", func(c *generationv1.ChatMessages) {
			c.Tools = []*generationv1.Tool{tool("f", `{"type":"object","properties":{"a":{"type":"string","contentSchema":{}}}}`)}
			c.ToolChoice = &generationv1.ToolChoice{Mode: generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}
		}, ""},
		{"schema the grammar finds at fault in a non-strict tool", func(c *generationv1.ChatMessages) {
			c.Tools = []*generationv1.Tool{tool("f", `{"type":"object","properties":{"a":{"type":7}}}`)}
		}, ""},
		{"non-object parameters when forced", func(c *generationv1.ChatMessages) {
			c.Tools = []*generationv1.Tool{tool("f", `{"type":"string"}`)}
			c.ToolChoice = &generationv1.ToolChoice{Mode: generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}
		}, "must be an object schema"},
		{"tool turn without id", func(c *generationv1.ChatMessages) {
			c.Messages = append(c.Messages, msg(generationv1.Role_ROLE_TOOL, "42"))
		}, "tool_call_id must be 1 to 256 bytes"},
		{"user turn with calls", func(c *generationv1.ChatMessages) {
			c.Messages[0].ToolCalls = []*generationv1.ToolCall{{Id: "1", Name: "f", Arguments: "{}"}}
		}, "not an assistant turn"},
		{"call arguments not JSON", func(c *generationv1.ChatMessages) {
			c.Messages = append(c.Messages, &generationv1.ChatMessage{Role: generationv1.Role_ROLE_ASSISTANT, ToolCalls: []*generationv1.ToolCall{{Id: "1", Name: "f", Arguments: "{"}}})
		}, "arguments is not valid JSON"},
	} {
		chat := base()
		tc.edit(chat)
		_, err := ValidateTools(chat, nil, true)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// Only a strict tool's schema whose sole fault is features the grammar
// lacks is ReasonSchemaUnsupported (a model taking any JSON Schema may
// serve it); one too deep or not a schema is a plain InvalidArgument. A
// tool that is not strict takes any object instead (see
// TestValidateTools).
func TestValidateToolsSchemaReasons(t *testing.T) {
	deep := `{"type":"object","properties":{"a":` + strings.Repeat(`{"type":"array","items":`, structured.MaxSchemaDepth+1) + `{}` + strings.Repeat(`}`, structured.MaxSchemaDepth+1) + `}}`
	for _, tc := range []struct {
		name, params string
		strict       bool
		unsupported  bool
	}{
		{"unsupported feature, strict", `{"type":"object","properties":{"a":{"not":{}}}}`, true, true},
		{"too deep, strict", deep, true, false},
		{"bad type, strict", `{"type":"object","properties":{"a":{"type":7}}}`, true, false},
	} {
		chat := &generationv1.ChatMessages{
			Messages:   []*generationv1.ChatMessage{{Role: generationv1.Role_ROLE_USER, Content: "x"}},
			Tools:      []*generationv1.Tool{{Name: "f", Parameters: tc.params, Strict: tc.strict}},
			ToolChoice: &generationv1.ToolChoice{Mode: generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO},
		}
		_, err := ValidateTools(chat, nil, true)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if got := SchemaUnsupported(err); got != tc.unsupported {
			t.Errorf("%s: SchemaUnsupported(%v) = %v, want %v", tc.name, err, got, tc.unsupported)
		}
	}
}

// The tool-call parser, on any answer cut anywhere: no panic, and the
// content and calls do not depend on how the answer was cut.
func FuzzToolParser(f *testing.F) {
	for _, s := range []string{"<tool_call>\n{\"name\":\"f\",\"arguments\":{\"a\":1}}\n</tool_call>", "text <tool_call>{\"arguments\":{},\"name\":\"g\"}</tool_call> more", "<tool_c", "<tool_call>{\"name\":\"f\",\"arguments\":{\"s\":\"}\\\"\"}"} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, answer string, step uint8) {
		content, calls := parseAll(t, answer, 0)
		c2, calls2 := parseAll(t, answer, int(step%16)+1)
		if content != c2 || fmt.Sprint(calls) != fmt.Sprint(calls2) {
			t.Fatalf("whole: %q %v; in pieces of %d: %q %v", content, calls, step%16+1, c2, calls2)
		}
	})
}
