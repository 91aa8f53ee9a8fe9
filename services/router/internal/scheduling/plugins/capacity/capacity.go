// Package capacity is a filter that keeps the candidates with a free
// decoding slot (fewer requests for the model on its worker than the model's
// advertised max_concurrency)
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

// Free reports whether c can start a sequence of its model now: the
// requests for that model on its worker (pool.Endpoint.ModelBusy) against
// the model's slots.
func Free(c scheduling.Candidate) bool {
	n := c.Model.GetMaxConcurrency()
	return n <= 0 || c.Endpoint.ModelBusy(c.Model.GetName()) < int(n)
}

// Filter implements scheduling.Filter. Each candidate is judged once: the
// counts move under concurrent requests, and judging twice could keep none.
func (Filter) Filter(_ *scheduling.Request, in []scheduling.Candidate) []scheduling.Candidate {
	var buf [64]bool
	free := buf[:0]
	n := 0
	for _, c := range in {
		f := Free(c)
		free = append(free, f)
		if f {
			n++
		}
	}
	if n == 0 || n == len(in) {
		return in
	}
	out := in[:0]
	for i, c := range in {
		if free[i] {
			out = append(out, c)
		}
	}
	return out
}
