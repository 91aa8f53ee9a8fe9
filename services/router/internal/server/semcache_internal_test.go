package server

import (
	"testing"

	"google.golang.org/protobuf/proto"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
)

// The semantic space covers everything but the last user turn's text: a
// change anywhere else (key, model, system prompt, earlier turns, tools,
// sampling, response format, fallbacks) is another space; the request id,
// user and the last turn's text are not.
func TestSemanticSpace(t *testing.T) {
	base := func() *routerv1.GenerateRequest {
		return &routerv1.GenerateRequest{Model: "m", RequestId: "r1", User: "u",
			Sampling: &generationv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 8},
			Prompt: &generationv1.Prompt{Kind: &generationv1.Prompt_Chat{Chat: &generationv1.ChatMessages{Messages: []*generationv1.ChatMessage{
				{Role: generationv1.Role_ROLE_SYSTEM, Content: "sys"}, {Role: generationv1.Role_ROLE_USER, Content: "first"},
				{Role: generationv1.Role_ROLE_ASSISTANT, Content: "answer"}, {Role: generationv1.Role_ROLE_USER, Content: "question"}}}}}}
	}
	chat := func(r *routerv1.GenerateRequest) *generationv1.ChatMessages { return r.GetPrompt().GetChat() }
	text, space, ok := semanticQuery(base(), "key-a")
	if !ok || text != "question" {
		t.Fatalf("semanticQuery = %q, %v", text, ok)
	}
	same := map[string]func(*routerv1.GenerateRequest){
		"request id": func(r *routerv1.GenerateRequest) { r.RequestId = "r2" },
		"user":       func(r *routerv1.GenerateRequest) { r.User = "v" },
		"last turn":  func(r *routerv1.GenerateRequest) { chat(r).Messages[3].Content = "another question" },
	}
	for name, f := range same {
		r := base()
		f(r)
		if _, sp, _ := semanticQuery(r, "key-a"); sp != space {
			t.Errorf("%s changed the space", name)
		}
	}
	other := map[string]func(*routerv1.GenerateRequest){
		"model":         func(r *routerv1.GenerateRequest) { r.Model = "n" },
		"system prompt": func(r *routerv1.GenerateRequest) { chat(r).Messages[0].Content = "other" },
		"earlier turn":  func(r *routerv1.GenerateRequest) { chat(r).Messages[1].Content = "other" },
		"tools": func(r *routerv1.GenerateRequest) {
			chat(r).Tools = []*generationv1.Tool{{Name: "f"}}
		},
		"sampling": func(r *routerv1.GenerateRequest) { r.Sampling.MaxTokens = 9 },
		"response format": func(r *routerv1.GenerateRequest) {
			r.Sampling.ResponseFormat = &generationv1.ResponseFormat{Type: generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT}
		},
		"fallbacks": func(r *routerv1.GenerateRequest) { r.Routing = &routerv1.RoutingOptions{FallbackModels: []string{"x"}} },
		"user name": func(r *routerv1.GenerateRequest) { chat(r).Messages[3].Name = "ann" },
	}
	for name, f := range other {
		r := base()
		f(r)
		if _, sp, _ := semanticQuery(r, "key-a"); sp == space {
			t.Errorf("%s kept the space", name)
		}
	}
	if _, sp, _ := semanticQuery(base(), "key-b"); sp == space {
		t.Error("another API key shares the space")
	}
	// Not taken: no chat, a last turn not the user's, a prefill, a long turn.
	for name, f := range map[string]func(*routerv1.GenerateRequest){
		"text prompt": func(r *routerv1.GenerateRequest) {
			r.Prompt = &generationv1.Prompt{Kind: &generationv1.Prompt_Text{Text: "x"}}
		},
		"assistant last": func(r *routerv1.GenerateRequest) { chat(r).Messages[3].Role = generationv1.Role_ROLE_ASSISTANT },
		"prefill":        func(r *routerv1.GenerateRequest) { r.Prefill = "Sure" },
		"long turn": func(r *routerv1.GenerateRequest) {
			chat(r).Messages[3].Content = string(make([]byte, maxSemanticBytes+1))
		},
	} {
		r := base()
		f(r)
		if _, _, ok := semanticQuery(r, "key-a"); ok {
			t.Errorf("%s: taken by the semantic layer", name)
		}
	}
}
