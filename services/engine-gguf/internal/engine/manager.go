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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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

// Manager hosts models. Create it with New and Close it at exit.
type Manager struct {
	opt    Options
	log    *slog.Logger
	models *enginehost.ModelTable[spec, *runner]
}

var _ enginehost.Backend = (*Manager)(nil)

// New returns a manager; with a keep-alive it runs an unload ticker.
func New(opt Options, log *slog.Logger) *Manager {
	m := &Manager{opt: opt, log: log}
	m.models = enginehost.NewModelTable(enginehost.TableOptions{KeepAlive: opt.KeepAlive, MemoryBudget: opt.MemoryBudget}, log, m.load)
	return m
}

// Close unloads every model.
func (m *Manager) Close() { m.models.Close() }

// spec is a registered model: its file and the header read from it.
type spec struct {
	path   string
	header *gguf.File
}

// Register validates a GGUF file and adds it under name without loading it.
// A corrupt file is refused with an InvalidArgument error naming the defect.
func (m *Manager) Register(name, path string) (*enginev1.ModelInfo, error) {
	s, err := m.read(name, path)
	if err != nil {
		return nil, err
	}
	info, estimate := m.describe(name, s.header)
	if err := m.models.Add(name, s, info, estimate); err != nil {
		return nil, err
	}
	return info, nil
}

// read validates a model name and reads the header of its GGUF file.
func (m *Manager) read(name, path string) (spec, error) {
	if err := enginehost.ValidateModelName(name); err != nil {
		return spec{}, err
	}
	h, err := gguf.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return spec{}, rpcerr.NotFound("model file %s does not exist", path)
		}
		return spec{}, rpcerr.InvalidArgument("model %q: %v", name, err)
	}
	if h.String("general.architecture") == "" {
		return spec{}, rpcerr.InvalidArgument("model %q: %s has no general.architecture", name, path)
	}
	if len(h.Tensors) == 0 {
		return spec{}, rpcerr.InvalidArgument("model %q: %s holds no tensors (a vocabulary-only file?)", name, path)
	}
	return spec{path: path, header: h}, nil
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
		// Tools need a chat template to render them (RenderChat).
		Capabilities: &enginev1.Capabilities{StructuredOutput: true, Tools: enginehost.TemplateRendersTools(h.String("tokenizer.chat_template")) == nil, Logprobs: true},
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

// Preload loads every registered model (readiness: call before serving).
func (m *Manager) Preload(ctx context.Context) error { return m.models.Preload(ctx) }

// load brings a registered model into memory: weights, then a context for
// its slots; the advertised context length becomes the one the context has.
func (m *Manager) load(ctx context.Context, e *enginehost.TableModel[spec, *runner]) (*runner, error) {
	began := time.Now()
	next := 0.25
	path := e.Spec.path
	model, err := llama.LoadModel(path, llama.ModelParams{GPULayers: m.opt.GPULayers, Progress: func(p float32) bool {
		if float64(p) >= next {
			m.log.Info("loading model", "model", e.Name, "progress", fmt.Sprintf("%.0f%%", p*100))
			next += 0.25
		}
		return ctx.Err() == nil // a caller that gives up aborts the load
	}})
	if err != nil {
		return nil, rpcerr.FailedPrecondition("model %q: %v", e.Name, err)
	}
	opt := m.opt
	opt.CtxPerSeq = int(e.Info().GetContextLength())
	r, err := newRunner(e.Name, model, opt)
	if err != nil {
		model.Close()
		return nil, rpcerr.ResourceExhausted(10*time.Second, "model %q: %v", e.Name, err)
	}
	info := proto.CloneOf(e.Info())
	info.ContextLength = int32(r.ctxPerSeq())
	e.SetInfo(info)
	m.log.Info("model loaded", "model", e.Name, "desc", model.Desc(), "ctx_per_seq", r.ctxPerSeq(),
		"parallel", opt.Parallel, "took", time.Since(began).Round(time.Millisecond))
	return r, nil
}

// Loaded reports whether a model is in memory.
func (m *Manager) Loaded(name string) bool { return m.models.Loaded(name) }

// Models lists registered models, loaded or not.
func (m *Manager) Models() []*enginev1.ModelInfo { return m.models.Models() }

// Tokenize renders chat prompts with the model's template and tokenizes.
func (m *Manager) Tokenize(ctx context.Context, name string, p *generationv1.Prompt) ([]uint32, error) {
	r, err := m.models.Acquire(ctx, name)
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
		var text string
		if enginehost.UsesTools(k.Chat) {
			// llama.cpp's built-in templates know no tools: the
			// model's own Jinja template renders them.
			if text, err = enginehost.RenderChat(r.model.ChatTemplate(), r.model.EOSText(), k.Chat); err != nil {
				return nil, err
			}
		} else {
			msgs := make([]llama.ChatMessage, len(k.Chat.GetMessages()))
			for i, msg := range k.Chat.GetMessages() {
				msgs[i] = llama.ChatMessage{Role: strings.ToLower(strings.TrimPrefix(msg.GetRole().String(), "ROLE_")), Content: msg.GetContent()}
			}
			if text, err = r.model.ApplyChatTemplate("", msgs, true); err != nil {
				return nil, rpcerr.FailedPrecondition("model %q: %v", name, err)
			}
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
	var piece []byte
	m.models.Peek(name, func(r *runner) { piece = r.model.Piece(int32(id)) })
	return piece
}

// Start queues a sequence on the model's runner.
func (m *Manager) Start(ctx context.Context, name string, prompt []uint32, s enginehost.Sampling) (enginehost.Sequence, error) {
	r, err := m.models.Acquire(ctx, name)
	if err != nil {
		return nil, err
	}
	toks := make([]int32, len(prompt))
	for i, t := range prompt {
		toks[i] = int32(t)
	}
	return r.start(toks, s)
}

// Status sums the runners' load.
func (m *Manager) Status() *enginev1.GetStatusResponse { return m.models.Status() }

// Load registers and loads a model from a file path.
func (m *Manager) Load(ctx context.Context, name, source string) (*enginev1.ModelInfo, error) {
	if source == "" {
		return nil, rpcerr.InvalidArgument("source must name a GGUF file")
	}
	s, err := m.read(name, source)
	if err != nil {
		return nil, err
	}
	info, estimate := m.describe(name, s.header)
	return m.models.AddAndLoad(ctx, name, s, info, estimate)
}

// Unload removes a model; its running requests end with Unavailable.
func (m *Manager) Unload(_ context.Context, name string) error { return m.models.Remove(name) }

// Embed returns one L2-normalised, mean-pooled embedding per input.
func (m *Manager) Embed(ctx context.Context, name string, inputs []string) ([][]float32, int, error) {
	r, err := m.models.Acquire(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	emb, err := r.embedder()
	if status.Code(err) == codes.Unavailable {
		return nil, 0, err
	}
	if err != nil {
		return nil, 0, rpcerr.ResourceExhausted(10*time.Second, "model %q embeddings: %v", name, err)
	}
	return emb.embed(ctx, inputs)
}
