// Package scheduling is the router's decision pipeline: filters decide which
// candidates may serve a request, weighted scorers rate each remaining one in
// [0, 1], and a picker chooses. A named combination is a Profile (a
// strategy); profiles are built from configuration by a Registry of plugin
// factories, each plugin in its own package under plugins/.
//
// Profiles and plugins are safe for concurrent use; a plugin that keeps
// state (round-robin counters, learned affinities) synchronises itself.
package scheduling

import (
	"errors"
	"fmt"
	"sync"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
)

// Request is what plugins may look at.
type Request struct {
	// Model as the client named it (possibly an alias).
	Model       string
	SessionID   string
	Constraints *routerv1.Constraints
	// Prompt and MaxTokens as the client sent them.
	Prompt    *generationv1.Prompt
	MaxTokens int
	Now       time.Time
}

// Candidate is an endpoint able to serve one of the request's models.
type Candidate struct {
	Endpoint *pool.Endpoint
	Model    *enginev1.ModelInfo
}

// Filter keeps the candidates that may serve. It may reuse in's storage.
type Filter interface {
	Filter(r *Request, in []Candidate) []Candidate
}

// Scorer writes a score in [0, 1] for every candidate into out.
type Scorer interface {
	Score(r *Request, c []Candidate, out []float64)
}

// Picker returns the index of the chosen candidate given the total scores.
type Picker interface {
	Pick(r *Request, c []Candidate, scores []float64) int
}

// Observer is implemented by plugins that learn from outcomes.
type Observer interface {
	Observe(r *Request, chosen Candidate, o Outcome)
}

// Outcome is what happened to a routed request.
type Outcome struct {
	// FirstToken reports that the worker produced a first token.
	FirstToken bool
	TTFT       time.Duration
}

// WeightedScorer is a scorer and its weight in the total.
type WeightedScorer struct {
	Name   string
	Scorer Scorer
	Weight float64
}

// NamedFilter is a filter and its configured name, for error messages.
type NamedFilter struct {
	Name   string
	Filter Filter
}

// Profile is one strategy: filters, weighted scorers, a picker.
type Profile struct {
	Name      string
	Filters   []NamedFilter
	Scorers   []WeightedScorer
	Picker    Picker
	observers []Observer
}

// ErrNoCandidate reports that the filters left nothing.
var ErrNoCandidate = errors.New("no candidate")

// Decision describes a choice, for traces and metrics.
type Decision struct {
	Strategy   string
	Candidates int
	Chosen     Candidate
	Score      float64
}

// Schedule runs the pipeline over cands (which it may reorder or reuse).
func (p *Profile) Schedule(r *Request, cands []Candidate) (Decision, error) {
	cands, err := p.Eligible(r, cands)
	if err != nil {
		return Decision{}, err
	}
	buf := scoreBufs.Get().(*[]float64)
	defer scoreBufs.Put(buf)
	if cap(*buf) < 2*len(cands) {
		*buf = make([]float64, 2*len(cands))
	}
	total, s := (*buf)[:len(cands)], (*buf)[len(cands):2*len(cands)]
	clear(total)
	if len(p.Scorers) > 0 {
		sum := 0.0
		for _, ws := range p.Scorers {
			clear(s)
			ws.Scorer.Score(r, cands, s)
			for i, v := range s {
				total[i] += ws.Weight * v
			}
			sum += ws.Weight
		}
		if sum > 0 {
			for i := range total {
				total[i] /= sum
			}
		}
	}
	i := p.Picker.Pick(r, cands, total)
	return Decision{Strategy: p.Name, Candidates: len(cands), Chosen: cands[i], Score: total[i]}, nil
}

// scoreBufs recycles the scratch space of Schedule (two float64 per
// candidate), which is on every request's path.
var scoreBufs = sync.Pool{New: func() any { return new([]float64) }}

// Observe reports an outcome to the profile's learning plugins.
func (p *Profile) Observe(r *Request, chosen Candidate, o Outcome) {
	for _, ob := range p.observers {
		ob.Observe(r, chosen, o)
	}
}

// Eligible runs the profile's filters only.
func (p *Profile) Eligible(r *Request, cands []Candidate) ([]Candidate, error) {
	for _, f := range p.Filters {
		cands = f.Filter.Filter(r, cands)
		if len(cands) == 0 {
			return nil, &FilteredError{Filter: f.Name}
		}
	}
	return cands, nil
}

// FilteredError names the filter that removed the last candidate.
type FilteredError struct{ Filter string }

func (e *FilteredError) Error() string {
	return fmt.Sprintf("filter %q removed every endpoint", e.Filter)
}

// Is makes errors.Is(err, ErrNoCandidate) hold.
func (e *FilteredError) Is(target error) bool { return target == ErrNoCandidate }
