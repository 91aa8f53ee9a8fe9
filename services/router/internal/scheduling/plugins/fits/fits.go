// Package fits is a filter that drops candidates whose context length the
// request certainly does not fit: a lower bound of the prompt's tokens plus
// max_tokens over the model's context. The bound is conservative (a token
// of these vocabularies rarely spans more than BytesPerToken bytes), so a
// model it drops would have refused the request, and a request it lets
// through may still be refused by the worker, which the router then treats
// as a reason to try a fallback, not the same model. Stateless.
package fits

import (
	"encoding/json"
	"fmt"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// DefaultBytesPerToken is the most bytes of text one token is assumed to
// cover unless configured.
const DefaultBytesPerToken = 6

// Params: {"bytes_per_token": N}, the most bytes of text one token is
// assumed to cover (default DefaultBytesPerToken; larger drops fewer
// candidates).
type Params struct {
	BytesPerToken int `json:"bytes_per_token"`
}

// Filter drops candidates whose context is too short.
type Filter struct{ bytesPerToken int }

var _ scheduling.Filter = Filter{}

// New decodes the parameters.
func New(raw json.RawMessage) (scheduling.Filter, error) {
	p := Params{BytesPerToken: DefaultBytesPerToken}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
	}
	if p.BytesPerToken <= 0 {
		return nil, fmt.Errorf("bytes_per_token must be positive")
	}
	return Filter{bytesPerToken: p.BytesPerToken}, nil
}

// MinTokens is a lower bound of the prompt's tokens.
func MinTokens(p *generationv1.Prompt, bytesPerToken int) int {
	switch k := p.GetKind().(type) {
	case *generationv1.Prompt_Tokens:
		return len(k.Tokens.GetIds())
	case *generationv1.Prompt_Text:
		return len(k.Text) / bytesPerToken
	case *generationv1.Prompt_Chat:
		n := 0
		for _, m := range k.Chat.GetMessages() {
			n += len(m.GetContent())
		}
		return n / bytesPerToken
	}
	return 0
}

// Filter implements scheduling.Filter.
func (f Filter) Filter(r *scheduling.Request, in []scheduling.Candidate) []scheduling.Candidate {
	need := MinTokens(r.Prompt, f.bytesPerToken) + r.MaxTokens
	out := in[:0]
	for _, c := range in {
		if ctx := int(c.Model.GetContextLength()); ctx == 0 || need <= ctx {
			out = append(out, c)
		}
	}
	return out
}
