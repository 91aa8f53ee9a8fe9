package enginehost_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Request validation, on any bytes a client can send as a GenerateRequest:
// no panic, and every refusal is a precise status (InvalidArgument or
// OutOfRange), never Internal.
func FuzzValidateRequest(f *testing.F) {
	for _, r := range []*enginev1.GenerateRequest{
		{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "hello"}}, Sampling: &genv1.SamplingParams{MaxTokens: 16, Stop: []string{"\n"}}},
		{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "hi"}}}}}},
		{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Tokens{Tokens: &genv1.TokenIds{Ids: []uint32{1, 2, 3}}}}, RequestId: "r-1"},
		{Model: "\xff", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "\xc3\x28"}}},
		{Model: "m", Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{
			Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "hi"}, {Role: genv1.Role_ROLE_ASSISTANT, ToolCalls: []*genv1.ToolCall{{Id: "c", Name: "f", Arguments: "{}"}}},
				{Role: genv1.Role_ROLE_TOOL, ToolCallId: "c", Content: "1"}},
			Tools:      []*genv1.Tool{{Name: "f", Parameters: `{"type":"object","properties":{"a":{"type":"integer"}}}`}},
			ToolChoice: &genv1.ToolChoice{Mode: genv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}}}}},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req enginev1.GenerateRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		checks := []func() error{
			func() error { return enginehost.ValidateUTF8(&req) },
			func() error { return enginehost.ValidateModelName(req.GetModel()) },
			func() error { return enginehost.ValidateRequestID(req.GetRequestId()) },
			func() error { return enginehost.ValidatePrompt(req.GetPrompt(), enginehost.DefaultLimits) },
			func() error { _, err := enginehost.ValidateSampling(req.GetSampling()); return err },
			func() error {
				_, err := enginehost.ValidateTools(req.GetPrompt().GetChat(), req.GetSampling().GetResponseFormat(), true)
				return err
			},
		}
		for _, check := range checks {
			err := check()
			if err == nil {
				continue
			}
			switch c := rpcerr.Code(err); c.String() {
			case "InvalidArgument", "OutOfRange":
			default:
				t.Fatalf("validation answered %v: %v", c, err)
			}
		}
	})
}
