// Package latency scores candidates by observed time to first token: the
// fastest scores 1, others fastest/theirs; endpoints not yet observed score 1
// so they get tried.
package latency

import (
	"encoding/json"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Scorer prefers fast endpoints.
type Scorer struct{}

var _ scheduling.Scorer = Scorer{}

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Scorer, error) { return Scorer{}, nil }

// Score implements scheduling.Scorer.
func (Scorer) Score(_ *scheduling.Request, c []scheduling.Candidate, out []float64) {
	best := 0.0
	for _, cand := range c {
		if t := float64(cand.Endpoint.TTFT()); t > 0 && (best == 0 || t < best) {
			best = t
		}
	}
	for i, cand := range c {
		t := float64(cand.Endpoint.TTFT())
		if t == 0 || best == 0 {
			out[i] = 1
		} else {
			out[i] = best / t
		}
	}
}
