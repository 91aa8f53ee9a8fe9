package enginehost

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Resident is a model in memory as a ModelTable holds it: a native engine's
// runner. The table calls Close with the model's entry locked, once.
type Resident interface {
	// Busy reports whether sequences run or wait on the model, which keeps
	// it from being unloaded for keep-alive or the memory budget.
	Busy() bool
	// Load reports the model's live counts (the table sets the name).
	Load() *enginev1.ModelLoad
	// Close frees the model; its running and queued requests end with
	// Unavailable.
	Close()
}

// TableOptions are a ModelTable's lifecycle limits.
type TableOptions struct {
	// KeepAlive unloads a model idle this long; 0 keeps models loaded.
	KeepAlive time.Duration
	// MemoryBudget bounds the estimated bytes of loaded models; 0 means no
	// limit. The least recently used idle models are evicted to make room.
	MemoryBudget uint64
}

// LoadFunc brings a registered model into memory. It is called with the
// model's entry locked; a caller that gives up cancels ctx.
type LoadFunc[S any, R Resident] func(ctx context.Context, m *TableModel[S, R]) (R, error)

// ModelTable is the registry of a native engine's models: registration,
// loading on demand under a memory budget, keep-alive unloading, unloading,
// listing and status. S is what the engine keeps about a registered model
// (its parsed header or graph), R its loaded form. Methods are safe for
// concurrent use; a model's load and unload are serialised by its entry's
// lock, which is never held while another entry's is waited for.
type ModelTable[S any, R Resident] struct {
	opt  TableOptions
	log  *slog.Logger
	load LoadFunc[S, R]
	// now is the clock for keep-alive and recency; tests replace it.
	now func() time.Time

	mu     sync.Mutex
	byName map[string]*TableModel[S, R]
	stop   chan struct{}
	wg     sync.WaitGroup
}

// TableModel is one registered model.
type TableModel[S any, R Resident] struct {
	Name string
	Spec S
	// Estimate is the model's memory when loaded, for the budget.
	Estimate uint64

	mu     sync.Mutex // serialises load and unload
	res    R          // guarded by mu; valid while loaded is set
	loaded atomic.Bool
	// lastUsed (unix nanoseconds) is read without mu, so that scanning
	// other entries never blocks on a model that is loading.
	lastUsed atomic.Int64
	info     atomic.Pointer[enginev1.ModelInfo]
}

// Info is the model's metadata as ListModels advertises it.
func (m *TableModel[S, R]) Info() *enginev1.ModelInfo { return m.info.Load() }

// SetInfo replaces the advertised metadata (a LoadFunc refining what is
// known only once loaded, such as the context length). Infos handed out
// are never changed in place.
func (m *TableModel[S, R]) SetInfo(info *enginev1.ModelInfo) { m.info.Store(info) }

// NewModelTable returns an empty table; with a keep-alive it runs an unload
// ticker until Close.
func NewModelTable[S any, R Resident](opt TableOptions, log *slog.Logger, load LoadFunc[S, R]) *ModelTable[S, R] {
	t := &ModelTable[S, R]{opt: opt, log: log, load: load, now: time.Now, byName: map[string]*TableModel[S, R]{}, stop: make(chan struct{})}
	if opt.KeepAlive > 0 {
		t.wg.Go(t.keepAliveLoop)
	}
	return t
}

// Add registers a model without loading it. A name that is not valid or
// already taken is refused.
func (t *ModelTable[S, R]) Add(name string, spec S, info *enginev1.ModelInfo, estimate uint64) error {
	if err := ValidateModelName(name); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.byName[name]; dup {
		return rpcerr.FailedPrecondition("model %q is already registered", name)
	}
	m := &TableModel[S, R]{Name: name, Spec: spec, Estimate: estimate}
	m.info.Store(info)
	t.byName[name] = m
	return nil
}

// Model returns a registered model, or NotFound.
func (t *ModelTable[S, R]) Model(name string) (*TableModel[S, R], error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.byName[name]
	if !ok {
		return nil, rpcerr.NotFound("model %q is not registered", name)
	}
	return m, nil
}

func (t *ModelTable[S, R]) all() []*TableModel[S, R] {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*TableModel[S, R], 0, len(t.byName))
	for _, m := range t.byName {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *TableModel[S, R]) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Models lists registered models by name, loaded or not.
func (t *ModelTable[S, R]) Models() []*enginev1.ModelInfo {
	all := t.all()
	out := make([]*enginev1.ModelInfo, len(all))
	for i, m := range all {
		out[i] = m.Info()
	}
	return out
}

// Acquire returns the model loaded, loading it first (and evicting others
// under the memory budget) if needed.
func (t *ModelTable[S, R]) Acquire(ctx context.Context, name string) (R, error) {
	var zero R
	m, err := t.Model(name)
	if err != nil {
		return zero, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, err := t.Model(name); err != nil || cur != m {
		return zero, rpcerr.NotFound("model %q is not registered", name) // removed meanwhile
	}
	m.lastUsed.Store(t.now().UnixNano())
	if m.loaded.Load() {
		return m.res, nil
	}
	if err := t.makeRoom(m); err != nil {
		return zero, err
	}
	res, err := t.load(ctx, m)
	if err != nil {
		return zero, err
	}
	m.res = res
	m.loaded.Store(true)
	return res, nil
}

// Peek calls f with the model's loaded form while holding its entry, so that
// it cannot be unloaded meanwhile; false when the model is not loaded.
func (t *ModelTable[S, R]) Peek(name string, f func(R)) bool {
	m, err := t.Model(name)
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.loaded.Load() {
		return false
	}
	f(m.res)
	return true
}

// Loaded reports whether a model is in memory.
func (t *ModelTable[S, R]) Loaded(name string) bool {
	m, err := t.Model(name)
	return err == nil && m.loaded.Load()
}

// Preload loads every registered model (readiness: call before serving).
func (t *ModelTable[S, R]) Preload(ctx context.Context) error {
	for _, m := range t.all() {
		if _, err := t.Acquire(ctx, m.Name); err != nil {
			return fmt.Errorf("preload %s: %w", m.Name, err)
		}
	}
	return nil
}

// AddAndLoad registers a model and loads it; a model that fails to load is
// not left registered.
func (t *ModelTable[S, R]) AddAndLoad(ctx context.Context, name string, spec S, info *enginev1.ModelInfo, estimate uint64) (*enginev1.ModelInfo, error) {
	if err := t.Add(name, spec, info, estimate); err != nil {
		return nil, err
	}
	if _, err := t.Acquire(ctx, name); err != nil {
		t.mu.Lock()
		delete(t.byName, name)
		t.mu.Unlock()
		return nil, err
	}
	m, err := t.Model(name)
	if err != nil {
		return nil, err // unloaded by another caller meanwhile
	}
	return m.Info(), nil
}

// Remove unregisters a model and unloads it; its running requests end with
// Unavailable.
func (t *ModelTable[S, R]) Remove(name string) error {
	t.mu.Lock()
	m, ok := t.byName[name]
	delete(t.byName, name)
	t.mu.Unlock()
	if !ok {
		return rpcerr.NotFound("model %q is not registered", name)
	}
	m.mu.Lock()
	m.unload()
	m.mu.Unlock()
	return nil
}

// Status sums the loaded models' load; unloaded models report zeros.
func (t *ModelTable[S, R]) Status() *enginev1.GetStatusResponse {
	st := &enginev1.GetStatusResponse{}
	for _, m := range t.all() {
		ml := &enginev1.ModelLoad{}
		m.mu.Lock()
		if m.loaded.Load() {
			ml = m.res.Load()
		}
		m.mu.Unlock()
		ml.Model = m.Name
		AddLoad(st, ml)
	}
	return st
}

// Close stops the keep-alive ticker and unloads every model.
func (t *ModelTable[S, R]) Close() {
	close(t.stop)
	t.wg.Wait()
	for _, m := range t.all() {
		m.mu.Lock()
		m.unload()
		m.mu.Unlock()
	}
}

// unload frees the model; the caller holds m.mu.
func (m *TableModel[S, R]) unload() {
	if !m.loaded.Load() {
		return
	}
	m.res.Close()
	var zero R
	m.res = zero
	m.loaded.Store(false)
}

// makeRoom evicts least recently used idle models until m fits the budget.
// The caller holds m.mu; other entries are only tried, never waited for.
func (t *ModelTable[S, R]) makeRoom(m *TableModel[S, R]) error {
	budget := t.opt.MemoryBudget
	if budget == 0 {
		return nil
	}
	if m.Estimate > budget {
		return rpcerr.ResourceExhausted(0, "model %q needs about %d MiB, more than the memory budget of %d MiB", m.Name, m.Estimate>>20, budget>>20)
	}
	for {
		var used uint64
		var others []*TableModel[S, R]
		for _, o := range t.all() {
			if o != m && o.loaded.Load() {
				used += o.Estimate
				others = append(others, o)
			}
		}
		if used+m.Estimate <= budget {
			return nil
		}
		slices.SortFunc(others, func(a, b *TableModel[S, R]) int { return cmp.Compare(a.lastUsed.Load(), b.lastUsed.Load()) })
		evicted := false
		for _, o := range others {
			if !o.mu.TryLock() {
				continue // loading or busy being unloaded: not idle
			}
			if o.loaded.Load() && !o.res.Busy() {
				t.log.Info("evicting model for memory budget", "model", o.Name, "for", m.Name)
				o.unload()
				evicted = true
			}
			o.mu.Unlock()
			if evicted {
				break
			}
		}
		if !evicted {
			return rpcerr.ResourceExhausted(5*time.Second, "model %q needs about %d MiB; %d MiB of the %d MiB budget are held by busy models", m.Name, m.Estimate>>20, used>>20, budget>>20)
		}
	}
}

func (t *ModelTable[S, R]) keepAliveLoop() {
	tick := time.NewTicker(max(t.opt.KeepAlive/4, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		for _, m := range t.all() {
			m.mu.Lock()
			idle := t.now().Sub(time.Unix(0, m.lastUsed.Load()))
			if m.loaded.Load() && !m.res.Busy() && idle >= t.opt.KeepAlive {
				t.log.Info("unloading idle model", "model", m.Name, "idle", idle.Round(time.Millisecond))
				m.unload()
			}
			m.mu.Unlock()
		}
	}
}
