// Package engine is engine-onnx's backend: a Manager of ONNX causal LMs,
// each loaded into a runner whose single goroutine owns the ONNX Runtime
// session and batches the decoding sequences along the batch dimension.
//
// A model is a directory in the layout of Hugging Face's ONNX exports:
// model.onnx (a decoder with past_key_values inputs and present outputs),
// tokenizer.json (GPT-2-style byte-level BPE), and optionally config.json
// and tokenizer_config.json. Registration reads and checks the graph's
// declared shapes without loading weights; loading creates the session.
// Manager methods are safe for concurrent use.
package engine

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/ort"
)

// Options configure every model's runner.
type Options struct {
	// Parallel is the number of sequences decoded together per model.
	Parallel int
	// CtxPerSeq caps each sequence's context (and the model's).
	CtxPerSeq int
	// PrefillChunk bounds the prompt tokens of one prefill step.
	PrefillChunk int
	// Queue bounds requests waiting for a slot, per model.
	Queue int
	// PrefixCache bounds the bytes of finished sequences' KV caches kept
	// per model for prompt-prefix reuse (0: no reuse).
	PrefixCache int
	// Threads is ONNX Runtime's intra-op thread count.
	Threads int
	// CUDADevice runs sessions on this GPU (-1: CPU).
	CUDADevice int
	// Quality and prices advertised for every model.
	Quality, CostPer1KInput, CostPer1KOutput float64
}

// DefaultOptions are sensible for a CPU worker.
func DefaultOptions() Options {
	return Options{Parallel: 4, CtxPerSeq: 2048, PrefillChunk: 256, Queue: 64, PrefixCache: 256 << 20,
		Threads: runtime.NumCPU(), CUDADevice: -1, Quality: 0.5}
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.Parallel <= 0 || o.CtxPerSeq <= 0 || o.PrefillChunk <= 0 || o.Queue < 0 || o.Threads <= 0 || o.PrefixCache < 0 {
		return errors.New("-parallel, -ctx, -prefill-chunk and -threads must be positive, -queue and -prefix-cache not negative")
	}
	if o.Quality < 0 || o.Quality > 1 {
		return errors.New("-quality must be in [0, 1]")
	}
	return nil
}

// Manager hosts models. Create it with New and Close it at exit.
type Manager struct {
	opt    Options
	log    *slog.Logger
	models *enginehost.ModelTable[*spec, *runner]
}

var _ enginehost.Backend = (*Manager)(nil)

// New returns a manager. ort.Init must have succeeded.
func New(opt Options, log *slog.Logger) *Manager {
	m := &Manager{opt: opt, log: log}
	m.models = enginehost.NewModelTable(enginehost.TableOptions{}, log, m.load)
	return m
}

// Close unloads every model.
func (m *Manager) Close() { m.models.Close() }

// Register checks a model directory (or its model.onnx) and adds it under
// name without loading it. A graph or tokenizer the engine cannot serve is
// refused with InvalidArgument naming the defect.
func (m *Manager) Register(name, path string) (*enginev1.ModelInfo, error) {
	s, info, err := m.read(name, path)
	if err != nil {
		return nil, err
	}
	if err := m.models.Add(name, s, info, 0); err != nil {
		return nil, err
	}
	return info, nil
}

// read checks a model name and reads the model's graph and tokenizer.
func (m *Manager) read(name, path string) (*spec, *enginev1.ModelInfo, error) {
	if err := enginehost.ValidateModelName(name); err != nil {
		return nil, nil, err
	}
	s, err := readSpec(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, rpcerr.NotFound("model %q: %v", name, err)
		}
		return nil, nil, rpcerr.InvalidArgument("model %q: %v", name, err)
	}
	device := "cpu"
	if m.opt.CUDADevice >= 0 {
		device = "gpu"
	}
	params := int64(s.fileBytes / 4) // float32 weights dominate the file
	if s.enc != nil {
		return s, &enginev1.ModelInfo{
			Name: name, Format: "onnx", ContextLength: int32(s.ctx), Quality: m.opt.Quality,
			CostPer_1KInput: m.opt.CostPer1KInput, Device: device, MaxConcurrency: int32(m.opt.Parallel),
			Architecture: s.arch, Parameters: params, Quantization: "F32",
			Capabilities: &enginev1.Capabilities{Embeddings: true, EmbeddingsOnly: true},
		}, nil
	}
	return s, &enginev1.ModelInfo{
		Name: name, Format: "onnx", ContextLength: int32(min(s.ctx, m.opt.CtxPerSeq)), Quality: m.opt.Quality,
		CostPer_1KInput: m.opt.CostPer1KInput, CostPer_1KOutput: m.opt.CostPer1KOutput,
		Device: device, MaxConcurrency: int32(m.opt.Parallel), Architecture: s.arch,
		Parameters: params, Quantization: "F32",
		// Tools need a chat template to render them (RenderChat).
		Capabilities: &enginev1.Capabilities{StructuredOutput: true, Tools: enginehost.TemplateRendersTools(s.chatTemplate) == nil, Logprobs: true},
	}, nil
}

// RegisterDir registers every subdirectory of dir that holds a model.onnx,
// under the subdirectory's name. Models that fail checks are logged and
// skipped.
func (m *Manager) RegisterDir(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*", "model.onnx"))
	if err != nil {
		return err
	}
	for _, p := range paths {
		name := filepath.Base(filepath.Dir(p))
		if _, err := m.Register(name, filepath.Dir(p)); err != nil {
			m.log.Error("skipping model", "path", p, "err", err)
		}
	}
	return nil
}

// Preload loads every registered model (readiness: call before serving).
func (m *Manager) Preload(ctx context.Context) error { return m.models.Preload(ctx) }

// load creates a registered model's session and runner.
func (m *Manager) load(_ context.Context, e *enginehost.TableModel[*spec, *runner]) (*runner, error) {
	began := time.Now()
	s := e.Spec
	o := ort.Options{Threads: m.opt.Threads, CUDADevice: m.opt.CUDADevice}
	if s.enc != nil {
		sess, err := s.openEncoder(o)
		if err != nil {
			return nil, rpcerr.FailedPrecondition("model %q: %v", e.Name, err)
		}
		m.log.Info("encoder loaded", "model", e.Name, "vocab", s.vocab, "took", time.Since(began).Round(time.Millisecond))
		return newRunner(e.Name, s, sess, m.opt), nil
	}
	sess, err := ort.Open(s.file, s.inputs, s.outputs, o)
	if err != nil {
		return nil, rpcerr.FailedPrecondition("model %q: %v", e.Name, err)
	}
	r := newRunner(e.Name, s, sess, m.opt)
	m.log.Info("model loaded", "model", e.Name, "layers", s.layers, "kv_heads", s.kvHeads,
		"head_dim", s.headDim, "vocab", s.vocab, "ctx", r.ctx, "took", time.Since(began).Round(time.Millisecond))
	return r, nil
}

// Models lists registered models, loaded or not.
func (m *Manager) Models() []*enginev1.ModelInfo { return m.models.Models() }

// Tokenize renders chat prompts (ChatML templates only) and tokenizes with
// the model's tokenizer.
func (m *Manager) Tokenize(_ context.Context, name string, p *generationv1.Prompt) ([]uint32, error) {
	e, err := m.models.Model(name)
	if err != nil {
		return nil, err
	}
	s := e.Spec
	if s.enc != nil {
		return nil, encoderOnly(name)
	}
	var ids []uint32
	switch k := p.GetKind().(type) {
	case *generationv1.Prompt_Tokens:
		for i, id := range k.Tokens.GetIds() {
			if int(id) >= s.vocab {
				return nil, rpcerr.InvalidArgument("prompt.tokens.ids[%d] = %d is outside the vocabulary of %d tokens", i, id, s.vocab)
			}
		}
		return slices.Clone(k.Tokens.GetIds()), nil
	case *generationv1.Prompt_Chat:
		if enginehost.UsesTools(k.Chat) {
			text, err := enginehost.RenderChat(s.chatTemplate, s.eosText, k.Chat)
			if err != nil {
				return nil, err
			}
			ids = s.tok.EncodeSpecial(text)
			break
		}
		if !isChatML(s.chatTemplate) {
			return nil, rpcerr.FailedPrecondition("model %q has no chat template engine-onnx can render (it renders ChatML); send a text prompt", name)
		}
		ids = s.tok.EncodeSpecial(renderChatML(k.Chat.GetMessages()))
	default:
		ids = s.tok.Encode(p.GetText())
	}
	if s.addBOS {
		ids = append([]uint32{s.bos}, ids...)
	}
	return ids, nil
}

// Piece returns a token's bytes.
func (m *Manager) Piece(name string, id uint32) []byte {
	e, err := m.models.Model(name)
	if err != nil || e.Spec.enc != nil {
		return nil
	}
	return e.Spec.tok.Decode([]uint32{id})
}

// Start queues a sequence on the model's runner.
func (m *Manager) Start(ctx context.Context, name string, prompt []uint32, s enginehost.Sampling) (enginehost.Sequence, error) {
	r, err := m.models.Acquire(ctx, name)
	if err != nil {
		return nil, err
	}
	if r.spec.enc != nil {
		return nil, encoderOnly(name)
	}
	if len(prompt) == 0 {
		return nil, rpcerr.InvalidArgument("the prompt has no tokens")
	}
	return r.start(prompt, s)
}

// Status sums the runners' load.
func (m *Manager) Status() *enginev1.GetStatusResponse { return m.models.Status() }

// Load registers and loads a model from a directory.
func (m *Manager) Load(ctx context.Context, name, source string) (*enginev1.ModelInfo, error) {
	if source == "" {
		return nil, rpcerr.InvalidArgument("source must name an ONNX model directory")
	}
	s, info, err := m.read(name, source)
	if err != nil {
		return nil, err
	}
	return m.models.AddAndLoad(ctx, name, s, info, 0)
}

// Unload removes a model; its running requests end with Unavailable.
func (m *Manager) Unload(_ context.Context, name string) error { return m.models.Remove(name) }

// Embed encodes inputs with a sentence encoder. Decoders do not embed:
// their graphs output logits, not hidden states.
func (m *Manager) Embed(ctx context.Context, name string, inputs []string) ([][]float32, int, error) {
	e, err := m.models.Model(name)
	if err != nil {
		return nil, 0, err
	}
	if e.Spec.enc == nil {
		return nil, 0, rpcerr.Unimplemented("model %q: a decoder graph has no embedding output; serve a sentence encoder for embeddings", name)
	}
	r, err := m.models.Acquire(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	return r.embed(ctx, inputs)
}

// encoderOnly is the error for generating with a sentence encoder.
func encoderOnly(name string) error {
	return rpcerr.FailedPrecondition("model %q is a sentence encoder: it serves embeddings only", name)
}
