// Package maxscore picks the highest total score; ties rotate among the tied
// candidates so equal endpoints share traffic.
package maxscore

import (
	"encoding/json"
	"sync/atomic"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Picker picks the best score.
type Picker struct{ turn atomic.Uint64 }

var _ scheduling.Picker = (*Picker)(nil)

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Picker, error) { return &Picker{}, nil }

// epsilon is the score difference below which candidates tie.
const epsilon = 1e-9

// Pick implements scheduling.Picker.
func (p *Picker) Pick(_ *scheduling.Request, c []scheduling.Candidate, scores []float64) int {
	best, ties := 0, 1
	for i := 1; i < len(c); i++ {
		switch d := scores[i] - scores[best]; {
		case d > epsilon:
			best, ties = i, 1
		case d > -epsilon:
			ties++
		}
	}
	if ties == 1 {
		return best
	}
	k := int(p.turn.Add(1) % uint64(ties))
	for i := range c {
		if scores[i] > scores[best]-epsilon {
			if k == 0 {
				return i
			}
			k--
		}
	}
	return best
}
