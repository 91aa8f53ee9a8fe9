// Command provider-proxy serves hosted LLM APIs (OpenAI, Anthropic, any
// OpenAI-compatible server) through the Engine service.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "provider-proxy:", err)
		os.Exit(1)
	}
}
