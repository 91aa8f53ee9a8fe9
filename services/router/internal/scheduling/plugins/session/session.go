// Package session is the session-affinity filter: a request that carries a
// session id keeps only the candidate its session sticks to, chosen by
// highest-random-weight (rendezvous) hashing of session and endpoint id, so
// a session keeps its worker (and that worker's cached state) while the
// worker stays a candidate, and only the sessions of a leaving worker move.
// Requests without a session id pass untouched. Place it after the filters
// that remove unfit candidates. Stateless and safe for concurrent use.
package session

import (
	"encoding/json"
	"hash/fnv"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Filter keeps the session's candidate.
type Filter struct{}

var _ scheduling.Filter = Filter{}

// New is the factory; the filter takes no parameters.
func New(json.RawMessage) (scheduling.Filter, error) { return Filter{}, nil }

// Filter implements scheduling.Filter.
func (Filter) Filter(r *scheduling.Request, in []scheduling.Candidate) []scheduling.Candidate {
	if r.SessionID == "" || len(in) == 0 {
		return in
	}
	i := Affine(r.SessionID, in)
	return append(in[:0], in[i])
}

// Affine returns the index of the candidate session sticks to.
func Affine(session string, c []scheduling.Candidate) int {
	best, bestW := 0, uint64(0)
	for i, cand := range c {
		if w := rendezvous(session, cand.Endpoint.ID); i == 0 || w > bestW {
			best, bestW = i, w
		}
	}
	return best
}

func rendezvous(session, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(session))
	h.Write([]byte{0})
	h.Write([]byte(id))
	// FNV leaves the high bits of similar inputs alike; a splitmix64
	// finalizer spreads them so the maximum is uniform over endpoints.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
