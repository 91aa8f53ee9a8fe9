// Package engine is engine-gguf's backend: a Manager of several GGUF models,
// each loaded on demand into a runner whose single goroutine owns the
// llama.cpp context and batches every active sequence into one decode per
// step (continuous batching), with per-slot prompt-prefix reuse.
//
// Model lifecycle: a model is registered (file validated in Go) and loaded
// (weights and context in memory). Loading happens at start-up and on
// demand; idle models unload after a keep-alive period, and the least
// recently used idle ones are evicted to stay within a memory budget.
// Manager methods are safe for concurrent use.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/gguf"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/llama"
)

// Options configure every model's runner.
type Options struct {
	// Parallel is the number of sequences decoded together per model.
	Parallel int
	// CtxPerSeq is each sequence's context length (capped by the model's).
	CtxPerSeq int
	// Batch is the most tokens one decode step carries.
	Batch int
	// PrefillChunk bounds one prompt's tokens per step, so long prompts do
	// not stall decoding sequences.
	PrefillChunk int
	// Queue bounds requests waiting for a slot, per model.
	Queue int
	// Threads for decoding and prompt processing.
	Threads, ThreadsBatch int
	// KVUnified: see llama.ContextParams.
	KVUnified bool
	// GPULayers offloaded (-1: all).
	GPULayers int
	// KeepAlive unloads a model idle this long; 0 keeps models loaded.
	KeepAlive time.Duration
	// MemoryBudget bounds the estimated bytes of loaded models (weights and
	// KV cache); 0 means no limit.
	MemoryBudget uint64
	// Quality and prices advertised for every model.
	Quality, CostPer1KInput, CostPer1KOutput float64
}

// DefaultOptions are sensible for a CPU worker. Decoding uses one core less
// than the machine has: ggml's threads spin at every barrier, and a core
// taken by the gRPC side (or anything else) stalls all of them.
func DefaultOptions() Options {
	n := runtime.NumCPU()
	return Options{Parallel: 4, CtxPerSeq: 2048, Batch: 512, PrefillChunk: 256, Queue: 64,
		Threads: max(1, n-1), ThreadsBatch: n, Quality: 0.5}
}

type entry struct {
	name, path string
	header     *gguf.File
	info       *enginev1.ModelInfo
	estimate   uint64

	mu    sync.Mutex // serialises load/unload of this entry
	run   *runner    // nil while unloaded; guarded by mu
	embed *embedder  // guarded by mu

	// Read without mu, so that scanning other entries never blocks on a
	// model that is loading.
	isLoaded atomic.Bool
	lastUsed atomic.Int64 // unix nanoseconds
}

// Manager hosts models. Create it with New and Close it at exit.
type Manager struct {
	opt    Options
	log    *slog.Logger
	now    func() time.Time
	mu     sync.Mutex
	byName map[string]*entry
	stop   chan struct{}
	wg     sync.WaitGroup
}

var _ enginehost.Backend = (*Manager)(nil)

// New returns a manager; with a keep-alive it runs an unload ticker.
func New(opt Options, log *slog.Logger) *Manager {
	m := &Manager{opt: opt, log: log, now: time.Now, byName: map[string]*entry{}, stop: make(chan struct{})}
	if opt.KeepAlive > 0 {
		m.wg.Go(m.keepAliveLoop)
	}
	return m
}

// entries snapshots the registered models.
func (m *Manager) entries() []*entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*entry, 0, len(m.byName))
	for _, e := range m.byName {
		out = append(out, e)
	}
	return out
}

// Close unloads every model.
func (m *Manager) Close() {
	close(m.stop)
	m.wg.Wait()
	entries := m.entries()
	for _, e := range entries {
		e.mu.Lock()
		e.unload()
		e.mu.Unlock()
	}
}

// Register validates a GGUF file and adds it under name without loading it.
// A corrupt file is refused with an InvalidArgument error naming the defect.
func (m *Manager) Register(name, path string) (*enginev1.ModelInfo, error) {
	if err := enginehost.ValidateModelName(name); err != nil {
		return nil, err
	}
	h, err := gguf.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, rpcerr.NotFound("model file %s does not exist", path)
		}
		return nil, rpcerr.InvalidArgument("model %q: %v", name, err)
	}
	arch := h.String("general.architecture")
	if arch == "" {
		return nil, rpcerr.InvalidArgument("model %q: %s has no general.architecture", name, path)
	}
	if len(h.Tensors) == 0 {
		return nil, rpcerr.InvalidArgument("model %q: %s holds no tensors (a vocabulary-only file?)", name, path)
	}
	e := &entry{name: name, path: path, header: h}
	e.info, e.estimate = m.describe(name, h)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.byName[name]; dup {
		return nil, rpcerr.FailedPrecondition("model %q is already registered", name)
	}
	m.byName[name] = e
	return e.info, nil
}

// describe reads metadata from the header and estimates memory: tensor bytes
// plus an f16 KV cache for every slot.
func (m *Manager) describe(name string, h *gguf.File) (*enginev1.ModelInfo, uint64) {
	arch := h.String("general.architecture")
	ctxTrain, _ := h.Uint(arch + ".context_length")
	ctx := uint64(m.opt.CtxPerSeq)
	if ctxTrain > 0 && ctxTrain < ctx {
		ctx = ctxTrain
	}
	var weights uint64
	quant := map[string]uint64{}
	for _, t := range h.Tensors {
		weights += t.Size
		if len(t.Dims) > 1 {
			quant[t.Type.String()] += t.Size
		}
	}
	// The quantization is the type holding the most 2-D weight bytes.
	q, most := "", uint64(0)
	for k, v := range quant {
		if v > most || (v == most && k < q) {
			q, most = k, v
		}
	}
	layers, _ := h.Uint(arch + ".block_count")
	embd, _ := h.Uint(arch + ".embedding_length")
	heads, _ := h.Uint(arch + ".attention.head_count")
	kvHeads, ok := h.Uint(arch + ".attention.head_count_kv")
	if !ok {
		kvHeads = heads
	}
	var kv uint64
	if heads > 0 {
		kv = layers * ctx * uint64(m.opt.Parallel) * (embd / heads * kvHeads) * 2 * 2
	}
	device := "cpu"
	if m.opt.GPULayers != 0 {
		device = "gpu"
	}
	return &enginev1.ModelInfo{
		Name: name, Format: "gguf", ContextLength: int32(ctx), Quality: m.opt.Quality,
		CostPer_1KInput: m.opt.CostPer1KInput, CostPer_1KOutput: m.opt.CostPer1KOutput,
		Device: device, MaxConcurrency: int32(m.opt.Parallel), Architecture: arch,
		Parameters: int64(h.Parameters()), Quantization: q,
	}, weights + kv
}

// RegisterDir registers every *.gguf file of dir under its base name.
// Files that fail validation are logged and skipped.
func (m *Manager) RegisterDir(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.gguf"))
	if err != nil {
		return err
	}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".gguf")
		if _, err := m.Register(name, p); err != nil {
			m.log.Error("skipping model", "path", p, "err", err)
		}
	}
	return nil
}

func (m *Manager) entry(name string) (*entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.byName[name]
	if !ok {
		return nil, rpcerr.NotFound("model %q is not registered", name)
	}
	return e, nil
}

// Preload loads every registered model (readiness: call before serving).
func (m *Manager) Preload(ctx context.Context) error {
	for _, info := range m.Models() {
		if _, err := m.acquire(ctx, info.GetName()); err != nil {
			return fmt.Errorf("preload %s: %w", info.GetName(), err)
		}
	}
	return nil
}

// acquire returns the model's runner, loading it (and evicting others under
// the memory budget) if needed.
func (m *Manager) acquire(ctx context.Context, name string) (*runner, error) {
	e, err := m.entry(name)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastUsed.Store(m.now().UnixNano())
	if e.run != nil {
		return e.run, nil
	}
	if err := m.makeRoom(e); err != nil {
		return nil, err
	}
	began := m.now()
	next := 0.25
	model, err := llama.LoadModel(e.path, llama.ModelParams{GPULayers: m.opt.GPULayers, Progress: func(p float32) bool {
		if float64(p) >= next {
			m.log.Info("loading model", "model", name, "progress", fmt.Sprintf("%.0f%%", p*100))
			next += 0.25
		}
		return ctx.Err() == nil // a caller that gives up aborts the load
	}})
	if err != nil {
		return nil, rpcerr.FailedPrecondition("model %q: %v", name, err)
	}
	opt := m.opt
	opt.CtxPerSeq = int(e.info.GetContextLength())
	r, err := newRunner(name, model, opt)
	if err != nil {
		model.Close()
		return nil, rpcerr.ResourceExhausted(10*time.Second, "model %q: %v", name, err)
	}
	e.info.ContextLength = int32(r.ctxPerSeq())
	e.run = r
	e.isLoaded.Store(true)
	m.log.Info("model loaded", "model", name, "desc", model.Desc(), "ctx_per_seq", r.ctxPerSeq(),
		"parallel", opt.Parallel, "took", m.now().Sub(began).Round(time.Millisecond))
	return r, nil
}

// makeRoom evicts least recently used idle models until e fits the budget.
// The caller holds e.mu.
func (m *Manager) makeRoom(e *entry) error {
	if m.opt.MemoryBudget == 0 {
		return nil
	}
	if e.estimate > m.opt.MemoryBudget {
		return rpcerr.ResourceExhausted(0, "model %q needs about %d MiB, more than the memory budget of %d MiB", e.name, e.estimate>>20, m.opt.MemoryBudget>>20)
	}
	for {
		m.mu.Lock()
		var used uint64
		var idle []*entry
		for _, o := range m.byName {
			if o == e || !o.isLoaded.Load() {
				continue
			}
			used += o.estimate
			idle = append(idle, o)
		}
		m.mu.Unlock()
		if used+e.estimate <= m.opt.MemoryBudget {
			return nil
		}
		slices.SortFunc(idle, func(a, b *entry) int { return cmp.Compare(a.lastUsed.Load(), b.lastUsed.Load()) })
		evicted := false
		for _, o := range idle {
			if o.mu.TryLock() {
				if o.run != nil && !o.run.busy() {
					m.log.Info("evicting model for memory budget", "model", o.name, "for", e.name)
					o.unload()
					evicted = true
				}
				o.mu.Unlock()
			}
			if evicted {
				break
			}
		}
		if !evicted {
			return rpcerr.ResourceExhausted(5*time.Second, "model %q needs about %d MiB; %d MiB of the %d MiB budget are held by busy models", e.name, e.estimate>>20, used>>20, m.opt.MemoryBudget>>20)
		}
	}
}

// unload frees the runner and embedder; the caller holds e.mu.
func (e *entry) unload() {
	if e.embed != nil {
		e.embed.close()
		e.embed = nil
	}
	if e.run != nil {
		e.run.close()
		e.run = nil
	}
	e.isLoaded.Store(false)
}

func (m *Manager) keepAliveLoop() {
	t := time.NewTicker(max(m.opt.KeepAlive/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		entries := m.entries()
		for _, e := range entries {
			e.mu.Lock()
			idle := m.now().Sub(time.Unix(0, e.lastUsed.Load()))
			if e.run != nil && !e.run.busy() && idle >= m.opt.KeepAlive {
				m.log.Info("unloading idle model", "model", e.name, "idle", idle.Round(time.Millisecond))
				e.unload()
			}
			e.mu.Unlock()
		}
	}
}

// Loaded reports whether a model is in memory.
func (m *Manager) Loaded(name string) bool {
	e, err := m.entry(name)
	return err == nil && e.isLoaded.Load()
}

// Models lists registered models, loaded or not.
func (m *Manager) Models() []*enginev1.ModelInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*enginev1.ModelInfo, 0, len(m.byName))
	for _, e := range m.byName {
		out = append(out, e.info)
	}
	slices.SortFunc(out, func(a, b *enginev1.ModelInfo) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// Tokenize renders chat prompts with the model's template and tokenizes.
func (m *Manager) Tokenize(ctx context.Context, name string, p *generationv1.Prompt) ([]uint32, error) {
	r, err := m.acquire(ctx, name)
	if err != nil {
		return nil, err
	}
	var toks []int32
	switch k := p.GetKind().(type) {
	case *generationv1.Prompt_Tokens:
		ids := k.Tokens.GetIds()
		for i, id := range ids {
			if int(id) >= r.model.NVocab() {
				return nil, rpcerr.InvalidArgument("prompt.tokens.ids[%d] = %d is outside the vocabulary of %d tokens", i, id, r.model.NVocab())
			}
		}
		return slices.Clone(ids), nil
	case *generationv1.Prompt_Chat:
		msgs := make([]llama.ChatMessage, len(k.Chat.GetMessages()))
		for i, msg := range k.Chat.GetMessages() {
			msgs[i] = llama.ChatMessage{Role: strings.ToLower(strings.TrimPrefix(msg.GetRole().String(), "ROLE_")), Content: msg.GetContent()}
		}
		text, err := r.model.ApplyChatTemplate("", msgs, true)
		if err != nil {
			return nil, rpcerr.FailedPrecondition("model %q: %v", name, err)
		}
		if toks, err = r.model.Tokenize(text, true, true); err != nil {
			return nil, err
		}
	default:
		if toks, err = r.model.Tokenize(p.GetText(), true, false); err != nil {
			return nil, err
		}
	}
	out := make([]uint32, len(toks))
	for i, t := range toks {
		out[i] = uint32(t)
	}
	return out, nil
}

// Piece returns a token's bytes, or nil when the model is not loaded.
func (m *Manager) Piece(name string, id uint32) []byte {
	e, err := m.entry(name)
	if err != nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.run == nil {
		return nil
	}
	return e.run.model.Piece(int32(id))
}

// Start queues a sequence on the model's runner.
func (m *Manager) Start(ctx context.Context, name string, prompt []uint32, s enginehost.Sampling) (enginehost.Sequence, error) {
	r, err := m.acquire(ctx, name)
	if err != nil {
		return nil, err
	}
	toks := make([]int32, len(prompt))
	for i, t := range prompt {
		toks[i] = int32(t)
	}
	return r.start(ctx, toks, s)
}

// Status sums the runners' load.
func (m *Manager) Status() *enginev1.GetStatusResponse {
	st := &enginev1.GetStatusResponse{}
	for _, info := range m.Models() {
		e, err := m.entry(info.GetName())
		if err != nil {
			continue
		}
		e.mu.Lock()
		ml := &enginev1.ModelLoad{Model: e.name}
		if r := e.run; r != nil {
			ml.ActiveSequences = max(r.active.Load()-r.closing.Load(), 0) // closed streams count no more
			ml.QueueDepth = r.queued.Load()
			ml.KvCacheUsage = float64(r.kvTokens.Load()) / float64(r.ctx.NCtx())
			ml.TokensPerSecond = r.rate.PerSecond()
		}
		e.mu.Unlock()
		enginehost.AddLoad(st, ml)
	}
	return st
}

// Load registers and loads a model from a file path.
func (m *Manager) Load(ctx context.Context, name, source string) (*enginev1.ModelInfo, error) {
	if source == "" {
		return nil, rpcerr.InvalidArgument("source must name a GGUF file")
	}
	if _, err := m.Register(name, source); err != nil {
		return nil, err
	}
	if _, err := m.acquire(ctx, name); err != nil {
		m.mu.Lock()
		delete(m.byName, name)
		m.mu.Unlock()
		return nil, err
	}
	e, err := m.entry(name)
	if err != nil {
		return nil, err
	}
	return e.info, nil
}

// Unload removes a model; its running requests end with Unavailable.
func (m *Manager) Unload(_ context.Context, name string) error {
	m.mu.Lock()
	e, ok := m.byName[name]
	delete(m.byName, name)
	m.mu.Unlock()
	if !ok {
		return rpcerr.NotFound("model %q is not registered", name)
	}
	e.mu.Lock()
	e.unload()
	e.mu.Unlock()
	return nil
}

// Embed returns one L2-normalised, mean-pooled embedding per input.
func (m *Manager) Embed(ctx context.Context, name string, inputs []string) ([][]float32, int, error) {
	if _, err := m.acquire(ctx, name); err != nil {
		return nil, 0, err
	}
	e, err := m.entry(name)
	if err != nil {
		return nil, 0, err
	}
	e.mu.Lock()
	if e.run == nil {
		e.mu.Unlock()
		return nil, 0, rpcerr.Unavailable("model %q was unloaded", name)
	}
	if e.embed == nil {
		if e.embed, err = newEmbedder(e.run.model, int(e.info.GetContextLength()), m.opt); err != nil {
			e.mu.Unlock()
			return nil, 0, rpcerr.ResourceExhausted(10*time.Second, "model %q embeddings: %v", name, err)
		}
	}
	emb := e.embed
	e.mu.Unlock()
	return emb.embed(ctx, inputs)
}
