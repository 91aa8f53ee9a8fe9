package enginehost_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// worker runs RunWorker with c over a sim backend and returns its service
// and health addresses.
func worker(t *testing.T, c enginehost.WorkerConfig) (addr, health string) {
	t.Helper()
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	c.CheckInterval, c.GracePeriod = time.Second, 200*time.Millisecond
	if c.Callers == "" {
		c.Callers, c.Admins = mtls.RoleRouter, mtls.RoleAdmin
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b := sim.New(sim.Config{Models: []sim.ModelConfig{{Name: "m"}}, TokensPerSecond: 5000})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- enginehost.RunWorker(ctx, c, "test", b, telemetry.Noop(), quiet, pw)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if a, ok := strings.CutPrefix(line, "health listening on "); ok {
			health = a
		}
		if a, ok := strings.CutPrefix(line, "listening on "); ok {
			addr = a
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if addr == "" {
		t.Fatalf("worker did not start: %v", <-done)
	}
	return addr, health
}

func dial(t *testing.T, addr string, opt grpc.DialOption, extra ...grpc.DialOption) enginev1.EngineServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{opt}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return enginev1.NewEngineServiceClient(conn)
}

func TestWorkerObeysOnlyTheRouterAndAdmins(t *testing.T) {
	certs := testkit.DevCerts(t)
	addr, health := worker(t, enginehost.WorkerConfig{TLS: mtls.DevPaths(certs.Dir, mtls.RoleEngine), HealthListen: "127.0.0.1:0"})
	ctx := context.Background()

	// The router's certificate is accepted at any authority: the identity
	// is checked, not the address dialled.
	router := dial(t, addr, certs.Dial(t, mtls.RoleRouter, mtls.RoleEngine), grpc.WithAuthority("engine-7.pods.example"))
	if _, err := router.ListModels(ctx, &enginev1.ListModelsRequest{}); err != nil {
		t.Fatalf("router ListModels: %v", err)
	}
	if _, err := router.UnloadModel(ctx, &enginev1.UnloadModelRequest{Model: "m"}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "admin RPC") {
		t.Fatalf("router UnloadModel: %v, want PermissionDenied", err)
	}

	client := dial(t, addr, certs.Dial(t, mtls.RoleClient, mtls.RoleEngine))
	if _, err := client.GetStatus(ctx, &enginev1.GetStatusRequest{}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), mtls.Identity(mtls.RoleClient)) {
		t.Fatalf("client GetStatus: %v, want PermissionDenied naming the identity", err)
	}

	admin := dial(t, addr, certs.Dial(t, mtls.RoleAdmin, mtls.RoleEngine))
	if _, err := admin.UnloadModel(ctx, &enginev1.UnloadModelRequest{Model: "m"}); err != nil {
		t.Fatalf("admin UnloadModel: %v", err)
	}

	// Without a client certificate, or with one from another CA, the
	// handshake fails.
	other := testkit.DevCerts(t)
	for name, opt := range map[string]grpc.DialOption{
		"foreign CA": other.Dial(t, mtls.RoleRouter, mtls.RoleEngine),
		"plaintext":  grpc.WithTransportCredentials(insecure.NewCredentials()),
	} {
		c := dial(t, addr, opt)
		if _, err := c.ListModels(ctx, &enginev1.ListModelsRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: %v, want Unavailable (handshake refused)", name, err)
		}
	}

	// A router expecting another identity refuses this worker.
	wrong := dial(t, addr, certs.Dial(t, mtls.RoleRouter, mtls.RoleProviderProxy))
	if _, err := wrong.ListModels(ctx, &enginev1.ListModelsRequest{}); status.Code(err) != codes.Unavailable ||
		!strings.Contains(err.Error(), "server identity "+mtls.Identity(mtls.RoleEngine)) {
		t.Fatalf("worker with an unexpected identity: %v", err)
	}

	// Health alone, in plaintext, for Consul and probes.
	conn, err := grpc.NewClient(health, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("plaintext health: %v %v", hc, err)
	}
	if _, err := enginev1.NewEngineServiceClient(conn).ListModels(ctx, &enginev1.ListModelsRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("the health listener serves more than health: %v", err)
	}
}

func TestInsecureWorkerRefusesAdminWithoutCredential(t *testing.T) {
	ctx := context.Background()
	plain := grpc.WithTransportCredentials(insecure.NewCredentials())

	addr, _ := worker(t, enginehost.WorkerConfig{TLS: mtls.Flags{Insecure: true}})
	c := dial(t, addr, plain)
	if _, err := c.ListModels(ctx, &enginev1.ListModelsRequest{}); err != nil {
		t.Fatalf("plaintext inference RPC: %v", err)
	}
	if _, err := c.UnloadModel(ctx, &enginev1.UnloadModelRequest{Model: "m"}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "no admin credential") {
		t.Fatalf("UnloadModel with no admin credential configured: %v", err)
	}

	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-admin-token-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _ = worker(t, enginehost.WorkerConfig{TLS: mtls.Flags{Insecure: true}, AdminTokenFile: tokenFile})
	c = dial(t, addr, plain)
	for _, tok := range []string{"", "Bearer wrong-token-0000000000", "Basic s3cret-admin-token-0123"} {
		md := ctx
		if tok != "" {
			md = metadata.AppendToOutgoingContext(ctx, "authorization", tok)
		}
		if _, err := c.UnloadModel(md, &enginev1.UnloadModelRequest{Model: "m"}); status.Code(err) != codes.Unauthenticated ||
			strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("UnloadModel with %q: %v, want Unauthenticated without the token in the message", tok, err)
		}
	}
	md := metadata.AppendToOutgoingContext(ctx, "authorization", "bearer s3cret-admin-token-0123")
	if _, err := c.UnloadModel(md, &enginev1.UnloadModelRequest{Model: "m"}); err != nil {
		t.Fatalf("UnloadModel with the token: %v", err)
	}
}

func TestWorkerReloadsRotatedCertificates(t *testing.T) {
	old := mtls.ReloadInterval
	mtls.ReloadInterval = 10 * time.Millisecond
	t.Cleanup(func() { mtls.ReloadInterval = old })
	certs := testkit.DevCerts(t)
	addr, _ := worker(t, enginehost.WorkerConfig{TLS: mtls.DevPaths(certs.Dir, mtls.RoleEngine)})
	ctx := context.Background()
	// The stale client keeps a copy of the first set.
	stale := &testkit.Certs{Dir: t.TempDir()}
	for _, f := range []string{"ca.pem", "router.pem", "router-key.pem"} {
		b, err := os.ReadFile(filepath.Join(certs.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stale.Dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dial(t, addr, stale.Dial(t, mtls.RoleRouter, mtls.RoleEngine)).ListModels(ctx, &enginev1.ListModelsRequest{}); err != nil {
		t.Fatal(err)
	}

	// Rotate to a new CA in place; the worker is not restarted.
	for _, f := range []string{"ca.pem", "ca-key.pem"} {
		os.Remove(filepath.Join(certs.Dir, f))
	}
	if err := mtls.WriteDevSet(certs.Dir, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := dial(t, addr, certs.Dial(t, mtls.RoleRouter, mtls.RoleEngine)).ListModels(ctx, &enginev1.ListModelsRequest{}); err != nil {
		t.Fatalf("new certificates after rotation: %v", err)
	}
	if _, err := dial(t, addr, stale.Dial(t, mtls.RoleRouter, mtls.RoleEngine)).ListModels(ctx, &enginev1.ListModelsRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a client of the rotated-out CA on a new connection: %v, want Unavailable", err)
	}
}
