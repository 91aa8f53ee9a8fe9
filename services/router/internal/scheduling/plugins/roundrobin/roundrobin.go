// Package roundrobin picks candidates in turn, ignoring scores.
package roundrobin

import (
	"encoding/json"
	"sync/atomic"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Picker cycles through candidates.
type Picker struct{ n atomic.Uint64 }

var _ scheduling.Picker = (*Picker)(nil)

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Picker, error) { return &Picker{}, nil }

// Pick implements scheduling.Picker.
func (p *Picker) Pick(_ *scheduling.Request, c []scheduling.Candidate, _ []float64) int {
	return int((p.n.Add(1) - 1) % uint64(len(c)))
}
