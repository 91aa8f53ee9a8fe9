package structured

import (
	"encoding/json"
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
		_, err := ToolCalls([]Tool{{Name: "f", Parameters: tc.params}}, Hermes, false)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.params, err, tc.want)
		}
	}
	if _, err := ToolCalls(nil, Hermes, false); err == nil {
		t.Error("no tools: no error")
	}
}
