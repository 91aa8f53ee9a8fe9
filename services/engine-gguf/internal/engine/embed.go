package engine

import (
	"context"
	"math"
	"sync"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/llama"
)

// embedder owns an embeddings context of a loaded model; calls are
// serialised by mu.
type embedder struct {
	mu    sync.Mutex
	model *llama.Model
	ctx   *llama.Context
	limit int
}

func newEmbedder(m *llama.Model, nCtx int, opt Options) (*embedder, error) {
	ctx, err := llama.NewContext(m, llama.ContextParams{
		NCtx: nCtx, NBatch: nCtx, NSeqMax: 1, Threads: opt.Threads, ThreadsBatch: opt.ThreadsBatch, Embeddings: true,
	})
	if err != nil {
		return nil, err
	}
	return &embedder{model: m, ctx: ctx, limit: min(nCtx, ctx.NBatch())}, nil
}

func (e *embedder) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ctx.Close()
	e.ctx = nil // the model is closed next: later calls must not touch it
}

func (e *embedder) embed(ctx context.Context, inputs []string) ([][]float32, int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil {
		return nil, 0, rpcerr.Unavailable("the model was unloaded")
	}
	out := make([][]float32, len(inputs))
	total := 0
	for i, in := range inputs {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		toks, err := e.model.Tokenize(in, true, false)
		if err != nil {
			return nil, 0, err
		}
		if len(toks) > e.limit {
			return nil, 0, rpcerr.InvalidArgument("inputs[%d] is %d tokens, over the embedding context of %d", i, len(toks), e.limit)
		}
		total += len(toks)
		e.ctx.ClearMemory()
		e.ctx.BatchClear()
		for p, t := range toks {
			e.ctx.BatchAdd(t, p, 0, true)
		}
		if err := e.ctx.Decode(); err != nil {
			return nil, 0, err
		}
		v := e.ctx.Embedding(0)
		var norm float64
		for _, x := range v {
			norm += float64(x) * float64(x)
		}
		if norm > 0 {
			s := float32(1 / math.Sqrt(norm))
			for j := range v {
				v[j] *= s
			}
		}
		out[i] = v
	}
	return out, total, nil
}
