package testkit

import (
	"context"
	"io"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/grpcserver"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
)

// Engine is an Engine gRPC server started by ServeEngine.
type Engine struct {
	Addr   string
	Client enginev1.EngineServiceClient
	// Server is the server kit; Server.GRPC.Stop() kills it mid-stream.
	Server *grpcserver.Server
}

// ServeEngine runs backend's Engine service with the project's server kit on
// a loopback port and dials it; both stop at cleanup.
func ServeEngine(t T, backend enginehost.Catalog, limits enginehost.Limits) *Engine {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := grpcserver.New(telemetry.Noop(), grpcserver.Options{GracePeriod: 200 * time.Millisecond, Logger: quiet})
	switch b := backend.(type) {
	case enginehost.Backend:
		enginev1.RegisterEngineServiceServer(srv.GRPC, enginehost.New(b, lis.Addr().String(), limits))
	case enginehost.TextBackend:
		enginev1.RegisterEngineServiceServer(srv.GRPC, enginehost.NewText(b, lis.Addr().String(), limits))
	default:
		t.Fatalf("backend %T is neither a Backend nor a TextBackend", backend)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Run(ctx, lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		<-done
	})
	return &Engine{Addr: lis.Addr().String(), Client: enginev1.NewEngineServiceClient(conn), Server: srv}
}
