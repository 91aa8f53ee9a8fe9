package enginehost_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs a real gRPC server on loopback over a sim backend.
func serve(t *testing.T, cfg sim.Config) (enginev1.EngineServiceClient, *sim.Backend) {
	t.Helper()
	b := sim.New(cfg)
	return testkit.ServeEngine(t, b, enginehost.Limits{MaxPromptBytes: 4096}).Client, b
}

func fastSim() sim.Config {
	return sim.Config{
		Models:          []sim.ModelConfig{{Name: "m", ContextLength: 256, OutputTokens: 40, CostPer1KInput: 1, CostPer1KOutput: 2}},
		TokensPerSecond: 5000, MaxConcurrency: 4, QueueSize: 2,
	}
}

type result struct {
	start  *genv1.StartEvent
	text   string
	ids    []uint32
	deltas int
	end    *genv1.EndEvent
}

func collect(t *testing.T, c enginev1.EngineServiceClient, req *enginev1.GenerateRequest) (result, error) {
	t.Helper()
	stream, err := c.Generate(context.Background(), req)
	if err != nil {
		return result{}, err
	}
	var r result
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return r, nil
		}
		if err != nil {
			return r, err
		}
		switch e := msg.GetEvent().(type) {
		case *enginev1.GenerateResponse_Start:
			r.start = e.Start
		case *enginev1.GenerateResponse_Delta:
			if !utf8.ValidString(e.Delta.GetText()) {
				t.Errorf("delta text %q is not valid UTF-8", e.Delta.GetText())
			}
			r.text += e.Delta.GetText()
			r.ids = append(r.ids, e.Delta.GetTokenIds()...)
			r.deltas++
		case *enginev1.GenerateResponse_End:
			r.end = e.End
		}
	}
}

func textReq(prompt string, s *genv1.SamplingParams) *enginev1.GenerateRequest {
	return &enginev1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}}, Sampling: s}
}

func greedy(maxTokens int32) *genv1.SamplingParams {
	return &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: maxTokens}
}

func TestBadInput(t *testing.T) {
	c, _ := serve(t, fastSim())
	tests := []struct {
		name string
		req  *enginev1.GenerateRequest
		code codes.Code
		msg  string
	}{
		{"no model", &enginev1.GenerateRequest{Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "x"}}}, codes.InvalidArgument, "model is required"},
		{"unknown model", &enginev1.GenerateRequest{Model: "nope", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "x"}}}, codes.NotFound, `model "nope" is not hosted here (hosted: m)`},
		{"no prompt", &enginev1.GenerateRequest{Model: "m"}, codes.InvalidArgument, "prompt is required"},
		{"empty prompt", textReq("", nil), codes.InvalidArgument, "prompt.text is empty"},
		{"invalid utf8", textReq("ok\xff\xfe", nil), codes.InvalidArgument, "prompt.text is not valid UTF-8 (first bad byte at offset 2)"},
		{"oversized", textReq(strings.Repeat("a", 5000), nil), codes.InvalidArgument, "prompt.text is 5000 bytes, over the limit of 4096"},
		{"negative max_tokens", textReq("x", &genv1.SamplingParams{MaxTokens: -1}), codes.InvalidArgument, "sampling.max_tokens = -1 is out of range"},
		{"max_tokens beyond context", textReq("hello", greedy(300)), codes.InvalidArgument, `prompt (5 tokens) + max_tokens (300) exceeds model "m"'s context of 256 tokens`},
		{"prompt fills context", textReq(strings.Repeat("a", 256), nil), codes.InvalidArgument, "prompt is 256 tokens"},
		{"negative temperature", textReq("x", &genv1.SamplingParams{Temperature: proto.Float32(-0.5)}), codes.InvalidArgument, "sampling.temperature = -0.5 is out of range"},
		{"top_p zero", textReq("x", &genv1.SamplingParams{TopP: proto.Float32(0)}), codes.InvalidArgument, "sampling.top_p = 0 is out of range"},
		{"empty stop", textReq("x", &genv1.SamplingParams{Stop: []string{""}}), codes.InvalidArgument, "sampling.stop[0] must be 1 to 256 bytes"},
		{"top_logprobs without logprobs", textReq("x", &genv1.SamplingParams{TopLogprobs: 3}), codes.InvalidArgument, "needs sampling.logprobs"},
		{"chat without role", &enginev1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Content: "hi"}}}}}}, codes.InvalidArgument, "prompt.chat.messages[0].role"},
		{"long author name", &enginev1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "hi", Name: strings.Repeat("n", 65)}}}}}}, codes.InvalidArgument, "prompt.chat.messages[0].name must be valid UTF-8 of at most 64 bytes, got 65 bytes"},
		{"token outside vocabulary", &enginev1.GenerateRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Tokens{Tokens: &genv1.TokenIds{Ids: []uint32{1, 99999}}}}}, codes.InvalidArgument, "prompt.tokens.ids[1] = 99999 is outside the vocabulary"},
		{"long request id", &enginev1.GenerateRequest{Model: "m", RequestId: strings.Repeat("r", 200), Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "x"}}}, codes.InvalidArgument, "request_id is 200 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := collect(t, c, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
}

// Context-length refusals carry the reason the router keys on (no retry of
// the same model, a fallback whose context fits instead); a continuation
// text is refused by a model that does not advertise accepts_prefill.
func TestContextLengthReasonAndPrefillRefusal(t *testing.T) {
	c, _ := serve(t, fastSim())
	for _, req := range []*enginev1.GenerateRequest{textReq("hello", greedy(300)), textReq(strings.Repeat("a", 256), nil)} {
		if _, err := collect(t, c, req); rpcerr.Reason(err) != rpcerr.ReasonContextLength {
			t.Errorf("%v: reason %q, want %s", err, rpcerr.Reason(err), rpcerr.ReasonContextLength)
		}
	}
	req := textReq("hello", greedy(4))
	req.ContinuationText = "partial"
	if _, err := collect(t, c, req); status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "accepts_prefill") {
		t.Fatalf("continuation_text to a model without accepts_prefill: %v", err)
	}
}

func TestGenerateStreamsEveryToken(t *testing.T) {
	c, _ := serve(t, fastSim())
	r, err := collect(t, c, textReq("hello", greedy(12)))
	if err != nil {
		t.Fatal(err)
	}
	if r.start.GetModel() != "m" || r.start.GetPromptTokens() != 5 || r.start.GetRequestId() == "" {
		t.Fatalf("start event %v", r.start)
	}
	if len(r.ids) != 12 || r.deltas != 12 {
		t.Fatalf("got %d ids in %d deltas, want 12", len(r.ids), r.deltas)
	}
	var want strings.Builder
	for _, id := range r.ids {
		want.Write(sim.Piece(id))
	}
	if r.text != strings.ToValidUTF8(want.String(), "\uFFFD") {
		t.Fatalf("text %q does not match the tokens' bytes %q", r.text, want.String())
	}
	end := r.end
	if end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("finish %v", end.GetFinishReason())
	}
	if u := end.GetUsage(); u.GetPromptTokens() != 5 || u.GetCompletionTokens() != 12 || u.GetTotalTokens() != 17 {
		t.Fatalf("usage %v", u)
	}
	if wantCost := 5.0/1000*1 + 12.0/1000*2; end.GetCostUsd() < wantCost-1e-9 || end.GetCostUsd() > wantCost+1e-9 {
		t.Fatalf("cost %v, want %v", end.GetCostUsd(), wantCost)
	}
	if end.GetTimings().GetTimeToFirstToken().AsDuration() <= 0 || end.GetTimings().GetTokensPerSecond() <= 0 {
		t.Fatalf("timings %v", end.GetTimings())
	}
}

func TestGreedyIsDeterministicAndEOGStops(t *testing.T) {
	c, _ := serve(t, fastSim())
	a, err := collect(t, c, textReq("same prompt", greedy(0)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := collect(t, c, textReq("same prompt", greedy(0)))
	if err != nil {
		t.Fatal(err)
	}
	if a.text != b.text || len(a.ids) == 0 {
		t.Fatalf("greedy runs differ:\n%q\n%q", a.text, b.text)
	}
	// The sim's natural answer ends with EOG after OutputTokens words (plus
	// the byte tokens of split characters).
	if a.end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_STOP || len(a.ids) < 40 {
		t.Fatalf("finish %v after %d tokens", a.end.GetFinishReason(), len(a.ids))
	}
	other, err := collect(t, c, textReq("another prompt", greedy(0)))
	if err != nil {
		t.Fatal(err)
	}
	if other.text == a.text {
		t.Fatal("different prompts gave the same output")
	}
}

func TestStopSequence(t *testing.T) {
	c, _ := serve(t, fastSim())
	full, err := collect(t, c, textReq("stop test", greedy(30)))
	if err != nil {
		t.Fatal(err)
	}
	// Stop at the third word of the known output.
	words := strings.SplitAfter(full.text, " ")
	stop := strings.TrimSpace(words[3])
	if stop == "" {
		t.Fatalf("unexpected output %q", full.text)
	}
	cut := full.text[:strings.Index(full.text, stop)]
	r, err := collect(t, c, textReq("stop test", &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 30, Stop: []string{stop}}))
	if err != nil {
		t.Fatal(err)
	}
	if r.text != cut || r.end.GetFinishReason() != genv1.FinishReason_FINISH_REASON_STOP_SEQUENCE {
		t.Fatalf("with stop %q: text %q (%v), want %q", stop, r.text, r.end.GetFinishReason(), cut)
	}
	// The end names the sequence that matched, of several.
	r, err = collect(t, c, textReq("stop test", &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 30, Stop: []string{"never in the text", stop}}))
	if err != nil || r.end.GetStopSequence() != stop {
		t.Fatalf("stop_sequence %q (%v), want %q", r.end.GetStopSequence(), err, stop)
	}
	if r, err = collect(t, c, textReq("stop test", greedy(30))); err != nil || r.end.GetStopSequence() != "" {
		t.Fatalf("without a stop: stop_sequence %q (%v)", r.end.GetStopSequence(), err)
	}
}

// CountTokens counts what Generate's start event reports for the same
// prompt, and checks the prompt as Generate does.
func TestCountTokens(t *testing.T) {
	c, _ := serve(t, fastSim())
	prompt := &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{
		{Role: genv1.Role_ROLE_SYSTEM, Content: "be brief"}, {Role: genv1.Role_ROLE_USER, Content: "count me"},
	}}}}
	r, err := collect(t, c, &enginev1.GenerateRequest{Model: "m", Prompt: prompt, Sampling: greedy(1)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.CountTokens(context.Background(), &enginev1.CountTokensRequest{Model: "m", Prompt: prompt})
	if err != nil || n.GetPromptTokens() != r.start.GetPromptTokens() || n.GetPromptTokens() == 0 {
		t.Fatalf("CountTokens %v (%v), Generate's start says %d", n, err, r.start.GetPromptTokens())
	}
	for _, tc := range []struct {
		req  *enginev1.CountTokensRequest
		code codes.Code
	}{
		{&enginev1.CountTokensRequest{Model: "nope", Prompt: prompt}, codes.NotFound},
		{&enginev1.CountTokensRequest{Model: "m"}, codes.InvalidArgument},
		{&enginev1.CountTokensRequest{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: strings.Repeat("x", 5000)}}}, codes.InvalidArgument},
	} {
		if _, err := c.CountTokens(context.Background(), tc.req); status.Code(err) != tc.code {
			t.Errorf("CountTokens(%.60v): %v, want %v", tc.req, err, tc.code)
		}
	}
}

func TestSplitCharactersArriveWhole(t *testing.T) {
	c, _ := serve(t, fastSim())
	// Find a prompt whose greedy output contains a split "é" or "ï".
	for i := range 50 {
		r, err := collect(t, c, textReq(strings.Repeat("p", i+1), greedy(60)))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(r.text, "é") || strings.Contains(r.text, "ï") {
			if r.deltas != len(r.ids) {
				t.Fatalf("%d deltas for %d ids", r.deltas, len(r.ids))
			}
			return // collect already checked every delta is valid UTF-8
		}
	}
	t.Fatal("no output contained a split character")
}

func TestChatAndTokenPrompts(t *testing.T) {
	c, _ := serve(t, fastSim())
	chat := &enginev1.GenerateRequest{Model: "m", Sampling: greedy(4), Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{
		{Role: genv1.Role_ROLE_SYSTEM, Content: "be brief"}, {Role: genv1.Role_ROLE_USER, Content: "hi"},
	}}}}}
	r, err := collect(t, c, chat)
	if err != nil {
		t.Fatal(err)
	}
	rendered := "<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n"
	if r.start.GetPromptTokens() != int32(len(rendered)) {
		t.Fatalf("chat prompt tokens %d, want %d", r.start.GetPromptTokens(), len(rendered))
	}
	// The same prompt as token ids continues identically.
	ids := make([]uint32, len(rendered))
	for i := range rendered {
		ids[i] = uint32(rendered[i])
	}
	tok, err := collect(t, c, &enginev1.GenerateRequest{Model: "m", Sampling: greedy(4), Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Tokens{Tokens: &genv1.TokenIds{Ids: ids}}}})
	if err != nil {
		t.Fatal(err)
	}
	if tok.text != r.text {
		t.Fatalf("token prompt gave %q, chat gave %q", tok.text, r.text)
	}
}

func TestCancelFreesSlotAndQueueOverflows(t *testing.T) {
	cfg := fastSim()
	cfg.TokensPerSecond = 20
	cfg.MaxConcurrency, cfg.QueueSize = 1, 1
	c, b := serve(t, cfg)

	// One running, one queued, the third is refused with a retry hint.
	ctx, cancel := context.WithCancel(context.Background())
	running, err := c.Generate(ctx, textReq("a", greedy(100)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.Recv(); err != nil { // start event: the slot is taken
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	queuedErr := make(chan error, 1)
	wg.Go(func() {
		_, err := collect(t, c, textReq("b", greedy(3)))
		queuedErr <- err
	})
	enginehost.Eventually(t, func() bool { return b.Status().GetQueueDepth() == 1 })
	_, err = collect(t, c, textReq("c", greedy(3)))
	if status.Code(err) != codes.ResourceExhausted || rpcerr.RetryAfter(err) <= 0 {
		t.Fatalf("overflow: got %v (retry after %v), want ResourceExhausted with a hint", err, rpcerr.RetryAfter(err))
	}
	// Hanging up frees the slot: the queued request then completes.
	cancel()
	wg.Wait()
	if err := <-queuedErr; err != nil {
		t.Fatalf("queued request after cancel: %v", err)
	}
	enginehost.Eventually(t, func() bool { return b.Status().GetActiveSequences() == 0 })
}

func TestLogprobsEmbedAndModels(t *testing.T) {
	c, _ := serve(t, fastSim())
	r, err := collect(t, c, textReq("x", &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 2, Logprobs: true, TopLogprobs: 2}))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.ids) != 2 {
		t.Fatalf("with logprobs: %d tokens, want 2", len(r.ids))
	}
	stream, err := c.Generate(context.Background(), textReq("x", &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 1, Logprobs: true, TopLogprobs: 2}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	lp := msg.GetDelta().GetLogprobs()
	if len(lp) != 1 || len(lp[0].GetTop()) != 2 || lp[0].GetChosen().GetTokenId() != msg.GetDelta().GetTokenIds()[0] {
		t.Fatalf("logprobs %v", lp)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}

	emb, err := c.Embed(context.Background(), &enginev1.EmbedRequest{Model: "m", Inputs: []string{"a", "b", "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(emb.GetEmbeddings()) != 3 || !proto.Equal(emb.GetEmbeddings()[0], emb.GetEmbeddings()[2]) || proto.Equal(emb.GetEmbeddings()[0], emb.GetEmbeddings()[1]) {
		t.Fatalf("embeddings not deterministic per input: %v", emb)
	}
	if _, err := c.Embed(context.Background(), &enginev1.EmbedRequest{Model: "m"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty embed: %v", err)
	}

	if _, err := c.LoadModel(context.Background(), &enginev1.LoadModelRequest{Model: "extra"}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListModels(context.Background(), &enginev1.ListModelsRequest{})
	if err != nil || len(list.GetModels()) != 2 || list.GetModels()[0].GetName() != "extra" {
		t.Fatalf("models after load: %v %v", list, err)
	}
	if _, err := c.UnloadModel(context.Background(), &enginev1.UnloadModelRequest{Model: "extra"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UnloadModel(context.Background(), &enginev1.UnloadModelRequest{Model: "extra"}); status.Code(err) != codes.NotFound {
		t.Fatalf("second unload: %v", err)
	}
}

// A continuation resumes exactly: the text of the tokens already sent plus
// the continuation's deltas is the uninterrupted text, split characters and
// all, and counts include the continuation.
func TestContinuationResumesExactly(t *testing.T) {
	c, _ := serve(t, fastSim())
	for cut := 1; cut < 30; cut += 3 {
		stream, err := c.Generate(context.Background(), textReq("resume me", greedy(30)))
		if err != nil {
			t.Fatal(err)
		}
		var ids []uint32
		var texts []string
		var full string
		for {
			msg, err := stream.Recv()
			if err != nil {
				break
			}
			if d := msg.GetDelta(); d != nil {
				ids = append(ids, d.GetTokenIds()...)
				texts = append(texts, d.GetText())
				full += d.GetText()
			}
		}
		sent := strings.Join(texts[:cut], "")
		req := textReq("resume me", greedy(30))
		req.Continuation = ids[:cut]
		r, err := collect(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		if sent+r.text != full {
			t.Fatalf("cut %d: %q + %q != %q", cut, sent, r.text, full)
		}
		if fmt.Sprint(append(slices.Clone(ids[:cut]), r.ids...)) != fmt.Sprint(ids) {
			t.Fatalf("cut %d: ids differ", cut)
		}
		if u := r.end.GetUsage(); u.GetCompletionTokens() != 30 || u.GetPromptTokens() != int32(len("resume me")) {
			t.Fatalf("cut %d: usage %v", cut, u)
		}
	}
	bad := textReq("x", greedy(3))
	bad.Continuation = []uint32{1, 2, 3}
	if _, err := collect(t, c, bad); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("continuation filling max_tokens: %v", err)
	}
	bad.Continuation = []uint32{999999}
	if _, err := collect(t, c, bad); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("continuation outside the vocabulary: %v", err)
	}
}

// Each stream's trailer reports the worker's load as it ends: the other
// streams still decoding and those queued, not itself.
func TestStreamTrailerReportsLoad(t *testing.T) {
	cfg := fastSim()
	cfg.MaxConcurrency, cfg.QueueSize, cfg.TokensPerSecond = 3, 2, 50
	c, b := serve(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Two long streams hold slots; a short third ends while they decode.
	for _, p := range []string{"a", "b"} {
		s, err := c.Generate(ctx, textReq(p, greedy(200)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	enginehost.Eventually(t, func() bool { return b.Status().GetActiveSequences() == 2 })
	var md metadata.MD
	s, err := c.Generate(context.Background(), textReq("c", greedy(3)), grpc.Trailer(&md))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := s.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
	}
	l, ok := enginehost.ParseLoad(md)
	if !ok || l != (enginehost.LoadReport{Active: 2, ModelActive: 2, HasModel: true}) {
		t.Fatalf("trailer %v: %+v (ok %v), want 2 decoding, none queued, for the worker and the model", md, l, ok)
	}
}
