package app

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunRejectsBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	badStrategies := filepath.Join(dir, "s.json")
	if err := os.WriteFile(badStrategies, []byte(`{"default": "x", "strategies": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	badKeys := filepath.Join(dir, "k.json")
	if err := os.WriteFile(badKeys, []byte(`{"keys": [{"name": "a"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{nil, "set exactly one of -consul and -static"},
		{[]string{"-static", "a:1", "-consul", "b:2"}, "set exactly one"},
		{[]string{"-static", "a:1"}, "mTLS needs -tls-cert, -tls-key and -tls-ca"},
		{[]string{"-static", "a:1", "-tls-cert", "c.pem"}, "mTLS needs -tls-cert, -tls-key and -tls-ca"},
		{[]string{"-static", "a:1", "-insecure", "-tls-ca", "ca.pem"}, "exclude each other"},
		{[]string{"-static", "a:1", "-insecure", "-client-tls", "mtls"}, "needs the router's certificate"},
		{[]string{"-static", "a:1", "-insecure", "-client-tls", "yes"}, "want none, tls or mtls"},
		{[]string{"-static", "a:1", "-insecure", "-worker-identities", "http://x/y"}, "want spiffe://"},
		{[]string{"-static", "a:1", "-tls-cert", "missing.pem", "-tls-key", "k.pem", "-tls-ca", "ca.pem"}, "missing.pem"},
		{[]string{"-static", "a:1", "-max-attempts", "0"}, "must be positive"},
		{[]string{"-static", "a:1", "-max-queued", "-1"}, "must not be negative"},
		{[]string{"-static", "a:1", "-insecure", "-strategies", badStrategies}, `default strategy "x" is not configured`},
		{[]string{"-static", "a:1", "-insecure", "-strategy", "nope"}, `default strategy "nope" is not configured`},
		{[]string{"-static", "a:1", "-insecure", "-keys", badKeys}, "set exactly one of key, key_env and key_sha256"},
		{[]string{"-static", "a:1", "-insecure", "-listen", "not-an-address"}, "listen"},
		{[]string{"-static", "a:1", "-insecure", "-hedge", "sometimes"}, `-hedge "sometimes": want on or off`},
		{[]string{"-static", "a:1", "-insecure", "-hedge-quantile", "1"}, "-hedge-quantile must be within (0, 1)"},
		{[]string{"-static", "a:1", "-insecure", "-hedge-budget", "0"}, "-hedge-budget within (0, 1]"},
		{[]string{"-static", "a:1", "-insecure", "-semantic-cache-model", "use-lite"}, "-semantic-cache-model needs a response cache"},
		{[]string{"-static", "a:1", "-insecure", "-cache", "memory", "-semantic-cache-model", "use-lite", "-semantic-cache-threshold", "1.5"}, "-semantic-cache-threshold must be in (0, 1]"},
		{[]string{"-static", "a:1", "-insecure", "-cache", "memory", "-semantic-cache-model", "use-lite", "-semantic-cache-thresholds", "m=2"}, `-semantic-cache-thresholds: "m=2"`},
		{[]string{"-static", "a:1", "-insecure", "-cache", "memory", "-semantic-cache-only"}, "need -semantic-cache-model"},
	}
	for _, tt := range tests {
		err := Run(context.Background(), tt.args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want %q", tt.args, err, tt.want)
		}
	}
}
