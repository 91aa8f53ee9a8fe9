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
		{[]string{"-static", "a:1", "-max-attempts", "0"}, "must be positive"},
		{[]string{"-static", "a:1", "-max-queued", "-1"}, "must not be negative"},
		{[]string{"-static", "a:1", "-strategies", badStrategies}, `default strategy "x" is not configured`},
		{[]string{"-static", "a:1", "-strategy", "nope"}, `default strategy "nope" is not configured`},
		{[]string{"-static", "a:1", "-keys", badKeys}, "set exactly one of key, key_env and key_sha256"},
		{[]string{"-static", "a:1", "-listen", "not-an-address"}, "listen"},
	}
	for _, tt := range tests {
		err := Run(context.Background(), tt.args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want %q", tt.args, err, tt.want)
		}
	}
}
