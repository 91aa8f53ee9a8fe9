package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
}
