// Package capacity is a filter that keeps the candidates with a free
// decoding slot (fewer requests than the model's advertised max_concurrency)
// whenever any has one, so a request never queues on one worker while
// another could start it at once. Candidates that advertise no capacity
// count as free. When every candidate is full the filter keeps them all and
// the scorers choose among the queues.
package capacity

import (
	"encoding/json"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Filter keeps candidates with free slots.
type Filter struct{}

var _ scheduling.Filter = Filter{}

// New is the factory; no parameters.
func New(json.RawMessage) (scheduling.Filter, error) { return Filter{}, nil }

// Free reports whether c can start a sequence now.
func Free(c scheduling.Candidate) bool {
	n := c.Model.GetMaxConcurrency()
	return n <= 0 || c.Endpoint.Busy() < int(n)
}

// Filter implements scheduling.Filter.
func (Filter) Filter(_ *scheduling.Request, in []scheduling.Candidate) []scheduling.Candidate {
	free := 0
	for _, c := range in {
		if Free(c) {
			free++
		}
	}
	if free == 0 || free == len(in) {
		return in
	}
	out := in[:0]
	for _, c := range in {
		if Free(c) {
			out = append(out, c)
		}
	}
	return out
}
