package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

func withKey(header, value string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(header, value))
}

func TestLoadAndAuthenticate(t *testing.T) {
	sum := sha256.Sum256([]byte("sk-hashed"))
	path := filepath.Join(t.TempDir(), "keys.json")
	cfg := `{"keys": [
	  {"name": "inline", "key": "sk-inline", "models": ["m"], "requests_per_minute": 2},
	  {"name": "from-env", "key_env": "TEAM_KEY"},
	  {"name": "hashed", "key_sha256": "` + hex.EncodeToString(sum[:]) + `"}
	]}`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TEAM_KEY": "sk-env", "LLMROUTER_API_KEYS": "ops=sk-ops"}
	kr, err := Load(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ctx  context.Context
		name string
		code codes.Code
	}{
		{withKey("authorization", "Bearer sk-inline"), "inline", codes.OK},
		{withKey("authorization", "Bearer sk-env"), "from-env", codes.OK},
		{withKey("x-api-key", "sk-hashed"), "hashed", codes.OK},
		{withKey("authorization", "Bearer sk-ops"), "ops", codes.OK},
		{withKey("authorization", "Bearer sk-wrong-secret"), "", codes.Unauthenticated},
		{withKey("authorization", "Basic sk-inline"), "", codes.Unauthenticated},
		{context.Background(), "", codes.Unauthenticated},
	}
	for _, tt := range tests {
		k, err := kr.Authenticate(tt.ctx)
		if rpcerr.Code(err) != tt.code || (err == nil && k.Name != tt.name) {
			t.Fatalf("got %v %v, want %s %v", k, err, tt.name, tt.code)
		}
		if err != nil && strings.Contains(err.Error(), "sk-") {
			t.Fatalf("error echoes the key: %v", err)
		}
	}
	bad := []string{
		`{"keys": [{"name": "x"}]}`,
		`{"keys": [{"name": "x", "key": "a", "key_env": "B"}]}`,
		`{"keys": [{"name": "x", "key_sha256": "abc"}]}`,
		`{"keys": [{"name": "x", "key": "a", "requests_per_minute": -1}]}`,
		`{"keys": [{"name": "x", "key": "a"}, {"name": "x", "key": "b"}]}`,
		`{"keys": [{"name": "x", "key": "a", "colour": "red"}]}`,
	}
	for _, b := range bad {
		if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path, func(string) string { return "" }); err == nil {
			t.Errorf("accepted %s", b)
		}
	}
}

func TestMemoryLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	m := NewMemory()
	k := &Key{Name: "k", RequestsPerMinute: 2, TokensPerMinute: 100}
	for i := range 2 {
		if _, ok := m.Admit(k, now); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	if wait, ok := m.Admit(k, now); ok || wait <= 0 || wait > 31*time.Second {
		t.Fatalf("third request: ok=%v wait=%v", ok, wait)
	}
	now = now.Add(30 * time.Second) // one request refilled
	if _, ok := m.Admit(k, now); !ok {
		t.Fatal("refill did not admit")
	}
	m.Spend(k, 150, now) // over the token quota
	now = now.Add(30 * time.Second)
	if _, ok := m.Admit(k, now); ok {
		t.Fatal("admitted while the token bucket is below zero")
	}
	now = now.Add(time.Minute)
	if _, ok := m.Admit(k, now); !ok {
		t.Fatal("token bucket never refilled")
	}
	free := &Key{Name: "free"}
	for range 100 {
		if _, ok := m.Admit(free, now); !ok {
			t.Fatal("unlimited key limited")
		}
	}
}
