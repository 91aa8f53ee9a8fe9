package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// fakeOpenAI streams a fixed answer in OpenAI's Chat Completions SSE format.
func fakeOpenAI(t *testing.T, words ...string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer sk-e2e-upstream" {
			w.WriteHeader(401)
			fmt.Fprint(w, `{"error":{"message":"bad key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		send := func(s string) {
			fmt.Fprintf(w, "data: %s\n\n", s)
			w.(http.Flusher).Flush()
		}
		for _, word := range words {
			b, _ := json.Marshal(word)
			send(fmt.Sprintf(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[{"index":0,"delta":{"content":%s},"finish_reason":null}]}`, b))
		}
		send(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`)
		send(fmt.Sprintf(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":%d,"total_tokens":%d}}`, len(words), 3+len(words)))
		send("[DONE]")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1/"
}

// The router falls back from a local model to a hosted one (through
// provider-proxy) when no local worker is left, and back when one returns.
func TestFallbackLocalToHostedAndBack(t *testing.T) {
	upstream := fakeOpenAI(t, "from", " the", " cloud")
	cfg := filepath.Join(t.TempDir(), "proxy.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{
	  "providers": [{"name": "openai", "kind": "openai", "base_url": %q, "api_key_env": "E2E_UPSTREAM_KEY"}],
	  "models": [{"name": "hosted", "provider": "openai", "upstream_model": "up", "price_in_per_1m": 0.15, "price_out_per_1m": 0.6, "quality": 0.9, "context_length": 128000}]
	}`, upstream)), 0o600); err != nil {
		t.Fatal(err)
	}
	consul := testkit.StartConsul(t, 0)
	testkit.Start(t, "provider-proxy", bins.ProviderProxy, testkit.StartOptions{WaitListening: true, Env: []string{"E2E_UPSTREAM_KEY=sk-e2e-upstream"}}, certs.Args(mtls.RoleProviderProxy,
		"-config", cfg, "-consul", consul.HTTPAddr, "-check-interval", "1s")...)
	local := func() *testkit.Proc {
		return testkit.Start(t, "local", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
			"-consul", consul.HTTPAddr, "-check-interval", "1s", "-models", "local", "-tps", "500", "-ttft", "5ms")...)
	}
	worker := local()
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter, "-consul", consul.HTTPAddr)...)
	conn, err := grpc.NewClient(router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := routerv1.NewRouterServiceClient(conn)
	servedBy := func() (string, streamResult) {
		t.Helper()
		req := generate(5, "hello")
		req.Model = "local"
		req.Routing = &routerv1.RoutingOptions{FallbackModels: []string{"hosted"}}
		s, err := client.Generate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		r := consume(s, nil)
		if r.err != nil {
			t.Fatalf("request failed: %v", r.err)
		}
		return r.model, r
	}
	waitModels := func(want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			l, err := client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
			if err == nil && len(l.GetModels()) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("router lists %v, want %d models", l, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitModels(2)
	if model, _ := servedBy(); model != "local" {
		t.Fatalf("with a local worker up, served by %s", model)
	}
	worker.Stop(5 * time.Second)
	waitModels(1)
	model, r := servedBy()
	if model != "hosted" || r.text != "from the cloud" || r.end.GetUsage().GetCompletionTokens() != 3 || r.end.GetCostUsd() <= 0 {
		t.Fatalf("fallback: served by %s: %q %v", model, r.text, r.end)
	}
	local()
	waitModels(2)
	if model, _ := servedBy(); model != "local" {
		t.Fatalf("after the local worker returned, served by %s", model)
	}

	// Capability-aware routing: the simulated local model has neither
	// tools nor structured output, the hosted one has both (and takes
	// schemas beyond the local grammar's subset) but no logprobs. A request
	// goes to the first model of its chain that has what it needs, without
	// an attempt on the others; with none, it is refused naming each.
	chat := func(edit func(*routerv1.GenerateRequest), fallbacks ...string) streamResult {
		t.Helper()
		req := generate(5, "")
		req.Model = "local"
		req.Prompt = &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "hello"}}}}}
		req.Routing = &routerv1.RoutingOptions{FallbackModels: fallbacks}
		edit(req)
		s, err := client.Generate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return consume(s, nil)
	}
	tools := func(r *routerv1.GenerateRequest) {
		r.Prompt.GetChat().Tools = []*genv1.Tool{{Name: "get_weather", Parameters: `{"type":"object","properties":{"city":{"type":"string"}}}`}}
	}
	wideSchema := func(r *routerv1.GenerateRequest) {
		r.Sampling.ResponseFormat = &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA, Name: "s", JsonSchema: `{"type":"object","not":{"required":["x"]}}`}
	}
	logprobs := func(r *routerv1.GenerateRequest) { r.Sampling.Logprobs = true }
	for name, tc := range map[string]struct {
		edit func(*routerv1.GenerateRequest)
		want string
	}{"tools": {tools, "hosted"}, "a schema beyond the grammar": {wideSchema, "hosted"}, "logprobs": {logprobs, "local"}} {
		got := chat(tc.edit, "hosted")
		if got.err != nil || got.model != tc.want || len(got.end.GetAttempts()) != 1 {
			t.Fatalf("%s: served by %s (%v), attempts %v; want %s at the first attempt", name, got.model, got.err, got.end.GetAttempts(), tc.want)
		}
	}
	r = chat(tools)
	if status.Code(r.err) != codes.InvalidArgument || !strings.Contains(status.Convert(r.err).Message(), "no model of local can serve this request: local lacks tools") {
		t.Fatalf("tools without a fallback that has them: %v", r.err)
	}
	r = chat(func(q *routerv1.GenerateRequest) { tools(q); logprobs(q) }, "hosted")
	if msg := status.Convert(r.err).Message(); status.Code(r.err) != codes.InvalidArgument || !strings.Contains(msg, "local lacks tools; hosted lacks logprobs") {
		t.Fatalf("tools and logprobs: %v", r.err)
	}
}
