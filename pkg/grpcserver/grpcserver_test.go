package grpcserver_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/grpcserver"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// engine is a minimal Engine server whose behaviour each test sets.
type engine struct {
	enginev1.UnimplementedEngineServiceServer
	status   func() (*enginev1.GetStatusResponse, error)
	generate func(enginev1.EngineService_GenerateServer) error
}

func (e *engine) GetStatus(context.Context, *enginev1.GetStatusRequest) (*enginev1.GetStatusResponse, error) {
	return e.status()
}

func (e *engine) Generate(_ *enginev1.GenerateRequest, s enginev1.EngineService_GenerateServer) error {
	return e.generate(s)
}

func start(t *testing.T, e *engine, grace time.Duration) (*grpcserver.Server, *grpc.ClientConn, context.CancelFunc, <-chan error) {
	t.Helper()
	var flushed bool
	tel := telemetry.Noop()
	tel.Shutdown = func(context.Context) error { flushed = true; return nil }
	srv := grpcserver.New(tel, grpcserver.Options{GracePeriod: grace})
	enginev1.RegisterEngineServiceServer(srv.GRPC, e)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := srv.Run(ctx, lis)
		if !flushed {
			err = errors.Join(err, errors.New("telemetry was not flushed"))
		}
		done <- err
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, conn, cancel, done
}

func TestPanicBecomesInternal(t *testing.T) {
	e := &engine{status: func() (*enginev1.GetStatusResponse, error) { panic("boom") }}
	_, conn, cancel, done := start(t, e, time.Second)
	_, err := enginev1.NewEngineServiceClient(conn).GetStatus(context.Background(), &enginev1.GetStatusRequest{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panic gave %v, want Internal", err)
	}
	// The server still serves after a panic.
	h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after panic: %v %v", h, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Shutdown: health NOT_SERVING before deregistration, deregistration before
// streams are cut, a stream longer than the grace period is cut, telemetry
// flushed last.
func TestShutdownOrder(t *testing.T) {
	streamStarted := make(chan struct{})
	e := &engine{generate: func(s enginev1.EngineService_GenerateServer) error {
		close(streamStarted)
		<-s.Context().Done() // a stream that never ends on its own
		return s.Context().Err()
	}}
	srv, conn, cancel, done := start(t, e, 300*time.Millisecond)
	var (
		mu    sync.Mutex
		order []string
	)
	srv.BeforeStop(func(ctx context.Context) error {
		resp, err := srv.Health.Check(ctx, &healthpb.HealthCheckRequest{})
		mu.Lock()
		defer mu.Unlock()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			order = append(order, "not-serving")
		}
		order = append(order, "deregister")
		return nil
	})
	stream, err := enginev1.NewEngineServiceClient(conn).Generate(context.Background(), &enginev1.GenerateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	<-streamStarted
	began := time.Now()
	cancel()
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Fatalf("cut stream ended with %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Fatalf("stream cut after %v, before the grace period", d)
	}
	if len(order) != 2 || order[0] != "not-serving" {
		t.Fatalf("shutdown steps %v, want [not-serving deregister]", order)
	}
}

func TestTelemetryWithoutEndpointIsNoop(t *testing.T) {
	tel, err := telemetry.Setup(context.Background(), "x", func(string) string { return "" })
	if err != nil || tel.Enabled {
		t.Fatalf("no endpoint: enabled=%v err=%v", tel.Enabled, err)
	}
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}
	tel, err = telemetry.Setup(context.Background(), "x", func(k string) string { return env[k] })
	if err != nil || tel.Enabled {
		t.Fatalf("exporter none: enabled=%v err=%v", tel.Enabled, err)
	}
	delete(env, "OTEL_TRACES_EXPORTER")
	tel, err = telemetry.Setup(context.Background(), "x", func(k string) string { return env[k] })
	if err != nil || !tel.Enabled {
		t.Fatalf("with endpoint: enabled=%v err=%v", tel.Enabled, err)
	}
	ctx, c := context.WithTimeout(context.Background(), time.Second)
	defer c()
	_ = tel.Shutdown(ctx) // nothing listens there; only the lifecycle matters
}
