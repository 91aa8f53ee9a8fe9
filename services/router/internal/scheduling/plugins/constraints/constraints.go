// Package constraints is a filter applying the request's constraints: the
// highest price per 1K tokens, the lowest model quality, the highest
// observed time to first token (endpoints not yet observed pass) and the
// allowed model formats.
package constraints

import (
	"encoding/json"
	"slices"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Filter applies routing.constraints.
type Filter struct{}

var _ scheduling.Filter = Filter{}

// New is the factory; the filter takes no parameters.
func New(json.RawMessage) (scheduling.Filter, error) { return Filter{}, nil }

// Filter implements scheduling.Filter.
func (Filter) Filter(r *scheduling.Request, in []scheduling.Candidate) []scheduling.Candidate {
	c := r.Constraints
	if c == nil {
		return in
	}
	maxCost, minQ, maxLat, formats := c.GetMaxCostPer_1K(), c.GetMinQuality(), c.GetMaxLatency().AsDuration(), c.GetFormats()
	out := in[:0]
	for _, cand := range in {
		m := cand.Model
		switch {
		case maxCost > 0 && (m.GetCostPer_1KInput() > maxCost || m.GetCostPer_1KOutput() > maxCost):
		case minQ > 0 && m.GetQuality() < minQ:
		case maxLat > 0 && cand.Endpoint.TTFT() > maxLat:
		case len(formats) > 0 && !slices.Contains(formats, m.GetFormat()):
		default:
			out = append(out, cand)
		}
	}
	return out
}
