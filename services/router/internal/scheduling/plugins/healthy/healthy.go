// Package healthy is a filter that keeps endpoints discovery reports healthy
// and the pool has not ejected after failures of their connection, serving
// the model on a route whose circuit lets the request through (closed, or
// half-open with its probe slot free).
package healthy

import (
	"encoding/json"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Filter keeps healthy, non-ejected endpoints.
type Filter struct{}

var _ scheduling.Filter = Filter{}

// New is the factory; the filter takes no parameters.
func New(json.RawMessage) (scheduling.Filter, error) { return Filter{}, nil }

// Filter implements scheduling.Filter.
func (Filter) Filter(r *scheduling.Request, in []scheduling.Candidate) []scheduling.Candidate {
	out := in[:0]
	for _, c := range in {
		if c.Endpoint.Healthy() && !c.Endpoint.Ejected(r.Now) && c.Endpoint.Route(c.Model.GetName()).Available(r.Now) {
			out = append(out, c)
		}
	}
	return out
}
