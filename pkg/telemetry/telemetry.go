// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables.
//
// With no OTLP endpoint configured (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), or with OTEL_TRACES_EXPORTER=none, the
// tracer provider is a no-op that still propagates incoming trace context.
// Setup returns a Telemetry whose Shutdown flushes pending spans; it is safe
// for concurrent use.
package telemetry

import (
	"context"
	"fmt"
	"strconv"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Telemetry holds what instrumented code needs.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Shutdown flushes and stops exporters. Call it once, last.
	Shutdown func(context.Context) error
	// Enabled reports whether spans are exported.
	Enabled bool
}

// Tracer returns a named tracer.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.TracerProvider.Tracer(name) }

// Noop returns telemetry that exports nothing but propagates context.
func Noop() *Telemetry {
	return &Telemetry{
		TracerProvider: noop.NewTracerProvider(),
		Propagator:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Shutdown:       func(context.Context) error { return nil },
	}
}

// Setup configures tracing for service from the environment read by getenv.
// OTEL_SERVICE_NAME, when set, overrides service.
func Setup(ctx context.Context, service string, getenv func(string) string) (*Telemetry, error) {
	t := Noop()
	if getenv("OTEL_TRACES_EXPORTER") == "none" ||
		(getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "") {
		return t, nil
	}
	if name := getenv("OTEL_SERVICE_NAME"); name != "" {
		service = name
	}
	// The exporter reads the remaining OTEL_EXPORTER_OTLP_* variables itself.
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, batchOptions(getenv)...), sdktrace.WithResource(res))
	t.TracerProvider = tp
	t.Shutdown = tp.Shutdown
	t.Enabled = true
	return t, nil
}

// Span queue defaults, larger than the SDK's (2,048 queued, 512 a batch): a
// router relaying hundreds of streams a second ends that many spans a
// second, and a span dropped from a full queue is a hop missing from the
// traces the benchmarks read back (pkg/traces counts spans expected against
// received). OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE
// still override them.
const (
	DefaultSpanQueue = 16384
	DefaultSpanBatch = 1024
)

func batchOptions(getenv func(string) string) []sdktrace.BatchSpanProcessorOption {
	size := func(key string, def int) int {
		if n, err := strconv.Atoi(getenv(key)); err == nil && n > 0 {
			return n
		}
		return def
	}
	queue := size("OTEL_BSP_MAX_QUEUE_SIZE", DefaultSpanQueue)
	return []sdktrace.BatchSpanProcessorOption{
		sdktrace.WithMaxQueueSize(queue),
		sdktrace.WithMaxExportBatchSize(min(size("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DefaultSpanBatch), queue)),
	}
}
