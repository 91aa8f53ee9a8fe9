// Package mtls is the mesh's transport security: certificates and a CA read
// from files (and re-read when they change), identities carried as URI SANs
// such as spiffe://llmrouter/router, TLS configurations that verify a peer by
// its identity rather than by the address dialled, and the per-RPC
// authorisation every worker applies.
//
// One certificate per role serves any number of replicas: a client checks
// that the server's chain leads to the CA and that its URI SAN is one it
// expects; a server requires a CA-signed client certificate and its
// authoriser decides per method which identities may call.
//
// A Source is safe for concurrent use; handshakes read the current
// certificate and CA, and at most once per ReloadInterval a handshake checks
// the files for changes.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scheme and TrustDomain make the mesh's identities:
// spiffe://llmrouter/<role>.
const (
	Scheme      = "spiffe"
	TrustDomain = "llmrouter"
)

// The roles of the mesh.
const (
	RoleRouter        = "router"
	RoleEngine        = "engine"
	RoleProviderProxy = "provider-proxy"
	RoleAdmin         = "admin"
	RoleClient        = "client"
)

// Identity is the URI SAN of a role.
func Identity(role string) string { return Scheme + "://" + TrustDomain + "/" + role }

// ReloadInterval is how often, at most, a handshake checks whether the
// certificate files changed.
var ReloadInterval = time.Second

// Flags name the certificate files of a process, or -insecure.
type Flags struct {
	Cert, Key, CA string
	// Insecure serves and dials plaintext (local experiments only).
	Insecure bool
}

// AddFlags registers -tls-cert, -tls-key, -tls-ca and -insecure.
func (f *Flags) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.Cert, "tls-cert", "", "PEM certificate of this process (its identity is the URI SAN, e.g. "+Identity("router")+")")
	fs.StringVar(&f.Key, "tls-key", "", "PEM private key of -tls-cert")
	fs.StringVar(&f.CA, "tls-ca", "", "PEM CA bundle that peers' certificates must chain to")
	fs.BoolVar(&f.Insecure, "insecure", false, "plaintext gRPC, no identities (local experiments; admin RPCs still need -admin-token-file)")
}

// Validate checks that the files are all set, or -insecure alone.
func (f Flags) Validate() error {
	set := f.Cert != "" || f.Key != "" || f.CA != ""
	switch {
	case f.Insecure && set:
		return errors.New("-insecure and -tls-cert/-tls-key/-tls-ca exclude each other")
	case f.Insecure:
		return nil
	case f.Cert == "" || f.Key == "" || f.CA == "":
		return errors.New("mTLS needs -tls-cert, -tls-key and -tls-ca (make certs writes a development set), or -insecure for plaintext")
	}
	return nil
}

// Source loads the certificate, key and CA and reloads them when the files
// change. A reload that fails keeps the previous set and logs why.
type Source struct {
	files Flags
	log   *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	pool    *x509.CertPool
	stamps  [3]stamp
	checked time.Time
}

type stamp struct {
	mod  time.Time
	size int64
}

// Load reads the files named by f (which must not be -insecure).
func Load(f Flags, log *slog.Logger) (*Source, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if f.Insecure {
		return nil, errors.New("mtls.Load: -insecure has no certificates")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Source{files: f, log: log}
	stamps, err := s.stat()
	if err != nil {
		return nil, err
	}
	if err := s.read(stamps); err != nil {
		return nil, err
	}
	s.checked = time.Now()
	return s, nil
}

func (s *Source) stat() ([3]stamp, error) {
	var st [3]stamp
	for i, p := range []string{s.files.Cert, s.files.Key, s.files.CA} {
		fi, err := os.Stat(p)
		if err != nil {
			return st, fmt.Errorf("tls: %w", err)
		}
		st[i] = stamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

// read parses the files; s.mu is held or s is not shared yet.
func (s *Source) read(st [3]stamp) error {
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		// The error of LoadX509KeyPair never quotes the files' bytes.
		return fmt.Errorf("tls: certificate %s and key %s: %w", s.files.Cert, s.files.Key, err)
	}
	pem, err := os.ReadFile(s.files.CA)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("tls: CA bundle %s holds no PEM certificate", s.files.CA)
	}
	s.cert, s.pool, s.stamps = &cert, pool, st
	return nil
}

// current returns the certificate and CA, reloading them when the files
// changed since the last check.
func (s *Source) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.checked) >= ReloadInterval {
		s.checked = time.Now()
		st, err := s.stat()
		if err == nil && st != s.stamps {
			err = s.read(st)
			if err == nil {
				s.log.Info("reloaded TLS certificate and CA", "cert", s.files.Cert, "ca", s.files.CA)
			}
		}
		if err != nil {
			s.log.Warn("TLS reload failed; keeping the previous certificate", "err", err)
		}
	}
	return s.cert, s.pool
}

// ClientAuth is how a server treats client certificates.
type ClientAuth int

const (
	// RequireClientCert: a CA-signed client certificate is required (mTLS).
	RequireClientCert ClientAuth = iota
	// NoClientCert: server-authenticated TLS only.
	NoClientCert
)

// ServerConfig is the TLS configuration of a server. With allowed
// identities (and RequireClientCert), a client whose certificate carries
// another is refused at the handshake; per-method checks are the
// Authorizer's.
func (s *Source) ServerConfig(auth ClientAuth, allowed ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := s.current()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				NextProtos:   []string{"h2"},
			}
			if auth == RequireClientCert {
				c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool
				if len(allowed) > 0 {
					c.VerifyConnection = func(cs tls.ConnectionState) error {
						if len(cs.PeerCertificates) == 0 {
							return errors.New("client sent no certificate")
						}
						if id := IdentityOf(cs.PeerCertificates[0]); !slices.Contains(allowed, id) {
							return fmt.Errorf("client identity %q is not one of %s", id, strings.Join(allowed, ", "))
						}
						return nil
					}
				}
			}
			return c, nil
		},
	}
}

// ClientConfig is the TLS configuration of a client that accepts a server
// whose chain leads to the CA and whose identity is one of want, whatever
// address it dialled (so one certificate serves every replica of a role).
func (s *Source) ClientConfig(want ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The chain and the identity are checked in VerifyConnection, not
		// against the host name dialled.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := s.current()
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, pool := s.current()
			id, err := verify(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if !slices.Contains(want, id) {
				return fmt.Errorf("server identity %s is not one of %s", id, strings.Join(want, ", "))
			}
			return nil
		},
	}
}

// verify checks a peer's chain against pool and returns its identity.
func verify(certs []*x509.Certificate, pool *x509.CertPool, usage x509.ExtKeyUsage) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("peer certificate: %w", err)
	}
	id := IdentityOf(certs[0])
	if id == "" {
		return "", errors.New("peer certificate has no " + Scheme + "://" + TrustDomain + "/ URI SAN")
	}
	return id, nil
}

// IdentityOf is the certificate's mesh identity (its first URI SAN in the
// trust domain), or "".
func IdentityOf(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if u.Scheme == Scheme && u.Host == TrustDomain {
			return u.String()
		}
	}
	return ""
}

// ParseIdentities splits a comma-separated list of identities, accepting
// bare role names ("router") for spiffe://llmrouter/router.
func ParseIdentities(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !strings.Contains(p, "://") {
			p = Identity(p)
		}
		u, err := url.Parse(p)
		if err != nil || u.Scheme != Scheme || u.Host == "" {
			return nil, fmt.Errorf("identity %q: want %s://TRUST-DOMAIN/NAME or a role name", p, Scheme)
		}
		out = append(out, p)
	}
	return out, nil
}

// DialConfig is the TLS configuration of a command-line client of a
// server with identity one of want: mTLS with -tls-cert, -tls-key and
// -tls-ca; server authentication only with -tls-ca alone (a server run
// with -client-tls tls); nil (plaintext) with none of them.
func DialConfig(f Flags, want ...string) (*tls.Config, error) {
	switch {
	case f.Insecure || f.Cert == "" && f.Key == "" && f.CA == "":
		return nil, nil
	case f.Cert == "" && f.Key == "":
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", f.CA)
		}
		return &tls.Config{
			MinVersion:         tls.VersionTLS13,
			InsecureSkipVerify: true, // checked below: the chain and the identity, not the host name
			VerifyConnection: func(cs tls.ConnectionState) error {
				id, err := verify(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth)
				if err != nil {
					return err
				}
				if !slices.Contains(want, id) {
					return fmt.Errorf("server identity %s is not one of %s", id, strings.Join(want, ", "))
				}
				return nil
			},
		}, nil
	}
	s, err := Load(f, nil)
	if err != nil {
		return nil, err
	}
	return s.ClientConfig(want...), nil
}
