package openai_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/services/router/internal/openai"
)

// scripted is a Router that records the request and answers with fixed
// events (what a worker's stream of a tool-calling answer looks like).
type scripted struct {
	mu     sync.Mutex
	req    *routerv1.GenerateRequest
	deltas []*genv1.TokenDelta
}

func (s *scripted) Route(_ context.Context, req *routerv1.GenerateRequest, sink interface {
	Send(*routerv1.GenerateResponse) error
}) error {
	s.mu.Lock()
	s.req = req
	s.mu.Unlock()
	_ = sink.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Start{Start: &genv1.StartEvent{RequestId: "r1", Model: "m"}}})
	for _, d := range s.deltas {
		_ = sink.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Delta{Delta: d}})
	}
	return sink.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_End{End: &genv1.EndEvent{FinishReason: genv1.FinishReason_FINISH_REASON_TOOL_CALLS,
		Usage: &genv1.Usage{PromptTokens: 5, CompletionTokens: 9, TotalTokens: 14}}}})
}

func (s *scripted) ListModels(context.Context, *routerv1.ListModelsRequest) (*routerv1.ListModelsResponse, error) {
	return &routerv1.ListModelsResponse{}, nil
}

func (s *scripted) Embed(context.Context, string, []string) (*enginev1.EmbedResponse, error) {
	return &enginev1.EmbedResponse{}, nil
}

// CountTokens records the prompt and counts its messages' bytes.
func (s *scripted) CountTokens(_ context.Context, model string, p *genv1.Prompt) (int32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.req = &routerv1.GenerateRequest{Model: model, Prompt: p}
	n := 0
	for _, m := range p.GetChat().GetMessages() {
		n += len(m.GetContent())
	}
	return int32(n), nil
}

// The HTTP API converts OpenAI's tools, tool_choice, parallel_tool_calls,
// assistant calls and tool turns into the chat prompt, and answers a
// worker's tool-call deltas in OpenAI's shapes: message.tool_calls (content
// null when there is none) whole, delta.tool_calls streamed (the first
// delta of a call with id, type and name, then arguments only).
func TestToolCallShapes(t *testing.T) {
	r := &scripted{deltas: []*genv1.TokenDelta{
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Id: "call_a", Name: "get_weather"}}},
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Arguments: `{"city":`}}},
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Arguments: `"Paris"}`}, {Index: 1, Id: "call_b", Name: "get_time", Arguments: "{}"}}},
	}}
	srv := httptest.NewServer(openai.New(r, openai.Options{}))
	t.Cleanup(srv.Close)
	body := `{"model":"m","parallel_tool_calls":true,"tool_choice":{"type":"function","function":{"name":"get_weather"}},
		"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}},{"type":"function","function":{"name":"get_time"}}],
		"messages":[{"role":"user","name":"ana","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c0","type":"function","function":{"name":"get_time","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c0","name":"get_time","content":"noon"}]`
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body+"}"))
	if err != nil {
		t.Fatal(err)
	}
	var whole map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&whole); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	choice := whole["choices"].([]any)[0].(map[string]any)
	if got, want := js(choice["message"]), `{"content":null,"refusal":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{\"city\":\"Paris\"}","name":"get_weather"},"id":"call_a","type":"function"},{"function":{"arguments":"{}","name":"get_time"},"id":"call_b","type":"function"}]}`; got != want {
		t.Fatalf("message %s\nwant %s", got, want)
	}
	if choice["finish_reason"] != "tool_calls" {
		t.Fatalf("finish_reason %v", choice["finish_reason"])
	}
	chat := r.req.GetPrompt().GetChat()
	if got, want := protojson.Format(chat), protojson.Format(&genv1.ChatMessages{
		Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "hi", Name: "ana"},
			{Role: genv1.Role_ROLE_ASSISTANT, ToolCalls: []*genv1.ToolCall{{Id: "c0", Name: "get_time", Arguments: "{}"}}},
			{Role: genv1.Role_ROLE_TOOL, ToolCallId: "c0", Content: "noon", Name: "get_time"}},
		Tools:      []*genv1.Tool{{Name: "get_weather", Description: "Weather", Parameters: `{"type":"object","properties":{"city":{"type":"string"}}}`, Strict: true}, {Name: "get_time"}},
		ToolChoice: &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION, Name: "get_weather"}, ParallelToolCalls: func() *bool { b := true; return &b }(),
	}); got != want {
		t.Fatalf("chat prompt %s\nwant %s", got, want)
	}

	resp, err = http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body+`,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var deltas []string
	var finish any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var c map[string]any
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		ch := c["choices"].([]any)[0].(map[string]any)
		if tc, ok := ch["delta"].(map[string]any)["tool_calls"]; ok {
			deltas = append(deltas, js(tc))
		}
		if f := ch["finish_reason"]; f != nil {
			finish = f
		}
	}
	want := []string{
		`[{"function":{"arguments":"","name":"get_weather"},"id":"call_a","index":0,"type":"function"}]`,
		`[{"function":{"arguments":"{\"city\":"},"index":0}]`,
		`[{"function":{"arguments":"\"Paris\"}"},"index":0},{"function":{"arguments":"{}","name":"get_time"},"id":"call_b","index":1,"type":"function"}]`,
	}
	if strings.Join(deltas, "\n") != strings.Join(want, "\n") || finish != "tool_calls" {
		t.Fatalf("streamed tool_calls:\n%s\nwant\n%s\nfinish %v", strings.Join(deltas, "\n"), strings.Join(want, "\n"), finish)
	}
}
