// Package pool keeps the router's view of engine workers: the set from
// discovery, one gRPC connection per worker, the models each serves, and what
// the router observes of each (requests in flight, smoothed time to first
// token, consecutive failures, ejection).
//
// The pool is updated by one goroutine (Run) and read by many; a snapshot
// (Endpoints) is an immutable slice of *Endpoint whose counters are atomic.
package pool

import (
	"context"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/services/router/internal/rawcodec"
)

// Endpoint is one worker as the router sees it.
type Endpoint struct {
	ID      string
	Address string
	Client  enginev1.EngineServiceClient

	conn *lazyConn

	// models and healthy change on discovery updates and model refreshes.
	state atomic.Pointer[endpointState]
	// listFailures counts a static endpoint's ListModels misses in a row.
	listFailures atomic.Int32

	load         Load          // the whole worker's
	ttftEWMA     atomic.Int64  // nanoseconds; 0 until observed
	itlEWMA      atomic.Int64  // nanoseconds; 0 until observed
	errEWMA      atomic.Uint64 // float64 bits: smoothed failure rate in [0,1]
	observed     atomic.Int64  // outcomes observed
	failures     atomic.Int32  // consecutive failures before the first token
	ejectedUntil atomic.Int64  // unix nanoseconds
	status       atomic.Pointer[enginev1.GetStatusResponse]

	breaker *Breaker
	routes  sync.Map // model name -> *Route
}

// Route returns the endpoint's route for model (made on first use).
func (e *Endpoint) Route(model string) *Route {
	if r, ok := e.routes.Load(model); ok {
		return r.(*Route)
	}
	br := e.breaker
	if br == nil {
		br = &DefaultBreaker
	}
	r, _ := e.routes.LoadOrStore(model, &Route{br: br})
	return r.(*Route)
}

// New returns an endpoint without a connection, for schedulers' tests and
// benchmarks; Client is nil.
func NewEndpoint(id, address string, healthy bool, models ...*enginev1.ModelInfo) *Endpoint {
	e := &Endpoint{ID: id, Address: address}
	e.state.Store(&endpointState{models: models, healthy: healthy, fromDiscovery: true})
	return e
}

type endpointState struct {
	models  []*enginev1.ModelInfo
	healthy bool
	// fromDiscovery: models came with the discovery record; otherwise the
	// pool asks the worker.
	fromDiscovery bool
	// fromWorker: models are the worker's own answer after its models
	// changed at run time (generation gen), which outranks discovery's
	// record until that record or the worker's generation changes.
	fromWorker bool
	gen        uint64
	// discovered is discovery's last record of the models; stale asks the
	// next status poll to ask the worker (after it denied hosting one).
	discovered []*enginev1.ModelInfo
	stale      bool
}

func sameModels(a, b []*enginev1.ModelInfo) bool {
	return slices.EqualFunc(a, b, func(x, y *enginev1.ModelInfo) bool { return proto.Equal(x, y) })
}

// Models returns the models the endpoint serves.
func (e *Endpoint) Models() []*enginev1.ModelInfo { return e.state.Load().models }

// Healthy reports discovery's (or, for static lists, reachability's) view.
func (e *Endpoint) Healthy() bool { return e.state.Load().healthy }

// Model returns the endpoint's metadata for name, or nil.
func (e *Endpoint) Model(name string) *enginev1.ModelInfo {
	for _, m := range e.Models() {
		if m.GetName() == name {
			return m
		}
	}
	return nil
}

// InFlight is the number of requests the router is relaying to it.
func (e *Endpoint) InFlight() int32 { return e.load.InFlight() }

// TTFT is the smoothed observed time to first token, 0 until observed.
func (e *Endpoint) TTFT() time.Duration { return time.Duration(e.ttftEWMA.Load()) }

// Failures is the count of consecutive failures before a first token.
func (e *Endpoint) Failures() int32 { return e.failures.Load() }

// Ejected reports whether the endpoint is benched after failures.
func (e *Endpoint) Ejected(now time.Time) bool {
	u := e.ejectedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// Begin marks a request started on the endpoint and r, its route for the
// request's model; call the returned func when it ends.
func (e *Endpoint) Begin(r *Route) func() {
	endEP, endRoute := e.load.Begin(), r.load.Begin()
	return func() { endRoute(); endEP() }
}

// ITL is the smoothed observed inter-token latency, 0 until observed.
func (e *Endpoint) ITL() time.Duration { return time.Duration(e.itlEWMA.Load()) }

// ErrorRate is the smoothed share of requests that failed before their first
// token, in [0, 1].
func (e *Endpoint) ErrorRate() float64 { return math.Float64frombits(e.errEWMA.Load()) }

// Observations is how many outcomes have been recorded.
func (e *Endpoint) Observations() int64 { return e.observed.Load() }

// Status is the worker's last reported status, or nil.
func (e *Endpoint) Status() *enginev1.GetStatusResponse { return e.status.Load() }

// SetLoad records a worker status report: the worker's load and each
// model's, against this router's in-flight counts now.
func (e *Endpoint) SetLoad(s *enginev1.GetStatusResponse) { e.SetPolled(s, e.InFlightNow()) }

// InFlight is this router's in-flight counts on an endpoint at one moment:
// the whole worker's and by model.
type InFlight struct {
	At      time.Time
	Worker  int32
	ByModel map[string]int32
}

// InFlightNow snapshots the in-flight counts, as a poll is sent.
func (e *Endpoint) InFlightNow() InFlight {
	f := InFlight{At: time.Now(), Worker: e.load.InFlight(), ByModel: map[string]int32{}}
	e.routes.Range(func(k, v any) bool {
		f.ByModel[k.(string)] = v.(*Route).load.InFlight()
		return true
	})
	return f
}

// SetPolled records a poll's answer against the in-flight counts taken as
// it was sent.
func (e *Endpoint) SetPolled(s *enginev1.GetStatusResponse, f InFlight) {
	e.status.Store(s)
	e.load.Report(s.GetActiveSequences()+s.GetQueueDepth(), f.Worker, f.At)
	for _, ml := range s.GetModels() {
		e.Route(ml.GetModel()).load.Report(ml.GetActiveSequences()+ml.GetQueueDepth(), f.ByModel[ml.GetModel()], f.At)
	}
}

// StreamEnded records the load a worker reported as one of this router's
// streams on route r ended (the worker's trailer), before Begin's end runs.
func (e *Endpoint) StreamEnded(r *Route, l enginehost.LoadReport) {
	e.load.Ended(l.Active + l.Queued)
	if l.HasModel {
		r.load.Ended(l.ModelActive + l.ModelQueued)
	}
}

// Busy is the worker's load in requests, decoding and queued (see Load).
func (e *Endpoint) Busy() int { return e.load.Busy() }

// Busy is the route's load: the requests for its model on its worker (see
// Load).
func (r *Route) Busy() int { return r.load.Busy() }

// ModelBusy is the load that decides whether model has room on the
// endpoint: its route's, once the worker has reported per-model counts;
// the whole worker's for workers that report none (a hosted-API proxy).
func (e *Endpoint) ModelBusy(model string) int {
	r := e.Route(model)
	if r.load.report.Load() == nil {
		return e.load.Busy()
	}
	return r.load.Busy()
}

const ewmaAlpha = 0.2

func ewmaDuration(v *atomic.Int64, d time.Duration) {
	for {
		old := v.Load()
		next := int64(d)
		if old != 0 {
			next = int64((1-ewmaAlpha)*float64(old) + ewmaAlpha*float64(d))
		}
		if v.CompareAndSwap(old, next) {
			return
		}
	}
}

func (e *Endpoint) observeError(failed bool) {
	e.observed.Add(1)
	x := 0.0
	if failed {
		x = 1
	}
	for {
		old := e.errEWMA.Load()
		next := math.Float64bits((1-ewmaAlpha)*math.Float64frombits(old) + ewmaAlpha*x)
		if e.errEWMA.CompareAndSwap(old, next) {
			return
		}
	}
}

// ObserveSuccess records a first token after ttft.
func (e *Endpoint) ObserveSuccess(ttft time.Duration) {
	e.failures.Store(0)
	e.ejectedUntil.Store(0)
	ewmaDuration(&e.ttftEWMA, ttft)
	e.observeError(false)
}

// ObserveITL records a request's mean inter-token latency.
func (e *Endpoint) ObserveITL(itl time.Duration) {
	if itl > 0 {
		ewmaDuration(&e.itlEWMA, itl)
	}
}

// Ejection policy: after EjectAfter consecutive failures an endpoint is
// skipped for a backoff that doubles per further failure.
const (
	EjectAfter  = 3
	baseEject   = time.Second
	maxEjection = 30 * time.Second
)

// ObserveFailure records a failure of the endpoint as a whole (its
// connection: refused, reset, TLS, GOAWAY) before the first token. A failure
// of one model goes to its Route instead.
func (e *Endpoint) ObserveFailure(now time.Time) {
	e.observeError(true)
	n := e.failures.Add(1)
	if n < EjectAfter {
		return
	}
	d := time.Duration(math.Min(float64(baseEject)*math.Pow(2, float64(n-EjectAfter)), float64(maxEjection)))
	e.ejectedUntil.Store(now.Add(d).UnixNano())
}

// Flow-control windows of worker connections: large enough that no stream
// waits on a window update (a stream's events are small), fixed so that no
// BDP pings are sent.
const (
	windowSize     = 1 << 20
	connWindowSize = 16 << 20
	connBufferSize = 8 << 10
	statusParallel = 32
)

// Pool is the set of known endpoints.
type Pool struct {
	tel     *telemetry.Telemetry
	log     *slog.Logger
	refresh time.Duration
	breaker Breaker
	creds   credentials.TransportCredentials

	mu  sync.Mutex
	all map[string]*Endpoint // by ID

	snap    atomic.Pointer[[]*Endpoint]
	models  atomic.Pointer[map[string]struct{}] // every model an endpoint advertises
	updated chan struct{}                       // closed and replaced on every change
	kick    chan struct{}                       // asks refreshLoop to run now
}

// New returns an empty pool. refresh is how often workers without discovery
// metadata are asked for their models.
func New(tel *telemetry.Telemetry, log *slog.Logger, refresh time.Duration) *Pool {
	p := &Pool{tel: tel, log: log, refresh: refresh, breaker: DefaultBreaker, creds: insecure.NewCredentials(), all: map[string]*Endpoint{}, updated: make(chan struct{}), kick: make(chan struct{}, 1)}
	p.snap.Store(&[]*Endpoint{})
	p.models.Store(&map[string]struct{}{})
	return p
}

// Serves reports whether some known endpoint (healthy or not) advertises
// model.
func (p *Pool) Serves(model string) bool {
	_, ok := (*p.models.Load())[model]
	return ok
}

// SetBreaker sets the circuit policy of routes; call before Run.
func (p *Pool) SetBreaker(b Breaker) { p.breaker = b }

// SetCredentials sets how workers are dialled (default plaintext), such as
// mTLS that checks each worker's identity; call before Run.
func (p *Pool) SetCredentials(c credentials.TransportCredentials) { p.creds = c }

// Endpoints returns the current endpoints sorted by address. Do not modify.
func (p *Pool) Endpoints() []*Endpoint { return *p.snap.Load() }

// Changed returns a channel closed at the next change of the set.
func (p *Pool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.updated
}

// Run applies discovery updates until ctx ends, then closes connections.
func (p *Pool) Run(ctx context.Context, w discovery.Watcher) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		p.mu.Lock()
		for id, e := range p.all {
			e.conn.Close()
			delete(p.all, id)
		}
		p.publishLocked()
		p.mu.Unlock()
	}()
	wg.Go(func() { p.refreshLoop(ctx) })
	for eps := range w.Watch(ctx) {
		p.apply(eps)
	}
}

func (p *Pool) apply(eps []discovery.Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[string]bool, len(eps))
	joined := 0
	for _, d := range eps {
		seen[d.ID] = true
		e, ok := p.all[d.ID]
		if ok && e.Address != d.Address {
			e.conn.Close()
			ok = false
		}
		if !ok {
			if _, _, err := net.SplitHostPort(d.Address); err != nil {
				p.log.Warn("bad endpoint address", "id", d.ID, "address", d.Address, "err", err)
				continue
			}
			e = p.newEndpoint(d)
			p.all[d.ID] = e
			joined++
			if len(eps) <= 16 {
				p.log.Info("endpoint joined", "id", d.ID, "address", d.Address, "healthy", d.Healthy)
			}
		}
		old := e.state.Load()
		st := &endpointState{models: d.Models, healthy: d.Healthy, fromDiscovery: d.Models != nil, discovered: d.Models, gen: old.gen}
		if st.fromDiscovery && old.fromWorker && sameModels(d.Models, old.discovered) {
			// The worker's own, newer answer stands until discovery's
			// record (or the worker's generation) changes.
			st.models, st.fromWorker, st.stale = old.models, true, old.stale
		}
		if !st.fromDiscovery {
			// Static lists know no models: keep what the worker last told us.
			st.models, st.healthy = old.models, old.healthy && d.Healthy
		}
		if old.healthy != st.healthy {
			p.log.Info("endpoint health changed", "id", d.ID, "healthy", st.healthy)
		}
		e.state.Store(st)
	}
	if joined > 0 && len(eps) > 16 {
		p.log.Info("endpoints joined", "count", joined, "total", len(p.all)) // one line, not thousands
	}
	for id, e := range p.all {
		if !seen[id] {
			p.log.Info("endpoint left", "id", id, "address", e.Address, "in_flight", e.InFlight())
			delete(p.all, id)
			go closeWhenIdle(e)
		}
	}
	p.publishLocked()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// newEndpoint makes an endpoint whose connection is set up on first use
// (a status poll or a request), so that a cold start from a registry of
// thousands of workers publishes them without waiting for thousands of
// client set-ups.
func (p *Pool) newEndpoint(d discovery.Endpoint) *Endpoint {
	conn := &lazyConn{dial: func() (*grpc.ClientConn, error) {
		return grpc.NewClient(d.Address,
			grpc.WithTransportCredentials(p.creds),
			// Fixed windows turn off grpc-go's BDP estimation, which
			// would ping the worker after nearly every token frame.
			grpc.WithInitialWindowSize(windowSize),
			grpc.WithInitialConnWindowSize(connWindowSize),
			// Token events are small: modest buffers keep a pool of
			// thousands of connections within tens of MiB.
			grpc.WithReadBufferSize(connBufferSize),
			grpc.WithWriteBufferSize(connBufferSize),
			// Events are received as frames and relayed as bytes.
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawcodec.New())),
			grpc.WithStatsHandler(otelgrpc.NewClientHandler(
				otelgrpc.WithTracerProvider(p.tel.TracerProvider), otelgrpc.WithPropagators(p.tel.Propagator))),
		)
	}}
	e := &Endpoint{ID: d.ID, Address: d.Address, conn: conn, Client: enginev1.NewEngineServiceClient(conn), breaker: &p.breaker}
	e.state.Store(&endpointState{})
	return e
}

// lazyConn is a gRPC client connection made on first use.
type lazyConn struct {
	dial func() (*grpc.ClientConn, error)

	mu     sync.Mutex
	cc     *grpc.ClientConn
	err    error
	closed bool
}

var _ grpc.ClientConnInterface = (*lazyConn)(nil)

func (l *lazyConn) get() (*grpc.ClientConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return nil, status.Error(codes.Unavailable, "endpoint left")
	case l.cc == nil && l.err == nil:
		l.cc, l.err = l.dial()
	}
	return l.cc, l.err
}

// Invoke performs a unary call.
func (l *lazyConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	cc, err := l.get()
	if err != nil {
		return err
	}
	return cc.Invoke(ctx, method, args, reply, opts...)
}

// NewStream opens a stream.
func (l *lazyConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cc, err := l.get()
	if err != nil {
		return nil, err
	}
	return cc.NewStream(ctx, desc, method, opts...)
}

// Close closes the connection if one was made; later calls fail.
func (l *lazyConn) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.cc != nil {
		return l.cc.Close()
	}
	return nil
}

// closeWhenIdle closes a departed endpoint's connection once the streams
// still running on it have ended (a worker that leaves gracefully drains
// them), or after drainLimit.
func closeWhenIdle(e *Endpoint) {
	deadline := time.Now().Add(drainLimit)
	for e.InFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	e.conn.Close()
}

// drainLimit bounds how long a departed endpoint's streams keep its
// connection open.
const drainLimit = 10 * time.Minute

func (p *Pool) publishLocked() {
	eps := make([]*Endpoint, 0, len(p.all))
	for _, e := range p.all {
		eps = append(eps, e)
	}
	slices.SortFunc(eps, func(a, b *Endpoint) int {
		if a.Address == b.Address {
			return strings.Compare(a.ID, b.ID)
		}
		return strings.Compare(a.Address, b.Address)
	})
	p.snap.Store(&eps)
	models := map[string]struct{}{}
	for _, e := range eps {
		for _, m := range e.Models() {
			models[m.GetName()] = struct{}{}
		}
	}
	p.models.Store(&models)
	close(p.updated)
	p.updated = make(chan struct{})
}

// refreshLoop asks workers that discovery gave no models for their models;
// a worker that does not answer is marked unhealthy until it does.
func (p *Pool) refreshLoop(ctx context.Context) {
	t := time.NewTicker(p.refresh)
	defer t.Stop()
	for {
		p.pollStatus(ctx)
		for _, e := range p.Endpoints() {
			st := e.state.Load()
			if st.fromDiscovery {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, p.refresh)
			resp, err := e.Client.ListModels(cctx, &enginev1.ListModelsRequest{})
			cancel()
			next := &endpointState{models: st.models}
			if err == nil {
				next.models, next.healthy = resp.GetModels(), true
				e.listFailures.Store(0)
			} else if ctx.Err() == nil {
				// A refused connection takes the worker out at once; a
				// slow answer (a pause, a busy worker) only the second time
				// in a row.
				misses := e.listFailures.Add(1)
				next.healthy = st.healthy && misses < 2 && status.Code(err) == codes.DeadlineExceeded
				if st.healthy && !next.healthy {
					p.log.Warn("endpoint unreachable", "address", e.Address, "err", err)
				}
			}
			changed := st.healthy != next.healthy || !sameModels(st.models, next.models)
			if e.state.CompareAndSwap(st, next) && changed {
				p.mu.Lock()
				p.publishLocked()
				p.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
	}
}

// syncModels replaces a discovered endpoint's models with the worker's own
// list after the worker loaded or unloaded models (its generation moved).
func (p *Pool) syncModels(ctx context.Context, e *Endpoint, old *endpointState, gen uint64) {
	resp, err := e.Client.ListModels(ctx, &enginev1.ListModelsRequest{})
	if err != nil {
		return
	}
	next := *old
	next.models, next.fromWorker, next.gen, next.stale = resp.GetModels(), true, gen, false
	if e.state.CompareAndSwap(old, &next) {
		p.log.Info("endpoint models changed", "id", e.ID, "models", len(next.models), "generation", gen)
		p.mu.Lock()
		p.publishLocked()
		p.mu.Unlock()
	}
}

// Forget drops model from e's models after the worker said it does not
// host it, and asks the refresh loop to run now. The worker's next change
// (or static refresh) brings the truth back.
func (p *Pool) Forget(e *Endpoint, model string) {
	for {
		old := e.state.Load()
		i := slices.IndexFunc(old.models, func(m *enginev1.ModelInfo) bool { return m.GetName() == model })
		if i < 0 {
			return
		}
		next := *old
		next.models = slices.Delete(slices.Clone(old.models), i, i+1)
		next.fromWorker, next.stale = old.fromDiscovery, old.fromDiscovery
		if e.state.CompareAndSwap(old, &next) {
			break
		}
	}
	p.log.Info("endpoint does not host the model any more", "id", e.ID, "model", model)
	p.mu.Lock()
	p.publishLocked()
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// pollStatus asks every healthy endpoint for its live load (GetStatus),
// statusParallel at a time, each bounded by the refresh interval.
func (p *Pool) pollStatus(ctx context.Context) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, statusParallel)
	for _, e := range p.Endpoints() {
		if !e.Healthy() {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, p.refresh)
			defer cancel()
			sent := e.InFlightNow()
			st, err := e.Client.GetStatus(cctx, &enginev1.GetStatusRequest{})
			if err != nil {
				return
			}
			e.SetPolled(st, sent)
			if old := e.state.Load(); old.fromDiscovery && (st.GetModelsGeneration() != old.gen || old.stale) {
				p.syncModels(cctx, e, old, st.GetModelsGeneration())
			}
		})
	}
	wg.Wait()
}
