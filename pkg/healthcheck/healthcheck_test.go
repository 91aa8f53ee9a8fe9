package healthcheck

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	h := health.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	go srv.Serve(lis)
	defer srv.Stop()
	file := filepath.Join(t.TempDir(), "health")
	if err := WriteAddr(file, lis.Addr().String()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Run(ctx, []string{"-addr-file", file}, io.Discard); err != nil {
		t.Fatalf("serving: %v", err)
	}
	h.Shutdown() // NOT_SERVING, as at the start of a drain
	if err := Run(ctx, []string{"-addr", lis.Addr().String()}, io.Discard); err == nil || !strings.Contains(err.Error(), "NOT_SERVING") {
		t.Fatalf("draining: err %v, want NOT_SERVING", err)
	}
	srv.Stop()
	if err := Run(ctx, []string{"-addr", lis.Addr().String(), "-timeout", "300ms"}, io.Discard); err == nil {
		t.Fatal("stopped server: no error")
	}
	if err := Run(ctx, []string{"-addr-file", filepath.Join(t.TempDir(), "none")}, io.Discard); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
	if err := Run(ctx, nil, io.Discard); err == nil {
		t.Fatal("no address: no error")
	}
}
