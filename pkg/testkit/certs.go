package testkit

import (
	"io"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/llm-runner-router/llmrouter/pkg/mtls"
)

// Certs is a development CA and one certificate per role, written into a
// test's temporary directory.
type Certs struct{ Dir string }

// DevCerts writes a fresh development set (mtls.WriteDevSet) for the test.
func DevCerts(t T) *Certs {
	t.Helper()
	dir := t.TempDir()
	if err := mtls.WriteDevSet(dir, nil); err != nil {
		t.Fatal(err)
	}
	return &Certs{Dir: dir}
}

// Flags are the -tls-cert, -tls-key and -tls-ca flags of a role.
func (c *Certs) Flags(role string) []string {
	p := mtls.DevPaths(c.Dir, role)
	return []string{"-tls-cert", p.Cert, "-tls-key", p.Key, "-tls-ca", p.CA}
}

// Dial is the dial option of a client holding role's certificate that
// accepts servers with one of the identities want (role names).
func (c *Certs) Dial(t T, role string, want ...string) grpc.DialOption {
	t.Helper()
	src, err := mtls.Load(mtls.DevPaths(c.Dir, role), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(want))
	for i, w := range want {
		ids[i] = mtls.Identity(w)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(src.ClientConfig(ids...)))
}

// Args are role's certificate flags followed by args.
func (c *Certs) Args(role string, args ...string) []string { return append(c.Flags(role), args...) }
