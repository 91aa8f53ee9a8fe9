package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/structured/structuredtest"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

const secret = "sk-test-0123456789abcdef"

// serve runs the proxy over one fake upstream of kind and returns a client.
func serve(t *testing.T, kind string, u *upstream) enginev1.EngineServiceClient {
	t.Helper()
	return serveModel(t, kind, u, false)
}

// serveModel is serve with the model's accepts_prefill set.
func serveModel(t *testing.T, kind string, u *upstream, acceptsPrefill bool) enginev1.EngineServiceClient {
	t.Helper()
	var h http.Handler
	if kind == "anthropic" {
		h = u.anthropic()
	} else {
		h = u.openAI()
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	base := srv.URL + "/v1/"
	if kind == "anthropic" {
		base = srv.URL + "/"
	}
	b, err := proxy.New(proxy.Config{
		Providers: []proxy.ProviderConfig{{Name: kind, Kind: kind, BaseURL: base, APIKeyEnv: "UPSTREAM_KEY"}},
		Models: []proxy.ModelConfig{{Name: "hosted", Provider: kind, UpstreamModel: "up-model", PriceInPer1M: 1000, PriceOutPer1M: 2000, Quality: 0.9, ContextLength: 8192,
			AcceptsPrefill: acceptsPrefill}},
		BackoffBase: 10 * time.Millisecond,
	}, func(string) string { return secret }, &http.Client{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return testkit.ServeEngine(t, b, enginehost.Limits{}).Client
}

type result struct {
	text string
	end  *genv1.EndEvent
}

func generate(ctx context.Context, c enginev1.EngineServiceClient, maxTokens int32) (result, error) {
	var r result
	s, err := c.Generate(ctx, &enginev1.GenerateRequest{Model: "hosted",
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{
			{Role: genv1.Role_ROLE_SYSTEM, Content: "be brief"}, {Role: genv1.Role_ROLE_USER, Content: "hi"}}}}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: maxTokens}})
	if err != nil {
		return r, err
	}
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return r, nil
		}
		if err != nil {
			return r, err
		}
		r.text += msg.GetDelta().GetText()
		if e := msg.GetEnd(); e != nil {
			r.end = e
		}
	}
}

func TestStreamsBothWireFormats(t *testing.T) {
	for _, kind := range []string{"openai", "anthropic"} {
		t.Run(kind, func(t *testing.T) {
			u := newUpstream("Hello", ", ", "wor", "ld", "!")
			c := serve(t, kind, u)
			r, err := generate(context.Background(), c, 50)
			if err != nil {
				t.Fatal(err)
			}
			if r.text != "Hello, world!" || r.end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_STOP {
				t.Fatalf("got %q %v", r.text, r.end)
			}
			prompt := int32(11)
			if kind == "anthropic" {
				prompt = 13
			}
			u2 := r.end.GetUsage()
			if u2.GetPromptTokens() != prompt || u2.GetCompletionTokens() != 5 {
				t.Fatalf("usage %v", u2)
			}
			if want := float64(prompt)/1e6*1000 + 5.0/1e6*2000; r.end.GetCostUsd() < want-1e-9 || r.end.GetCostUsd() > want+1e-9 {
				t.Fatalf("cost %v, want %v", r.end.GetCostUsd(), want)
			}
			body := u.lastBody()
			if body["model"] != "up-model" || body["stream"] != true {
				t.Fatalf("upstream request %v", body)
			}
			if kind == "openai" {
				if so, _ := body["stream_options"].(map[string]any); so["include_usage"] != true || body["max_completion_tokens"] != 50.0 {
					t.Fatalf("openai request %v", body)
				}
			} else if body["max_tokens"] != 50.0 || body["system"] == nil {
				t.Fatalf("anthropic request %v", body)
			}
		})
	}
}

func TestErrorsAreMappedAndRedacted(t *testing.T) {
	tests := []struct {
		name, kind string
		status     int
		body       string
		header     map[string]string
		code       codes.Code
		attempts   int32
		msg        string
	}{
		{"openai 400", "openai", 400, openAIError("invalid_request_error", "bad", "max_tokens is too large"), nil, codes.InvalidArgument, 1, "max_tokens is too large"},
		{"openai 401 echoes key", "openai", 401, openAIError("invalid_request_error", "invalid_api_key", "Incorrect API key provided: "+secret+". You can find your API key at https://platform.openai.com."), nil, codes.Unauthenticated, 1, "Incorrect API key provided"},
		{"openai 403", "openai", 403, openAIError("permission_error", "", "not allowed"), nil, codes.PermissionDenied, 1, "not allowed"},
		{"openai 404", "openai", 404, openAIError("invalid_request_error", "model_not_found", "The model `up-model` does not exist"), nil, codes.NotFound, 1, "does not exist"},
		{"openai 429 retried then refused", "openai", 429, openAIError("requests", "rate_limit_exceeded", "Rate limit reached"), map[string]string{"Retry-After": "0.02"}, codes.ResourceExhausted, 3, "Rate limit reached"},
		{"openai 500 retried then unavailable", "openai", 500, openAIError("server_error", "", "The server had an error"), nil, codes.Unavailable, 3, "server had an error"},
		{"anthropic 401", "anthropic", 401, anthropicError("authentication_error", "invalid x-api-key "+secret), nil, codes.Unauthenticated, 1, "authentication_error"},
		{"anthropic 404", "anthropic", 404, anthropicError("not_found_error", "model: up-model"), nil, codes.NotFound, 1, "not_found_error"},
		{"anthropic 529 overloaded", "anthropic", 529, anthropicError("overloaded_error", "Overloaded"), nil, codes.Unavailable, 3, "Overloaded"},
		{"anthropic 429", "anthropic", 429, anthropicError("rate_limit_error", "slow down"), map[string]string{"Retry-After": "0.02"}, codes.ResourceExhausted, 3, "slow down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream("x")
			u.failFirst, u.failStatus, u.failBody, u.failHeader = 100, tt.status, tt.body, tt.header
			c := serve(t, tt.kind, u)
			_, err := generate(context.Background(), c, 10)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
			if strings.Contains(st.Message(), secret) || strings.Contains(st.Message(), "sk-test") {
				t.Fatalf("status leaks the upstream key: %q", st.Message())
			}
			if got := u.attempts.Load(); got != tt.attempts {
				t.Fatalf("%d upstream attempts, want %d", got, tt.attempts)
			}
			if tt.code == codes.ResourceExhausted && rpcerr.RetryAfter(err) <= 0 {
				t.Fatalf("no retry hint on %v", err)
			}
		})
	}
}

func TestRetryBeforeFirstTokenSucceeds(t *testing.T) {
	u := newUpstream("ok")
	u.failFirst, u.failStatus, u.failBody = 1, 503, openAIError("server_error", "", "try again")
	c := serve(t, "openai", u)
	r, err := generate(context.Background(), c, 10)
	if err != nil || r.text != "ok" || u.attempts.Load() != 2 {
		t.Fatalf("%q %v after %d attempts", r.text, err, u.attempts.Load())
	}
}

func TestStreamCutMidwayIsUnavailableWithPartialUsage(t *testing.T) {
	for _, kind := range []string{"openai", "anthropic"} {
		t.Run(kind, func(t *testing.T) {
			u := newUpstream("a", "b", "c", "d")
			u.cutAfter = 2
			c := serve(t, kind, u)
			r, err := generate(context.Background(), c, 10)
			st := status.Convert(err)
			if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "stream cut after 2 chunks (partial usage") || r.text != "ab" {
				t.Fatalf("cut stream: %q then %v %q", r.text, st.Code(), st.Message())
			}
			if u.attempts.Load() != 1 {
				t.Fatalf("a stream cut after tokens was retried (%d attempts)", u.attempts.Load())
			}
		})
	}
	u := newUpstream("a", "b")
	u.errorEvent = true
	c := serve(t, "anthropic", u)
	_, err := generate(context.Background(), c, 10)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "Overloaded") {
		t.Fatalf("anthropic error event: %v", err)
	}
}

func TestClientCancelCancelsStalledUpstream(t *testing.T) {
	for _, kind := range []string{"openai", "anthropic"} {
		t.Run(kind, func(t *testing.T) {
			u := newUpstream()
			u.stall = true
			c := serve(t, kind, u)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := generate(ctx, c, 10)
				done <- err
			}()
			<-u.stallSeen
			cancel()
			select {
			case <-u.canceled:
			case <-time.After(3 * time.Second):
				t.Fatal("the upstream request outlived the client")
			}
			if err := <-done; status.Code(err) != codes.Canceled {
				t.Fatalf("client saw %v", err)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	env := func(string) string { return "" }
	bad := []proxy.Config{
		{Providers: []proxy.ProviderConfig{{Name: "p", Kind: "gemini"}}, Models: []proxy.ModelConfig{{Name: "m", Provider: "p", UpstreamModel: "x"}}},
		{Providers: []proxy.ProviderConfig{{Name: "p", Kind: "openai", APIKeyEnv: "MISSING"}}, Models: []proxy.ModelConfig{{Name: "m", Provider: "p", UpstreamModel: "x"}}},
		{Providers: []proxy.ProviderConfig{{Name: "p", Kind: "openai-compatible"}}, Models: []proxy.ModelConfig{{Name: "m", Provider: "p", UpstreamModel: "x"}}},
		{Providers: []proxy.ProviderConfig{{Name: "p", Kind: "openai"}}, Models: []proxy.ModelConfig{{Name: "m", Provider: "q", UpstreamModel: "x"}}},
		{Providers: []proxy.ProviderConfig{{Name: "p", Kind: "openai"}}, Models: []proxy.ModelConfig{{Name: "m", Provider: "p", UpstreamModel: "x", Quality: 2}}},
		{Providers: []proxy.ProviderConfig{{Name: "p", Kind: "openai"}}},
	}
	for i, c := range bad {
		if _, err := proxy.New(c, env, http.DefaultClient); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
}

// A hosted model advertises its provider kind's capabilities (tools
// everywhere; response formats and any JSON Schema on OpenAI's API only),
// which its configuration can override; logprobs cannot be claimed, nor
// can what Anthropic's relay does not enforce.
func TestModelCapabilities(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/proxy.json"
	write := func(models string) {
		t.Helper()
		cfg := `{"providers":[{"name":"o","kind":"openai","api_key_env":"K"},{"name":"a","kind":"anthropic","api_key_env":"K"},{"name":"local","kind":"openai-compatible","base_url":"http://127.0.0.1:1/v1/"}],"models":[` + models + `]}`
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"name":"gpt","provider":"o","upstream_model":"x"},{"name":"claude","provider":"a","upstream_model":"y"},
		{"name":"small","provider":"local","upstream_model":"z","capabilities":{"tools":false,"structured_output":false}},
		{"name":"schemas","provider":"local","upstream_model":"z","capabilities":{"any_json_schema":false}}`)
	cfg, err := proxy.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proxy.New(cfg, func(string) string { return "k" }, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range b.Models() {
		c := m.GetCapabilities()
		got[m.GetName()] = fmt.Sprintf("structured=%v any_schema=%v tools=%v logprobs=%v", c.GetStructuredOutput(), c.GetAnyJsonSchema(), c.GetTools(), c.GetLogprobs())
	}
	for name, want := range map[string]string{
		"gpt":     "structured=true any_schema=true tools=true logprobs=false",
		"claude":  "structured=false any_schema=false tools=true logprobs=false",
		"small":   "structured=false any_schema=true tools=false logprobs=false",
		"schemas": "structured=true any_schema=false tools=true logprobs=false",
	} {
		if got[name] != want {
			t.Errorf("%s: %s, want %s", name, got[name], want)
		}
	}
	write(`{"name":"gpt","provider":"o","upstream_model":"x","capabilities":{"logprobs":true}}`)
	if _, err := proxy.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "logprobs") {
		t.Fatalf("a claim of logprobs: %v", err)
	}
	for _, claim := range []string{"structured_output", "any_json_schema"} {
		write(`{"name":"claude","provider":"a","upstream_model":"y","capabilities":{"` + claim + `":true}}`)
		if cfg, err = proxy.LoadConfig(path); err != nil {
			t.Fatal(err)
		}
		if _, err := proxy.New(cfg, func(string) string { return "k" }, http.DefaultClient); err == nil || !strings.Contains(err.Error(), claim) {
			t.Errorf("Anthropic claiming %s: %v", claim, err)
		}
	}
}

// A model that accepts a prefill gets the partial answer as a trailing
// assistant message (both providers); bad or contradictory continuations are
// refused, and so is any continuation to a model that does not accept one.
func TestPrefillContinuation(t *testing.T) {
	chat := &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "hi"}}}}}
	run := func(c enginev1.EngineServiceClient, req *enginev1.GenerateRequest) error {
		s, err := c.Generate(context.Background(), req)
		for err == nil {
			_, err = s.Recv()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	for _, kind := range []string{"openai", "anthropic"} {
		t.Run(kind, func(t *testing.T) {
			u := newUpstream("and", " more")
			c := serveModel(t, kind, u, true)
			if err := run(c, &enginev1.GenerateRequest{Model: "hosted", Prompt: chat, ContinuationText: "said so far"}); err != nil {
				t.Fatal(err)
			}
			msgs, _ := u.lastBody()["messages"].([]any)
			last, _ := msgs[len(msgs)-1].(map[string]any)
			content := fmt.Sprint(last["content"])
			if last["role"] != "assistant" || !strings.Contains(content, "said so far") {
				t.Fatalf("last upstream message %v, want the prefill as assistant", last)
			}
		})
	}
	c := serveModel(t, "openai", newUpstream("x"), true)
	bad := []struct {
		name string
		req  *enginev1.GenerateRequest
		msg  string
	}{
		{"invalid utf8", &enginev1.GenerateRequest{Model: "hosted", Prompt: chat, ContinuationText: "ok\xff"}, "continuation_text is not valid UTF-8"},
		{"both kinds", &enginev1.GenerateRequest{Model: "hosted", Prompt: chat, ContinuationText: "x", Continuation: []uint32{1}}, "not both"},
	}
	for _, b := range bad {
		if err := run(c, b.req); status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), b.msg) {
			t.Errorf("%s: %v, want InvalidArgument naming %q", b.name, err, b.msg)
		}
	}
	plain := serve(t, "openai", newUpstream("x"))
	if err := run(plain, &enginev1.GenerateRequest{Model: "hosted", Prompt: chat, ContinuationText: "x"}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "does not advertise accepts_prefill") {
		t.Fatalf("prefill to a model without accepts_prefill: %v", err)
	}
}

// When the caller owns retries (the router's metadata), a 503 is one
// upstream attempt and comes back with the reason the router keys on;
// without it the proxy retries as before.
func TestSingleAttemptForTheRouter(t *testing.T) {
	u := newUpstream("ok")
	c := serve(t, "openai", u)
	u.failFirst, u.failStatus, u.failBody = 1, 503, openAIError("server_error", "", "try again")
	ctx := metadata.AppendToOutgoingContext(context.Background(), enginehost.SingleAttemptKey, "1")
	_, err := generate(ctx, c, 10)
	if status.Code(err) != codes.Unavailable || rpcerr.Reason(err) != rpcerr.ReasonUpstreamUnavailable || u.attempts.Load() != 1 {
		t.Fatalf("single attempt: %v (reason %q) after %d upstream attempts", err, rpcerr.Reason(err), u.attempts.Load())
	}
	u.attempts.Store(0)
	if r, err := generate(context.Background(), c, 10); err != nil || r.text != "ok" || u.attempts.Load() != 2 {
		t.Fatalf("direct caller: %q %v after %d attempts", r.text, err, u.attempts.Load())
	}
}

// user, the penalties and logit_bias reach OpenAI as its own fields; for
// Anthropic the user becomes metadata.user_id, and the fields its API lacks
// are refused rather than dropped.
func TestSamplingFieldsReachTheUpstream(t *testing.T) {
	ask := func(c enginev1.EngineServiceClient, s *genv1.SamplingParams) error {
		st, err := c.Generate(context.Background(), &enginev1.GenerateRequest{Model: "hosted", User: "user-42", Sampling: s,
			Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "hi"}}})
		if err != nil {
			return err
		}
		for {
			if _, err := st.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	u := newUpstream("ok")
	c := serve(t, "openai", u)
	if err := ask(c, &genv1.SamplingParams{FrequencyPenalty: 0.5, PresencePenalty: -0.25, LogitBias: map[uint32]float32{50256: -100, 7: 2.6}}); err != nil {
		t.Fatal(err)
	}
	body := u.lastBody()
	bias, _ := body["logit_bias"].(map[string]any)
	if body["user"] != "user-42" || body["frequency_penalty"] != 0.5 || body["presence_penalty"] != -0.25 || bias["50256"] != -100.0 || bias["7"] != 3.0 {
		t.Fatalf("openai request %v", body)
	}
	schema := `{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}`
	if err := ask(c, &genv1.SamplingParams{ResponseFormat: &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA, JsonSchema: schema, Name: "thing", Strict: true}}); err != nil {
		t.Fatal(err)
	}
	rf, _ := u.lastBody()["response_format"].(map[string]any)
	js, _ := rf["json_schema"].(map[string]any)
	if got, _ := json.Marshal(js["schema"]); rf["type"] != "json_schema" || js["name"] != "thing" || js["strict"] != true || string(got) != `{"properties":{"a":{"type":"integer"}},"required":["a"],"type":"object"}` {
		t.Fatalf("openai response_format %v", rf)
	}
	if err := ask(c, &genv1.SamplingParams{ResponseFormat: &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT}}); err != nil {
		t.Fatal(err)
	}
	if rf, _ := u.lastBody()["response_format"].(map[string]any); rf["type"] != "json_object" {
		t.Fatalf("openai response_format %v", rf)
	}

	ua := newUpstream("ok")
	ca := serve(t, "anthropic", ua)
	if err := ask(ca, &genv1.SamplingParams{}); err != nil {
		t.Fatal(err)
	}
	// Logprobs are not relayed from hosted providers: refused, not dropped.
	if err := ask(c, &genv1.SamplingParams{Logprobs: true}); status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "logprobs are not relayed") {
		t.Fatalf("logprobs to a hosted model: %v", err)
	}
	if md, _ := ua.lastBody()["metadata"].(map[string]any); md["user_id"] != "user-42" {
		t.Fatalf("anthropic request %v", ua.lastBody())
	}
	for field, s := range map[string]*genv1.SamplingParams{
		"frequency_penalty": {FrequencyPenalty: 1}, "presence_penalty": {PresencePenalty: 1}, "logit_bias": {LogitBias: map[uint32]float32{1: 1}},
		"response_format": {ResponseFormat: &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT}},
	} {
		if err := ask(ca, s); status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "has no "+field) {
			t.Fatalf("%s to anthropic: %v", field, err)
		}
	}
}

// Tools pass through both ways: OpenAI's tools, tool choice, assistant
// calls and tool results reach each upstream in its own format, and the
// upstream's streamed calls come back as tool-call deltas (the first with
// the upstream's id and the name, then the pieces of the arguments), with
// finish reason TOOL_CALLS. An OpenAI-compatible server that numbers
// every call 0 (repeating each call's id) still gives two calls, and one
// that sends a fresh id with every arguments delta still gives each call
// its arguments. A turn's author name reaches OpenAI (Anthropic has none).
func TestToolsBothWireFormats(t *testing.T) {
	for _, variant := range []string{"openai", "openai-index-0", "openai-fresh-ids", "anthropic"} {
		t.Run(variant, func(t *testing.T) {
			kind, _, _ := strings.Cut(variant, "-")
			u := newUpstream("Checking.")
			u.calls = []fakeCall{{"get_weather", []string{`{"city":`, `"Paris"}`}}, {"get_time", nil}}
			u.callsAtZero = variant == "openai-index-0"
			u.freshIDs = variant == "openai-fresh-ids"
			c := serve(t, kind, u)
			schema := `{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`
			a, err := structuredtest.Generate(context.Background(), c, &enginev1.GenerateRequest{Model: "hosted",
				Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{
					Messages: []*genv1.ChatMessage{
						{Role: genv1.Role_ROLE_USER, Content: "Weather in Paris and Rome?", Name: "alice"},
						{Role: genv1.Role_ROLE_ASSISTANT, ToolCalls: []*genv1.ToolCall{{Id: "c1", Name: "get_weather", Arguments: `{"city":"Rome"}`}, {Id: "c2", Name: "get_time", Arguments: `{}`}}},
						{Role: genv1.Role_ROLE_TOOL, ToolCallId: "c1", Content: "18C"},
						{Role: genv1.Role_ROLE_TOOL, ToolCallId: "c2", Content: "noon"},
					},
					Tools:             []*genv1.Tool{{Name: "get_weather", Description: "Weather now", Parameters: schema}, {Name: "get_time"}},
					ToolChoice:        &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED},
					ParallelToolCalls: proto.Bool(false),
				}}},
				Sampling: &genv1.SamplingParams{MaxTokens: 64}})
			if err != nil {
				t.Fatal(err)
			}
			wantIDs := []string{"call_0", "call_1"}
			if kind == "anthropic" {
				wantIDs = []string{"toolu_0", "toolu_1"}
			}
			if a.Content != "Checking." || len(a.Calls) != 2 || a.End.GetFinishReason() != genv1.FinishReason_FINISH_REASON_TOOL_CALLS ||
				a.Calls[0].GetId() != wantIDs[0] || a.Calls[0].GetName() != "get_weather" || a.Calls[0].GetArguments() != `{"city":"Paris"}` ||
				a.Calls[1].GetId() != wantIDs[1] || a.Calls[1].GetName() != "get_time" {
				t.Fatalf("answer %+v, calls %v, end %v", a, a.Calls, a.End)
			}
			if kind == "anthropic" && a.Calls[1].GetArguments() != "{}" {
				t.Fatalf("a call without input has arguments %q", a.Calls[1].GetArguments())
			}
			body := u.lastBody()
			js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
			tools, _ := body["tools"].([]any)
			msgs, _ := body["messages"].([]any)
			if len(tools) != 2 || len(msgs) < 3 {
				t.Fatalf("upstream tools %s, messages %s", js(tools), js(msgs))
			}
			if kind == "openai" {
				for _, want := range []string{
					`{"function":{"description":"Weather now","name":"get_weather","parameters":{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}},"type":"function"}`,
				} {
					if js(tools[0]) != want {
						t.Fatalf("tools[0] %s, want %s", js(tools[0]), want)
					}
				}
				if body["tool_choice"] != "required" || body["parallel_tool_calls"] != false {
					t.Fatalf("tool_choice %v, parallel_tool_calls %v", body["tool_choice"], body["parallel_tool_calls"])
				}
				if got := js(msgs[1]); got != `{"role":"assistant","tool_calls":[{"function":{"arguments":"{\"city\":\"Rome\"}","name":"get_weather"},"id":"c1","type":"function"},{"function":{"arguments":"{}","name":"get_time"},"id":"c2","type":"function"}]}` {
					t.Fatalf("assistant turn %s", got)
				}
				if got := js(msgs[2]); got != `{"content":"18C","role":"tool","tool_call_id":"c1"}` {
					t.Fatalf("tool turn %s", got)
				}
				if got := js(msgs[0]); got != `{"content":"Weather in Paris and Rome?","name":"alice","role":"user"}` {
					t.Fatalf("user turn %s", got)
				}
				return
			}
			if got := js(tools[0]); got != `{"description":"Weather now","input_schema":{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"},"name":"get_weather"}` {
				t.Fatalf("tools[0] %s", got)
			}
			if got := js(body["tool_choice"]); got != `{"disable_parallel_tool_use":true,"type":"any"}` {
				t.Fatalf("tool_choice %s", got)
			}
			if len(msgs) != 3 {
				t.Fatalf("messages %s: want the two results in one user turn", js(msgs))
			}
			if got := js(msgs[0]); got != `{"content":[{"text":"Weather in Paris and Rome?","type":"text"}],"role":"user"}` {
				t.Fatalf("user turn %s", got)
			}
			if got := js(msgs[1]); got != `{"content":[{"id":"c1","input":{"city":"Rome"},"name":"get_weather","type":"tool_use"},{"id":"c2","input":{},"name":"get_time","type":"tool_use"}],"role":"assistant"}` {
				t.Fatalf("assistant turn %s", got)
			}
			if got := js(msgs[2]); got != `{"content":[{"content":[{"text":"18C","type":"text"}],"is_error":false,"tool_use_id":"c1","type":"tool_result"},{"content":[{"text":"noon","type":"text"}],"is_error":false,"tool_use_id":"c2","type":"tool_result"}],"role":"user"}` {
				t.Fatalf("tool results %s", got)
			}
		})
	}
}

// CountTokens reaches Anthropic's count_tokens with the message's system
// prompt and turns; OpenAI has no counting endpoint, which is
// Unimplemented (the router then tries another worker or says so).
func TestCountTokens(t *testing.T) {
	prompt := &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{
		{Role: genv1.Role_ROLE_SYSTEM, Content: "be brief"}, {Role: genv1.Role_ROLE_USER, Content: "hi"}, {Role: genv1.Role_ROLE_ASSISTANT, Content: "hello"}, {Role: genv1.Role_ROLE_USER, Content: "again"}}}}}
	u := newUpstream()
	c := serve(t, "anthropic", u)
	n, err := c.CountTokens(context.Background(), &enginev1.CountTokensRequest{Model: "hosted", Prompt: prompt})
	if err != nil || n.GetPromptTokens() != 7+3*3 {
		t.Fatalf("anthropic count: %v %v", n, err)
	}
	body := u.lastBody()
	if body["model"] != "up-model" || body["system"] == nil || body["max_tokens"] != nil {
		t.Fatalf("count_tokens request %v", body)
	}
	u.failFirst, u.failStatus, u.failBody = u.attempts.Load()+1, 401, anthropicError("authentication_error", "invalid x-api-key")
	if _, err := c.CountTokens(context.Background(), &enginev1.CountTokensRequest{Model: "hosted", Prompt: prompt}); status.Code(err) == codes.OK || strings.Contains(err.Error(), secret) {
		t.Fatalf("a refused count: %v", err)
	}
	o := serve(t, "openai", newUpstream())
	if _, err := o.CountTokens(context.Background(), &enginev1.CountTokensRequest{Model: "hosted", Prompt: prompt}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("openai count: %v, want Unimplemented", err)
	}
}

// Anthropic's stop_sequence reaches the end event.
func TestAnthropicStopSequence(t *testing.T) {
	u := newUpstream("Hello", " world")
	u.stopSequence = "STOP"
	r, err := generate(context.Background(), serve(t, "anthropic", u), 50)
	if err != nil || r.end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_STOP_SEQUENCE || r.end.GetStopSequence() != "STOP" {
		t.Fatalf("end %v (%v)", r.end, err)
	}
}
