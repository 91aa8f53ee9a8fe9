// Package app is the engine-onnx process: flags, ONNX Runtime set-up, model
// registration and preloading, and the worker lifecycle.
package app

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/healthcheck"
	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/engine"
	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/ort"
)

// Options is the process's configuration.
type Options struct {
	Worker enginehost.WorkerConfig
	Models enginehost.ModelFlags
	// Dir serves every model directory under a directory.
	Dir string
	// ORTLibrary is the ONNX Runtime shared library.
	ORTLibrary string
	// PrefixCacheMiB bounds the prompt-prefix cache per model.
	PrefixCacheMiB int
	// Lazy: load models on first use, not before serving.
	Lazy   bool
	Engine engine.Options
}

// DefaultOptions returns the defaults; the library defaults to
// $ORT_LIBRARY.
func DefaultOptions(getenv func(string) string) Options {
	e := engine.DefaultOptions()
	return Options{Engine: e, ORTLibrary: getenv("ORT_LIBRARY"), PrefixCacheMiB: e.PrefixCache >> 20}
}

// AddFlags registers the flags on fs, with o's values as defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	e := &o.Engine
	o.Worker.AddFlags(fs)
	fs.Var(&o.Models, "model", "a model to serve, NAME=DIR (a directory with model.onnx and tokenizer.json, or a sentence encoder: model.onnx or a TF.js model.json with vocab.json; repeatable)")
	fs.StringVar(&o.Dir, "models-dir", "", "serve every subdirectory of this directory that holds a model.onnx, under its name")
	fs.StringVar(&o.ORTLibrary, "ort-lib", o.ORTLibrary, "the ONNX Runtime shared library (libonnxruntime.so); default $ORT_LIBRARY")
	fs.IntVar(&e.Parallel, "parallel", e.Parallel, "sequences decoded together per model (batch rows)")
	fs.IntVar(&e.CtxPerSeq, "ctx", e.CtxPerSeq, "context length of each sequence (capped by the model's)")
	fs.IntVar(&e.PrefillChunk, "prefill-chunk", e.PrefillChunk, "most prompt tokens of one request per step")
	fs.IntVar(&e.Queue, "queue", e.Queue, "requests per model that may wait for a slot before ResourceExhausted")
	fs.IntVar(&e.Threads, "threads", e.Threads, "ONNX Runtime intra-op threads")
	fs.IntVar(&o.PrefixCacheMiB, "prefix-cache", o.PrefixCacheMiB, "MiB of finished sequences' KV caches kept per model for prompt-prefix reuse (0: off)")
	fs.IntVar(&e.CUDADevice, "cuda-device", e.CUDADevice, "run on this CUDA device (-1: CPU); needs a GPU build of ONNX Runtime, see docs/engine-onnx.md")
	fs.Float64Var(&e.Quality, "quality", e.Quality, "quality score advertised for the models, [0, 1]")
	fs.Float64Var(&e.CostPer1KInput, "cost-in", e.CostPer1KInput, "advertised USD per 1K prompt tokens")
	fs.Float64Var(&e.CostPer1KOutput, "cost-out", e.CostPer1KOutput, "advertised USD per 1K generated tokens")
	fs.BoolVar(&o.Lazy, "lazy", o.Lazy, "do not load models before serving; load on first use")
}

// Validate checks the options (and fills the engine's prefix cache size).
func (o *Options) Validate() error {
	o.Engine.PrefixCache = o.PrefixCacheMiB << 20
	if err := o.Engine.Validate(); err != nil {
		return err
	}
	if o.ORTLibrary == "" {
		return errors.New("no ONNX Runtime library: pass -ort-lib or set ORT_LIBRARY (make tools installs one; tools/install.sh --ort prints its path)")
	}
	return o.Worker.Validate()
}

// Run parses args, loads the models and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Run(ctx, args[1:], stdout)
	}
	fs := flag.NewFlagSet("engine-onnx", flag.ContinueOnError)
	opt := DefaultOptions(getenv)
	opt.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opt.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "engine-onnx")
	if err := ort.Init(opt.ORTLibrary); err != nil {
		return err
	}
	defer ort.Shutdown()
	log.Info("onnxruntime", "version", ort.Version(), "lib", opt.ORTLibrary)
	mgr := engine.New(opt.Engine, log)
	defer mgr.Close()
	return enginehost.ServeModels(ctx, opt.Worker, "engine-onnx", mgr, opt.Models, opt.Dir, opt.Lazy, getenv, log, stdout)
}
