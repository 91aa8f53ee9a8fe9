// Package grpcserver is the gRPC server kit every service uses: health,
// reflection, OpenTelemetry stats handlers, panic recovery and graceful
// shutdown in a fixed order.
//
// Shutdown order (Run, when its context ends): health reports NOT_SERVING,
// the service deregisters from discovery, GracefulStop runs with a deadline
// and falls back to Stop, then telemetry is flushed.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/llm-runner-router/llmrouter/pkg/healthcheck"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
)

// MaxRecvMsgSize bounds one request message. Services validate their own,
// smaller, field limits and answer InvalidArgument; this is the transport cap.
const MaxRecvMsgSize = 16 << 20

// Server is a gRPC server with health and reflection registered.
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
	// health is the plaintext health-only server, when configured.
	health     *grpc.Server
	healthLis  net.Listener
	healthFile string
	authorize  func(context.Context, string) error

	tel    *telemetry.Telemetry
	log    *slog.Logger
	grace  time.Duration
	before []func(context.Context) error
}

// Options configure New.
type Options struct {
	// GracePeriod bounds GracefulStop before Stop cuts streams. Default 10s.
	GracePeriod time.Duration
	// Logger for lifecycle and panic reports. Default slog.Default().
	Logger *slog.Logger
	// TLS serves over TLS with this configuration (nil: plaintext).
	TLS *tls.Config
	// Authorize, when set, runs before every handler with the full method
	// name; its error (a status) is the RPC's answer.
	Authorize func(ctx context.Context, method string) error
	// HealthListener, when set, serves only grpc.health.v1 in plaintext,
	// for Consul checks and Kubernetes probes that hold no certificate.
	HealthListener net.Listener
	// HealthAddrFile, when set with HealthListener, receives its address
	// (for the healthcheck subcommand's -addr-file).
	HealthAddrFile string
}

// New returns a server instrumented with tel. Register services on s.GRPC,
// then call Run.
func New(tel *telemetry.Telemetry, o Options, extra ...grpc.ServerOption) *Server {
	if o.GracePeriod <= 0 {
		o.GracePeriod = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{tel: tel, log: o.Logger, grace: o.GracePeriod, Health: health.NewServer(), authorize: o.Authorize, healthLis: o.HealthListener, healthFile: o.HealthAddrFile}
	var creds []grpc.ServerOption
	if o.TLS != nil {
		creds = append(creds, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	opts := append(creds, []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider),
			otelgrpc.WithPropagators(tel.Propagator))),
		grpc.ChainUnaryInterceptor(s.recoverUnary),
		grpc.ChainStreamInterceptor(s.recoverStream),
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
	}...)
	s.GRPC = grpc.NewServer(append(opts, extra...)...)
	healthpb.RegisterHealthServer(s.GRPC, s.Health)
	reflection.Register(s.GRPC)
	if s.healthLis != nil {
		s.health = grpc.NewServer(grpc.MaxRecvMsgSize(4 << 10))
		healthpb.RegisterHealthServer(s.health, s.Health)
	}
	return s
}

// StepTimeout bounds the BeforeStop steps together and FlushTimeout the
// telemetry flush: a shutdown takes at most StepTimeout + GracePeriod +
// FlushTimeout (what a Kubernetes terminationGracePeriodSeconds must cover).
const (
	StepTimeout  = 3 * time.Second
	FlushTimeout = 3 * time.Second
)

// BeforeStop adds a step that runs after health turns NOT_SERVING and before
// GracefulStop, such as deregistering from discovery. Steps run in order.
func (s *Server) BeforeStop(f func(context.Context) error) { s.before = append(s.before, f) }

// Run serves on lis until ctx ends, then shuts down in order. It returns the
// first error of serving or of the shutdown steps.
func (s *Server) Run(ctx context.Context, lis net.Listener) error {
	if s.healthLis != nil {
		if err := healthcheck.WriteAddr(s.healthFile, s.healthLis.Addr().String()); err != nil {
			lis.Close()
			return err
		}
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.GRPC.Serve(lis) }()
	if s.health != nil {
		go func() {
			if err := s.health.Serve(s.healthLis); err != nil {
				s.log.Error("health listener stopped", "err", err)
			}
		}()
		defer s.health.Stop()
	}
	s.Health.Resume()
	select {
	case err := <-serveErr:
		s.flush()
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	return errors.Join(s.shutdown(), <-serveErr)
}

func (s *Server) shutdown() error {
	s.Health.Shutdown()
	var errs []error
	// Steps before the drain (deregistration) get StepTimeout, not the
	// grace period: a slow Consul must not eat the time open streams need.
	stepCtx, cancel := context.WithTimeout(context.Background(), StepTimeout)
	defer cancel()
	for _, f := range s.before {
		if err := f(stepCtx); err != nil {
			errs = append(errs, err)
		}
	}
	done := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(s.grace):
		s.log.Warn("graceful stop timed out; cutting open streams", "grace", s.grace)
		s.GRPC.Stop()
		<-done
	}
	errs = append(errs, s.flush())
	return errors.Join(errs...)
}

func (s *Server) flush() error {
	ctx, cancel := context.WithTimeout(context.Background(), FlushTimeout)
	defer cancel()
	if err := s.tel.Shutdown(ctx); err != nil {
		return fmt.Errorf("flush telemetry: %w", err)
	}
	return nil
}

func (s *Server) recovered(method string, p any) error {
	s.log.Error("panic in handler", "method", method, "panic", p, "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "internal error in %s", method)
}

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = s.recovered(info.FullMethod, p)
		}
	}()
	if s.authorize != nil {
		if err := s.authorize(ctx, info.FullMethod); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = s.recovered(info.FullMethod, p)
		}
	}()
	if s.authorize != nil {
		if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
			return err
		}
	}
	return h(srv, ss)
}
