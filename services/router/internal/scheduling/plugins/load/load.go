// Package load scores candidates by how busy they are: the router's own
// in-flight requests and the worker's reported active sequences and queue.
// An idle endpoint scores 1; the score falls as 1/(1+busy).
package load

import (
	"encoding/json"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Scorer prefers idle endpoints.
type Scorer struct{}

var _ scheduling.Scorer = Scorer{}

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Scorer, error) { return Scorer{}, nil }

// Score implements scheduling.Scorer.
func (Scorer) Score(_ *scheduling.Request, c []scheduling.Candidate, out []float64) {
	for i, cand := range c {
		out[i] = 1 / (1 + float64(cand.Endpoint.Busy()))
	}
}
