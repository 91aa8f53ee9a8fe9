// Package app is the provider-proxy process: configuration, the proxy
// backend and the worker lifecycle.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/healthcheck"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/proxy"
)

// Options is the process's configuration.
type Options struct {
	Worker enginehost.WorkerConfig
	// Config is the JSON file of providers and models.
	Config string
	// UpstreamTimeout bounds one upstream request.
	UpstreamTimeout time.Duration
	// MetricsListen serves Prometheus /metrics; empty: off.
	MetricsListen string
}

// AddFlags registers the flags with defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	o.Worker.AddFlags(fs)
	fs.StringVar(&o.Config, "config", "", "JSON file of providers and models (required)")
	fs.DurationVar(&o.UpstreamTimeout, "upstream-timeout", 10*time.Minute, "longest upstream request")
	fs.StringVar(&o.MetricsListen, "metrics-listen", "", "address for Prometheus /metrics (upstream requests, skipped stream events); empty: off")
}

// Validate checks the options.
func (o *Options) Validate() error {
	if o.Config == "" {
		return errors.New("-config is required")
	}
	if o.UpstreamTimeout <= 0 {
		return errors.New("-upstream-timeout must be positive")
	}
	return o.Worker.Validate()
}

// Run parses args and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Run(ctx, args[1:], stdout)
	}
	fs := flag.NewFlagSet("provider-proxy", flag.ContinueOnError)
	var opt Options
	opt.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opt.Validate(); err != nil {
		return err
	}
	cfg, err := proxy.LoadConfig(opt.Config)
	if err != nil {
		return err
	}
	// Keep a connection per concurrent stream: the default transport keeps
	// two idle connections per host, so bursts would pay a handshake each.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost = 4096, 1024
	backend, err := proxy.New(cfg, getenv, &http.Client{Timeout: opt.UpstreamTimeout, Transport: transport})
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "provider-proxy")
	tel, err := telemetry.Setup(ctx, "provider-proxy", getenv)
	if err != nil {
		return err
	}
	if opt.MetricsListen != "" {
		stop, addr, err := serveMetrics(opt.MetricsListen, backend)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(stdout, "metrics listening on %s\n", addr)
	}
	return enginehost.RunWorker(ctx, opt.Worker, "provider-proxy", backend, tel, log, stdout)
}

// serveMetrics serves the backend's counters on addr.
func serveMetrics(addr string, b *proxy.Backend) (func(), string, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "llmrouter_proxy_upstream_requests_total",
			Help: "Requests sent to upstream providers (every attempt, retries included)."}, func() float64 { return float64(b.UpstreamRequests()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "llmrouter_proxy_bad_stream_events_total",
			Help: "Malformed or oversized events skipped in upstream streams."}, func() float64 { return float64(b.BadEvents()) }),
	)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("metrics listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	return func() { srv.Close() }, lis.Addr().String(), nil
}
