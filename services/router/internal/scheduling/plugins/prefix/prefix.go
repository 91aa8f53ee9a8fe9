// Package prefix is the cache-affinity scorer: it remembers, in a bounded
// LRU, which endpoint last served each prompt-prefix block (chained block
// hashes, see scheduling.Request.PrefixBlocks) and scores a candidate by the
// share of the request's leading blocks it holds, since that worker likely
// still has their KV cache. Pair it with the loadguard filter so a hot prefix
// cannot overload one worker.
package prefix

import (
	"encoding/json"
	"fmt"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Params: {"capacity": N} blocks remembered (default 65536, about 5 MB).
type Params struct {
	Capacity int `json:"capacity"`
}

// Scorer scores by remembered prefix ownership and learns from outcomes.
type Scorer struct {
	owners *lru.Cache[uint64, string]
}

var (
	_ scheduling.Scorer   = (*Scorer)(nil)
	_ scheduling.Observer = (*Scorer)(nil)
)

// New decodes the parameters.
func New(raw json.RawMessage) (scheduling.Scorer, error) {
	p := Params{Capacity: 1 << 16}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
	}
	if p.Capacity <= 0 {
		return nil, fmt.Errorf("capacity must be positive")
	}
	c, err := lru.New[uint64, string](p.Capacity)
	if err != nil {
		return nil, err
	}
	return &Scorer{owners: c}, nil
}

// Score implements scheduling.Scorer.
func (s *Scorer) Score(r *scheduling.Request, c []scheduling.Candidate, out []float64) {
	n := len(r.PrefixBlocks)
	if n == 0 {
		return
	}
	// Deepest block held by each owner; owners are few, candidates many.
	type held struct {
		id    string
		depth int
	}
	var owners []held
	for i, b := range r.PrefixBlocks {
		owner, ok := s.owners.Peek(b)
		if !ok {
			break // chained hashes: no later block can match either
		}
		found := false
		for j := range owners {
			if owners[j].id == owner {
				owners[j].depth, found = i+1, true
			}
		}
		if !found {
			owners = append(owners, held{owner, i + 1})
		}
	}
	if len(owners) == 0 {
		return
	}
	for j, cand := range c {
		for _, o := range owners {
			if cand.Endpoint.ID == o.id {
				out[j] = float64(o.depth) / float64(n)
			}
		}
	}
}

// Observe records the serving endpoint as the owner of the prefix blocks.
func (s *Scorer) Observe(r *scheduling.Request, chosen scheduling.Candidate, o scheduling.Outcome) {
	if !o.FirstToken {
		return
	}
	for _, b := range r.PrefixBlocks {
		s.owners.Add(b, chosen.Endpoint.ID)
	}
}

// Len is the number of remembered blocks.
func (s *Scorer) Len() int { return s.owners.Len() }
