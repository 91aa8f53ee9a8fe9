// Package quality scores candidates by their model's quality score.
package quality

import (
	"encoding/json"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Scorer returns the model's quality, clamped to [0, 1].
type Scorer struct{}

var _ scheduling.Scorer = Scorer{}

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Scorer, error) { return Scorer{}, nil }

// Score implements scheduling.Scorer.
func (Scorer) Score(_ *scheduling.Request, c []scheduling.Candidate, out []float64) {
	for i, cand := range c {
		out[i] = min(max(cand.Model.GetQuality(), 0), 1)
	}
}
