// Package healthcheck is the `healthcheck` subcommand of every service
// binary: it asks the process's plaintext grpc.health.v1 listener whether it
// serves. Kubernetes exec probes use it where the health port is chosen at
// start (hostNetwork pods on one node) and only a file names it; an image
// without a shell or grpcurl needs nothing else.
package healthcheck

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Run parses args (-addr or -addr-file, -service, -timeout) and checks
// once: nil when the service reports SERVING.
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port of the plaintext health listener")
	file := fs.String("addr-file", "", "file holding that host:port (written by -health-addr-file)")
	service := fs.String("service", "", "service name to ask about (empty: the whole server)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long the check may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*addr == "") == (*file == "") {
		return errors.New("healthcheck: give exactly one of -addr and -addr-file")
	}
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
		*addr = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", *addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", *addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("healthcheck %s: %s", *addr, resp.GetStatus())
	}
	fmt.Fprintln(stdout, "SERVING")
	return nil
}

// WriteAddr records a listener's address for -addr-file; "" does nothing.
func WriteAddr(file, addr string) error {
	if file == "" {
		return nil
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
		return fmt.Errorf("-health-addr-file: %w", err)
	}
	return os.Rename(tmp, file)
}
