// Package weight scores candidates by configured static weights, matched by
// endpoint address, then model name; unmatched candidates weigh Default.
// Scores are the weights divided by the largest.
package weight

import (
	"encoding/json"
	"fmt"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Params: {"weights": {"10.0.0.1:7000": 3, "tiny": 1}, "default": 1}.
type Params struct {
	Weights map[string]float64 `json:"weights"`
	Default float64            `json:"default"`
}

// Scorer applies static weights.
type Scorer struct{ p Params }

var _ scheduling.Scorer = (*Scorer)(nil)

// New decodes the parameters.
func New(raw json.RawMessage) (scheduling.Scorer, error) {
	p := Params{Default: 1}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
	}
	for k, w := range p.Weights {
		if w < 0 {
			return nil, fmt.Errorf("weight of %q is negative", k)
		}
	}
	if p.Default < 0 {
		return nil, fmt.Errorf("default weight is negative")
	}
	return &Scorer{p: p}, nil
}

// Score implements scheduling.Scorer.
func (s *Scorer) Score(_ *scheduling.Request, c []scheduling.Candidate, out []float64) {
	top := 0.0
	for i, cand := range c {
		w, ok := s.p.Weights[cand.Endpoint.Address]
		if !ok {
			if w, ok = s.p.Weights[cand.Model.GetName()]; !ok {
				w = s.p.Default
			}
		}
		out[i] = w
		top = max(top, w)
	}
	for i := range c {
		if top > 0 {
			out[i] /= top
		}
	}
}
