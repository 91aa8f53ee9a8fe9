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
	"github.com/llm-runner-router/llmrouter/pkg/healthcheck"
	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/engine"
	"github.com/llm-runner-router/llmrouter/services/engine-gguf/internal/llama"
)

// Options is the process's configuration.
type Options struct {
	Worker enginehost.WorkerConfig
	Models enginehost.ModelFlags
	// Dir serves every *.gguf file of a directory.
	Dir string
	// BudgetMiB bounds the weights and KV cache loaded at once.
	BudgetMiB uint64
	// Lazy: load models on first use, not before serving.
	Lazy   bool
	Engine engine.Options
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options { return Options{Engine: engine.DefaultOptions()} }

// AddFlags registers the flags on fs, with o's values as defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	e := &o.Engine
	o.Worker.AddFlags(fs)
	fs.Var(&o.Models, "model", "a model to serve, NAME=PATH.gguf (repeatable)")
	fs.StringVar(&o.Dir, "models-dir", "", "serve every *.gguf file of this directory under its base name")
	fs.IntVar(&e.Parallel, "parallel", e.Parallel, "sequences decoded together per model (continuous batching slots)")
	fs.IntVar(&e.CtxPerSeq, "ctx", e.CtxPerSeq, "context length of each sequence (capped by the model's)")
	fs.IntVar(&e.Batch, "batch", e.Batch, "most tokens per decode step")
	fs.IntVar(&e.PrefillChunk, "prefill-chunk", e.PrefillChunk, "most prompt tokens of one request per step")
	fs.IntVar(&e.Queue, "queue", e.Queue, "requests per model that may wait for a slot before ResourceExhausted")
	fs.IntVar(&e.Threads, "threads", e.Threads, "threads for decoding")
	fs.IntVar(&e.ThreadsBatch, "threads-batch", e.ThreadsBatch, "threads for prompt processing")
	fs.BoolVar(&e.KVUnified, "kv-unified", e.KVUnified, "share one KV buffer across sequences (see README: trade-offs)")
	fs.IntVar(&e.GPULayers, "gpu-layers", e.GPULayers, "layers to offload to the GPU (-1: all); needs a CUDA build of llama.cpp")
	fs.DurationVar(&e.KeepAlive, "keep-alive", e.KeepAlive, "unload a model idle this long (0: keep loaded); it reloads on demand")
	fs.Uint64Var(&o.BudgetMiB, "memory-budget", o.BudgetMiB, "MiB of weights and KV cache loaded at once; least recently used idle models are evicted (0: no limit)")
	fs.Float64Var(&e.Quality, "quality", e.Quality, "quality score advertised for the models, [0, 1]")
	fs.Float64Var(&e.CostPer1KInput, "cost-in", e.CostPer1KInput, "advertised USD per 1K prompt tokens")
	fs.Float64Var(&e.CostPer1KOutput, "cost-out", e.CostPer1KOutput, "advertised USD per 1K generated tokens")
	fs.BoolVar(&o.Lazy, "lazy", o.Lazy, "do not load models before serving; load on first use")
}

// Validate checks the options (and fills the engine's memory budget).
func (o *Options) Validate() error {
	e := &o.Engine
	e.MemoryBudget = o.BudgetMiB << 20
	if e.Parallel <= 0 || e.CtxPerSeq <= 0 || e.Batch <= 0 || e.PrefillChunk <= 0 || e.Queue < 0 || e.Threads <= 0 || e.ThreadsBatch <= 0 {
		return errors.New("-parallel, -ctx, -batch, -prefill-chunk, -threads and -threads-batch must be positive and -queue not negative")
	}
	if e.Quality < 0 || e.Quality > 1 {
		return errors.New("-quality must be in [0, 1]")
	}
	return o.Worker.Validate()
}

// Run parses args, loads the models and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Run(ctx, args[1:], stdout)
	}
	fs := flag.NewFlagSet("engine-gguf", flag.ContinueOnError)
	opt := DefaultOptions()
	opt.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opt.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "engine-gguf")
	log.Info("llama.cpp", "lib_dir", llama.LibDir(), "devices", strings.Join(llama.Devices(), ","))
	mgr := engine.New(opt.Engine, log)
	defer mgr.Close()
	return enginehost.ServeModels(ctx, opt.Worker, "engine-gguf", mgr, opt.Models, opt.Dir, opt.Lazy, getenv, log, stdout)
}
