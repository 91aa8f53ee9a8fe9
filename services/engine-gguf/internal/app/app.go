// Package app is the engine-gguf process: flags, model registration and
// preloading, and the worker lifecycle around the llama.cpp backend.
package app

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/engine"
	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/llama"
)

// Run parses args, loads the models and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("engine-gguf", flag.ContinueOnError)
	var (
		worker    enginehost.WorkerConfig
		models    enginehost.ModelFlags
		dir       string
		budgetMiB uint64
		noPreload bool
	)
	opt := engine.DefaultOptions()
	worker.AddFlags(fs)
	fs.Var(&models, "model", "a model to serve, NAME=PATH.gguf (repeatable)")
	fs.StringVar(&dir, "models-dir", "", "serve every *.gguf file of this directory under its base name")
	fs.IntVar(&opt.Parallel, "parallel", opt.Parallel, "sequences decoded together per model (continuous batching slots)")
	fs.IntVar(&opt.CtxPerSeq, "ctx", opt.CtxPerSeq, "context length of each sequence (capped by the model's)")
	fs.IntVar(&opt.Batch, "batch", opt.Batch, "most tokens per decode step")
	fs.IntVar(&opt.PrefillChunk, "prefill-chunk", opt.PrefillChunk, "most prompt tokens of one request per step")
	fs.IntVar(&opt.Queue, "queue", opt.Queue, "requests per model that may wait for a slot before ResourceExhausted")
	fs.IntVar(&opt.Threads, "threads", opt.Threads, "threads for decoding")
	fs.IntVar(&opt.ThreadsBatch, "threads-batch", opt.ThreadsBatch, "threads for prompt processing")
	fs.BoolVar(&opt.KVUnified, "kv-unified", false, "share one KV buffer across sequences (see README: trade-offs)")
	fs.IntVar(&opt.GPULayers, "gpu-layers", 0, "layers to offload to the GPU (-1: all); needs a CUDA build of llama.cpp")
	fs.DurationVar(&opt.KeepAlive, "keep-alive", 0, "unload a model idle this long (0: keep loaded); it reloads on demand")
	fs.Uint64Var(&budgetMiB, "memory-budget", 0, "MiB of weights and KV cache loaded at once; least recently used idle models are evicted (0: no limit)")
	fs.Float64Var(&opt.Quality, "quality", opt.Quality, "quality score advertised for the models, [0, 1]")
	fs.Float64Var(&opt.CostPer1KInput, "cost-in", 0, "advertised USD per 1K prompt tokens")
	fs.Float64Var(&opt.CostPer1KOutput, "cost-out", 0, "advertised USD per 1K generated tokens")
	fs.BoolVar(&noPreload, "lazy", false, "do not load models before serving; load on first use")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opt.MemoryBudget = budgetMiB << 20
	if opt.Parallel <= 0 || opt.CtxPerSeq <= 0 || opt.Batch <= 0 || opt.PrefillChunk <= 0 || opt.Queue < 0 || opt.Threads <= 0 || opt.ThreadsBatch <= 0 {
		return errors.New("-parallel, -ctx, -batch, -prefill-chunk, -threads and -threads-batch must be positive and -queue not negative")
	}
	if opt.Quality < 0 || opt.Quality > 1 {
		return errors.New("-quality must be in [0, 1]")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "engine-gguf")
	log.Info("llama.cpp", "lib_dir", llama.LibDir(), "devices", strings.Join(llama.Devices(), ","))
	mgr := engine.New(opt, log)
	defer mgr.Close()
	return enginehost.ServeModels(ctx, worker, "engine-gguf", mgr, models, dir, noPreload, getenv, log, stdout)
}
