package structured

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/llm-runner-router/llmrouter/pkg/structured/structuredtest"
)

// Every expansion of a tool-call grammar is calls, in Hermes syntax, of
// the given tools, with arguments that validate against the tool's schema.
func TestToolCallsGrammar(t *testing.T) {
	var tools []Tool
	validators := map[string]*structuredtest.Validator{}
	for i, s := range structuredtest.Schemas() {
		var top map[string]any
		if json.Unmarshal(s, &top) != nil || top["type"] != "object" {
			continue
		}
		name := fmt.Sprintf("tool_%d", i)
		v, err := structuredtest.NewValidator(s)
		if err != nil {
			t.Fatal(err)
		}
		tools, validators[name] = append(tools, Tool{Name: name, Parameters: string(s)}), v
	}
	tools = append(tools, Tool{Name: "no-params"})
	if len(tools) < 20 {
		t.Fatalf("only %d object schemas in the corpus", len(tools))
	}
	for _, parallel := range []bool{false, true} {
		g, err := ToolCalls(tools, Hermes, parallel)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, 9))
		multi := 0
		for range 500 {
			out := sample(g, rng)
			calls := strings.Split(out, Hermes.Close+Hermes.Sep+Hermes.Open)
			if len(calls) > 1 {
				multi++
				if !parallel {
					t.Fatalf("%d calls without parallel: %s", len(calls), out)
				}
			}
			calls[0] = strings.TrimPrefix(calls[0], Hermes.Open)
			calls[len(calls)-1] = strings.TrimSuffix(calls[len(calls)-1], Hermes.Close)
			for _, c := range calls {
				var call struct {
					Name      string
					Arguments json.RawMessage
				}
				if err := json.Unmarshal([]byte(c), &call); err != nil {
					t.Fatalf("call %q of %q: %v", c, out, err)
				}
				if call.Name == "no-params" {
					var obj map[string]any
					if json.Unmarshal(call.Arguments, &obj) != nil {
						t.Fatalf("no-params got %s", call.Arguments)
					}
					continue
				}
				v := validators[call.Name]
				if v == nil {
					t.Fatalf("call of unknown tool %q", call.Name)
				}
				if err := v.Validate(call.Arguments); err != nil {
					t.Fatalf("%s(%s): %v", call.Name, call.Arguments, err)
				}
			}
		}
		if parallel && multi == 0 {
			t.Error("parallel calls never made more than one call")
		}
	}
}

func TestToolCallsRefusals(t *testing.T) {
	for _, tc := range []struct {
		params, want string
	}{
		{`{"type":"object","properties":{"a":{"not":{}}}}`, `tool "f": parameters schema uses features tool calling does not support: "not" at #/properties/a`},
		{`{"type":"array"}`, `tool "f": parameters must be an object schema, not array`},
		{`[`, `tool "f": parameters is not valid JSON`},
	} {
		_, err := ToolCalls([]Tool{{Name: "f", Parameters: tc.params, Strict: true}}, Hermes, false)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.params, err, tc.want)
		}
	}
	if _, err := ToolCalls(nil, Hermes, false); err == nil {
		t.Error("no tools: no error")
	}
}

// A non-strict tool whose schema the grammar cannot express takes any
// arguments object; a strict one is refused with the features named.
func TestToolCallsNonStrictFallback(t *testing.T) {
	params := `{"type":"object","properties":{"a":{"not":{"type":"string"}}}}`
	g, err := ToolCalls([]Tool{{Name: "f", Parameters: params}}, Hermes, false)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMatcher(g)
	if !m.Accept([]byte("<tool_call>\n{\"name\":\"f\",\"arguments\":{\"b\":[1,true]}}\n</tool_call>")) || !m.CanEnd() {
		t.Error("a non-strict tool's arguments are not any object")
	}
	_, err = ToolCalls([]Tool{{Name: "f", Parameters: params, Strict: true}}, Hermes, false)
	var se *Error
	if !errors.As(err, &se) || len(se.Unsupported) == 0 {
		t.Errorf("strict: %v, want the unsupported features", err)
	}
}

// Under tool_choice auto the answer is free text without the opening tag,
// or text and then calls held to the tools.
func TestToolCallsAuto(t *testing.T) {
	tools := []Tool{{Name: "get_weather", Parameters: `{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}`, Strict: true}}
	call := "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>"
	for _, parallel := range []bool{false, true} {
		g, err := ToolCallsAuto(tools, Hermes, parallel)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			text    string
			ok, end bool
		}{
			{"", true, true},
			{"Plain words, <b>tags</b>, <tool and <tool_cal; héllo ✓\n", true, true},
			{"It is sunny.<<tool_call", true, true},
			{"<tool_call>", true, false},
			{"Let me look. " + call, true, true},
			{"<<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"", true, false},
			{"<tool_call>X", false, false},
			{"<tool_call>\n{\"name\":\"other\"", false, false},
			{"<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"town\"", false, false},
			{call + " and more words", false, false},
			{call + "\n" + call, parallel, parallel},
			{"\x00", false, false},
		} {
			m := NewMatcher(g)
			ok := m.Accept([]byte(tc.text))
			if ok != tc.ok || ok && m.CanEnd() != tc.end {
				t.Errorf("parallel %v, %q: accepted %v (can end %v), want %v (%v)", parallel, tc.text, ok, ok && m.CanEnd(), tc.ok, tc.end)
			}
		}
		// Random expansions: free text, or text and from the first tag on
		// calls the forced grammar accepts (a random walk seldom writes
		// the tag, so the calls are also checked by those that start with
		// it, below).
		rng := rand.New(rand.NewPCG(3, 4))
		forced := mustToolCalls(t, tools, parallel)
		for range 300 {
			out := sample(g, rng)
			if i := strings.Index(out, Hermes.Trigger()); i >= 0 {
				if m := NewMatcher(forced); !m.Accept([]byte(out[i:])) || !m.CanEnd() {
					t.Fatalf("text then calls the forced grammar refuses: %q", out)
				}
			}
		}
		calls := mustToolCalls(t, tools, parallel)
		for range 100 {
			out := sample(calls, rng)
			m := NewMatcher(g)
			if !m.Accept([]byte("Checking. "+out)) || !m.CanEnd() {
				t.Fatalf("text and then calls %q are refused", out)
			}
		}
		if !strings.Contains(g.GBNF(), "text-0") {
			t.Error("the GBNF lacks the text rules")
		}
	}
}

// Under tool_choice auto with a response format the answer is the
// format's JSON or calls, never free text.
func TestToolCallsOr(t *testing.T) {
	tools := []Tool{{Name: "f", Parameters: `{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false}`}}
	call := "<tool_call>\n{\"name\":\"f\",\"arguments\":{\"n\":1}}\n</tool_call>"
	schema, err := ToolCallsOr(tools, Hermes, false, Format{Schema: `{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"],"additionalProperties":false}`})
	if err != nil {
		t.Fatal(err)
	}
	object, err := ToolCallsOr(tools, Hermes, false, Format{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		g    *Grammar
		text string
		ok   bool
	}{
		{schema, `{"answer":"yes"}`, true},
		{schema, call, true},
		{schema, `{"answer":1}`, false},
		{schema, "Hello", false},
		{schema, call + "\n" + call, false},
		{object, `{"k":[1,{"x":null}]}`, true},
		{object, call, true},
		{object, `[1]`, false},
	} {
		m := NewMatcher(tc.g)
		if ok := m.Accept([]byte(tc.text)) && m.CanEnd(); ok != tc.ok {
			t.Errorf("%q: accepted %v, want %v", tc.text, ok, tc.ok)
		}
	}
	if _, err := ToolCallsOr(tools, Hermes, false, Format{Schema: `{"not":{}}`}); err == nil {
		t.Error("a format schema with unsupported features compiled")
	} else if se := (*Error)(nil); !errors.As(err, &se) || len(se.Unsupported) == 0 {
		t.Errorf("a format schema with unsupported features: %v, want the features", err)
	}
}

func mustToolCalls(t *testing.T, tools []Tool, parallel bool) *Grammar {
	t.Helper()
	g, err := ToolCalls(tools, Hermes, parallel)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
