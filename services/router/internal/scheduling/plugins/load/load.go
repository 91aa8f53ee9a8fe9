// Package load scores candidates by how busy they are relative to what they
// can decode at once: busy is the requests for the candidate's model on its
// worker, decoding and queued, as this router last learnt them plus its own
// since (pool.Endpoint.ModelBusy); capacity is the model's advertised max_concurrency
// (1 when it advertises none). An idle endpoint scores 1; the score is
// capacity/(capacity+busy), so a worker with eight slots and four requests
// scores like one with two slots and one request, and half-full scores
// 2/3, full 1/2, twice full 1/3.
package load

import (
	"encoding/json"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Scorer prefers endpoints with the most room.
type Scorer struct{}

var _ scheduling.Scorer = Scorer{}

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Scorer, error) { return Scorer{}, nil }

// Score implements scheduling.Scorer.
func (Scorer) Score(_ *scheduling.Request, c []scheduling.Candidate, out []float64) {
	for i, cand := range c {
		capacity := float64(max(cand.Model.GetMaxConcurrency(), 1))
		out[i] = capacity / (capacity + float64(cand.Endpoint.ModelBusy(cand.Model.GetName())))
	}
}
