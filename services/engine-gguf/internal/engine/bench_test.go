package engine

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
)

// BenchmarkDecode measures the runner's single-stream decode speed in
// process (no gRPC), to separate the engine's own overhead from the
// transport's. LLMROUTER_BENCH_MODEL names the model (default: the tiny test
// model); LLMROUTER_BENCH_THREADS the threads (default: all cores).
func BenchmarkDecode(b *testing.B) {
	path := os.Getenv("LLMROUTER_BENCH_MODEL")
	if path == "" {
		path = tinyPath
	}
	threads := runtime.NumCPU()
	if v, err := strconv.Atoi(os.Getenv("LLMROUTER_BENCH_THREADS")); err == nil && v > 0 {
		threads = v
	}
	opt := DefaultOptions()
	opt.Parallel, opt.CtxPerSeq, opt.Threads, opt.ThreadsBatch = 1, 512, threads, threads
	mgr := New(opt, quiet)
	defer mgr.Close()
	if _, err := mgr.Register("m", path); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const gen = 128
	// Warm up: load the model and touch every weight page once.
	warm, err := mgr.Start(ctx, "m", []uint32{1, 2, 3}, enginehost.Sampling{})
	if err != nil {
		b.Fatal(err)
	}
	for range 8 {
		if _, err := warm.Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
	warm.Close()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		seq, err := mgr.Start(ctx, "m", []uint32{uint32(1 + i%1000)}, enginehost.Sampling{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := seq.Next(ctx); err != nil { // first token: prefill of one token
			b.Fatal(err)
		}
		began := time.Now()
		for range gen {
			if _, err := seq.Next(ctx); err != nil {
				b.Fatal(err)
			}
		}
		total += time.Since(began)
		seq.Close()
	}
	b.ReportMetric(float64(b.N*gen)/total.Seconds(), "tokens/s")
}
