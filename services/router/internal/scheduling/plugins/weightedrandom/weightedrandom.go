// Package weightedrandom picks a candidate at random with probability
// proportional to its score (uniformly when all scores are zero).
package weightedrandom

import (
	"encoding/json"
	"math/rand/v2"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Picker draws by score.
type Picker struct{}

var _ scheduling.Picker = Picker{}

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Picker, error) { return Picker{}, nil }

// Pick implements scheduling.Picker.
func (Picker) Pick(_ *scheduling.Request, c []scheduling.Candidate, scores []float64) int {
	sum := 0.0
	for _, s := range scores[:len(c)] {
		sum += s
	}
	if sum <= 0 {
		return rand.IntN(len(c))
	}
	x := rand.Float64() * sum
	for i, s := range scores[:len(c)] {
		if x < s {
			return i
		}
		x -= s
	}
	return len(c) - 1
}
