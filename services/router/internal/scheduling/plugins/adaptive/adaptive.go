// Package adaptive scores candidates from what the router has learned about
// them: smoothed error rate and latency (time to first token plus the time
// of a typical completion's tokens). Endpoints with few observations get an
// optimistic score so that the router keeps exploring them.
package adaptive

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Params tune the scorer.
type Params struct {
	// ExploreBelow: endpoints with fewer observations score 1.
	ExploreBelow int64 `json:"explore_below"`
	// Tokens is the completion length that weighs inter-token latency
	// against time to first token.
	Tokens float64 `json:"tokens"`
}

// Scorer learns from outcomes recorded on the endpoints.
type Scorer struct{ p Params }

var _ scheduling.Scorer = (*Scorer)(nil)

// New decodes {"explore_below": N, "tokens": T} (defaults 5 and 64).
func New(raw json.RawMessage) (scheduling.Scorer, error) {
	p := Params{ExploreBelow: 5, Tokens: 64}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
	}
	if p.ExploreBelow < 0 || p.Tokens < 0 {
		return nil, fmt.Errorf("explore_below and tokens must not be negative")
	}
	return &Scorer{p: p}, nil
}

// Score implements scheduling.Scorer: (1-error rate)² × fastest/latency.
func (s *Scorer) Score(_ *scheduling.Request, c []scheduling.Candidate, out []float64) {
	best := math.Inf(1)
	lat := out[:len(c)]
	for i, cand := range c {
		e := cand.Endpoint
		lat[i] = float64(e.TTFT()) + s.p.Tokens*float64(e.ITL())
		if e.Observations() >= s.p.ExploreBelow && lat[i] > 0 {
			best = min(best, lat[i])
		}
	}
	for i, cand := range c {
		e := cand.Endpoint
		if e.Observations() < s.p.ExploreBelow {
			out[i] = 1
			continue
		}
		speed := 1.0
		if lat[i] > 0 && !math.IsInf(best, 1) {
			speed = best / lat[i]
		}
		ok := 1 - e.ErrorRate()
		out[i] = ok * ok * speed
	}
}
