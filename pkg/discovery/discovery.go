// Package discovery finds engine workers and registers them.
//
// A Watcher streams the full set of endpoints every time it changes; the
// Consul implementation keeps the last-known set while Consul is unreachable,
// and the Static one serves a fixed list. Registration puts a worker, its
// models' metadata and a gRPC health check into Consul.
package discovery

import (
	"context"
	"slices"
	"strings"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"google.golang.org/protobuf/proto"
)

// ServiceName is the discovery name every engine worker registers under.
const ServiceName = "llmrouter-engine"

// RouterServiceName is the discovery name routers register under
// (router -register), for clients and load balancers that find routers
// through Consul.
const RouterServiceName = "llmrouter-router"

// Endpoint is one worker.
type Endpoint struct {
	// ID is the discovery identifier; unique per worker.
	ID string
	// Address is host:port of the worker's Engine service.
	Address string
	// Models the worker advertises; nil when discovery does not know them
	// (static lists), in which case the router asks the worker.
	Models []*enginev1.ModelInfo
	// Healthy reports whether the worker's health checks pass.
	Healthy bool
}

// Equal reports whether two endpoints are the same in every field.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.ID == o.ID && e.Address == o.Address && e.Healthy == o.Healthy &&
		slices.EqualFunc(e.Models, o.Models, func(a, b *enginev1.ModelInfo) bool { return proto.Equal(a, b) })
}

// Watcher streams endpoint sets.
type Watcher interface {
	// Watch sends the current set of endpoints, sorted by ID, and again after
	// every change, until ctx ends; then it closes the channel.
	Watch(ctx context.Context) <-chan []Endpoint
}

// Static is a fixed list of endpoints, all reported healthy.
type Static struct{ eps []Endpoint }

var _ Watcher = (*Static)(nil)

// NewStatic returns a Static watcher over worker addresses (host:port).
func NewStatic(addrs ...string) *Static { return &Static{eps: NewStaticEndpoints(addrs...)} }

// NewStaticEndpoints turns worker addresses into endpoints without models,
// sorted; blank addresses are skipped.
func NewStaticEndpoints(addrs ...string) []Endpoint {
	var eps []Endpoint
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		eps = append(eps, Endpoint{ID: a, Address: a, Healthy: true})
	}
	sortEndpoints(eps)
	return eps
}

// Watch sends the list once and closes the channel when ctx ends.
func (s *Static) Watch(ctx context.Context) <-chan []Endpoint {
	ch := make(chan []Endpoint, 1)
	ch <- slices.Clone(s.eps)
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch
}

func sortEndpoints(eps []Endpoint) {
	slices.SortFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) })
}
