package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
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
	m := NewMemory(func() time.Time { return now })
	ctx := context.Background()
	k := &Key{Name: "k", RequestsPerMinute: 2, TokensPerMinute: 100}
	reserve := func(tokens int) (time.Duration, bool) {
		t.Helper()
		wait, ok, err := m.Reserve(ctx, k, tokens)
		if err != nil {
			t.Fatal(err)
		}
		return wait, ok
	}
	if _, ok := reserve(60); !ok {
		t.Fatal("first request refused")
	}
	// 40 tokens left: a request reserving 50 is refused and spends nothing.
	if wait, ok := reserve(50); ok || wait != 6*time.Second {
		t.Fatalf("over the token quota: ok=%v wait=%v, want a 6s wait", ok, wait)
	}
	if _, ok := reserve(40); !ok {
		t.Fatal("the refused request spent tokens or a request slot")
	}
	// Both request slots are used.
	if wait, ok := reserve(0); ok || wait != 30*time.Second {
		t.Fatalf("third request: ok=%v wait=%v, want 30s", ok, wait)
	}
	// The first request used 10 of its 60: 50 come back.
	if err := m.Settle(ctx, k, 60, 10); err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Second) // one request slot and 50 tokens refilled
	if _, ok := reserve(100); !ok {
		t.Fatal("settle and refill did not make room for 100 tokens")
	}
	// Used more than reserved: the difference is charged.
	if err := m.Settle(ctx, k, 0, 30); err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Second) // 50 back, minus the 30 charged
	if _, ok := reserve(21); ok {
		t.Fatal("the extra usage was not charged")
	}
	free := &Key{Name: "free"}
	for range 100 {
		if _, ok, _ := m.Reserve(ctx, free, 1<<20); !ok {
			t.Fatal("unlimited key limited")
		}
	}
}

// Concurrent reservations never take more than the quota holds, with one
// limiter (a router) or two sharing Redis (two replicas).
func TestConcurrentReservationsCannotOverspend(t *testing.T) {
	redisSrv := testkit.StartRedis(t)
	a, b := NewRedis(redisSrv.Addr, "test:"), NewRedis(redisSrv.Addr, "test:")
	t.Cleanup(func() { a.Close(); b.Close() })
	for _, tc := range []struct {
		name     string
		limiters []Limiter
	}{
		{"memory", []Limiter{NewMemory(nil)}},
		{"redis, two replicas", []Limiter{a, b}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// 1,000 tokens/min refill 1 token per 60 ms: at most one more
			// 100-token request fits during the test.
			k := &Key{Name: "k-" + tc.name, TokensPerMinute: 1000}
			var wg sync.WaitGroup
			var admitted atomic.Int64
			for i := range 60 {
				wg.Go(func() {
					_, ok, err := tc.limiters[i%len(tc.limiters)].Reserve(context.Background(), k, 100)
					if err != nil {
						t.Error(err)
					}
					if ok {
						admitted.Add(1)
					}
				})
			}
			wg.Wait()
			if n := admitted.Load(); n < 10 || n > 11 {
				t.Fatalf("%d of 60 concurrent 100-token reservations admitted under a 1,000-token quota, want 10", n)
			}
		})
	}
}

func TestRedisLimiterSettlesAndFailsCleanly(t *testing.T) {
	redisSrv := testkit.StartRedis(t)
	l := NewRedis(redisSrv.Addr, "test:")
	defer l.Close()
	ctx := context.Background()
	k := &Key{Name: "settle", TokensPerMinute: 600, RequestsPerMinute: 1000}
	if _, ok, err := l.Reserve(ctx, k, 600); !ok || err != nil {
		t.Fatalf("full reservation: %v %v", ok, err)
	}
	if wait, ok, err := l.Reserve(ctx, k, 300); ok || err != nil || wait < 25*time.Second || wait > 31*time.Second {
		t.Fatalf("empty bucket: ok=%v wait=%v err=%v, want about 30s", ok, wait, err)
	}
	if err := l.Settle(ctx, k, 600, 100); err != nil { // 500 come back
		t.Fatal(err)
	}
	if _, ok, err := l.Reserve(ctx, k, 450); !ok || err != nil {
		t.Fatalf("after settling: %v %v", ok, err)
	}
	redisSrv.Kill()
	<-redisSrv.Exited()
	if _, _, err := l.Reserve(ctx, k, 1); err == nil || !strings.Contains(err.Error(), "quota store") {
		t.Fatalf("redis down: %v, want a quota store error", err)
	}
	// Within the cooldown the next reservation fails at once, without a
	// call; after it, one probe goes out.
	began := time.Now()
	if _, _, err := l.Reserve(ctx, k, 1); !errors.Is(err, errCooling) || time.Since(began) > 50*time.Millisecond {
		t.Fatalf("during the cooldown: %v after %v, want errCooling at once", err, time.Since(began))
	}
	time.Sleep(l.Cooldown)
	if !l.mayTry() || l.mayTry() {
		t.Fatal("after the cooldown: want exactly one probe")
	}
}
