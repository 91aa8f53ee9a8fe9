package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

// Consul limits a service's metadata values to 512 bytes and its keys to 64.
const (
	metaValueMax  = 512
	metaModelsMax = 60
	metaPrefix    = "model_"
)

// healthAPI is the part of Consul's health endpoint the watcher uses.
type healthAPI interface {
	Service(service, tag string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error)
}

// agentAPI is the part of Consul's agent endpoint registration uses.
type agentAPI interface {
	ServiceRegisterOpts(service *api.AgentServiceRegistration, opts api.ServiceRegisterOpts) error
	ServiceDeregisterOpts(serviceID string, q *api.QueryOptions) error
	Service(serviceID string, q *api.QueryOptions) (*api.AgentService, *api.QueryMeta, error)
}

// Consul discovers and registers workers through a Consul agent.
type Consul struct {
	health  healthAPI
	agent   agentAPI
	service string
	log     *slog.Logger
	// Wait is the blocking-query wait time. Default 30s.
	Wait time.Duration
	// MinBackoff and MaxBackoff bound the retry delay while Consul fails.
	MinBackoff, MaxBackoff time.Duration
	// RestartGrace: after an outage (an agent that restarted, perhaps
	// empty), endpoints missing from the answer are kept this long, so
	// workers have time to register again before the router drops them.
	// Default 15s.
	RestartGrace time.Duration
}

var _ Watcher = (*Consul)(nil)

// NewConsul returns a Consul client for the agent at addr (host:port; empty
// uses CONSUL_HTTP_ADDR or the default) that watches service.
func NewConsul(addr, service string, log *slog.Logger) (*Consul, error) {
	cfg := api.DefaultConfig()
	if addr != "" {
		cfg.Address = addr
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %q: %w", cfg.Address, err)
	}
	if service == "" {
		service = ServiceName
	}
	if log == nil {
		log = slog.Default()
	}
	return &Consul{
		health: c.Health(), agent: c.Agent(), service: service, log: log,
		Wait: 30 * time.Second, MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second,
		RestartGrace: 15 * time.Second,
	}, nil
}

// Registration describes a worker to register.
type Registration struct {
	// ID must be unique among workers; Address:Port when empty.
	ID string
	// Address and Port the Engine service listens on (and Consul checks).
	Address string
	Port    int
	// Models the worker hosts; their metadata goes into the service's Meta.
	Models []*enginev1.ModelInfo
	// CheckInterval of the gRPC health check. Default 2s.
	CheckInterval time.Duration
	// CheckAddress is the host:port Consul's gRPC health check dials: the
	// worker's plaintext health listener when its service port needs mTLS.
	// Default Address:Port.
	CheckAddress string
	// DeregisterAfter removes the service after it has been critical this
	// long. Default (and Consul's minimum) 1m.
	DeregisterAfter time.Duration
	// NoCheck registers without a health check (Consul then reports the
	// service passing): for benchmarks and fleets checked elsewhere.
	NoCheck bool
	// Meta is extra service metadata (a router's HTTP address); keys must
	// not collide with the models' metadata.
	Meta map[string]string
}

// Register adds or replaces the worker's registration.
func (c *Consul) Register(ctx context.Context, r Registration) error {
	if r.CheckInterval <= 0 {
		r.CheckInterval = 2 * time.Second
	}
	if r.DeregisterAfter < time.Minute {
		r.DeregisterAfter = time.Minute
	}
	hostport := net.JoinHostPort(r.Address, strconv.Itoa(r.Port))
	if r.ID == "" {
		r.ID = c.service + "-" + hostport
	}
	meta, tags, err := encodeModels(r.Models)
	if err != nil {
		return err
	}
	for k, v := range r.Meta {
		if _, dup := meta[k]; dup {
			return fmt.Errorf("register %s: meta key %q is taken by the models' metadata", r.ID, k)
		}
		if meta == nil {
			meta = map[string]string{}
		}
		meta[k] = v
	}
	reg := &api.AgentServiceRegistration{ID: r.ID, Name: c.service, Address: r.Address, Port: r.Port, Tags: tags, Meta: meta}
	if r.CheckAddress == "" {
		r.CheckAddress = hostport
	}
	if !r.NoCheck {
		reg.Check = &api.AgentServiceCheck{
			Name: "grpc health",
			// A worker registers once it serves: it starts passing, so a
			// re-registration after an agent restart does not take the
			// worker out of rotation until the first check.
			Status:                         api.HealthPassing,
			GRPC:                           r.CheckAddress,
			Interval:                       r.CheckInterval.String(),
			Timeout:                        r.CheckInterval.String(),
			DeregisterCriticalServiceAfter: r.DeregisterAfter.String(),
		}
	}
	if err := c.agent.ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return fmt.Errorf("register %s in consul: %w", r.ID, err)
	}
	return nil
}

// Registered reports whether the agent holds a registration under id (false
// after an agent restarted empty).
func (c *Consul) Registered(ctx context.Context, id string) (bool, error) {
	_, _, err := c.agent.Service(id, (&api.QueryOptions{}).WithContext(ctx))
	if err == nil {
		return true, nil
	}
	var se api.StatusError
	if errors.As(err, &se) && se.Code == 404 {
		return false, nil
	}
	return false, fmt.Errorf("consul: look up %s: %w", id, err)
}

// Deregister removes a worker's registration.
func (c *Consul) Deregister(ctx context.Context, id string) error {
	if err := c.agent.ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("deregister %s from consul: %w", id, err)
	}
	return nil
}

// Watch runs blocking queries against the service's health and sends the
// endpoint set whenever it changes. While Consul fails it retries with
// exponential backoff and sends nothing, so consumers keep the last-known set.
func (c *Consul) Watch(ctx context.Context) <-chan []Endpoint {
	ch := make(chan []Endpoint, 1)
	go func() {
		defer close(ch)
		var (
			index      uint64
			last       []Endpoint
			sent       bool
			failing    bool
			graceUntil time.Time
			backoff    = c.MinBackoff
		)
		for {
			wait := c.Wait
			if left := time.Until(graceUntil); left > 0 {
				wait = min(wait, left+10*time.Millisecond) // answer again when the grace ends
			}
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
			entries, meta, err := c.health.Service(c.service, "", false, q)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				c.log.Warn("consul watch failed; keeping last-known endpoints", "service", c.service, "err", err, "retry_in", backoff)
				failing = true
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, c.MaxBackoff)
				continue
			}
			backoff = c.MinBackoff
			// Answering again after failures (an outage, a restarted agent
			// that may have lost every registration): keep the last-known
			// endpoints a while for workers to register again.
			if failing {
				graceUntil = time.Now().Add(c.RestartGrace)
				c.log.Info("consul answers again; keeping endpoints that have not re-registered yet", "grace", c.RestartGrace)
			}
			failing = false
			// Consul's index can go backwards (e.g. after a restart): start over.
			if meta.LastIndex < index {
				index = 0
			} else {
				index = meta.LastIndex
			}
			eps := c.endpoints(entries)
			if time.Now().Before(graceUntil) {
				eps = keepMissing(eps, last)
			}
			if sent && slices.EqualFunc(eps, last, Endpoint.Equal) {
				continue
			}
			select {
			case <-ctx.Done():
				return
			case ch <- eps:
			}
			last, sent = eps, true
		}
	}()
	return ch
}

// keepMissing adds the endpoints of last that eps lacks.
func keepMissing(eps, last []Endpoint) []Endpoint {
	have := make(map[string]bool, len(eps))
	for _, e := range eps {
		have[e.ID] = true
	}
	kept := false
	for _, e := range last {
		if !have[e.ID] {
			eps = append(eps, e)
			kept = true
		}
	}
	if kept {
		sortEndpoints(eps)
	}
	return eps
}

func (c *Consul) endpoints(entries []*api.ServiceEntry) []Endpoint {
	eps := make([]Endpoint, 0, len(entries))
	// Fleets repeat the same model metadata on many workers: decode each
	// distinct value once per update.
	decoded := map[string]*enginev1.ModelInfo{}
	for _, e := range entries {
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		models, err := decodeModels(e.Service.Meta, decoded)
		if err != nil {
			c.log.Warn("ignoring bad model metadata", "service_id", e.Service.ID, "err", err)
		}
		eps = append(eps, Endpoint{
			ID:      e.Service.ID,
			Address: net.JoinHostPort(host, strconv.Itoa(e.Service.Port)),
			Models:  models,
			Healthy: e.Checks.AggregatedStatus() == api.HealthPassing,
		})
	}
	sortEndpoints(eps)
	return eps
}

// encodeModels puts each model's metadata into its own Meta key (values are
// limited to 512 bytes) and a "model:NAME" tag for Consul-side filtering.
func encodeModels(models []*enginev1.ModelInfo) (map[string]string, []string, error) {
	if len(models) > metaModelsMax {
		return nil, nil, fmt.Errorf("%d models exceed consul's metadata limit of %d per worker", len(models), metaModelsMax)
	}
	meta := make(map[string]string, len(models))
	tags := make([]string, 0, len(models))
	for i, m := range models {
		b, err := protojson.Marshal(m)
		if err != nil {
			return nil, nil, fmt.Errorf("encode model %q: %w", m.GetName(), err)
		}
		if len(b) > metaValueMax {
			return nil, nil, fmt.Errorf("metadata of model %q is %d bytes, over consul's %d", m.GetName(), len(b), metaValueMax)
		}
		meta[metaPrefix+strconv.Itoa(i)] = string(b)
		tags = append(tags, "model:"+m.GetName())
	}
	return meta, tags, nil
}

func decodeModels(meta map[string]string, cache map[string]*enginev1.ModelInfo) ([]*enginev1.ModelInfo, error) {
	var models []*enginev1.ModelInfo
	for k, v := range meta {
		if !strings.HasPrefix(k, metaPrefix) {
			continue
		}
		m, ok := cache[v]
		if !ok {
			m = &enginev1.ModelInfo{}
			if err := protojson.Unmarshal([]byte(v), m); err != nil {
				return models, fmt.Errorf("meta %s: %w", k, err)
			}
			cache[v] = m // shared read-only between endpoints
		}
		models = append(models, m)
	}
	slices.SortFunc(models, func(a, b *enginev1.ModelInfo) int { return strings.Compare(a.GetName(), b.GetName()) })
	return models, nil
}
