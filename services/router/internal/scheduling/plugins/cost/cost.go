// Package cost scores candidates by price: the cheapest scores 1, the
// dearest 0, linearly between (input plus output price per 1K tokens).
package cost

import (
	"encoding/json"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Scorer prefers cheap models.
type Scorer struct{}

var _ scheduling.Scorer = Scorer{}

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Scorer, error) { return Scorer{}, nil }

// Score implements scheduling.Scorer.
func (Scorer) Score(_ *scheduling.Request, c []scheduling.Candidate, out []float64) {
	lo, hi := -1.0, -1.0
	for i, cand := range c {
		p := cand.Model.GetCostPer_1KInput() + cand.Model.GetCostPer_1KOutput()
		out[i] = p
		if lo < 0 || p < lo {
			lo = p
		}
		hi = max(hi, p)
	}
	for i, p := range out[:len(c)] {
		if hi == lo {
			out[i] = 1
		} else {
			out[i] = (hi - p) / (hi - lo)
		}
	}
}
