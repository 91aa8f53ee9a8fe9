// Package app is the router process: configuration, discovery, the endpoint
// pool and the gRPC server, started and stopped in order.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/grpcserver"
	"github.com/llm-runner-router/llmrouter/pkg/healthcheck"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/services/router/internal/admission"
	"github.com/llm-runner-router/llmrouter/services/router/internal/auth"
	"github.com/llm-runner-router/llmrouter/services/router/internal/cache"
	"github.com/llm-runner-router/llmrouter/services/router/internal/metrics"
	"github.com/llm-runner-router/llmrouter/services/router/internal/openai"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/rawcodec"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

// Config is the router's configuration.
type Config struct {
	Listen      string
	Consul      string
	Static      string
	Strategy    string
	Strategies  string
	MaxAttempts int
	MaxRunning  int
	MaxQueued   int
	QueueWait   time.Duration
	FirstToken  time.Duration
	// Limits of attempts (see server.Config).
	PerModel      int
	HostedFirst   time.Duration
	LocalFirst    time.Duration
	Stall         time.Duration
	MaxRetryAfter time.Duration
	CircuitOpen   time.Duration
	Refresh       time.Duration
	GracePeriod   time.Duration
	Debug         string
	HTTPListen    string
	Keys          string
	// TLS: the router's certificate and CA, with which it dials workers
	// (mTLS, always, unless -insecure) and serves clients (-client-tls).
	TLS              mtls.Flags
	WorkerIdentities string
	ClientTLS        string
	ClientIDs        string
	HealthListen     string
	HealthAddrFile   string
	// Registration of the router itself in Consul (-register).
	Register  bool
	Advertise string
	ServiceID string
	// HTTP and metrics listeners (see http.go).
	HTTP          HTTPOptions
	MetricsListen string
	MetricsKey    string
	// Quotas.
	QuotaRedis     string
	QuotaPrefix    string
	QuotaFail      string
	QuotaMaxTokens int
	KeyConcurrency int
	// The response cache.
	Cache              string
	CacheRedis         string
	CachePrefix        string
	CacheTTL           time.Duration
	CacheMaxBytes      int64
	CacheMaxEntryBytes int
	CacheShared        bool
	SemanticModel      string
	SemanticThreshold  float64
	SemanticThresholds string
	SemanticMax        int
	SemanticOnly       bool
	SemanticTimeout    time.Duration
	AdminTokenFile     string
	// Hedged requests.
	Hedge         string
	HedgeQuantile float64
	HedgeBudget   float64
	HedgeMinDelay time.Duration
}

// AddFlags registers the router's flags with defaults.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address to serve the Router gRPC service on")
	fs.StringVar(&c.Consul, "consul", "", "Consul agent address (host:port) to discover workers through")
	fs.StringVar(&c.Static, "static", "", "comma-separated worker addresses (host:port), instead of Consul")
	fs.StringVar(&c.Strategy, "strategy", "", "default routing strategy (overrides the configuration's default)")
	fs.StringVar(&c.Strategies, "strategies", "", "JSON file of strategies and model aliases (default: the built-in strategies)")
	fs.IntVar(&c.MaxAttempts, "max-attempts", 4, "attempts per request over all models and workers before giving up")
	fs.IntVar(&c.PerModel, "max-attempts-per-model", 2, "attempts on one model per request (a retry after a 5xx or a rate limit); per model in -strategies policies")
	fs.IntVar(&c.MaxRunning, "max-concurrent", 4096, "requests relayed at once (admission control); 0: unlimited")
	fs.IntVar(&c.MaxQueued, "max-queued", 1024, "requests waiting for admission before ResourceExhausted")
	fs.DurationVar(&c.QueueWait, "queue-wait", 5*time.Second, "longest wait in the admission queue")
	fs.DurationVar(&c.FirstToken, "first-token-timeout", 0, "fail over when a worker gives no first token in time, for every model; 0: the hosted and local defaults below")
	fs.DurationVar(&c.HostedFirst, "hosted-first-token-timeout", 30*time.Second, "first-token deadline of hosted models (provider-proxy)")
	fs.DurationVar(&c.LocalFirst, "local-first-token-timeout", 5*time.Second, "floor of local models' first-token deadline, which grows with the prompt and the route's measured prefill rate")
	fs.DurationVar(&c.Stall, "stall-timeout", 30*time.Second, "continue a stream elsewhere when no token came for this long (local routes: 50 inter-token latencies, at least 5s, once measured)")
	fs.DurationVar(&c.MaxRetryAfter, "max-retry-after", 10*time.Second, "longest upstream Retry-After the router waits before retrying the same model; longer goes to a fallback at once")
	fs.DurationVar(&c.CircuitOpen, "circuit-max-open", 10*time.Second, "longest interval between half-open probes of a failing (endpoint, model) route")
	fs.DurationVar(&c.Refresh, "refresh", 2*time.Second, "how often statically listed workers are asked for their models")
	fs.DurationVar(&c.GracePeriod, "grace", 10*time.Second, "how long shutdown waits for open streams")
	fs.StringVar(&c.Keys, "keys", "", "JSON file of API keys with allowed models and quotas (LLMROUTER_API_KEYS=name=key,... adds more); none: no auth")
	fs.StringVar(&c.HTTPListen, "http-listen", "", "address for the OpenAI-compatible HTTP API (e.g. 127.0.0.1:8080); empty: off")
	fs.StringVar(&c.Debug, "debug-listen", "", "address for net/http/pprof and /metrics (e.g. 127.0.0.1:6060); empty: off")
	c.TLS.AddFlags(fs)
	fs.StringVar(&c.WorkerIdentities, "worker-identities", mtls.RoleEngine+","+mtls.RoleProviderProxy, "identities (URI SANs or role names) a worker's certificate may carry")
	fs.StringVar(&c.ClientTLS, "client-tls", "none", "how clients reach the router's gRPC and HTTP listeners: none (plaintext), tls, or mtls (a client certificate signed by -tls-ca)")
	fs.StringVar(&c.ClientIDs, "client-identities", "", "with -client-tls mtls: the identities (URI SANs or role names) a client certificate may carry; empty: any certificate of -tls-ca (API keys decide the rest)")
	fs.StringVar(&c.HealthListen, "health-listen", "", "plaintext address serving only grpc.health.v1 (probes); empty: off, or the listen host on a free port with -register or -health-addr-file")
	fs.StringVar(&c.HealthAddrFile, "health-addr-file", "", "write the health listener's address here (for `router healthcheck -addr-file`, e.g. a Kubernetes exec probe)")
	fs.BoolVar(&c.Register, "register", false, "register this router in Consul (-consul) as "+discovery.RouterServiceName+", its HTTP address in the metadata, with a gRPC health check; deregistered at shutdown")
	fs.StringVar(&c.Advertise, "advertise", "", "host to register with -register (default: the listen host)")
	fs.StringVar(&c.ServiceID, "service-id", "", "discovery id with -register (default: "+discovery.RouterServiceName+"-HOST:PORT)")
	c.HTTP.AddFlags(fs)
	fs.StringVar(&c.QuotaRedis, "quota-redis", "", "Redis (host:port) holding API-key quotas shared by router replicas; empty: in this router's memory")
	fs.StringVar(&c.QuotaPrefix, "quota-redis-prefix", "llmrouter:quota:", "prefix of the quota keys in Redis")
	fs.StringVar(&c.QuotaFail, "quota-fail", "open", "when the quota store cannot answer: open (admit, counted in llmrouter_quota_store_errors_total and logged) or closed (refuse with Unavailable)")
	fs.IntVar(&c.QuotaMaxTokens, "quota-max-tokens", 4096, "max_tokens given to (and reserved for) a request without one under a key with a token quota; per model as quota_max_tokens in -strategies policies")
	fs.IntVar(&c.KeyConcurrency, "max-concurrent-per-key", 256, "requests in flight per API key on this router, unless the key sets max_concurrent (0: unlimited)")
	fs.StringVar(&c.Cache, "cache", "off", "response cache of deterministic requests (temperature 0 or a seed): off, memory (this router's, LRU within -cache-max-bytes) or redis (shared by replicas, -cache-redis)")
	fs.StringVar(&c.CacheRedis, "cache-redis", "", "Redis (host:port) holding the response cache with -cache redis; bound its memory with Redis's maxmemory and an LRU maxmemory-policy")
	fs.StringVar(&c.CachePrefix, "cache-redis-prefix", "llmrouter:cache:", "prefix of the response cache's keys in Redis")
	fs.DurationVar(&c.CacheTTL, "cache-ttl", time.Hour, "how long a cached answer is served")
	fs.Int64Var(&c.CacheMaxBytes, "cache-max-bytes", 256<<20, "bytes the in-memory response cache holds before it evicts the least recently used answers")
	fs.IntVar(&c.CacheMaxEntryBytes, "cache-max-entry-bytes", 1<<20, "longest answer (its stream's bytes) the response cache stores; longer ones are counted as oversized and not stored")
	fs.StringVar(&c.SemanticModel, "semantic-cache-model", "", "embedding model (a sentence encoder a worker serves, e.g. use-lite) for the semantic layer of the response cache: after an exact miss, a close enough last user turn with the same system prompt, turns and tools is served; empty: exact only")
	fs.Float64Var(&c.SemanticThreshold, "semantic-cache-threshold", 0.92, "cosine similarity a semantic hit needs: 0.92 is tuned for use-lite on the tune split of e2e/bench/testdata/semcache (at most 0.5% false hits there; on the test split 23% of paraphrases hit at 0.7% false hits, short of 60% at 0.5%); docs/router.md lists other operating points")
	fs.StringVar(&c.SemanticThresholds, "semantic-cache-thresholds", "", "per-model thresholds, model=similarity,... (overriding -semantic-cache-threshold)")
	fs.IntVar(&c.SemanticMax, "semantic-cache-max-entries", 100000, "vectors the semantic index holds before it evicts the least recently used")
	fs.DurationVar(&c.SemanticTimeout, "semantic-cache-timeout", 500*time.Millisecond, "how long a request waits for its last user turn's embedding before it goes to a worker as a miss")
	fs.BoolVar(&c.SemanticOnly, "semantic-cache-only", false, "skip the exact lookup and answer from the semantic layer alone (for comparing the layers; the default is hybrid: exact, then semantic)")
	fs.BoolVar(&c.CacheShared, "cache-shared-across-keys", false, "let callers with different API keys share cached answers (default: each key's answers are its own)")
	fs.StringVar(&c.Hedge, "hedge", "on", "hedged requests for local models: on (a second attempt on another worker when the first gives no token within -hedge-quantile of the model's recent times to first token) or off; hosted models hedge only where their policy says \"hedge\": true")
	fs.Float64Var(&c.HedgeQuantile, "hedge-quantile", 0.96, "quantile of a model's recent times to first token after which a hedge starts (0.96: due for about 4 % of requests, inside the 5 % budget)")
	fs.Float64Var(&c.HedgeBudget, "hedge-budget", 0.05, "most hedges as a fraction of hedgeable requests (each request earns this much of a hedge; at most 10 saved up)")
	fs.DurationVar(&c.HedgeMinDelay, "hedge-min-delay", 5*time.Millisecond, "least delay before a hedge starts")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", "", "file holding a bearer token that grants the router's admin calls (PurgeCache, POST /admin/cache/purge), as an admin certificate does")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "address serving only /metrics (e.g. 127.0.0.1:9090); empty: off")
	fs.StringVar(&c.MetricsKey, "metrics-key-file", "", "file holding a bearer token that unlocks /metrics on the -http-listen address (without it, /metrics is not served there)")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if (c.Consul == "") == (c.Static == "") {
		return errors.New("set exactly one of -consul and -static")
	}
	if c.Register && c.Consul == "" {
		return errors.New("-register needs -consul")
	}
	if c.MaxAttempts <= 0 || c.PerModel <= 0 || c.Refresh <= 0 || c.GracePeriod <= 0 {
		return errors.New("-max-attempts, -max-attempts-per-model, -refresh and -grace must be positive")
	}
	if c.HostedFirst <= 0 || c.LocalFirst <= 0 || c.Stall <= 0 || c.MaxRetryAfter <= 0 || c.CircuitOpen <= 0 {
		return errors.New("-hosted-first-token-timeout, -local-first-token-timeout, -stall-timeout, -max-retry-after and -circuit-max-open must be positive")
	}
	if c.MaxRunning < 0 || c.MaxQueued < 0 || c.QueueWait < 0 || c.FirstToken < 0 {
		return errors.New("-max-concurrent, -max-queued, -queue-wait and -first-token-timeout must not be negative")
	}
	if err := c.HTTP.Validate(); err != nil {
		return err
	}
	if c.QuotaFail != "open" && c.QuotaFail != "closed" {
		return fmt.Errorf("-quota-fail %q: want open or closed", c.QuotaFail)
	}
	if c.QuotaMaxTokens <= 0 || c.KeyConcurrency < 0 {
		return errors.New("-quota-max-tokens must be positive and -max-concurrent-per-key not negative")
	}
	switch c.Cache {
	case "off", "memory":
		if c.CacheRedis != "" {
			return fmt.Errorf("-cache-redis needs -cache redis (not %s)", c.Cache)
		}
	case "redis":
		if c.CacheRedis == "" {
			return errors.New("-cache redis needs -cache-redis host:port")
		}
	default:
		return fmt.Errorf("-cache %q: want off, memory or redis", c.Cache)
	}
	if c.SemanticModel == "" && (c.SemanticOnly || c.SemanticThresholds != "") {
		return fmt.Errorf("-semantic-cache-only and -semantic-cache-thresholds need -semantic-cache-model")
	}
	if c.SemanticModel != "" {
		if c.Cache == "off" {
			return fmt.Errorf("-semantic-cache-model needs a response cache (-cache memory or redis)")
		}
		if c.SemanticThreshold <= 0 || c.SemanticThreshold > 1 || c.SemanticMax <= 0 || c.SemanticTimeout <= 0 {
			return fmt.Errorf("-semantic-cache-threshold must be in (0, 1], -semantic-cache-max-entries and -semantic-cache-timeout positive")
		}
		if _, err := parseThresholds(c.SemanticThresholds); err != nil {
			return err
		}
	}
	if c.CacheTTL <= 0 || c.CacheMaxBytes <= 0 || c.CacheMaxEntryBytes <= 0 {
		return errors.New("-cache-ttl, -cache-max-bytes and -cache-max-entry-bytes must be positive")
	}
	if c.Hedge != "on" && c.Hedge != "off" {
		return fmt.Errorf("-hedge %q: want on or off", c.Hedge)
	}
	if c.HedgeQuantile <= 0 || c.HedgeQuantile >= 1 || c.HedgeBudget <= 0 || c.HedgeBudget > 1 || c.HedgeMinDelay <= 0 {
		return errors.New("-hedge-quantile must be within (0, 1), -hedge-budget within (0, 1] and -hedge-min-delay positive")
	}
	if _, err := mtls.ParseIdentities(c.WorkerIdentities); err != nil {
		return fmt.Errorf("-worker-identities: %w", err)
	}
	if _, err := mtls.ParseIdentities(c.ClientIDs); err != nil {
		return fmt.Errorf("-client-identities: %w", err)
	}
	if c.ClientIDs != "" && c.ClientTLS != "mtls" {
		return errors.New("-client-identities needs -client-tls mtls")
	}
	switch c.ClientTLS {
	case "none":
	case "tls", "mtls":
		if c.TLS.Insecure {
			return fmt.Errorf("-client-tls %s needs the router's certificate, not -insecure", c.ClientTLS)
		}
	default:
		return fmt.Errorf("-client-tls %q: want none, tls or mtls", c.ClientTLS)
	}
	return c.TLS.Validate()
}

// security returns the credentials the router dials workers with and the
// TLS configuration of its own listeners (nil: plaintext).
func (c *Config) security(log *slog.Logger) (credentials.TransportCredentials, *tls.Config, error) {
	if c.TLS.Insecure {
		log.Warn("plaintext to workers and clients (-insecure): no identities are checked")
		return insecure.NewCredentials(), nil, nil
	}
	src, err := mtls.Load(c.TLS, log)
	if err != nil {
		return nil, nil, err
	}
	want, _ := mtls.ParseIdentities(c.WorkerIdentities)
	var serve *tls.Config
	switch c.ClientTLS {
	case "tls":
		serve = src.ServerConfig(mtls.NoClientCert)
	case "mtls":
		clients, _ := mtls.ParseIdentities(c.ClientIDs)
		serve = src.ServerConfig(mtls.RequireClientCert, clients...)
	}
	return credentials.NewTLS(src.ClientConfig(want...)), serve, nil
}

// Run parses args and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Run(ctx, args[1:], stdout)
	}
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	var cfg Config
	cfg.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "router")
	// A file left by an earlier run of this container would point a probe
	// at whatever now holds that port.
	if cfg.HealthAddrFile != "" {
		os.Remove(cfg.HealthAddrFile)
	}
	tel, err := telemetry.Setup(ctx, "router", getenv)
	if err != nil {
		return err
	}
	var watcher discovery.Watcher
	if cfg.Consul != "" {
		if watcher, err = discovery.NewConsul(cfg.Consul, discovery.ServiceName, log); err != nil {
			return err
		}
	} else {
		watcher = discovery.NewStatic(strings.Split(cfg.Static, ",")...)
	}
	schedCfg := plugins.DefaultConfig()
	if cfg.Strategies != "" {
		if schedCfg, err = scheduling.LoadConfig(cfg.Strategies); err != nil {
			return err
		}
	}
	if cfg.Strategy != "" {
		schedCfg.Default = cfg.Strategy
	}
	sched, err := plugins.Builtin().Build(schedCfg)
	if err != nil {
		return fmt.Errorf("strategies: %w", err)
	}
	keys, err := auth.Load(cfg.Keys, getenv)
	if err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	if !keys.Enabled() {
		log.Warn("no API keys configured: the router accepts every caller")
	}
	keys.SetDefaultConcurrency(cfg.KeyConcurrency)
	var limiter auth.Limiter
	if cfg.QuotaRedis != "" {
		rl := auth.NewRedis(cfg.QuotaRedis, cfg.QuotaPrefix)
		defer rl.Close()
		limiter = rl
	}
	workerCreds, serveTLS, err := cfg.security(log)
	if err != nil {
		return err
	}
	p := pool.New(tel, log, cfg.Refresh)
	p.SetCredentials(workerCreds)
	br := pool.DefaultBreaker
	br.MaxOpen = cfg.CircuitOpen
	p.SetBreaker(br)
	mets := metrics.New(p, sched.Configured)
	cacheCfg := server.CacheConfig{TTL: cfg.CacheTTL, MaxEntryBytes: cfg.CacheMaxEntryBytes, SharedAcrossKeys: cfg.CacheShared}
	if cfg.SemanticModel != "" {
		thresholds, _ := parseThresholds(cfg.SemanticThresholds) // checked by Validate
		idx := cache.NewSemantic(cfg.SemanticMax)
		mets.WatchSemantic(func() (int, int64, int64) { st := idx.Stats(); return st.Entries, st.Bytes, st.Evictions })
		cacheCfg.Semantic = server.SemanticConfig{Index: idx, Model: cfg.SemanticModel,
			Threshold: float32(cfg.SemanticThreshold), Thresholds: thresholds, Only: cfg.SemanticOnly, Timeout: cfg.SemanticTimeout}
	}
	switch cfg.Cache {
	case "memory":
		mem := cache.NewMemory(cfg.CacheMaxBytes)
		mets.WatchCache(func() (int, int64, int64) { st := mem.Stats(); return st.Entries, st.Bytes, st.Evictions })
		cacheCfg.Store = mem
	case "redis":
		rc := cache.NewRedis(cfg.CacheRedis, cfg.CachePrefix)
		defer rc.Close()
		cacheCfg.Store = rc
	}
	adminToken, err := readKeyFile(cfg.AdminTokenFile)
	if err != nil {
		return fmt.Errorf("-admin-token-file: %w", err)
	}
	srvImpl := server.New(p, sched, server.Config{
		Metrics:     mets,
		RawRelay:    true,
		MaxAttempts: cfg.MaxAttempts, MaxAttemptsPerModel: cfg.PerModel, FirstTokenTimeout: cfg.FirstToken,
		HostedFirstToken: cfg.HostedFirst, LocalFirstToken: cfg.LocalFirst, StallTimeout: cfg.Stall, MaxRetryAfter: cfg.MaxRetryAfter,
		Admission: admission.New(cfg.MaxRunning, cfg.MaxQueued, cfg.QueueWait),
		Keys:      keys,
		Limiter:   limiter, QuotaFailClosed: cfg.QuotaFail == "closed", QuotaMaxTokens: cfg.QuotaMaxTokens, Log: log,
		WriteTimeout: cfg.HTTP.WriteTimeout,
		Cache:        cacheCfg, AdminToken: adminToken,
		Hedge: server.HedgeConfig{Disabled: cfg.Hedge == "off", Quantile: cfg.HedgeQuantile, Budget: cfg.HedgeBudget, MinDelay: cfg.HedgeMinDelay},
	})
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var healthLis net.Listener
	listenHost, _, _ := net.SplitHostPort(lis.Addr().String())
	if cfg.HealthListen == "" && (cfg.Register || cfg.HealthAddrFile != "") {
		cfg.HealthListen = net.JoinHostPort(listenHost, "0")
	}
	if cfg.HealthListen != "" {
		if healthLis, err = net.Listen("tcp", cfg.HealthListen); err != nil {
			lis.Close()
			return fmt.Errorf("health listen: %w", err)
		}
		defer healthLis.Close()
		fmt.Fprintf(stdout, "health listening on %s\n", healthLis.Addr())
	}
	srv := grpcserver.New(tel, grpcserver.Options{GracePeriod: cfg.GracePeriod, Logger: log, TLS: serveTLS, HealthListener: healthLis, HealthAddrFile: cfg.HealthAddrFile},
		grpc.ForceServerCodecV2(rawcodec.New()), server.CancelableStreams())
	routerv1.RegisterRouterServiceServer(srv.GRPC, srvImpl)

	poolCtx, stopPool := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(poolCtx, watcher) })
	defer func() {
		stopPool()
		wg.Wait()
	}()
	metricsKey, err := readKeyFile(cfg.MetricsKey)
	if err != nil {
		lis.Close()
		return fmt.Errorf("-metrics-key-file: %w", err)
	}
	// The HTTP listeners drain from the moment shutdown begins, beside the
	// gRPC drain (not after it), so a shutdown stays within
	// grpcserver.StepTimeout + -grace + grpcserver.FlushTimeout.
	httpCtx, startHTTPStop := context.WithCancel(context.Background())
	var httpStops sync.WaitGroup
	defer httpStops.Wait()
	defer startHTTPStop()
	var httpAddr string
	listeners := []struct {
		name, addr string
		handler    http.Handler
		tls        *tls.Config
	}{
		{"debug", cfg.Debug, debugMux(mets.Handler()), nil},
		{"metrics", cfg.MetricsListen, metricsOnly(mets.Handler()), nil},
		{"http", cfg.HTTPListen, apiMux(openai.New(srvImpl, openai.Options{WriteTimeout: cfg.HTTP.WriteTimeout}), mets.Handler(), metricsKey, openai.PurgeHandler(srvImpl.PurgeCache)), serveTLS},
	}
	for _, l := range listeners {
		if l.addr == "" {
			continue
		}
		stop, addr, err := serveHTTP(l.name, l.addr, l.handler, l.tls, cfg.HTTP, cfg.GracePeriod, log)
		if err != nil {
			lis.Close()
			return err
		}
		httpStops.Go(func() {
			<-httpCtx.Done()
			stop()
		})
		fmt.Fprintf(stdout, "%s listening on %s\n", l.name, addr)
		if l.name == "http" {
			httpAddr = addr
		}
	}
	if cfg.Register {
		if err := register(cfg, lis.Addr(), healthLis.Addr(), httpAddr, srv, log); err != nil {
			lis.Close()
			return err
		}
	}
	// The HTTP listeners start draining once deregistered (a step after
	// register's), beside the gRPC drain.
	srv.BeforeStop(func(context.Context) error {
		startHTTPStop()
		return nil
	})
	fmt.Fprintf(stdout, "listening on %s\n", lis.Addr())
	log.Info("serving", "address", lis.Addr().String(), "default_strategy", sched.Default(), "strategies", sched.Names())
	return srv.Run(ctx, lis)
}

// register keeps the router registered in Consul while it serves: its gRPC
// address, its HTTP API's in the "http" metadata (and how clients must
// connect in "client_tls"), checked through the plaintext health listener.
// It deregisters when shutdown begins.
func register(cfg Config, grpcAddr, healthAddr net.Addr, httpAddr string, srv *grpcserver.Server, log *slog.Logger) error {
	reg, err := discovery.NewConsul(cfg.Consul, discovery.RouterServiceName, log)
	if err != nil {
		return err
	}
	host, portStr, _ := net.SplitHostPort(grpcAddr.String())
	if cfg.Advertise != "" {
		host = cfg.Advertise
	}
	port, _ := strconv.Atoi(portStr)
	_, healthPort, _ := net.SplitHostPort(healthAddr.String())
	meta := map[string]string{"client_tls": cfg.ClientTLS}
	if httpAddr != "" {
		_, httpPort, _ := net.SplitHostPort(httpAddr)
		meta["http"] = net.JoinHostPort(host, httpPort)
	}
	r := discovery.Registration{ID: cfg.ServiceID, Address: host, Port: port, CheckAddress: net.JoinHostPort(host, healthPort), Meta: meta}
	if r.ID == "" {
		r.ID = discovery.RouterServiceName + "-" + net.JoinHostPort(host, portStr)
	}
	k := discovery.Keep(reg, r, nil, 2*time.Second, log)
	srv.BeforeStop(k.Close)
	log.Info("registering in consul", "id", r.ID, "consul", cfg.Consul)
	return nil
}

// parseThresholds reads model=similarity pairs.
func parseThresholds(s string) (map[string]float32, error) {
	out := map[string]float32{}
	for pair := range strings.SplitSeq(s, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		model, v, ok := strings.Cut(pair, "=")
		f, err := strconv.ParseFloat(v, 32)
		if !ok || model == "" || err != nil || f <= 0 || f > 1 {
			return nil, fmt.Errorf("-semantic-cache-thresholds: %q is not model=similarity with a similarity in (0, 1]", pair)
		}
		out[model] = float32(f)
	}
	return out, nil
}
