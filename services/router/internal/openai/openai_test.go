package openai_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/services/router/internal/admission"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
	"github.com/llm-runner-router/llmrouter/services/router/internal/openai"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// api starts sim workers, a router over static discovery and the HTTP API.
func api(t testing.TB, cfg server.Config) string {
	t.Helper()
	return apiModels(t, cfg, sim.ModelConfig{Name: "m", CostPer1KOutput: 1})
}

// apiModels is api with a worker serving models.
func apiModels(t testing.TB, cfg server.Config, models ...sim.ModelConfig) string {
	t.Helper()
	return apiOver(t, cfg, sim.New(sim.Config{
		Models:          models,
		TokensPerSecond: 2000, MaxConcurrency: 8, QueueSize: 8,
	}))
}

// apiOver is api with a worker over backend (a token or text backend).
func apiOver(t testing.TB, cfg server.Config, backend enginehost.Catalog) string {
	t.Helper()
	models := backend.Models()
	w := testkit.ServeEngine(t, backend, enginehost.Limits{})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := pool.New(telemetry.Noop(), quiet, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, discovery.NewStatic(w.Addr)) })
	sched, err := plugins.Builtin().Build(plugins.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(p, sched, cfg)
	hs := httptest.NewServer(openai.New(srv, openai.Options{}))
	t.Cleanup(func() {
		hs.Close()
		cancel()
		wg.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if eps := p.Endpoints(); len(eps) == 1 && len(eps[0].Models()) == len(models) && eps[0].Healthy() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("router never learned the worker's models")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return hs.URL
}

func post(t *testing.T, url, body string) (*http.Response, map[string]any) {
	t.Helper()
	r, _ := http.NewRequest("POST", url, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return do(t, r)
}

// do sends r and decodes its JSON answer.
func do(t *testing.T, r *http.Request) (*http.Response, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return resp, v
}

func TestChatCompletions(t *testing.T) {
	url := api(t, server.Config{})
	resp, v := post(t, url+"/v1/chat/completions", `{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":7,"temperature":0}`)
	if resp.StatusCode != 200 || v["object"] != "chat.completion" {
		t.Fatalf("%d %v", resp.StatusCode, v)
	}
	choice := v["choices"].([]any)[0].(map[string]any)
	msg := choice["message"].(map[string]any)
	usage := v["usage"].(map[string]any)
	if msg["role"] != "assistant" || msg["content"] == "" || choice["finish_reason"] != "length" || usage["completion_tokens"] != 7.0 {
		t.Fatalf("response %v", v)
	}
}

// Streaming follows OpenAI's SSE framing: a role chunk, content chunks, a
// finish chunk, a usage chunk with empty choices, then [DONE].
func TestChatStreamingFraming(t *testing.T) {
	url := api(t, server.Config{})
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":6,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "data: ") {
			t.Fatalf("not an SSE data line: %q", line)
		}
		events = append(events, strings.TrimPrefix(line, "data: "))
	}
	if events[len(events)-1] != "[DONE]" {
		t.Fatalf("last event %q", events[len(events)-1])
	}
	var chunks []map[string]any
	for _, e := range events[:len(events)-1] {
		var c map[string]any
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatal(err)
		}
		if c["object"] != "chat.completion.chunk" {
			t.Fatalf("chunk %v", c)
		}
		chunks = append(chunks, c)
	}
	first := chunks[0]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	if first["role"] != "assistant" {
		t.Fatalf("first chunk %v", chunks[0])
	}
	last := chunks[len(chunks)-1]
	if len(last["choices"].([]any)) != 0 || last["usage"].(map[string]any)["completion_tokens"] != 6.0 {
		t.Fatalf("usage chunk %v", last)
	}
	finish := chunks[len(chunks)-2]["choices"].([]any)[0].(map[string]any)
	if finish["finish_reason"] != "length" {
		t.Fatalf("finish chunk %v", finish)
	}
	// Without include_usage no chunk carries a usage field.
	for _, c := range chunks[:len(chunks)-1] {
		if c["usage"] != nil {
			t.Fatalf("usage on a content chunk: %v", c)
		}
	}
}

func TestCompletionsModelsEmbeddings(t *testing.T) {
	url := api(t, server.Config{})
	resp, v := post(t, url+"/v1/completions", `{"model":"m","prompt":"Once","max_tokens":3,"temperature":0}`)
	if resp.StatusCode != 200 || v["object"] != "text_completion" || v["choices"].([]any)[0].(map[string]any)["text"] == "" {
		t.Fatalf("%d %v", resp.StatusCode, v)
	}
	r, err := http.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var models map[string]any
	_ = json.NewDecoder(r.Body).Decode(&models)
	r.Body.Close()
	if models["object"] != "list" || models["data"].([]any)[0].(map[string]any)["id"] != "m" {
		t.Fatalf("models %v", models)
	}
	resp, v = post(t, url+"/v1/embeddings", `{"model":"m","input":["a","b"]}`)
	data := v["data"].([]any)
	if resp.StatusCode != 200 || len(data) != 2 || len(data[1].(map[string]any)["embedding"].([]any)) != 16 {
		t.Fatalf("%d %v", resp.StatusCode, v)
	}
	first := data[0].(map[string]any)["embedding"].([]any)
	resp, v = post(t, url+"/v1/embeddings", `{"model":"m","input":"a","encoding_format":"base64"}`)
	raw, err := base64.StdEncoding.DecodeString(v["data"].([]any)[0].(map[string]any)["embedding"].(string))
	if resp.StatusCode != 200 || err != nil || len(raw) != 64 || math.Float32frombits(binary.LittleEndian.Uint32(raw)) != float32(first[0].(float64)) {
		t.Fatalf("base64 embedding: %d %v %v", resp.StatusCode, v, err)
	}
}

func TestErrorsUseOpenAIShape(t *testing.T) {
	url := api(t, server.Config{})
	tests := []struct {
		path, body string
		status     int
		typ, code  string
		msg        string
	}{
		{"/v1/chat/completions", `{"model":`, 400, "invalid_request_error", "", "not valid JSON"},
		{"/v1/chat/completions", ``, 400, "invalid_request_error", "", "request body is empty"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "you must provide a model"},
		{"/v1/chat/completions", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`, 404, "invalid_request_error", "model_not_found", "no worker serves model nope"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"robot","content":"x"}]}`, 400, "invalid_request_error", "", "messages[0].role"},
		{"/v1/chat/completions", `{"model":"m","messages":[]}`, 400, "invalid_request_error", "", "at least one message"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","name":"` + strings.Repeat("n", 65) + `","content":"x"}]}`, 400, "invalid_request_error", "", "messages[0].name must be valid UTF-8 of at most 64 bytes, got 65 bytes"},
		{"/v1/chat/completions", `{"model":"m","n":9,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "n must be 1 to 8, got 9"},
		{"/v1/chat/completions", `{"model":"m","n":0,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "n must be 1 to 8, got 0"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]}]}`, 400, "invalid_request_error", "", "messages[0].content[0] is an image_url part: image input (vision) is not supported"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio","input_audio":{}}]}]}`, 400, "invalid_request_error", "", "messages[0].content[1] is an input_audio part: audio input"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":[{"type":"hologram"}]}]}`, 400, "invalid_request_error", "", `unknown content part type "hologram" (supported: text)`},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}`, 400, "invalid_request_error", "", `messages[0].content[0] is a text part without a "text" string`},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":7}]}`, 400, "invalid_request_error", "", "must be a string or an array of content parts"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user"}]}`, 400, "invalid_request_error", "", "messages[0].content is required"},
		{"/v1/chat/completions", `{"model":"m","logit_bias":{"5":101},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `logit_bias["5"] = 101 is out of range: want -100 to 100`},
		{"/v1/chat/completions", `{"model":"m","logit_bias":{"cat":1},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `logit_bias key "cat" is not a token id`},
		{"/v1/chat/completions", `{"model":"m","frequency_penalty":2.5,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "frequency_penalty must be -2 to 2, got 2.5"},
		{"/v1/chat/completions", `{"model":"m","presence_penalty":-3,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "presence_penalty must be -2 to 2, got -3"},
		{"/v1/chat/completions", `{"model":"m","top_logprobs":21,"logprobs":true,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "top_logprobs must be 0 to 20, got 21"},
		{"/v1/chat/completions", `{"model":"m","top_logprobs":2,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "top_logprobs needs logprobs: true"},
		{"/v1/chat/completions", `{"model":"m","tools":[{"type":"function","function":{"name":"get weather"}}],"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `tools[0].function.name must be 1 to 64 letters, digits, underscores or dashes, got "get weather"`},
		{"/v1/chat/completions", `{"model":"m","tools":[{"type":"function","function":{"name":"` + strings.Repeat("f", 65) + `"}}],"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "tools[0].function.name must be 1 to 64 letters"},
		{"/v1/chat/completions", `{"model":"m","tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `tools[1].function.name "f" is not unique`},
		{"/v1/chat/completions", `{"model":"m","tools":[{"type":"retrieval"}],"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `tools[0].type must be "function", got "retrieval"`},
		{"/v1/chat/completions", `{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":[1]}}],"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "tools[0].function.parameters must be a JSON Schema object"},
		{"/v1/chat/completions", `{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `tool_choice names function "g", which is not in tools`},
		{"/v1/chat/completions", `{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"sometimes","messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `tool_choice must be "auto", "none", "required" or a function, got "sometimes"`},
		{"/v1/chat/completions", `{"model":"m","tool_choice":"required","messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "tool_choice needs tools"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"tool","content":"42"}]}`, 400, "invalid_request_error", "", "messages[1] is a tool message: tool_call_id is required"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{"}}]}]}`, 400, "invalid_request_error", "", "messages[1].tool_calls[0].function.arguments must be a JSON text"},
		{"/v1/chat/completions", `{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required","messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "no model of m can serve this request: m lacks tools"},
		{"/v1/chat/completions", `{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object","properties":{"a":{"type":7}}}}},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `sampling.response_format.json_schema: schema: #/properties/a/type: type must be a string or an array of strings`},
		{"/v1/chat/completions", `{"model":"m","logprobs":true,"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object","not":{}}}},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `m lacks structured output (response_format), JSON Schemas beyond the structured-output subset (the local grammar refused the schema: sampling.response_format.json_schema: schema uses features structured output does not support: "not" at #)`},
		{"/v1/chat/completions", `{"model":"m","response_format":{"type":"xml"},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `response_format.type must be text, json_object or json_schema, got "xml"`},
		{"/v1/chat/completions", `{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"string","format":"email"}}},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", `features structured output does not support: format "email" at #`},
		{"/v1/chat/completions", `{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"s","schema":` + strings.Repeat(`{"type":"array","items":`, 40) + `{}` + strings.Repeat(`}`, 40) + `}},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "nested deeper than 32 levels"},
		{"/v1/chat/completions", `{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"description":"` + strings.Repeat("x", 70000) + `"}}},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "over the limit of 65536"},
		{"/v1/chat/completions", `{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"bad name","schema":{}}},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "json_schema.name must be 1 to 64 letters"},
		{"/v1/chat/completions", `{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"s"}},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "needs json_schema.schema"},
		{"/v1/chat/completions", `{"model":"m","user":"` + strings.Repeat("u", 257) + `","messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "user is 257 bytes, over the limit of 256"},
		{"/v1/completions", `{"model":"m","prompt":"a","logprobs":6}`, 400, "invalid_request_error", "", "logprobs must be 0 to 5, got 6"},
		{"/v1/completions", `{"model":"m","prompt":"a","echo":true}`, 400, "invalid_request_error", "", "echo is not supported"},
		{"/v1/chat/completions", `{"model":"m","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "no model of m can serve this request: m lacks structured output (response_format)"},
		{"/v1/completions", `{"model":"m","prompt":"a","best_of":2}`, 400, "invalid_request_error", "", "best_of is not supported; use n"},
		{"/v1/completions", `{"model":"m","prompt":"a","suffix":"z"}`, 400, "invalid_request_error", "", "suffix (fill-in-the-middle) is not supported"},
		{"/v1/completions", `{"model":"m","prompt":"a","response_format":{"type":"json_object"}}`, 400, "invalid_request_error", "", "response_format is not supported on /v1/completions; use /v1/chat/completions"},
		{"/v1/completions", `{"model":"m","prompt":"a","tools":[{"type":"function","function":{"name":"f"}}]}`, 400, "invalid_request_error", "", "tools is not supported on /v1/completions"},
		{"/v1/chat/completions", `{"model":"m","functions":[{"name":"f"}],"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "functions (the deprecated form of function calling) is not supported; send tools"},
		{"/v1/chat/completions", `{"model":"m","function_call":"auto","messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "function_call (the deprecated form of tool_choice) is not supported; send tool_choice"},
		{"/v1/chat/completions", `{"model":"m","modalities":["text","audio"],"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "audio output is not supported"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{}}]}]}`, 400, "invalid_request_error", "", "messages[0].content[0] is a file part: file input"},
		{"/v1/chat/completions", `{"model":"m","logit_bias":{` + manyBiases(1025) + `},"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "logit_bias has 1025 entries, over the limit of 1024"},
		{"/v1/chat/completions", `{"model":"m","temperature":-1,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "sampling.temperature"},
		{"/v1/chat/completions", `{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "max_tokens must be at least 1"},
		{"/v1/completions", `{"model":"m","prompt":["a","b"]}`, 400, "invalid_request_error", "", "prompt must be a string"},
		{"/v1/embeddings", `{"model":"m","input":[1,2]}`, 400, "invalid_request_error", "", "input[0] must be a string"},
		{"/v1/nothing", `{}`, 404, "invalid_request_error", "not_found", "unknown endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.path+tt.body, func(t *testing.T) {
			resp, v := post(t, url+tt.path, tt.body)
			e, ok := v["error"].(map[string]any)
			if resp.StatusCode != tt.status || !ok || e["type"] != tt.typ || !strings.Contains(e["message"].(string), tt.msg) {
				t.Fatalf("got %d %v, want %d %s %q", resp.StatusCode, v, tt.status, tt.typ, tt.msg)
			}
			if tt.code != "" && e["code"] != tt.code {
				t.Fatalf("code %v, want %s", e["code"], tt.code)
			}
		})
	}
}

// A missing capability's error names the field that needs the capability
// the model lacks, not merely the first feature the request uses.
func TestMissingCapabilityNamesItsField(t *testing.T) {
	url := apiModels(t, server.Config{},
		sim.ModelConfig{Name: "tools-only", Capabilities: &enginev1.Capabilities{Tools: true, StructuredOutput: true}},
		sim.ModelConfig{Name: "logprobs-only"})
	const tools = `"tools":[{"type":"function","function":{"name":"f","strict":true,"parameters":{"type":"object","properties":{"a":{"not":{}}}}}}]`
	for _, tc := range []struct{ body, param, msg string }{
		{`{"model":"tools-only","logprobs":true,"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}]}`, "logprobs", "tools-only lacks logprobs"},
		{`{"model":"logprobs-only","logprobs":true,"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}]}`, "tools", "logprobs-only lacks tools"},
		{`{"model":"tools-only","response_format":{"type":"json_object"},"logprobs":true,"messages":[{"role":"user","content":"x"}]}`, "logprobs", "tools-only lacks logprobs"},
		{`{"model":"logprobs-only","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"x"}]}`, "response_format", "logprobs-only lacks structured output"},
		{`{"model":"tools-only",` + tools + `,"messages":[{"role":"user","content":"x"}]}`, "tools", `JSON Schemas beyond the structured-output subset (the local grammar refused the schema: prompt.chat.tools: tool "f"`},
		{`{"model":"tools-only","response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"not":{}}}},"messages":[{"role":"user","content":"x"}]}`, "response_format.json_schema.schema", "JSON Schemas beyond"},
	} {
		resp, v := post(t, url+"/v1/chat/completions", tc.body)
		e, _ := v["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if resp.StatusCode != 400 || e["param"] != tc.param || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %v, want 400 param %q %q", tc.body, resp.StatusCode, v, tc.param, tc.msg)
		}
	}
}

func TestOverloadIs429WithRetryAfter(t *testing.T) {
	url := api(t, server.Config{Admission: admission.New(1, 0, 0)})
	// Hold the only admission slot with a slow stream.
	body := `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":2000,"stream":true}`
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	slow, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Body.Close()
	defer cancel()
	_, _ = bufio.NewReader(slow.Body).ReadString('\n') // the stream is underway
	resp, v := post(t, url+"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":2}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || v["error"].(map[string]any)["type"] != "rate_limit_error" {
		t.Fatalf("overload: %d %v %v", resp.StatusCode, resp.Header, v)
	}
}

func TestAPIKeysOverHTTP(t *testing.T) {
	keys, err := auth.Load("", func(k string) string {
		if k == "LLMROUTER_API_KEYS" {
			return "web=sk-web-key"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	url := api(t, server.Config{Keys: keys})
	body := `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":2}`
	for _, tc := range []struct {
		header string
		status int
	}{{"", 401}, {"Bearer sk-nope", 401}, {"Bearer sk-web-key", 200}} {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%q: %d %s", tc.header, resp.StatusCode, b)
		}
		if tc.status == 401 && (!strings.Contains(string(b), `"type":"authentication_error"`) || strings.Contains(string(b), "sk-")) {
			t.Fatalf("401 body %s", b)
		}
	}
}

// Content may be an array of text parts (what the SDKs and agent
// frameworks send): they are joined, and the answer is the one the same
// text as a string gets.
func TestContentParts(t *testing.T) {
	url := api(t, server.Config{})
	ask := func(content string) string {
		t.Helper()
		resp, v := post(t, url+"/v1/chat/completions", `{"model":"m","temperature":0,"max_tokens":8,"messages":[{"role":"system","content":[{"type":"text","text":"be brief"}]},{"role":"user","content":`+content+`}]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, v)
		}
		return v["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
	}
	parts := ask(`[{"type":"text","text":"hello"},{"type":"text","text":"world"}]`)
	if plain := ask(`"hello\nworld"`); parts != plain || parts == "" {
		t.Fatalf("parts answered %q, the same text as a string %q", parts, plain)
	}
	if other := ask(`"something else entirely"`); other == parts {
		t.Fatalf("a different prompt got the same answer %q: the parts were not read", other)
	}
}

// logprobs and top_logprobs come back in OpenAI's shape, whole and
// streamed, one entry per generated token.
func TestLogprobsShape(t *testing.T) {
	url := api(t, server.Config{})
	resp, v := post(t, url+"/v1/chat/completions", `{"model":"m","temperature":0,"max_tokens":5,"logprobs":true,"top_logprobs":2,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, v)
	}
	choice := v["choices"].([]any)[0].(map[string]any)
	content := choice["logprobs"].(map[string]any)["content"].([]any)
	if len(content) != 5 {
		t.Fatalf("%d logprobs for 5 tokens: %v", len(content), choice)
	}
	// A token's bytes are exact (its "token" string cannot be, for a token
	// that ends inside a character): joined, they are the message.
	var joined []byte
	for _, c := range content {
		e := c.(map[string]any)
		lp, bytes, top := e["logprob"].(float64), e["bytes"].([]any), e["top_logprobs"].([]any)
		if lp >= 0 || len(bytes) == 0 || e["token"] == "" || len(top) != 2 {
			t.Fatalf("entry %v", e)
		}
		if a := top[0].(map[string]any); a["token"] == "" || a["logprob"].(float64) >= 0 {
			t.Fatalf("alternative %v", a)
		}
		for _, b := range bytes {
			joined = append(joined, byte(b.(float64)))
		}
	}
	if msg := choice["message"].(map[string]any)["content"]; string(joined) != msg {
		t.Fatalf("token bytes join to %q, the message is %q", joined, msg)
	}
	// Without logprobs the field is null.
	_, v = post(t, url+"/v1/chat/completions", `{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`)
	if lp := v["choices"].([]any)[0].(map[string]any)["logprobs"]; lp != nil {
		t.Fatalf("logprobs %v without asking", lp)
	}
	// Streamed: every token's entry arrives with the chunks.
	chunks := streamChunks(t, url+"/v1/chat/completions", `{"model":"m","temperature":0,"max_tokens":5,"logprobs":true,"top_logprobs":1,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	n := 0
	for _, c := range chunks {
		for _, ch := range c["choices"].([]any) {
			if lp, ok := ch.(map[string]any)["logprobs"].(map[string]any); ok {
				for _, e := range lp["content"].([]any) {
					if len(e.(map[string]any)["top_logprobs"].([]any)) != 1 {
						t.Fatalf("streamed entry %v", e)
					}
					n++
				}
			}
		}
	}
	if n != 5 {
		t.Fatalf("%d streamed logprobs entries for 5 tokens", n)
	}
	// Legacy completions: tokens, token_logprobs, top_logprobs, text_offset.
	_, v = post(t, url+"/v1/completions", `{"model":"m","prompt":"Once","max_tokens":3,"temperature":0,"logprobs":2}`)
	lp := v["choices"].([]any)[0].(map[string]any)["logprobs"].(map[string]any)
	if len(lp["tokens"].([]any)) != 3 || len(lp["token_logprobs"].([]any)) != 3 || len(lp["text_offset"].([]any)) != 3 || len(lp["top_logprobs"].([]any)[0].(map[string]any)) != 2 {
		t.Fatalf("completions logprobs %v", lp)
	}
}

// n choices: each with its index, different from one another with a seed
// (seed+i), the prompt counted once in usage, and the same n choices again
// for the same seed; streamed, every index gets its role, content and
// finish chunks.
func TestNChoices(t *testing.T) {
	url := api(t, server.Config{})
	body := `{"model":"m","n":3,"seed":11,"temperature":1,"max_tokens":6,"messages":[{"role":"user","content":"hi"}]}`
	texts := func() []string {
		resp, v := post(t, url+"/v1/chat/completions", body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, v)
		}
		cs := v["choices"].([]any)
		if len(cs) != 3 {
			t.Fatalf("%d choices", len(cs))
		}
		var out []string
		for i, c := range cs {
			c := c.(map[string]any)
			if c["index"] != float64(i) {
				t.Fatalf("choice %d has index %v", i, c["index"])
			}
			out = append(out, c["message"].(map[string]any)["content"].(string))
		}
		u := v["usage"].(map[string]any)
		if u["completion_tokens"] != 18.0 || u["total_tokens"] != u["prompt_tokens"].(float64)+18 {
			t.Fatalf("usage %v", u)
		}
		return out
	}
	a := texts()
	if a[0] == a[1] || a[1] == a[2] {
		t.Fatalf("choices with seeds 11, 12, 13 are equal: %q", a)
	}
	if b := texts(); strings.Join(a, "|") != strings.Join(b, "|") {
		t.Fatalf("same seed, different choices: %q then %q", a, b)
	}
	chunks := streamChunks(t, url+"/v1/chat/completions", strings.Replace(body, `"n":3`, `"n":3,"stream":true,"stream_options":{"include_usage":true}`, 1))
	roles, finishes, text := map[float64]int{}, map[float64]int{}, map[float64]string{}
	ids := map[any]bool{}
	for _, c := range chunks {
		ids[c["id"]] = true
		for _, ch := range c["choices"].([]any) {
			ch := ch.(map[string]any)
			i := ch["index"].(float64)
			d := ch["delta"].(map[string]any)
			if d["role"] == "assistant" {
				roles[i]++
			}
			if s, ok := d["content"].(string); ok {
				text[i] += s
			}
			if ch["finish_reason"] != nil {
				finishes[i]++
			}
		}
	}
	if len(ids) != 1 || len(roles) != 3 || len(finishes) != 3 || roles[2] != 1 || finishes[2] != 1 {
		t.Fatalf("streamed n=3: ids %v, role chunks %v, finish chunks %v", ids, roles, finishes)
	}
	for i := range 3 {
		if text[float64(i)] != a[i] {
			t.Fatalf("streamed choice %d = %q, whole = %q", i, text[float64(i)], a[i])
		}
	}
	if u := chunks[len(chunks)-1]["usage"].(map[string]any); u["completion_tokens"] != 18.0 {
		t.Fatalf("streamed usage %v", u)
	}
}

func manyBiases(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = `"` + strconv.Itoa(i) + `":1`
	}
	return strings.Join(parts, ",")
}

// streamChunks posts a streaming request and returns its JSON chunks,
// checking the stream ends with [DONE].
func streamChunks(t *testing.T, url, body string) []map[string]any {
	t.Helper()
	_, chunks := streamed(t, url, body)
	return chunks
}

// streamed posts a streaming request and returns the response's header and
// chunks.
func streamed(t *testing.T, url, body string, hdr ...string) (http.Header, []map[string]any) {
	t.Helper()
	r, _ := http.NewRequest("POST", url, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var chunks []map[string]any
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			continue
		}
		var c map[string]any
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("chunk %q: %v", line, err)
		}
		chunks = append(chunks, c)
	}
	if !done {
		t.Fatal("stream did not end with [DONE]")
	}
	return resp.Header, chunks
}
