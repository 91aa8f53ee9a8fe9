package app

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"
)

// HTTPOptions bound the router's HTTP listeners, so that slow or stuck
// clients cannot hold connections or memory.
type HTTPOptions struct {
	// ReadTimeout bounds reading a request, headers and body.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write of a response (every SSE event, and
	// every gRPC message): a client that stops reading is cut after it and
	// its worker sequence freed. It is not a bound on a whole stream.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
}

// AddFlags registers the options with their defaults.
func (o *HTTPOptions) AddFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.ReadTimeout, "http-read-timeout", 30*time.Second, "longest time to read an HTTP request, headers and body")
	fs.DurationVar(&o.WriteTimeout, "write-timeout", 30*time.Second, "longest a single write to a client may block (SSE event or gRPC message); a client that stops reading is cut after it")
	fs.DurationVar(&o.IdleTimeout, "http-idle-timeout", 2*time.Minute, "close HTTP keep-alive connections idle this long")
	fs.IntVar(&o.MaxHeaderBytes, "http-max-header-bytes", 64<<10, "largest HTTP request header block")
}

// Validate checks the options.
func (o *HTTPOptions) Validate() error {
	if o.ReadTimeout <= 0 || o.WriteTimeout <= 0 || o.IdleTimeout <= 0 || o.MaxHeaderBytes < 4096 {
		return errors.New("-http-read-timeout, -write-timeout and -http-idle-timeout must be positive, -http-max-header-bytes at least 4096")
	}
	return nil
}

// serveHTTP serves h on addr until the returned func drains it (bounded by
// grace).
func serveHTTP(name, addr string, h http.Handler, tlsConf *tls.Config, o HTTPOptions, grace time.Duration, log *slog.Logger) (func(), string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("%s listen: %w", name, err)
	}
	if tlsConf != nil {
		c := tlsConf.Clone()
		get := c.GetConfigForClient
		c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := get(hi)
			if cc != nil {
				cc.NextProtos = []string{"h2", "http/1.1"}
			}
			return cc, err
		}
		lis = tls.NewListener(lis, c)
	}
	srv := &http.Server{
		Handler: h, ReadHeaderTimeout: min(o.ReadTimeout, 10*time.Second), ReadTimeout: o.ReadTimeout,
		IdleTimeout: o.IdleTimeout, MaxHeaderBytes: o.MaxHeaderBytes,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "listener", name, "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}, lis.Addr().String(), nil
}

// debugMux serves net/http/pprof and the metrics.
func debugMux(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/metrics", metrics)
	return mux
}

// metricsOnly serves the metrics and nothing else.
func metricsOnly(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	return mux
}

// apiMux is the public listener: the OpenAI API, the admin purge of the
// response cache (for the admin token's bearer), and /metrics only for the
// bearer of the metrics key.
func apiMux(api, metrics http.Handler, key string, purge http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle("POST /admin/cache/purge", purge)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if key == "" {
			http.Error(w, "metrics are not served on the API listener: scrape -metrics-listen, or set -metrics-key-file", http.StatusNotFound)
			return
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(key))
		if !strings.EqualFold(scheme, "bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "metrics need \"Authorization: Bearer <metrics key>\"", http.StatusUnauthorized)
			return
		}
		metrics.ServeHTTP(w, r)
	})
	return mux
}

// readKeyFile reads a secret from a file ("" when no file is named).
func readKeyFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	key := strings.TrimSpace(string(b))
	if len(key) < 16 {
		return "", fmt.Errorf("%s: the key must be at least 16 characters", path)
	}
	return key, nil
}
