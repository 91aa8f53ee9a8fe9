package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/structured/structuredtest"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// Real llama.cpp workers behind Consul and the router.
func TestGGUFWorkersThroughConsulAndRouter(t *testing.T) {
	model, err := harness.TinyModel(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	consul := testkit.StartConsul(t, 0)
	var workers []*testkit.Proc
	for i := range 2 {
		workers = append(workers, testkit.Start(t, fmt.Sprintf("gguf%d", i), bins.EngineGGUF,
			testkit.StartOptions{WaitListening: true, Timeout: 60 * time.Second}, certs.Args(mtls.RoleEngine,
				"-consul", consul.HTTPAddr, "-check-interval", "1s", "-model", "tiny="+model,
				"-ctx", "512", "-parallel", "2", "-threads", "1", "-threads-batch", "1", "-grace", "2s")...))
	}
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter, "-consul", consul.HTTPAddr, "-http-listen", "127.0.0.1:0")...)
	conn, err := grpc.NewClient(router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := routerv1.NewRouterServiceClient(conn)
	deadline := time.Now().Add(15 * time.Second)
	for {
		list, err := client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
		if err == nil && len(list.GetModels()) == 1 && len(list.GetModels()[0].GetEndpoints()) == 2 {
			info := list.GetModels()[0].GetInfo()
			if info.GetFormat() != "gguf" || info.GetArchitecture() != "llama" || info.GetContextLength() != 512 || info.GetQuantization() != "F32" {
				t.Fatalf("metadata from consul: %v", info)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router never saw both gguf workers: %v %v", list, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Direct to a worker, then twice through the router (round robin hits
	// both workers): the same greedy text every time.
	wconn, err := grpc.NewClient(workers[0].Addr, certs.Dial(t, mtls.RoleRouter, mtls.RoleEngine))
	if err != nil {
		t.Fatal(err)
	}
	defer wconn.Close()
	prompt := &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "Say something."}}}}}
	sampling := &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 12}
	ws, err := enginev1.NewEngineServiceClient(wconn).Generate(context.Background(), &enginev1.GenerateRequest{Model: "tiny", Prompt: prompt, Sampling: sampling})
	if err != nil {
		t.Fatal(err)
	}
	var direct string
	for {
		msg, err := ws.Recv()
		if err != nil {
			break
		}
		direct += msg.GetDelta().GetText()
	}
	seen := map[string]bool{}
	for range 2 {
		s, err := client.Generate(context.Background(), &routerv1.GenerateRequest{Model: "tiny", Prompt: prompt, Sampling: sampling})
		if err != nil {
			t.Fatal(err)
		}
		r := consume(s, nil)
		if r.err != nil || r.tokens != 12 || r.text != direct {
			t.Fatalf("through router: %d tokens %q (%v), direct %q", r.tokens, r.text, r.err, direct)
		}
		seen[r.endpoint] = true
	}
	if len(seen) != 2 {
		t.Fatalf("requests served by %v, want both workers", seen)
	}
	t.Run("official openai client: content parts, logprobs, n, logit_bias, penalties, user, structured output", func(t *testing.T) {
		openAIFeatures(t, client, router.Addrs["http"])
	})
	t.Run("official anthropic client: messages, streams, tools, count_tokens, errors", func(t *testing.T) {
		anthropicMessages(t, router.Addrs["http"])
	})

	// Mid-stream failover with real llama.cpp: kill the serving worker after
	// 40 tokens; the other worker prefills prompt + those tokens and goes
	// on. Greedy text must equal the uninterrupted run.
	long := &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 300}
	ref, err := client.Generate(context.Background(), &routerv1.GenerateRequest{Model: "tiny", Prompt: prompt, Sampling: long})
	if err != nil {
		t.Fatal(err)
	}
	want := consume(ref, nil)
	if want.err != nil || want.tokens != 300 {
		t.Fatalf("reference run: %+v", want)
	}
	s, err := client.Generate(context.Background(), &routerv1.GenerateRequest{Model: "tiny", Prompt: prompt, Sampling: long})
	if err != nil {
		t.Fatal(err)
	}
	var got streamResult
	byAddr := map[string]*testkit.Proc{workers[0].Addr: workers[0], workers[1].Addr: workers[1]}
	for {
		msg, err := s.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				got.err = err
			}
			break
		}
		switch e := msg.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			got.endpoint = e.Start.GetEndpoint()
		case *routerv1.GenerateResponse_Delta:
			before := got.tokens
			got.tokens += len(e.Delta.GetTokenIds())
			got.text += e.Delta.GetText()
			if before < 40 && got.tokens >= 40 {
				byAddr[got.endpoint].Kill()
			}
		case *routerv1.GenerateResponse_End:
			got.end = e.End
		}
	}
	if got.err != nil || got.tokens != 300 || got.end.GetFailovers() != 1 {
		t.Fatalf("failed-over stream: %d tokens, %d failovers, %v", got.tokens, got.end.GetFailovers(), got.err)
	}
	if got.text != want.text {
		t.Fatalf("failed-over text differs from the uninterrupted run:\n got %q\nwant %q", got.text, want.text)
	}
}

// openAIFeatures runs e2e/node/openai_features.js against the router's
// HTTP API over real llama.cpp workers serving "tiny".
func openAIFeatures(t *testing.T, client routerv1.RouterServiceClient, httpAddr string) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The greedy answer's first token id (OpenAI's logprobs carry bytes).
	s, err := client.Generate(context.Background(), &routerv1.GenerateRequest{Model: "tiny",
		Prompt:   &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "Say hello."}}}}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var first []uint32
	for {
		msg, err := s.Recv()
		if err != nil {
			break
		}
		first = append(first, msg.GetDelta().GetTokenIds()...)
	}
	if len(first) != 1 {
		t.Fatalf("first token: %v", first)
	}
	cmd := exec.Command("node", filepath.Join(root, "e2e", "node", "openai_features.js"), "http://"+httpAddr+"/v1", "tiny", strconv.Itoa(int(first[0])))
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules(t, root))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openai client: %v\n%s", err, out)
	}
	var got struct {
		Parts    struct{ String, Parts string }
		Logprobs struct {
			Count, Tokens int
			AllNegative   bool
			TopCounts     []int
			BytesJoin     string
			Content       string
		}
		StreamN struct {
			Choices []struct {
				Index    int
				Content  string
				Logprobs int
				Finish   string
			}
			Usage struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			}
			Deltas int
		}
		WholeN []struct {
			Index   int
			Content string
		}
		Ban struct {
			GreedyFirst []int
			BannedFirst []int
		}
		Penalties  struct{ Content string }
		Structured struct {
			Parsed  map[string]any
			Content string
			Finish  string
		}
		StructuredStream struct {
			Content string
			Parsed  map[string]any
		}
		JSONObject struct{ Content, Finish string }
		RunTools   toolRun
		// The streaming runner, same seed.
		RunToolsStream toolRun
		ToolStream     struct {
			Finish     string
			Content    *string
			Calls      []openAIToolCall
			ToolDeltas int
		}
		ToolWhole struct {
			Finish  string
			Content *string
			Calls   []openAIToolCall
			Prompt  int
		}
		ToolNextTurn struct {
			Finish  string
			Content string
			Calls   []openAIToolCall
			Prompt  int
		}
		Responses struct {
			Text, Status, ID string
			Incomplete       struct{ Reason string }
			Usage            struct {
				InputTokens  int `json:"input_tokens"`
				OutputTokens int `json:"output_tokens"`
			}
			StreamText, Deltas, StreamStatus string
			Types                            []string
		}
		ResponsesTools struct {
			Calls []struct {
				Name, Arguments string
				CallID          string `json:"call_id"`
			}
			Status string
			Input  int
			Next   struct {
				Text, Status string
				Types        []string
				Input        int
			}
		}
		ResponsesErrors map[string]struct {
			Status         int
			Param, Message string
		}
		Errors map[string]struct {
			Status  int
			Type    string
			Param   string
			Message string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output %s: %v", out, err)
	}
	t.Logf("openai client: %s", out)
	if got.Parts.Parts == "" || got.Parts.Parts != got.Parts.String {
		t.Fatalf("text parts answered %q, the same text as a string %q", got.Parts.Parts, got.Parts.String)
	}
	lp := got.Logprobs
	if lp.Count != 8 || lp.Tokens != 8 || !lp.AllNegative || lp.BytesJoin != lp.Content {
		t.Fatalf("logprobs %+v", lp)
	}
	for _, n := range lp.TopCounts {
		if n != 3 {
			t.Fatalf("top_logprobs counts %v, want 3 each", lp.TopCounts)
		}
	}
	sn := got.StreamN
	if len(sn.Choices) != 2 || sn.Choices[0].Index != 0 || sn.Choices[1].Index != 1 || sn.Choices[0].Content == sn.Choices[1].Content ||
		sn.Choices[0].Logprobs != 8 || sn.Choices[1].Logprobs != 8 || sn.Usage.CompletionTokens != 16 || sn.Deltas < 2 {
		t.Fatalf("streamed n=2: %+v", sn)
	}
	if len(got.WholeN) != 2 || got.WholeN[0].Content != sn.Choices[0].Content || got.WholeN[1].Content != sn.Choices[1].Content {
		t.Fatalf("n=2 whole %+v, streamed %+v (same seeds)", got.WholeN, sn.Choices)
	}
	if fmt.Sprint(got.Ban.GreedyFirst) == fmt.Sprint(got.Ban.BannedFirst) {
		t.Fatalf("logit_bias -100 on token %d left the first token %v", first[0], got.Ban.BannedFirst)
	}
	if got.Penalties.Content == "" {
		t.Fatal("penalised request answered nothing")
	}
	st := got.Structured
	v, err := structuredtest.NewValidator([]byte(`{"type":"object","properties":{"name":{"type":"string","maxLength":10},"age":{"type":"integer","minimum":0,"maximum":120},"tags":{"type":"array","items":{"enum":["a","b","c"]},"maxItems":3}},"required":["name","age","tags"],"additionalProperties":false}`))
	if err != nil {
		t.Fatal(err)
	}
	if st.Finish != "stop" || st.Parsed == nil || v.Validate([]byte(st.Content)) != nil {
		t.Fatalf("structured output: %+v (%v)", st, v.Validate([]byte(st.Content)))
	}
	if got.StructuredStream.Content != st.Content || got.StructuredStream.Parsed == nil {
		t.Fatalf("streamed structured output %+v, whole %q", got.StructuredStream, st.Content)
	}
	if got.JSONObject.Finish == "stop" {
		var m map[string]any
		if err := json.Unmarshal([]byte(got.JSONObject.Content), &m); err != nil {
			t.Fatalf("json_object answered %q: %v", got.JSONObject.Content, err)
		}
	} else if !strings.HasPrefix(got.JSONObject.Content, "{") {
		t.Fatalf("json_object answered %q", got.JSONObject.Content)
	}
	checkTools(t, got.RunTools, got.RunToolsStream, got.ToolStream.Finish, got.ToolStream.Content, got.ToolStream.Calls, got.ToolStream.ToolDeltas,
		got.ToolWhole.Finish, got.ToolWhole.Content, got.ToolWhole.Calls)
	if nt := got.ToolNextTurn; nt.Content == "" || len(nt.Calls) > 0 || nt.Finish == "tool_calls" {
		t.Fatalf("the turn after the tool's result (tool_choice none): %+v", nt)
	}
	// The call and its result reached the model: the next turn's prompt
	// is the first one's and more (the call's JSON, the result, the tags).
	if first, next := got.ToolWhole.Prompt, got.ToolNextTurn.Prompt; first == 0 || next <= first+10 {
		t.Fatalf("the turn after a call has %d prompt tokens, the first %d: the call and its result are missing", next, first)
	}
	checkResponses(t, got.Responses.Text, got.Responses.Status, got.Responses.Incomplete.Reason, got.Responses.Usage.OutputTokens,
		got.Responses.StreamText, got.Responses.Deltas, got.Responses.StreamStatus, got.Responses.Types)
	rt := got.ResponsesTools
	if len(rt.Calls) != 1 || rt.Calls[0].Name != "get_weather" || !strings.HasPrefix(rt.Calls[0].CallID, "call_") || rt.Status != "completed" {
		t.Fatalf("responses function call: %+v", rt)
	}
	if err := weatherValidator(t).Validate([]byte(rt.Calls[0].Arguments)); err != nil {
		t.Fatalf("responses get_weather(%s): %v", rt.Calls[0].Arguments, err)
	}
	if rt.Next.Text == "" || fmt.Sprint(rt.Next.Types) != "[message]" || rt.Next.Status != "incomplete" {
		t.Fatalf("responses turn after the call's output: %+v", rt.Next)
	}
	if rt.Input == 0 || rt.Next.Input <= rt.Input+10 {
		t.Fatalf("responses turn after a call has %d input tokens, the first %d: the call and its output are missing", rt.Next.Input, rt.Input)
	}
	for name, want := range map[string]struct{ param, msg string }{
		"store":    {"store", "store: true is not supported"},
		"previous": {"previous_response_id", "keeps no response state"},
		"builtin":  {"tools[0].type", `built-in tool "web_search"`},
	} {
		e := got.ResponsesErrors[name]
		if e.Status != 400 || e.Param != want.param || !strings.Contains(e.Message, want.msg) {
			t.Fatalf("responses %s: %+v, want 400 %s %q", name, e, want.param, want.msg)
		}
	}
	for name, want := range map[string]struct{ param, msg string }{
		"toolName":          {"tools[0].function.name", `must be 1 to 64 letters, digits, underscores or dashes, got "get weather"`},
		"toolChoiceUnknown": {"tool_choice.function.name", `tool_choice names function "get_news", which is not in tools`},
		"toolSchemaFeature": {"tools", `tool "f": parameters schema uses features tool calling does not support: "not" at #/properties/a`},
		"toolTurnNoID":      {"messages[1].tool_call_id", "tool_call_id is required"},
		"schemaFeature":     {"response_format.json_schema.schema", `"patternProperties" at #`},
		"image":             {"messages[0].content[1]", "image input (vision) is not supported"},
		"unknownPart":       {"messages[0].content[0]", `unknown content part type "hologram"`},
		"nTooMany":          {"n", "n must be 1 to 8, got 9"},
		"biasRange":         {"logit_bias", "out of range: want -100 to 100"},
		"biasVocab":         {"", "outside the model's vocabulary"},
	} {
		e := got.Errors[name]
		if e.Status != 400 || e.Type != "invalid_request_error" || e.Param != want.param || !strings.Contains(e.Message, want.msg) {
			t.Fatalf("%s: %+v, want 400 param %q %q", name, e, want.param, want.msg)
		}
	}
}

// toolRun is what the openai client's runTools helper did: the arguments
// it parsed and passed to our function, the roles of the conversation it
// built, the tool message it sent back, and (streamed) how many argument
// deltas it saw.
type toolRun struct {
	Called []map[string]any
	Roles  []string
	Tool   struct {
		Role       string
		ToolCallID string `json:"tool_call_id"`
		Content    string
	}
	ArgDeltas int
}

type openAIToolCall struct {
	ID       string
	Type     string
	Function struct{ Name, Arguments string }
}

// checkTools checks the client's tool calls: runTools (whole and
// streamed) called our function once with arguments that validate, built
// user → assistant → tool; the streamed required call assembled from
// deltas equals the whole one (same seed; ids differ with the request),
// validates, and finished with tool_calls and no content.
func checkTools(t *testing.T, whole, streamed toolRun, sFinish string, sContent *string, sCalls []openAIToolCall, sDeltas int, wFinish string, wContent *string, wCalls []openAIToolCall) {
	t.Helper()
	v := weatherValidator(t)
	for name, r := range map[string]toolRun{"runTools": whole, "runTools stream": streamed} {
		if len(r.Called) != 1 || strings.Join(r.Roles, ",") != "user,assistant,tool" || r.Tool.Content != `{"temperature":21}` || !strings.HasPrefix(r.Tool.ToolCallID, "call_") {
			t.Fatalf("%s: %+v", name, r)
		}
		b, _ := json.Marshal(r.Called[0])
		if err := v.Validate(b); err != nil {
			t.Fatalf("%s called get_weather(%s): %v", name, b, err)
		}
	}
	if fmt.Sprint(whole.Called) != fmt.Sprint(streamed.Called) || streamed.ArgDeltas < 2 {
		t.Fatalf("runTools streamed called %v (%d argument deltas), whole %v", streamed.Called, streamed.ArgDeltas, whole.Called)
	}
	if sFinish != "tool_calls" || sContent != nil && *sContent != "" || len(sCalls) != 1 || sDeltas < 2 {
		t.Fatalf("streamed required call: finish %q, content %v, calls %+v, %d deltas", sFinish, sContent, sCalls, sDeltas)
	}
	if wFinish != "tool_calls" || wContent != nil || len(wCalls) != 1 || fmt.Sprint(wCalls[0].Function) != fmt.Sprint(sCalls[0].Function) {
		t.Fatalf("whole required call: finish %q, content %v, calls %+v; streamed %+v", wFinish, wContent, wCalls, sCalls)
	}
	c := wCalls[0]
	if c.Type != "function" || !strings.HasPrefix(c.ID, "call_") || c.Function.Name != "get_weather" && c.Function.Name != "get_time" {
		t.Fatalf("call %+v", c)
	}
	if c.Function.Name == "get_weather" {
		if err := v.Validate([]byte(c.Function.Arguments)); err != nil {
			t.Fatalf("get_weather(%s): %v", c.Function.Arguments, err)
		}
	} else if c.Function.Arguments != "{}" {
		t.Fatalf("get_time(%s)", c.Function.Arguments)
	}
}

func weatherValidator(t *testing.T) *structuredtest.Validator {
	t.Helper()
	v, err := structuredtest.NewValidator([]byte(`{"type":"object","properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["c","f"]}},"required":["city","unit"],"additionalProperties":false}`))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkResponses checks the Responses API's text answer: 8 tokens, so
// incomplete for max_output_tokens; the streamed answer (same greedy
// request) joins its deltas to the same text, through the whole typed
// event sequence.
func checkResponses(t *testing.T, text, status, reason string, outTokens int, streamText, deltas, streamStatus string, types []string) {
	t.Helper()
	if text == "" || status != "incomplete" || reason != "max_output_tokens" || outTokens != 8 {
		t.Fatalf("responses: text %q, status %q (%q), %d output tokens", text, status, reason, outTokens)
	}
	if streamText != text || deltas != text || streamStatus != "incomplete" {
		t.Fatalf("streamed responses: %q (deltas %q, %s), whole %q", streamText, deltas, streamStatus, text)
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta " +
		"response.output_text.done response.content_part.done response.output_item.done response.incomplete"
	if strings.Join(types, " ") != want {
		t.Fatalf("responses events %v\nwant %s", types, want)
	}
}

// anthropicMessages runs e2e/node/anthropic_messages.js against the
// router's Messages API over real llama.cpp workers serving "tiny", and
// against a second router (a guarded one: API keys, one request admitted
// at a time, two a minute for its key, over a slow simulator) for the
// auth, overload and rate limit errors.
func anthropicMessages(t *testing.T, httpAddr string) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys":[{"name":"e2e","key":"sk-e2e-guarded","requests_per_minute":2}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Its worker is a slow simulator serving "tiny", so that the stream
	// holding its one admission slot lasts (about 7 s at 40 tokens/s).
	slow := testkit.Start(t, "slow-sim", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
		"-models", "tiny:output_tokens=1000", "-tps", "40")...)
	guarded := testkit.Start(t, "guarded-router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
		"-static", slow.Addr, "-http-listen", "127.0.0.1:0", "-keys", keys, "-max-concurrent", "1", "-max-queued", "0")...)
	waitHTTPModels(t, guarded.Addrs["http"], "sk-e2e-guarded")
	cmd := exec.Command("node", filepath.Join(root, "e2e", "node", "anthropic_messages.js"), "http://"+httpAddr, "tiny", "http://"+guarded.Addrs["http"], "sk-e2e-guarded")
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules(t, root))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("anthropic client: %v\n%s", err, out)
	}
	type block struct {
		Type, Text, ID, Name string
		Input                json.RawMessage
	}
	type usage struct {
		InputTokens              int `json:"input_tokens"`
		OutputTokens             int `json:"output_tokens"`
		CacheReadInputTokens     int `json:"cache_read_input_tokens"`
		CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	}
	type apiErr struct {
		Name, Type, Message string
		Status              int
		RequestID           *string
	}
	var got struct {
		Create struct {
			ID, Type, Role, Model string
			Content               []block
			StopReason            string  `json:"stop_reason"`
			StopSequence          *string `json:"stop_sequence"`
			Usage                 usage
		}
		Stop struct {
			Stop, Text   string
			StopReason   string `json:"stop_reason"`
			StopSequence string `json:"stop_sequence"`
		}
		RawStream struct {
			Events []string
			Text   string
		}
		HelperStream struct {
			Texts      int
			Content    []block
			StopReason string `json:"stop_reason"`
		}
		ToolUse, ToolUseStream struct {
			Content    []block
			StopReason string `json:"stop_reason"`
			JSONDeltas int    `json:"jsonDeltas"`
		}
		AfterTool struct {
			StopReason string `json:"stop_reason"`
			Blocks     []string
			Input      int
		}
		CountTokens struct{ Counted, Usage int }
		Errors      struct {
			BadRequest, NotFound, Authentication, Overloaded, Second, RateLimit apiErr
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output %s: %v", out, err)
	}
	c := got.Create
	if !strings.HasPrefix(c.ID, "msg_") || c.Type != "message" || c.Role != "assistant" || c.Model != "tiny" || len(c.Content) != 1 || c.Content[0].Type != "text" ||
		c.Content[0].Text == "" || (c.StopReason != "end_turn" && c.StopReason != "max_tokens") || c.StopSequence != nil ||
		c.Usage.InputTokens+c.Usage.CacheReadInputTokens <= 0 || c.Usage.OutputTokens < 1 || c.Usage.OutputTokens > 12 {
		t.Fatalf("messages.create: %+v", c)
	}
	text := c.Content[0].Text
	if st := got.Stop; st.Stop != "" {
		if st.StopReason != "stop_sequence" || st.StopSequence != st.Stop || st.Text != text[:strings.Index(text, st.Stop)] {
			t.Fatalf("stop sequence %q in %q: %+v", st.Stop, text, st)
		}
	} else {
		t.Logf("the greedy answer %q has one word: no stop sequence case", text)
	}
	ev := got.RawStream.Events
	if len(ev) < 5 || ev[0] != "message_start" || ev[1] != "content_block_start" || ev[len(ev)-3] != "content_block_stop" || ev[len(ev)-2] != "message_delta" || ev[len(ev)-1] != "message_stop" ||
		!slices.Contains(ev, "content_block_delta") || got.RawStream.Text != text {
		t.Fatalf("raw stream %+v, want the text %q", got.RawStream, text)
	}
	if h := got.HelperStream; h.Texts == 0 || len(h.Content) != 1 || h.Content[0].Text != text || h.StopReason != c.StopReason {
		t.Fatalf("MessageStream helper: %+v, want %q", h, text)
	}
	v := weatherValidator(t)
	for name, tu := range map[string]struct {
		Content    []block
		StopReason string `json:"stop_reason"`
		JSONDeltas int    `json:"jsonDeltas"`
	}{"whole": got.ToolUse, "streamed": got.ToolUseStream} {
		i := slices.IndexFunc(tu.Content, func(b block) bool { return b.Type == "tool_use" })
		if i < 0 || tu.StopReason != "tool_use" || tu.Content[i].Name != "get_weather" || tu.Content[i].ID == "" || v.Validate(tu.Content[i].Input) != nil {
			t.Fatalf("%s forced tool_use: %+v (%v)", name, tu, v.Validate(tu.Content[i].Input))
		}
		if name == "streamed" && tu.JSONDeltas == 0 {
			t.Fatalf("streamed tool_use without input_json_delta events: %+v", tu)
		}
	}
	if a := got.AfterTool; a.StopReason == "" || len(a.Blocks) == 0 || a.Input <= c.Usage.InputTokens+c.Usage.CacheReadInputTokens {
		t.Fatalf("the turn after a tool_result: %+v", a)
	}
	if ct := got.CountTokens; ct.Counted != ct.Usage || ct.Counted == 0 {
		t.Fatalf("countTokens %+v", ct)
	}
	e := got.Errors
	for _, tc := range []struct {
		got          apiErr
		name, typ    string
		status       int
		msgSubstring string
	}{
		{e.BadRequest, "BadRequestError", "invalid_request_error", 400, "temperature"},
		{e.NotFound, "NotFoundError", "not_found_error", 404, "no-such-model"},
		{e.Authentication, "AuthenticationError", "authentication_error", 401, ""},
		{e.Overloaded, "OverloadedError", "overloaded_error", 529, "overloaded"},
		{e.RateLimit, "RateLimitError", "rate_limit_error", 429, "quota"},
	} {
		if tc.got.Name != tc.name || tc.got.Type != tc.typ || tc.got.Status != tc.status || !strings.Contains(tc.got.Message, tc.msgSubstring) || tc.got.RequestID == nil || *tc.got.RequestID == "" {
			t.Errorf("%s: got %+v", tc.name, tc.got)
		}
	}
	if e.Second.Name != "no error" {
		t.Errorf("the key's second request of the minute: %+v", e.Second)
	}
	t.Logf("anthropic client: answer %q (%s, %d+%d tokens); stop sequence %q -> %q; %d raw events; forced input %s; count_tokens %d; errors %s %s %s %s %s",
		text, c.StopReason, c.Usage.InputTokens, c.Usage.OutputTokens, got.Stop.Stop, got.Stop.Text, len(ev), got.ToolUse.Content[0].Input, got.CountTokens.Counted,
		e.BadRequest.Name, e.NotFound.Name, e.Authentication.Name, e.Overloaded.Name, e.RateLimit.Name)
}

// waitHTTPModels waits until the router's HTTP API lists a model.
func waitHTTPModels(t *testing.T, addr, key string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var list struct{ Data []struct{ Endpoints int } }
			_ = json.NewDecoder(resp.Body).Decode(&list)
			resp.Body.Close()
			if len(list.Data) > 0 && list.Data[0].Endpoints > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("router %s never listed a model with endpoints: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
