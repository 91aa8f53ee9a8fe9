// Package auth holds the router's API keys and per-key quotas.
//
// Keys come from a JSON file or the environment; only their SHA-256 is kept
// in memory, and callers are identified by the key's name everywhere else
// (logs, traces, metrics), never by the key. Quotas (quota.go) reserve
// tokens at admission and settle them at the end, in memory for one router
// or in Redis for replicas. Everything here is safe for concurrent use.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/metadata"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Key is one API key's identity and limits.
type Key struct {
	Name string
	hash [32]byte
	// Models the key may use; empty allows all.
	Models []string
	// RequestsPerMinute and TokensPerMinute; 0 is unlimited.
	RequestsPerMinute int
	TokensPerMinute   int
	// MaxConcurrent bounds the key's requests in flight on one router
	// (0: the keyring's default, see SetDefaultConcurrency).
	MaxConcurrent int

	inFlight atomic.Int64
}

// Enter counts a request in flight for the key; ok is false when the key is
// at its concurrency cap. Call release when the request ends.
func (k *Key) Enter() (release func(), ok bool) {
	if n := k.inFlight.Add(1); k.MaxConcurrent > 0 && n > int64(k.MaxConcurrent) {
		k.inFlight.Add(-1)
		return nil, false
	}
	return func() { k.inFlight.Add(-1) }, true
}

// Allows reports whether the key may use model.
func (k *Key) Allows(model string) bool {
	return len(k.Models) == 0 || slices.Contains(k.Models, model)
}

// fileKey is a key as configured. The secret comes from exactly one of Key
// (inline), KeyEnv (an environment variable, e.g. from a Kubernetes secret)
// or KeySHA256 (its hex digest, so the file holds no secret).
type fileKey struct {
	Name              string   `json:"name"`
	Key               string   `json:"key"`
	KeyEnv            string   `json:"key_env"`
	KeySHA256         string   `json:"key_sha256"`
	Models            []string `json:"models"`
	RequestsPerMinute int      `json:"requests_per_minute"`
	TokensPerMinute   int      `json:"tokens_per_minute"`
	MaxConcurrent     int      `json:"max_concurrent"`
}

// Keyring holds the configured keys. An empty keyring disables auth.
type Keyring struct {
	keys []*Key
}

// Load reads keys from a JSON file ({"keys": [...]}) when path is set, and
// from LLMROUTER_API_KEYS ("name=key,name2=key2", unlimited) via getenv.
func Load(path string, getenv func(string) string) (*Keyring, error) {
	kr := &Keyring{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var f struct {
			Keys []fileKey `json:"keys"`
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for i, fk := range f.Keys {
			k, err := fk.build(getenv)
			if err != nil {
				return nil, fmt.Errorf("%s: keys[%d] (%s): %w", path, i, fk.Name, err)
			}
			kr.keys = append(kr.keys, k)
		}
	}
	for _, pair := range strings.Split(getenv("LLMROUTER_API_KEYS"), ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		name, secret, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || name == "" || secret == "" {
			return nil, fmt.Errorf("LLMROUTER_API_KEYS: want name=key pairs")
		}
		kr.keys = append(kr.keys, &Key{Name: name, hash: sha256.Sum256([]byte(secret))})
	}
	names := map[string]bool{}
	for _, k := range kr.keys {
		if names[k.Name] {
			return nil, fmt.Errorf("key name %q is used twice", k.Name)
		}
		names[k.Name] = true
	}
	return kr, nil
}

func (fk fileKey) build(getenv func(string) string) (*Key, error) {
	if fk.Name == "" {
		return nil, fmt.Errorf("name is required")
	}
	if fk.RequestsPerMinute < 0 || fk.TokensPerMinute < 0 || fk.MaxConcurrent < 0 {
		return nil, fmt.Errorf("limits must not be negative")
	}
	k := &Key{Name: fk.Name, Models: fk.Models, RequestsPerMinute: fk.RequestsPerMinute, TokensPerMinute: fk.TokensPerMinute, MaxConcurrent: fk.MaxConcurrent}
	set := 0
	if fk.Key != "" {
		k.hash = sha256.Sum256([]byte(fk.Key))
		set++
	}
	if fk.KeyEnv != "" {
		v := getenv(fk.KeyEnv)
		if v == "" {
			return nil, fmt.Errorf("environment variable %s is empty", fk.KeyEnv)
		}
		k.hash = sha256.Sum256([]byte(v))
		set++
	}
	if fk.KeySHA256 != "" {
		b, err := hex.DecodeString(fk.KeySHA256)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("key_sha256 must be 64 hex digits")
		}
		copy(k.hash[:], b)
		set++
	}
	if set != 1 {
		return nil, fmt.Errorf("set exactly one of key, key_env and key_sha256")
	}
	return k, nil
}

// SetDefaultConcurrency caps the requests in flight of every key that sets
// no max_concurrent of its own (0: unlimited).
func (kr *Keyring) SetDefaultConcurrency(n int) {
	for _, k := range kr.keys {
		if k.MaxConcurrent == 0 {
			k.MaxConcurrent = n
		}
	}
}

// Enabled reports whether any key is configured.
func (kr *Keyring) Enabled() bool { return kr != nil && len(kr.keys) > 0 }

// Authenticate finds the key presented in the incoming gRPC metadata
// ("authorization: Bearer KEY" or "x-api-key: KEY"). Errors never contain
// the presented key.
func (kr *Keyring) Authenticate(ctx context.Context) (*Key, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	secret := ""
	if v := md.Get("authorization"); len(v) > 0 {
		scheme, s, ok := strings.Cut(strings.TrimSpace(v[0]), " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return nil, rpcerr.Unauthenticated("authorization must be \"Bearer <api key>\"")
		}
		secret = strings.TrimSpace(s)
	} else if v := md.Get("x-api-key"); len(v) > 0 {
		secret = strings.TrimSpace(v[0])
	}
	if secret == "" {
		return nil, rpcerr.Unauthenticated("missing API key: send \"authorization: Bearer <api key>\" or \"x-api-key: <api key>\"")
	}
	h := sha256.Sum256([]byte(secret))
	for _, k := range kr.keys {
		if subtle.ConstantTimeCompare(h[:], k.hash[:]) == 1 {
			return k, nil
		}
	}
	return nil, rpcerr.Unauthenticated("invalid API key")
}
