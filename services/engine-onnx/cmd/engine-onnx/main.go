// Command engine-onnx serves ONNX causal LMs with ONNX Runtime through the Engine
// service.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/app"
)

func main() {
	// The KV cache lives in the Go heap as large pointer-free buffers, which
	// the collector marks for free: collect early rather than let the heap
	// double (GOGC in the environment still wins).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "engine-onnx:", err)
		os.Exit(1)
	}
}
