// Package strategy holds the router's endpoint pickers and the registry they
// are plugged into. A picker chooses one endpoint among candidates that the
// server has already filtered (model, health, constraints). Pickers are safe
// for concurrent use.
package strategy

import (
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
)

// Request is what a picker may look at.
type Request struct {
	Model     string
	SessionID string
}

// Picker chooses one of candidates (never empty).
type Picker interface {
	Pick(req *Request, candidates []*pool.Endpoint) *pool.Endpoint
}

// Factory makes a picker.
type Factory func() Picker

// Registry maps strategy names to pickers. It is built once at start-up and
// read-only afterwards.
type Registry struct {
	pickers map[string]Picker
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{pickers: map[string]Picker{}} }

// Register adds a strategy; names are unique.
func (r *Registry) Register(name string, f Factory) {
	if _, dup := r.pickers[name]; dup {
		panic(fmt.Sprintf("strategy %q registered twice", name))
	}
	r.pickers[name] = f()
}

// Get returns the named picker.
func (r *Registry) Get(name string) (Picker, bool) {
	p, ok := r.pickers[name]
	return p, ok
}

// Names lists registered strategies, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.pickers))
	for n := range r.pickers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Builtin returns a registry with every built-in strategy.
func Builtin() *Registry {
	r := NewRegistry()
	r.Register(RoundRobinName, func() Picker { return &RoundRobin{} })
	return r
}

// RoundRobinName is the round-robin strategy's name.
const RoundRobinName = "round-robin"

// RoundRobin cycles through candidates.
type RoundRobin struct{ n atomic.Uint64 }

var _ Picker = (*RoundRobin)(nil)

// Pick returns the next candidate in turn.
func (r *RoundRobin) Pick(_ *Request, c []*pool.Endpoint) *pool.Endpoint {
	return c[(r.n.Add(1)-1)%uint64(len(c))]
}

// Affine returns the candidate a session sticks to: highest-random-weight
// (rendezvous) hashing of session and endpoint id, so a session keeps its
// worker while that worker stays a candidate, and only the sessions of a
// leaving worker move.
func Affine(session string, c []*pool.Endpoint) *pool.Endpoint {
	return slices.MaxFunc(c, func(a, b *pool.Endpoint) int {
		ha, hb := weight(session, a.ID), weight(session, b.ID)
		switch {
		case ha < hb:
			return -1
		case ha > hb:
			return 1
		}
		return 0
	})
}

func weight(session, id string) uint64 {
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
