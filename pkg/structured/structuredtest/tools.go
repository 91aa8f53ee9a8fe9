package structuredtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
)

// Answer is a generation's answer as an OpenAI client assembles it from
// the stream: the content, the tool calls, how many deltas carried each
// call's arguments, and the end.
type Answer struct {
	Content   string
	Calls     []*genv1.ToolCall
	ArgDeltas []int
	Tokens    int
	End       *genv1.EndEvent
}

// Generate runs one request and assembles its answer; a delta of a call
// that does not follow the previous one (or lacks its id and name) is an
// error.
func Generate(ctx context.Context, c enginev1.EngineServiceClient, req *enginev1.GenerateRequest) (Answer, error) {
	var a Answer
	s, err := c.Generate(ctx, req)
	if err != nil {
		return a, err
	}
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return a, nil
		}
		if err != nil {
			return a, err
		}
		if d := msg.GetDelta(); d != nil {
			a.Tokens += len(d.GetTokenIds())
			a.Content += d.GetText()
			for _, tc := range d.GetToolCalls() {
				i := int(tc.GetIndex())
				switch {
				case i == len(a.Calls) && tc.GetId() != "" && tc.GetName() != "":
					a.Calls = append(a.Calls, &genv1.ToolCall{Id: tc.GetId(), Name: tc.GetName()})
					a.ArgDeltas = append(a.ArgDeltas, 0)
				case i != len(a.Calls)-1 || tc.GetId() != "" || tc.GetName() != "":
					return a, fmt.Errorf("tool call delta %v after %d calls", tc, len(a.Calls))
				}
				if tc.GetArguments() != "" {
					a.Calls[i].Arguments += tc.GetArguments()
					a.ArgDeltas[i]++
				}
			}
		}
		if e := msg.GetEnd(); e != nil {
			a.End = e
		}
	}
}

// ToolRequest is a chat request that offers tools with a tool choice.
func ToolRequest(model string, tools []*genv1.Tool, choice *genv1.ToolChoice, parallel bool, temp float32, seed uint64, maxTokens int32) *enginev1.GenerateRequest {
	return &enginev1.GenerateRequest{Model: model,
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{
			Messages:          []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "Call a tool."}},
			Tools:             tools,
			ToolChoice:        choice,
			ParallelToolCalls: proto.Bool(parallel),
		}}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(temp), Seed: proto.Uint64(seed), MaxTokens: maxTokens}}
}

// CorpusTools are the corpus's object schemas as tools tool_<i>, with a
// validator for each.
func CorpusTools() ([]*genv1.Tool, map[string]*Validator, error) {
	var tools []*genv1.Tool
	validators := map[string]*Validator{}
	for i, s := range Schemas() {
		var top map[string]any
		if json.Unmarshal(s, &top) != nil || top["type"] != "object" {
			continue
		}
		v, err := NewValidator(s)
		if err != nil {
			return nil, nil, err
		}
		name := fmt.Sprintf("tool_%d", i)
		tools = append(tools, &genv1.Tool{Name: name, Description: fmt.Sprintf("corpus schema %d", i), Parameters: string(s)})
		validators[name] = v
	}
	return tools, validators, nil
}

// RunTools checks forced tool calls on an engine that hosts model: every
// corpus tool named by tool_choice (greedy and at temperature 0.9 in turn,
// offered with one other tool), and tool_choice required over groups of three
// tools, each answer
// exactly one call of the right tool, with arguments that validate
// (independent validator), no content, finish reason TOOL_CALLS and the
// arguments streamed in more than one delta; then required with parallel
// calls, whose complete calls all validate. It returns the number of
// calls checked.
func RunTools(t TB, workers int, c enginev1.EngineServiceClient, model string) int {
	t.Helper()
	tools, validators, err := CorpusTools()
	if err != nil {
		t.Fatalf("corpus tools: %v", err)
	}
	type run struct {
		tools    []*genv1.Tool
		choice   *genv1.ToolChoice
		temp     float32
		seed     uint64
		parallel bool
	}
	var runs []run
	// A few tools per request, to fit the test models' context.
	some := func(i, n int) []*genv1.Tool {
		out := make([]*genv1.Tool, n)
		for j := range out {
			out[j] = tools[(i+j)%len(tools)]
		}
		return out
	}
	for i, tl := range tools {
		temp := float32(0.9 * float64(i%2)) // greedy and sampled in turn
		runs = append(runs, run{tools: some(i, 2), choice: &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION, Name: tl.GetName()}, temp: temp, seed: uint64(i)})
	}
	for i := 0; i < len(tools); i += 3 {
		runs = append(runs, run{tools: some(i, 3), choice: &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}, temp: 1, seed: uint64(i)})
	}
	runs = append(runs, run{tools: some(0, 3), choice: &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}, temp: 1, seed: 9, parallel: true})
	began := time.Now()
	var (
		mu           sync.Mutex
		calls        int
		fails        []string
		streamed     int
		wg           sync.WaitGroup
		next         = make(chan run)
		parallelSeen int
	)
	for range workers {
		wg.Go(func() {
			for r := range next {
				a, err := Generate(context.Background(), c, ToolRequest(model, r.tools, r.choice, r.parallel, r.temp, r.seed, 0))
				fail := func(format string, args ...any) {
					mu.Lock()
					fails = append(fails, fmt.Sprintf("%s temp %v seed %d: ", r.choice, r.temp, r.seed)+fmt.Sprintf(format, args...))
					mu.Unlock()
				}
				if err != nil {
					fail("%v", err)
					continue
				}
				cut := a.End.GetFinishReason() == genv1.FinishReason_FINISH_REASON_LENGTH
				switch {
				case a.Content != "":
					fail("content %q besides the calls", a.Content)
					continue
				case len(a.Calls) == 0:
					fail("no call (%v after %d tokens)", a.End.GetFinishReason(), a.Tokens)
					continue
				case !r.parallel && len(a.Calls) != 1:
					fail("%d calls without parallel calls", len(a.Calls))
					continue
				case !r.parallel && a.End.GetFinishReason() != genv1.FinishReason_FINISH_REASON_TOOL_CALLS:
					fail("finish reason %v", a.End.GetFinishReason())
					continue
				}
				ids := map[string]bool{}
				for i, call := range a.Calls {
					if cut && i == len(a.Calls)-1 && r.parallel {
						break // the limit may cut the last of many calls
					}
					if ids[call.GetId()] {
						fail("call id %q repeated", call.GetId())
					}
					ids[call.GetId()] = true
					if r.choice.GetMode() == genv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION && call.GetName() != r.choice.GetName() {
						fail("called %q", call.GetName())
						continue
					}
					v := validators[call.GetName()]
					if v == nil {
						fail("called unknown tool %q", call.GetName())
						continue
					}
					if err := v.Validate([]byte(call.GetArguments())); err != nil {
						fail("%s(%s): %v", call.GetName(), call.GetArguments(), err)
						continue
					}
					mu.Lock()
					calls++
					if a.ArgDeltas[i] > 1 {
						streamed++
					}
					mu.Unlock()
				}
				if r.parallel {
					mu.Lock()
					parallelSeen = len(a.Calls)
					mu.Unlock()
				}
			}
		})
	}
	for _, r := range runs {
		next <- r
	}
	close(next)
	wg.Wait()
	t.Logf("%d tools, %d runs: %d calls valid, %d of them streamed in pieces, %d calls in the parallel run, %d failures, in %v",
		len(tools), len(runs), calls, streamed, parallelSeen, len(fails), time.Since(began).Round(time.Millisecond))
	for i, f := range fails {
		if i == 10 {
			t.Logf("... and %d more", len(fails)-10)
			break
		}
		t.Logf("%s", f)
	}
	if len(fails) > 0 {
		t.Fatalf("%d of %d runs failed", len(fails), len(runs))
	}
	if streamed == 0 {
		t.Fatalf("no call's arguments came in more than one delta")
	}
	return calls
}

// CheckToolConversations checks an engine's tool use beyond forced calls:
// a conversation with an assistant's call and the tool's result renders
// (its prompt is longer than without those turns) and is answered; auto
// and none answer as the model chooses; a failover's continuation that
// stops inside a call's arguments goes on to valid arguments, streamed as
// pieces of call 0 only; bad tool choices and schemas are InvalidArgument.
// tokenize turns text into the model's token ids.
func CheckToolConversations(t TB, c enginev1.EngineServiceClient, model string, tokenize func(string) []uint32) {
	t.Helper()
	ctx := context.Background()
	schema := `{"type":"object","properties":{"city":{"type":"string","maxLength":20},"unit":{"enum":["c","f"]}},"required":["city","unit"],"additionalProperties":false}`
	weather := []*genv1.Tool{{Name: "get_weather", Description: "Current weather in a city", Parameters: schema}}
	v, err := NewValidator([]byte(schema))
	if err != nil {
		t.Fatalf("%v", err)
	}
	chat := func(r *enginev1.GenerateRequest) *genv1.ChatMessages { return r.GetPrompt().GetChat() }

	auto := ToolRequest(model, weather, &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO}, true, 0, 1, 16)
	plain, err := Generate(ctx, c, auto)
	if err != nil {
		t.Fatalf("tool_choice auto: %v", err)
	}
	if f := plain.End.GetFinishReason(); len(plain.Calls) == 0 && f != genv1.FinishReason_FINISH_REASON_STOP && f != genv1.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("auto answered %q with finish %v", plain.Content, f)
	}
	turns := proto.CloneOf(auto)
	chat(turns).Messages = append(chat(turns).Messages,
		&genv1.ChatMessage{Role: genv1.Role_ROLE_ASSISTANT, ToolCalls: []*genv1.ToolCall{{Id: "call_a", Name: "get_weather", Arguments: `{"city":"Paris","unit":"c"}`}}},
		&genv1.ChatMessage{Role: genv1.Role_ROLE_TOOL, ToolCallId: "call_a", Content: `{"temperature":21}`})
	withTurns, err := Generate(ctx, c, turns)
	if err != nil {
		t.Fatalf("a conversation with tool turns: %v", err)
	}
	if withTurns.End.GetUsage().GetPromptTokens() <= plain.End.GetUsage().GetPromptTokens()+10 {
		t.Fatalf("the tool turns added %d prompt tokens to %d", withTurns.End.GetUsage().GetPromptTokens()-plain.End.GetUsage().GetPromptTokens(), plain.End.GetUsage().GetPromptTokens())
	}
	none := proto.CloneOf(auto)
	chat(none).ToolChoice.Mode = genv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE
	if a, err := Generate(ctx, c, none); err != nil || len(a.Calls) > 0 {
		t.Fatalf("tool_choice none: %v, %d calls", err, len(a.Calls))
	}

	// Auto with a response format: the answer is the format's JSON or a
	// call, either of which validates.
	answerSchema := `{"type":"object","properties":{"answer":{"type":"string","maxLength":40}},"required":["answer"],"additionalProperties":false}`
	av, err := NewValidator([]byte(answerSchema))
	if err != nil {
		t.Fatalf("%v", err)
	}
	for seed := range uint64(3) {
		r := ToolRequest(model, weather, &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO}, false, 0.8, seed, 120)
		r.Sampling.ResponseFormat = &genv1.ResponseFormat{Type: genv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA, JsonSchema: answerSchema, Name: "answer"}
		a, err := Generate(ctx, c, r)
		switch {
		case err != nil:
			t.Fatalf("auto with a response format: %v", err)
		case len(a.Calls) == 1 && a.Content == "":
			if err := v.Validate([]byte(a.Calls[0].GetArguments())); err != nil {
				t.Fatalf("auto with a response format, seed %d: call %s: %v", seed, a.Calls[0].GetArguments(), err)
			}
		case len(a.Calls) == 0:
			if err := av.Validate([]byte(a.Content)); err != nil {
				t.Fatalf("auto with a response format, seed %d: answer %q: %v", seed, a.Content, err)
			}
		default:
			t.Fatalf("auto with a response format, seed %d: %+v", seed, a)
		}
	}

	// A failover inside the arguments, forced and (after some text) in
	// auto mode without parallel calls: the arguments go on to validate,
	// and the answer ends with the one call.
	forced := ToolRequest(model, weather, &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION, Name: "get_weather"}, false, 0.8, 3, 200)
	autoOne := ToolRequest(model, weather, &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_AUTO}, false, 0.8, 3, 200)
	head := "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":"
	had := `{"city":"Pa`
	for _, tc := range []struct {
		name string
		req  *enginev1.GenerateRequest
		text string
	}{{"forced", forced, ""}, {"auto", autoOne, "Let me look that up. "}} {
		for seed := range uint64(3) {
			r := proto.CloneOf(tc.req)
			r.Sampling.Seed = proto.Uint64(seed)
			r.Continuation = tokenize(tc.text + head + had)
			args, end := continueCall(t, c, r)
			if err := v.Validate([]byte(had + args)); err != nil || end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_TOOL_CALLS {
				t.Fatalf("%s, seed %d: continued arguments %s%s (%v): %v", tc.name, seed, had, args, end.GetFinishReason(), err)
			}
		}
	}

	for _, tc := range []struct {
		name string
		edit func(*genv1.ChatMessages)
		want string
	}{
		{"unknown function", func(ch *genv1.ChatMessages) { ch.ToolChoice.Name = "get_time" }, `names function "get_time", which is not one of the tools`},
		{"unsupported schema in a strict tool", func(ch *genv1.ChatMessages) {
			ch.Tools[0].Parameters = `{"type":"object","properties":{"a":{"type":"string","contentSchema":{}}}}`
			ch.Tools[0].Strict = true
		}, `"contentSchema" at #/properties/a`},
		{"bad name", func(ch *genv1.ChatMessages) { ch.Tools[0].Name = "get weather" }, "must match"},
	} {
		r := proto.CloneOf(forced)
		r.Continuation = nil
		tc.edit(chat(r))
		_, err := Generate(ctx, c, r)
		if code := status.Code(err); code != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Fatalf("%s: %v, want InvalidArgument %q", tc.name, err, tc.want)
		}
	}
	// A tool that is not strict, with a schema the grammar cannot express,
	// takes any JSON object (as OpenAI's non-strict tools): here one that
	// ignores the schema, after which the call ends.
	loose := proto.CloneOf(forced)
	chat(loose).Tools[0].Parameters = `{"type":"object","properties":{"a":{"type":"string","contentSchema":{}}}}`
	loose.Continuation = tokenize(head + `{"a":5,"b":[1]}`) // "a" breaks the schema
	if args, end := continueCall(t, c, loose); strings.TrimSpace(args) != "" || end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_TOOL_CALLS {
		t.Fatalf("a non-strict tool with an unsupported schema: arguments went on with %q, finish %v", args, end.GetFinishReason())
	}
}

// continueCall runs a continuation that stops inside call 0's arguments
// and returns the rest of them and the end; content, or a delta of another
// call or naming call 0 again, fails t.
func continueCall(t TB, c enginev1.EngineServiceClient, req *enginev1.GenerateRequest) (string, *genv1.EndEvent) {
	t.Helper()
	s, err := c.Generate(context.Background(), req)
	if err != nil {
		t.Fatalf("%v", err)
	}
	var args string
	var end *genv1.EndEvent
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return args, end
		}
		if err != nil {
			t.Fatalf("continuing a call: %v", err)
		}
		for _, d := range msg.GetDelta().GetToolCalls() {
			if d.GetIndex() != 0 || d.GetId() != "" || d.GetName() != "" {
				t.Fatalf("continuing call 0, got delta %v", d)
			}
			args += d.GetArguments()
		}
		if msg.GetDelta().GetText() != "" {
			t.Fatalf("continuing a call, got content %q", msg.GetDelta().GetText())
		}
		if msg.GetEnd() != nil {
			end = msg.GetEnd()
		}
	}
}
