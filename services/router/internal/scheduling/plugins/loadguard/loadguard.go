// Package loadguard is a filter that drops endpoints much busier than the
// least busy candidate, so that affinity (a hot prompt prefix, a session)
// cannot pile requests onto one worker while others idle.
package loadguard

import (
	"encoding/json"
	"fmt"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Params: an endpoint is dropped when its load exceeds the least loaded
// candidate's by more than MaxExtra requests.
type Params struct {
	MaxExtra int `json:"max_extra"`
}

// Filter is the load guard.
type Filter struct{ maxExtra int }

var _ scheduling.Filter = (*Filter)(nil)

// New decodes {"max_extra": N} (default 4).
func New(raw json.RawMessage) (scheduling.Filter, error) {
	p := Params{MaxExtra: 4}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
	}
	if p.MaxExtra < 0 {
		return nil, fmt.Errorf("max_extra must not be negative")
	}
	return &Filter{maxExtra: p.MaxExtra}, nil
}

// Filter implements scheduling.Filter.
func (f *Filter) Filter(_ *scheduling.Request, in []scheduling.Candidate) []scheduling.Candidate {
	// Each candidate's load is read once: it moves under concurrent
	// requests, and reading it twice could keep none.
	var buf [64]int
	busy := buf[:0]
	least := -1
	for _, c := range in {
		b := c.Endpoint.Busy()
		busy = append(busy, b)
		if least < 0 || b < least {
			least = b
		}
	}
	out := in[:0]
	for i, c := range in {
		if busy[i] <= least+f.maxExtra {
			out = append(out, c)
		}
	}
	return out
}
