// Package app is the provider-proxy process: configuration, the proxy
// backend and the worker lifecycle.
package app

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/proxy"
)

// Run parses args and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("provider-proxy", flag.ContinueOnError)
	var (
		worker  enginehost.WorkerConfig
		cfgPath string
		timeout time.Duration
	)
	worker.AddFlags(fs)
	fs.StringVar(&cfgPath, "config", "", "JSON file of providers and models (required)")
	fs.DurationVar(&timeout, "upstream-timeout", 10*time.Minute, "longest upstream request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfgPath == "" {
		return errors.New("-config is required")
	}
	cfg, err := proxy.LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	// Keep a connection per concurrent stream: the default transport keeps
	// two idle connections per host, so bursts would pay a handshake each.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost = 4096, 1024
	backend, err := proxy.New(cfg, getenv, &http.Client{Timeout: timeout, Transport: transport})
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "provider-proxy")
	tel, err := telemetry.Setup(ctx, "provider-proxy", getenv)
	if err != nil {
		return err
	}
	return enginehost.RunWorker(ctx, worker, "provider-proxy", backend, tel, log, stdout)
}
