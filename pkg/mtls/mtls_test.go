package mtls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func load(t *testing.T, dir, role string) *Source {
	t.Helper()
	s, err := Load(DevPaths(dir, role), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handshake runs a TLS handshake over loopback TCP, then one byte each way,
// and returns the client's and the server's errors.
func handshake(client, server *tls.Config) (cerr, serr error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, err
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		s := tls.Server(conn, server)
		if err := s.Handshake(); err != nil {
			done <- err
			return
		}
		if _, err := s.Read(make([]byte, 1)); err != nil {
			done <- err
			return
		}
		_, err = s.Write([]byte{1})
		done <- err
	}()
	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		return err, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(conn, client)
	cerr = c.Handshake()
	if cerr == nil {
		if _, cerr = c.Write([]byte{1}); cerr == nil {
			// TLS 1.3: a refused client certificate shows on the read.
			_, cerr = c.Read(make([]byte, 1))
		}
	}
	return cerr, <-done
}

// foreignCert signs a certificate for uri with dir's development CA.
func foreignCert(t *testing.T, dir, uri string) Flags {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(ca.Certificate[0])
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	p := Flags{Cert: filepath.Join(dir, "foreign.pem"), Key: filepath.Join(dir, "foreign-key.pem"), CA: filepath.Join(dir, "ca.pem")}
	if err := writePEM(p.Cert, "CERTIFICATE", der, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeKey(p.Key, key); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHandshakesCheckChainAndIdentity(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	if err := WriteDevSet(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteDevSet(other, nil); err != nil {
		t.Fatal(err)
	}
	router, engine := load(t, dir, RoleRouter), load(t, dir, RoleEngine)
	foreign, err := Load(foreignCert(t, dir, "spiffe://elsewhere/engine"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		client, server *tls.Config
		want           string // in the client's or the server's error; "" = success
	}{
		{"router to engine", router.ClientConfig(Identity(RoleEngine)), engine.ServerConfig(RequireClientCert), ""},
		{"a server with another identity", router.ClientConfig(Identity(RoleProviderProxy)), engine.ServerConfig(RequireClientCert), "server identity spiffe://llmrouter/engine is not one of"},
		{"a server of another CA", router.ClientConfig(Identity(RoleEngine)), load(t, other, RoleEngine).ServerConfig(RequireClientCert), "certificate signed by unknown authority"},
		{"a server of another trust domain", router.ClientConfig(Identity(RoleEngine)), foreign.ServerConfig(RequireClientCert), "URI SAN"},
		{"a client of another CA", load(t, other, RoleRouter).ClientConfig(Identity(RoleEngine)), engine.ServerConfig(RequireClientCert), "bad certificate"},
		{"a client not among the allowed", load(t, dir, RoleAdmin).ClientConfig(Identity(RoleEngine)), engine.ServerConfig(RequireClientCert, Identity(RoleRouter)), "is not one of"},
		{"an allowed client", router.ClientConfig(Identity(RoleEngine)), engine.ServerConfig(RequireClientCert, Identity(RoleRouter)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cerr, serr := handshake(tt.client, tt.server)
			if tt.want == "" {
				if cerr != nil || serr != nil {
					t.Fatalf("client %v, server %v", cerr, serr)
				}
				return
			}
			if cerr == nil && serr == nil {
				t.Fatal("handshake succeeded")
			}
			if msg := errString(cerr) + " | " + errString(serr); !strings.Contains(msg, tt.want) {
				t.Fatalf("errors %q lack %q", msg, tt.want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A reload that fails keeps the certificate in use; a good one replaces it.
func TestReloadKeepsTheLastGoodSet(t *testing.T) {
	old := ReloadInterval
	ReloadInterval = 0
	t.Cleanup(func() { ReloadInterval = old })
	dir := t.TempDir()
	if err := WriteDevSet(dir, nil, RoleEngine); err != nil {
		t.Fatal(err)
	}
	s := load(t, dir, RoleEngine)
	first, _ := s.current()
	p := DevPaths(dir, RoleEngine)
	if err := os.WriteFile(p.Cert, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.current(); !bytes.Equal(c.Certificate[0], first.Certificate[0]) {
		t.Fatal("a broken certificate file replaced the good one")
	}
	time.Sleep(10 * time.Millisecond) // a new modification time
	if err := WriteDevSet(dir, nil, RoleEngine); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.current(); bytes.Equal(c.Certificate[0], first.Certificate[0]) {
		t.Fatal("the rewritten certificate was not reloaded")
	}
}

func TestParseIdentitiesAndFlags(t *testing.T) {
	ids, err := ParseIdentities(" router, spiffe://llmrouter/admin ,,")
	if err != nil || len(ids) != 2 || ids[0] != Identity(RoleRouter) || ids[1] != "spiffe://llmrouter/admin" {
		t.Fatalf("%v %v", ids, err)
	}
	for _, bad := range []string{"https://llmrouter/router", "spiffe:///x", "%zz://x"} {
		if _, err := ParseIdentities(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, f := range []Flags{{Cert: "c"}, {Insecure: true, CA: "ca"}, {}} {
		if f.Validate() == nil {
			t.Errorf("%+v accepted", f)
		}
	}
	if (Flags{Insecure: true}).Validate() != nil || (Flags{Cert: "c", Key: "k", CA: "a"}).Validate() != nil {
		t.Error("valid flags refused")
	}
}
