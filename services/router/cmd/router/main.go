// Command router is the mesh's front door: it discovers engine workers and
// routes Generate streams to them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/llm-runner-router/llmrouter/services/router/internal/app"
)

func main() {
	// The relay allocates small, short-lived messages per token: collect
	// less often, but keep the heap bounded (both unless set by GOGC and
	// GOMEMLIMIT).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(64 << 20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(1)
	}
}
