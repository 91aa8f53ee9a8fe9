package openai_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/admission"
	"github.com/llm-runner-router/llmrouter/services/router/internal/openai"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

// anthropicPost posts body with Anthropic's headers and decodes the JSON
// answer.
func anthropicPost(t *testing.T, url, body string, header ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return resp, v
}

// sseEvents reads an SSE body as (event name, data object) pairs, checking
// that each event's name is its data's type.
func sseEvents(t *testing.T, body io.Reader) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(body)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var v map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &v); err != nil {
				t.Fatalf("data %q: %v", line, err)
			}
			if v["type"] != name {
				t.Fatalf("event %q carries type %v", name, v["type"])
			}
			out = append(out, v)
		}
	}
	return out
}

// The Messages API over a scripted answer (text, then a tool call): the
// system prompt, an earlier tool_use / tool_result exchange, tools and
// tool_choice become the chat prompt; the answer is a text block and a
// tool_use block, whole and as Anthropic's event sequence.
func TestMessagesShapes(t *testing.T) {
	r := &scripted{deltas: []*genv1.TokenDelta{
		{Text: "Let me check."},
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Id: "call_a", Name: "get_weather"}}},
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Arguments: `{"city":`}}},
		{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Arguments: `"Paris"}`}}},
	}}
	srv := httptest.NewServer(openai.New(r, openai.Options{}))
	t.Cleanup(srv.Close)
	body := `{"model":"m","max_tokens":50,"system":[{"type":"text","text":"Be brief."}],
		"messages":[
			{"role":"user","content":"Weather in Oslo?"},
			{"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Oslo"}}]},
			{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"cold"},{"type":"text","text":"And Paris?"}]}],
		"tools":[{"name":"get_weather","description":"Weather now","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}],
		"tool_choice":{"type":"auto","disable_parallel_tool_use":true},"metadata":{"user_id":"u-7"},"stop_sequences":["END"],"top_k":5}`
	resp, v := anthropicPost(t, srv.URL+"/v1/messages", body)
	if resp.StatusCode != 200 || resp.Header.Get("Request-Id") == "" {
		t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, v)
	}
	req := r.req
	chat := req.GetPrompt().GetChat()
	msgs := chat.GetMessages()
	if len(msgs) != 5 || msgs[0].GetRole() != genv1.Role_ROLE_SYSTEM || msgs[0].GetContent() != "Be brief." ||
		msgs[2].GetContent() != "Checking." || len(msgs[2].GetToolCalls()) != 1 || msgs[2].GetToolCalls()[0].GetArguments() != `{"city":"Oslo"}` ||
		msgs[3].GetRole() != genv1.Role_ROLE_TOOL || msgs[3].GetToolCallId() != "toolu_1" || msgs[3].GetContent() != "cold" ||
		msgs[4].GetRole() != genv1.Role_ROLE_USER || msgs[4].GetContent() != "And Paris?" {
		t.Fatalf("chat: %v", msgs)
	}
	if len(chat.GetTools()) != 1 || chat.GetTools()[0].GetName() != "get_weather" || !strings.Contains(chat.GetTools()[0].GetParameters(), `"city"`) ||
		chat.GetToolChoice().GetMode() != genv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO || chat.ParallelToolCalls == nil || chat.GetParallelToolCalls() {
		t.Fatalf("tools: %v", chat)
	}
	if req.GetUser() != "u-7" || req.GetSampling().GetMaxTokens() != 50 || req.GetSampling().GetTopK() != 5 || req.GetSampling().GetStop()[0] != "END" {
		t.Fatalf("request: %v", req)
	}
	content := v["content"].([]any)
	text, call := content[0].(map[string]any), content[1].(map[string]any)
	if v["type"] != "message" || v["role"] != "assistant" || v["id"] != "msg_r1" || v["stop_reason"] != "tool_use" || v["stop_sequence"] != nil ||
		len(content) != 2 || text["type"] != "text" || text["text"] != "Let me check." ||
		call["type"] != "tool_use" || call["id"] != "call_a" || call["name"] != "get_weather" || call["input"].(map[string]any)["city"] != "Paris" {
		t.Fatalf("message: %v", v)
	}
	if u := v["usage"].(map[string]any); u["input_tokens"] != 5.0 || u["output_tokens"] != 9.0 || u["cache_read_input_tokens"] != 0.0 {
		t.Fatalf("usage: %v", u)
	}

	// Streamed: the same message as Anthropic's events.
	sreq, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/messages", strings.NewReader(strings.Replace(body, `"max_tokens":50`, `"max_tokens":50,"stream":true`, 1)))
	sreq.Header.Set("Anthropic-Version", "2023-06-01")
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	if sresp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream content type %q", sresp.Header.Get("Content-Type"))
	}
	events := sseEvents(t, sresp.Body)
	var types []string
	var args string
	for _, e := range events {
		types = append(types, e["type"].(string))
		if d, ok := e["delta"].(map[string]any); ok && d["type"] == "input_json_delta" {
			args += d["partial_json"].(string)
		}
	}
	want := "message_start ping content_block_start content_block_delta content_block_stop content_block_start content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if strings.Join(types, " ") != want || args != `{"city":"Paris"}` {
		t.Fatalf("events %v (arguments %q), want %s", types, args, want)
	}
	start := events[5]["content_block"].(map[string]any)
	if events[5]["index"] != 1.0 || start["type"] != "tool_use" || start["id"] != "call_a" || start["name"] != "get_weather" {
		t.Fatalf("tool_use block start: %v", events[5])
	}
	md := events[9]
	if md["delta"].(map[string]any)["stop_reason"] != "tool_use" || md["usage"].(map[string]any)["output_tokens"] != 9.0 {
		t.Fatalf("message_delta: %v", md)
	}

	// count_tokens sees the same prompt.
	_, n := anthropicPost(t, srv.URL+"/v1/messages/count_tokens", `{"model":"m","system":"Be brief.","messages":[{"role":"user","content":"Hi"}]}`)
	if n["input_tokens"] != float64(len("Be brief.")+len("Hi")) || r.req.GetPrompt().GetChat().GetMessages()[0].GetContent() != "Be brief." {
		t.Fatalf("count_tokens: %v", n)
	}
}

// Through a real router over a sim worker: stop sequences name the one
// that matched, count_tokens counts what a message's usage reports, and
// bad input, unknown models and overload get Anthropic's errors.
func TestMessagesThroughRouter(t *testing.T) {
	url := api(t, server.Config{})
	body := `{"model":"m","max_tokens":30,"temperature":0,"messages":[{"role":"user","content":"stop test"}]}`
	_, full := anthropicPost(t, url+"/v1/messages", body)
	text := full["content"].([]any)[0].(map[string]any)["text"].(string)
	words := strings.Fields(text)
	if len(words) < 4 || full["stop_reason"] != "max_tokens" {
		t.Fatalf("full answer: %v", full)
	}
	stop := words[3]
	_, cut := anthropicPost(t, url+"/v1/messages", strings.Replace(body, `"max_tokens":30`, `"max_tokens":30,"stop_sequences":["never here","`+stop+`"]`, 1))
	if cut["stop_reason"] != "stop_sequence" || cut["stop_sequence"] != stop || cut["content"].([]any)[0].(map[string]any)["text"] != text[:strings.Index(text, stop)] {
		t.Fatalf("stop %q: %v", stop, cut)
	}
	_, count := anthropicPost(t, url+"/v1/messages/count_tokens", `{"model":"m","messages":[{"role":"user","content":"stop test"}]}`)
	if count["input_tokens"] != full["usage"].(map[string]any)["input_tokens"] || count["input_tokens"] == 0.0 {
		t.Fatalf("count_tokens %v, the message's usage %v", count, full["usage"])
	}

	for _, tc := range []struct {
		name, path, body string
		header           []string
		status           int
		typ, msg         string
	}{
		{"no version", "/v1/messages", body, []string{"Anthropic-Version", ""}, 400, "invalid_request_error", "anthropic-version: header is required"},
		{"bad version", "/v1/messages", body, []string{"Anthropic-Version", "latest"}, 400, "invalid_request_error", "not a valid version"},
		{"unknown field", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x","colour":1}]}`, nil, 400, "invalid_request_error", "messages.0.colour: Extra inputs are not permitted"},
		{"no max_tokens", "/v1/messages", `{"model":"m","messages":[{"role":"user","content":"x"}]}`, nil, 400, "invalid_request_error", "max_tokens: Field required"},
		{"temperature", "/v1/messages", `{"model":"m","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"x"}]}`, nil, 400, "invalid_request_error", "temperature: must be 0 to 1"},
		{"image", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]}]}`, nil, 400, "invalid_request_error", "messages.0.content.0: image block: image input (vision)"},
		{"tool_use in a user turn", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"f","input":{}}]}]}`, nil, 400, "invalid_request_error", "a tool_use block cannot be in a user turn"},
		{"prefill to a model without it", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"The answer is"}]}`, nil, 400, "invalid_request_error", "m lacks continuing a prefill (accepts_prefill)"},
		{"prefill with trailing space", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"The answer is "}]}`, nil, 400, "invalid_request_error", "messages.1.content: final assistant content cannot end with trailing whitespace"},
		{"prefill with a call", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":[{"type":"tool_use","id":"a","name":"f","input":{}}]}]}`, nil, 400, "invalid_request_error", "holds text only"},
		{"server tool", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`, nil, 400, "invalid_request_error", "tools.0: \"web_search_20250305\""},
		{"bad tool name", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"a b","input_schema":{"type":"object"}}]}`, nil, 400, "invalid_request_error", "tools.0.name must be"},
		{"unknown tool choice", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"g"}}`, nil, 400, "invalid_request_error", "tool_choice.name"},
		{"thinking blocks only", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"}]}]}`, nil, 400, "invalid_request_error", "nothing to answer"},
		{"thinking blocks only, counted", "/v1/messages/count_tokens", `{"model":"m","messages":[{"role":"assistant","content":[{"type":"redacted_thinking","data":"x"}]}]}`, nil, 400, "invalid_request_error", "nothing to answer"},
		{"top_k", "/v1/messages", `{"model":"m","max_tokens":5,"top_k":-1,"messages":[{"role":"user","content":"x"}]}`, nil, 400, "invalid_request_error", "top_k: must be at least 0"},
		{"tool_choice type", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"sometimes"}}`, nil, 400, "invalid_request_error", "tool_choice.type: must be"},
		{"empty content", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[]}]}`, nil, 400, "invalid_request_error", "messages.0.content: at least one content block"},
		{"thinking disabled in a field", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","note":"disabled"}}`, nil, 400, "invalid_request_error", "thinking: extended thinking is not supported"},
		{"thinking", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","budget_tokens":1024}}`, nil, 400, "invalid_request_error", "thinking: extended thinking is not supported"},
		{"unknown model", "/v1/messages", `{"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`, nil, 404, "not_found_error", "nope"},
		{"count unknown model", "/v1/messages/count_tokens", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`, nil, 404, "not_found_error", "nope"},
		{"count with max_tokens", "/v1/messages/count_tokens", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`, nil, 400, "invalid_request_error", "max_tokens: Extra inputs are not permitted"},
	} {
		resp, v := anthropicPost(t, url+tc.path, tc.body, tc.header...)
		e, _ := v["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if resp.StatusCode != tc.status || v["type"] != "error" || e["type"] != tc.typ || !strings.Contains(msg, tc.msg) || v["request_id"] != resp.Header.Get("Request-Id") {
			t.Errorf("%s: %d %v, want %d %s %q", tc.name, resp.StatusCode, v, tc.status, tc.typ, tc.msg)
		}
	}
}

// The router at its admission limit is Anthropic's 529 overloaded_error
// with Retry-After, before a stream starts.
func TestMessagesOverloadIs529(t *testing.T) {
	url := api(t, server.Config{Admission: admission.New(1, 0, 0)})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/messages", strings.NewReader(`{"model":"m","max_tokens":2000,"stream":true,"messages":[{"role":"user","content":"x"}]}`))
	req.Header.Set("Anthropic-Version", "2023-06-01")
	slow, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Body.Close()
	defer cancel()
	if _, err := bufio.NewReader(slow.Body).ReadString('\n'); err != nil { // the stream is underway
		t.Fatal(err)
	}
	resp, v := anthropicPost(t, url+"/v1/messages", `{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"x"}]}`)
	if resp.StatusCode != 529 || resp.Header.Get("Retry-After") == "" || v["error"].(map[string]any)["type"] != "overloaded_error" {
		t.Fatalf("overload: %d %v %v", resp.StatusCode, resp.Header, v)
	}
}

// prefilling is a hosted model that continues a prefill (as Anthropic's
// do, through provider-proxy): it records the prefill it was given and
// answers with what follows it.
type prefilling struct {
	mu      sync.Mutex
	prefill string
	turns   int
}

func (p *prefilling) Models() []*enginev1.ModelInfo {
	return []*enginev1.ModelInfo{{Name: "hosted", Format: "api", ContextLength: 4096, AcceptsPrefill: true, Capabilities: &enginev1.Capabilities{Tools: true}}}
}

func (p *prefilling) Status() *enginev1.GetStatusResponse { return &enginev1.GetStatusResponse{} }

func (p *prefilling) StreamText(_ context.Context, _ string, r enginehost.TextRequest) (enginehost.TextStream, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prefill, p.turns = r.Prefill, len(r.Prompt.GetChat().GetMessages())
	return &words{list: []string{" forty", "-two."}}, nil
}

type words struct{ list []string }

func (w *words) Next(context.Context) (enginehost.TextChunk, error) {
	if len(w.list) == 0 {
		return enginehost.TextChunk{Done: true, Finish: genv1.FinishReason_FINISH_REASON_STOP, PromptTokens: 9, CompletionTokens: 2}, nil
	}
	s := w.list[0]
	w.list = w.list[1:]
	return enginehost.TextChunk{Text: s}, nil
}

func (w *words) Close() {}

// A final assistant turn is a prefill: it reaches a model that continues
// prefills as such (not as a turn), and the answer is what follows it.
func TestMessagesPrefill(t *testing.T) {
	b := &prefilling{}
	url := apiOver(t, server.Config{}, b)
	resp, v := anthropicPost(t, url+"/v1/messages", `{"model":"hosted","max_tokens":20,"messages":[{"role":"user","content":"The answer?"},{"role":"assistant","content":"The answer is"}]}`)
	content, _ := v["content"].([]any)
	if resp.StatusCode != 200 || len(content) != 1 || content[0].(map[string]any)["text"] != " forty-two." || v["stop_reason"] != "end_turn" {
		t.Fatalf("%d %v", resp.StatusCode, v)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.prefill != "The answer is" || b.turns != 1 {
		t.Fatalf("the model got prefill %q and %d turns, want the assistant turn as the prefill", b.prefill, b.turns)
	}
}

// stepped is a router whose answer comes in steps: each delta after a
// pause, then an end, or an error in its place.
type stepped struct {
	scripted
	pause time.Duration
	fail  error
}

func (s *stepped) Route(ctx context.Context, _ *routerv1.GenerateRequest, sink interface {
	Send(*routerv1.GenerateResponse) error
}) error {
	_ = sink.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Start{Start: &genv1.StartEvent{RequestId: "r2", Model: "m", PromptTokens: 4}}})
	for _, t := range []string{"One", " two"} {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.pause):
		}
		_ = sink.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Delta{Delta: &genv1.TokenDelta{Text: t}}})
	}
	if s.fail != nil {
		return s.fail
	}
	return sink.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_End{End: &genv1.EndEvent{FinishReason: genv1.FinishReason_FINISH_REASON_STOP,
		Usage: &genv1.Usage{PromptTokens: 4, CompletionTokens: 2, TotalTokens: 6}}}})
}

// A quiet stream gets pings between its deltas; a stream that breaks
// after it started ends with Anthropic's error event and no message_stop.
func TestMessagesPingsAndMidStreamError(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail error
		want string
	}{
		{"quiet", nil, "message_start ping content_block_start content_block_delta ping content_block_delta content_block_stop message_delta message_stop"},
		{"broken", rpcerr.Unavailable("worker gone"), "message_start ping content_block_start content_block_delta ping content_block_delta error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(openai.New(&stepped{pause: 300 * time.Millisecond, fail: tc.fail}, openai.Options{PingInterval: 100 * time.Millisecond}))
			t.Cleanup(srv.Close)
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/messages", strings.NewReader(`{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"x"}]}`))
			req.Header.Set("Anthropic-Version", "2023-06-01")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			events := sseEvents(t, resp.Body)
			var types []string
			for _, e := range events {
				if n := len(types); e["type"] == "ping" && types[n-1] == "ping" {
					continue // a run of pings counts once
				}
				types = append(types, e["type"].(string))
			}
			// (The ping between the deltas is the quiet stream's: 3
			// intervals without a write.)
			if got := strings.Join(types, " "); got != tc.want {
				t.Fatalf("events %s, want %s", got, tc.want)
			}
			if tc.fail != nil {
				e := events[len(events)-1]["error"].(map[string]any)
				if e["type"] != "overloaded_error" || e["message"] != "worker gone" {
					t.Fatalf("error event %v", e)
				}
			}
		})
	}
}
