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
	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/engine"
	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/ort"
)

// Run parses args, loads the models and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("engine-onnx", flag.ContinueOnError)
	var (
		worker    enginehost.WorkerConfig
		models    enginehost.ModelFlags
		dir, lib  string
		noPreload bool
	)
	opt := engine.DefaultOptions()
	worker.AddFlags(fs)
	fs.Var(&models, "model", "a model to serve, NAME=DIR (a directory with model.onnx and tokenizer.json; repeatable)")
	fs.StringVar(&dir, "models-dir", "", "serve every subdirectory of this directory that holds a model.onnx, under its name")
	fs.StringVar(&lib, "ort-lib", getenv("ORT_LIBRARY"), "the ONNX Runtime shared library (libonnxruntime.so); default $ORT_LIBRARY")
	fs.IntVar(&opt.Parallel, "parallel", opt.Parallel, "sequences decoded together per model (batch rows)")
	fs.IntVar(&opt.CtxPerSeq, "ctx", opt.CtxPerSeq, "context length of each sequence (capped by the model's)")
	fs.IntVar(&opt.PrefillChunk, "prefill-chunk", opt.PrefillChunk, "most prompt tokens of one request per step")
	fs.IntVar(&opt.Queue, "queue", opt.Queue, "requests per model that may wait for a slot before ResourceExhausted")
	fs.IntVar(&opt.Threads, "threads", opt.Threads, "ONNX Runtime intra-op threads")
	prefixMiB := fs.Int("prefix-cache", opt.PrefixCache>>20, "MiB of finished sequences' KV caches kept per model for prompt-prefix reuse (0: off)")
	fs.IntVar(&opt.CUDADevice, "cuda-device", -1, "run on this CUDA device (-1: CPU); needs a GPU build of ONNX Runtime, see docs/engine-onnx.md")
	fs.Float64Var(&opt.Quality, "quality", opt.Quality, "quality score advertised for the models, [0, 1]")
	fs.Float64Var(&opt.CostPer1KInput, "cost-in", 0, "advertised USD per 1K prompt tokens")
	fs.Float64Var(&opt.CostPer1KOutput, "cost-out", 0, "advertised USD per 1K generated tokens")
	fs.BoolVar(&noPreload, "lazy", false, "do not load models before serving; load on first use")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opt.PrefixCache = *prefixMiB << 20
	if err := opt.Validate(); err != nil {
		return err
	}
	if lib == "" {
		return errors.New("no ONNX Runtime library: pass -ort-lib or set ORT_LIBRARY (make tools installs one; tools/install.sh --ort prints its path)")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "engine-onnx")
	if err := ort.Init(lib); err != nil {
		return err
	}
	defer ort.Shutdown()
	log.Info("onnxruntime", "version", ort.Version(), "lib", lib)
	mgr := engine.New(opt, log)
	defer mgr.Close()
	return enginehost.ServeModels(ctx, worker, "engine-onnx", mgr, models, dir, noPreload, getenv, log, stdout)
}
