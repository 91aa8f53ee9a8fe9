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
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

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
	w := testkit.ServeEngine(t, sim.New(sim.Config{
		Models:          []sim.ModelConfig{{Name: "m", CostPer1KOutput: 1}},
		TokensPerSecond: 2000, MaxConcurrency: 8, QueueSize: 8,
	}), enginehost.Limits{})
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
		if eps := p.Endpoints(); len(eps) == 1 && len(eps[0].Models()) == 1 && eps[0].Healthy() {
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
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
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
		{"/v1/chat/completions", `{"model":"m","n":3,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "", "only n=1"},
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
