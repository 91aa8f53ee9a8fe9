// Command engine-onnx serves ONNX causal LMs with ONNX Runtime through the Engine
// service.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "engine-onnx:", err)
		os.Exit(1)
	}
}
