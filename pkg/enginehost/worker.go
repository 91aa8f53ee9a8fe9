package enginehost

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/grpcserver"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
)

// WorkerConfig is what every engine worker process shares: where it listens,
// how it registers, how it stops.
type WorkerConfig struct {
	Listen        string
	Advertise     string
	Consul        string
	ServiceID     string
	CheckInterval time.Duration
	GracePeriod   time.Duration
	// TLS: the worker's certificate and CA (mTLS), or -insecure.
	TLS mtls.Flags
	// HealthListen serves grpc.health.v1 alone, in plaintext (for Consul
	// and Kubernetes probes). With Consul and mTLS it defaults to the
	// listen host on a free port.
	HealthListen string
	// HealthAddrFile receives the health listener's address (one on the
	// listen host, a free port, unless HealthListen names one).
	HealthAddrFile string
	// Callers may call inference RPCs; Admins LoadModel and UnloadModel.
	Callers, Admins string
	// AdminTokenFile holds a token that also grants the admin RPCs
	// ("authorization: Bearer TOKEN"); the only admin credential of an
	// -insecure worker.
	AdminTokenFile string
	// LoadDirs are the directories LoadModel may load from (with the
	// engine's -models-dir).
	LoadDirs DirFlags
}

// DirFlags collects repeated directory flags.
type DirFlags []string

func (d *DirFlags) String() string { return strings.Join(*d, ",") }

// Set adds one directory.
func (d *DirFlags) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty directory")
	}
	*d = append(*d, v)
	return nil
}

// AddFlags registers the worker flags on fs with defaults.
func (c *WorkerConfig) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address to serve the Engine gRPC service on")
	fs.StringVar(&c.Advertise, "advertise", "", "host to register in discovery (default: the listen host)")
	fs.StringVar(&c.Consul, "consul", "", "Consul agent address (host:port) to register with; empty: no registration")
	fs.StringVar(&c.ServiceID, "service-id", "", "discovery id (default: llmrouter-engine-HOST:PORT)")
	fs.DurationVar(&c.CheckInterval, "check-interval", 2*time.Second, "interval of Consul's gRPC health check")
	fs.DurationVar(&c.GracePeriod, "grace", 10*time.Second, "how long shutdown waits for open streams")
	c.TLS.AddFlags(fs)
	fs.StringVar(&c.HealthAddrFile, "health-addr-file", "", "write the health listener's address here (for `healthcheck -addr-file`, e.g. a Kubernetes exec probe)")
	fs.StringVar(&c.HealthListen, "health-listen", "", "plaintext address serving only grpc.health.v1 (Consul checks, Kubernetes probes); with -consul and mTLS: the listen host, a free port")
	fs.StringVar(&c.Callers, "allow-callers", mtls.RoleRouter, "identities (URI SANs or role names, comma-separated) allowed the inference RPCs")
	fs.StringVar(&c.Admins, "admin-identities", mtls.RoleAdmin, "identities allowed LoadModel and UnloadModel")
	fs.Var(&c.LoadDirs, "load-dir", "a directory LoadModel may load models from, besides -models-dir (repeatable); sources elsewhere are refused")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", "", "file holding a bearer token that also grants LoadModel and UnloadModel (the only admin credential with -insecure)")
}

// Validate checks the configuration.
func (c *WorkerConfig) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("-listen %q: %w", c.Listen, err)
	}
	if c.CheckInterval <= 0 || c.GracePeriod <= 0 {
		return fmt.Errorf("-check-interval and -grace must be positive")
	}
	if _, err := mtls.ParseIdentities(c.Callers); err != nil {
		return fmt.Errorf("-allow-callers: %w", err)
	}
	if _, err := mtls.ParseIdentities(c.Admins); err != nil {
		return fmt.Errorf("-admin-identities: %w", err)
	}
	return c.TLS.Validate()
}

// removeHealthAddrFile drops an address file an earlier run of this
// container left (a restarted container keeps its emptyDir): on a shared
// host network it could name another process's port.
func (c *WorkerConfig) removeHealthAddrFile() {
	if c.HealthAddrFile != "" {
		os.Remove(c.HealthAddrFile)
	}
}

// adminMethods are the Engine RPCs only an admin may call.
var adminMethods = []string{enginev1.EngineService_LoadModel_FullMethodName, enginev1.EngineService_UnloadModel_FullMethodName}

// security builds the worker's TLS configuration and authoriser.
func (c *WorkerConfig) security(log *slog.Logger) (*tls.Config, *mtls.Authorizer, error) {
	callers, _ := mtls.ParseIdentities(c.Callers)
	admins, _ := mtls.ParseIdentities(c.Admins)
	a := &mtls.Authorizer{Callers: callers, Admins: admins, AdminMethods: adminMethods, Open: c.TLS.Insecure}
	if c.AdminTokenFile != "" {
		b, err := os.ReadFile(c.AdminTokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("-admin-token-file: %w", err)
		}
		if a.AdminToken = strings.TrimSpace(string(b)); len(a.AdminToken) < 16 {
			return nil, nil, fmt.Errorf("-admin-token-file %s: the token must be at least 16 characters", c.AdminTokenFile)
		}
	}
	if c.TLS.Insecure {
		log.Warn("serving plaintext gRPC (-insecure): any caller may run inference; admin RPCs need the admin token")
		return nil, a, nil
	}
	src, err := mtls.Load(c.TLS, log)
	if err != nil {
		return nil, nil, err
	}
	return src.ServerConfig(mtls.RequireClientCert), a, nil
}

// RunWorker serves backend's Engine service until ctx ends. It prints
// "listening on HOST:PORT" to stdout once serving, registers in Consul when
// configured, and on shutdown turns health NOT_SERVING, deregisters, drains
// streams and flushes telemetry.
func RunWorker(ctx context.Context, c WorkerConfig, service string, backend Catalog, tel *telemetry.Telemetry, log *slog.Logger, stdout io.Writer) error {
	if err := c.Validate(); err != nil {
		return err
	}
	c.removeHealthAddrFile()
	tlsConf, authz, err := c.security(log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	host, portStr, _ := net.SplitHostPort(lis.Addr().String())
	listenHost := host
	if c.Advertise != "" {
		host = c.Advertise
	}
	port, _ := strconv.Atoi(portStr)
	endpoint := net.JoinHostPort(host, portStr)

	healthAddr := c.HealthListen
	if healthAddr == "" && (c.HealthAddrFile != "" || c.Consul != "" && !c.TLS.Insecure) {
		healthAddr = net.JoinHostPort(listenHost, "0")
	}
	var healthLis net.Listener
	checkAddr := endpoint
	if healthAddr != "" {
		if healthLis, err = net.Listen("tcp", healthAddr); err != nil {
			lis.Close()
			return fmt.Errorf("health listen: %w", err)
		}
		defer healthLis.Close() // Run has stopped serving it by then
		_, hp, _ := net.SplitHostPort(healthLis.Addr().String())
		checkAddr = net.JoinHostPort(host, hp)
	}
	srv := grpcserver.New(tel, grpcserver.Options{GracePeriod: c.GracePeriod, Logger: log, TLS: tlsConf, Authorize: authz.Authorize, HealthListener: healthLis, HealthAddrFile: c.HealthAddrFile})
	var eh *Host
	switch b := backend.(type) {
	case Backend:
		eh = New(b, endpoint, Limits{ModelDirs: c.LoadDirs})
	case TextBackend:
		eh = NewText(b, endpoint, Limits{})
	default:
		lis.Close()
		return fmt.Errorf("backend %T is neither a Backend nor a TextBackend", backend)
	}
	enginev1.RegisterEngineServiceServer(srv.GRPC, eh)

	if c.Consul != "" {
		reg, err := discovery.NewConsul(c.Consul, discovery.ServiceName, log)
		if err != nil {
			lis.Close()
			return err
		}
		r := discovery.Registration{ID: c.ServiceID, Address: host, Port: port, CheckInterval: c.CheckInterval, CheckAddress: checkAddr}
		if r.ID == "" {
			r.ID = discovery.ServiceName + "-" + endpoint
		}
		k := discovery.Keep(reg, r, backend.Models, c.CheckInterval, log)
		eh.OnModelsChanged(k.Changed)
		srv.BeforeStop(k.Close)
		log.Info("registering in consul", "id", r.ID, "consul", c.Consul)
	}
	if healthLis != nil {
		fmt.Fprintf(stdout, "health listening on %s\n", healthLis.Addr())
	}
	fmt.Fprintf(stdout, "listening on %s\n", endpoint)
	log.Info("serving", "worker", service, "endpoint", endpoint, "models", len(backend.Models()))
	return srv.Run(ctx, lis)
}

// ModelFlags collects repeated -model NAME=PATH flags.
type ModelFlags [][2]string

func (m *ModelFlags) String() string { return fmt.Sprint(*m) }

// Set parses one NAME=PATH.
func (m *ModelFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("want NAME=PATH, got %q", v)
	}
	*m = append(*m, [2]string{name, path})
	return nil
}

// ModelRegistry is a backend serving model files from disk, as the llama.cpp
// and ONNX Runtime workers do.
type ModelRegistry interface {
	Backend
	// Register checks a model file (or directory) and adds it under name.
	Register(name, path string) (*enginev1.ModelInfo, error)
	// RegisterDir registers the models a directory holds.
	RegisterDir(dir string) error
	// Preload loads every registered model.
	Preload(ctx context.Context) error
}

// ServeModels registers the -model and -models-dir models, preloads them
// unless lazy (the worker is ready only once they are loaded), and serves
// the worker until ctx ends.
func ServeModels(ctx context.Context, c WorkerConfig, service string, reg ModelRegistry, models ModelFlags, dir string, lazy bool,
	getenv func(string) string, log *slog.Logger, stdout io.Writer) error {
	c.removeHealthAddrFile() // before loading: the probe must not see an old address meanwhile
	for _, m := range models {
		if _, err := reg.Register(m[0], m[1]); err != nil {
			return err
		}
	}
	if dir != "" {
		if err := reg.RegisterDir(dir); err != nil {
			return err
		}
	}
	if len(reg.Models()) == 0 {
		return fmt.Errorf("no models: pass -model NAME=PATH or -models-dir")
	}
	if dir != "" {
		c.LoadDirs = append(c.LoadDirs, dir)
	}
	if !lazy {
		began := time.Now()
		if err := reg.Preload(ctx); err != nil {
			return err
		}
		log.Info("models loaded", "count", len(reg.Models()), "took", time.Since(began).Round(time.Millisecond))
	}
	tel, err := telemetry.Setup(ctx, service, getenv)
	if err != nil {
		return err
	}
	return RunWorker(ctx, c, service, reg, tel, log, stdout)
}

// AddLoad adds one model's load to a worker's status: counts and rates add
// up, KV-cache use is the fullest model's.
func AddLoad(st *enginev1.GetStatusResponse, ml *enginev1.ModelLoad) {
	st.Models = append(st.Models, ml)
	st.ActiveSequences += ml.GetActiveSequences()
	st.QueueDepth += ml.GetQueueDepth()
	st.KvCacheUsage = max(st.KvCacheUsage, ml.GetKvCacheUsage())
	st.TokensPerSecond += ml.GetTokensPerSecond()
}
