package openai_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/services/router/internal/openai"
)

// The Responses API over a scripted answer (text, then a function call):
// the request's instructions, input items (messages, a function call and
// its output), flat tools and tool choice become the chat prompt; the
// answer is a message item and a function_call item, whole and as the
// typed event sequence.
func TestResponsesShapes(t *testing.T) {
	r := &scripted{deltas: []*genv1.TokenDelta{
		{Text: "Let me check."},
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Id: "call_a", Name: "get_weather"}}},
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Arguments: `{"city":"Paris"}`}}},
	}}
	srv := httptest.NewServer(openai.New(r, openai.Options{}))
	t.Cleanup(srv.Close)
	body := `{"model":"m","instructions":"Be brief.","max_output_tokens":50,"tool_choice":{"type":"function","name":"get_weather"},
		"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}],
		"input":[{"role":"user","content":[{"type":"input_text","text":"Weather?"}]},{"type":"function_call","call_id":"c0","name":"get_weather","arguments":"{\"city\":\"Rome\"}"},
		{"type":"function_call_output","call_id":"c0","output":"18C"},{"role":"user","content":"And Paris?"}]`
	resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(body+"}"))
	if err != nil {
		t.Fatal(err)
	}
	var whole map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&whole); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	if got, want := js(whole["output"]), `[{"content":[{"annotations":[],"logprobs":[],"text":"Let me check.","type":"output_text"}],"id":"msg_r1","role":"assistant","status":"completed","type":"message"},`+
		`{"arguments":"{\"city\":\"Paris\"}","call_id":"call_a","id":"fc_r1_0","name":"get_weather","status":"completed","type":"function_call"}]`; got != want {
		t.Fatalf("output %s\nwant %s", got, want)
	}
	if whole["object"] != "response" || whole["id"] != "resp_r1" || whole["status"] != "completed" || whole["store"] != false ||
		js(whole["usage"]) != `{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":14}` {
		t.Fatalf("response %s", js(whole))
	}
	chat := r.req.GetPrompt().GetChat()
	var turns []string
	for _, m := range chat.GetMessages() {
		turns = append(turns, m.GetRole().String()+":"+m.GetContent()+js(m.GetToolCalls())+m.GetToolCallId())
	}
	if got := strings.Join(turns, " | "); got != `ROLE_SYSTEM:Be brief.null | ROLE_USER:Weather?null | ROLE_ASSISTANT:[{"id":"c0","name":"get_weather","arguments":"{\"city\":\"Rome\"}"}] | ROLE_TOOL:18Cnullc0 | ROLE_USER:And Paris?null` ||
		chat.GetToolChoice().GetName() != "get_weather" || len(chat.GetTools()) != 1 || r.req.GetSampling().GetMaxTokens() != 50 {
		t.Fatalf("chat prompt %s\n%v", got, chat)
	}

	resp, err = http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(body+`,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var events []string
	var last map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		if int(ev["sequence_number"].(float64)) != len(events) {
			t.Fatalf("event %d has sequence_number %v", len(events), ev["sequence_number"])
		}
		events = append(events, ev["type"].(string))
		last = ev
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta " +
		"response.output_text.done response.content_part.done response.output_item.done response.output_item.added " +
		"response.function_call_arguments.delta response.function_call_arguments.done response.output_item.done response.completed"
	if strings.Join(events, " ") != want {
		t.Fatalf("events %s\nwant %s", strings.Join(events, " "), want)
	}
	if got := js(last["response"].(map[string]any)["output"]); got != js(whole["output"]) {
		t.Fatalf("streamed output %s, whole %s", got, js(whole["output"]))
	}
}

// Text after a call is a message item of its own, with its own id; a
// delta that ends the open call and carries text applies the arguments
// first; the whole answer's items are the stream's, in its order.
func TestResponsesTextAfterCalls(t *testing.T) {
	r := &scripted{deltas: []*genv1.TokenDelta{
		{Text: "First."},
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Id: "call_a", Name: "f", Arguments: `{"a":`}}},
		{Text: " Then.", ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Arguments: `1}`}, {Index: 1, Id: "call_b", Name: "f", Arguments: `{}`}}},
	}}
	srv := httptest.NewServer(openai.New(r, openai.Options{}))
	t.Cleanup(srv.Close)
	body := `{"model":"m","input":"x","tools":[{"type":"function","name":"f"}]`
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(body+"}"))
	if err != nil {
		t.Fatal(err)
	}
	var whole map[string]any
	err = json.NewDecoder(resp.Body).Decode(&whole)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range whole["output"].([]any) {
		it := it.(map[string]any)
		got = append(got, fmt.Sprintf("%s %s %v%v", it["type"], it["id"], it["arguments"], js(it["content"])))
	}
	want := []string{
		`message msg_r1 <nil>[{"annotations":[],"logprobs":[],"text":"First.","type":"output_text"}]`,
		`function_call fc_r1_0 {"a":1}null`,
		`message msg_r1_1 <nil>[{"annotations":[],"logprobs":[],"text":" Then.","type":"output_text"}]`,
		`function_call fc_r1_1 {}null`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("output\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	resp, err = http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(body+`,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var last map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			last = nil
			if err := json.Unmarshal([]byte(line), &last); err != nil {
				t.Fatal(err)
			}
		}
	}
	if last["type"] != "response.completed" || js(last["response"].(map[string]any)["output"]) != js(whole["output"]) {
		t.Fatalf("streamed %s\nwhole %s", js(last), js(whole["output"]))
	}
}

// Hints without effect here are accepted as OpenAI accepts them, and
// safety_identifier stands for user.
func TestResponsesAcceptedHints(t *testing.T) {
	r := &scripted{deltas: []*genv1.TokenDelta{{Text: "ok"}}}
	srv := httptest.NewServer(openai.New(r, openai.Options{}))
	t.Cleanup(srv.Close)
	body := `{"model":"m","input":"x","prompt_cache_key":"k","prompt_cache_retention":"24h","safety_identifier":"u-7","service_tier":"auto",
		"stream_options":{"include_obfuscation":false},"reasoning":{},"text":{"format":{"type":"json_object","description":"any object"}}}`
	resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if resp.StatusCode != 200 || v["user"] != "u-7" || r.req.GetUser() != "u-7" {
		t.Fatalf("%d %v; router request user %q", resp.StatusCode, v, r.req.GetUser())
	}
}

func TestResponsesRefusals(t *testing.T) {
	srv := httptest.NewServer(openai.New(&scripted{}, openai.Options{}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ body, param, msg string }{
		{`{"model":"m","input":"x","store":true}`, "store", "store: true is not supported"},
		{`{"model":"m","input":"x","previous_response_id":"resp_1"}`, "previous_response_id", "keeps no response state"},
		{`{"model":"m","input":"x","tools":[{"type":"web_search"}]}`, "tools[0].type", `built-in tool "web_search"`},
		{`{"model":"m","input":"x","tools":[{"type":"function","name":"a b"}]}`, "tools[0].name", "must be 1 to 64 letters"},
		{`{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}`, "tool_choice.name", `tool_choice names function "g", which is not in tools`},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}`, "input[0].content[0]", "image input (vision) is not supported"},
		{`{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, "input[0].type", "keeps no stored items"},
		{`{"model":"m","input":"x","reasoning":{"effort":"high"}}`, "reasoning", "not reasoning models"},
		{`{"model":"m"}`, "input", "input is required"},
		{`{"model":"m","input":"x","max_output_tokens":0}`, "max_output_tokens", "at least 1"},
		{`{"model":"m","input":"x","frobnicate":true}`, "frobnicate", `unknown parameter: "frobnicate"`},
		{`{"model":"m","input":"x","text":{"format":{"type":"text"},"colour":"red"}}`, "text.colour", `unknown parameter: "text.colour"`},
		{`{"model":"m","input":"x","text":{"format":{"type":"text","colour":"red"}}}`, "text.format.colour", `unknown parameter: "text.format.colour"`},
		{`{"model":"m","input":"x","metadata":{"type":"x"},"type":1}`, "type", `unknown parameter: "type"`},
		{`{"model":"m","input":"x","reasoning":{"generate_summary":"auto"}}`, "reasoning", "not reasoning models"},
		{`{"model":"m","input":"x","max_tool_calls":3}`, "max_tool_calls", "not supported"},
		{`{"model":"m","input":"x","prompt":{"id":"pmpt_1"}}`, "prompt", "stored prompt template"},
		{`{"model":"m","input":"x","service_tier":"flex"}`, "service_tier", "one tier"},
		{`{"model":"m","input":"x","text":{"verbosity":"low"}}`, "text.verbosity", "not supported"},
	} {
		resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Error struct {
				Message, Type string
				Param         *string
			}
		}
		_ = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode != 400 || v.Error.Type != "invalid_request_error" || v.Error.Param == nil || *v.Error.Param != tc.param || !strings.Contains(v.Error.Message, tc.msg) {
			t.Errorf("%s: %d %+v, want 400 param %q %q", tc.body, resp.StatusCode, v.Error, tc.param, tc.msg)
		}
	}
	resp, err := http.Get(srv.URL + "/v1/responses/resp_1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("GET a response: %d", resp.StatusCode)
	}
}
