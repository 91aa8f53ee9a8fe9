package cache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llm-runner-router/llmrouter/services/router/internal/cooldown"
)

// Redis is a Store shared by router replicas. Entries are Redis strings
// named PREFIX hex(namespace) ":" hex(model) ":" hex(hash), set with their
// TTL; the bound in bytes is the server's (maxmemory with an allkeys-lru
// or volatile-lru policy). After a failed call the store fails fast for
// Cooldown (then one call probes), so a Redis that is down costs requests
// nothing but a bypassed cache.
type Redis struct {
	client *redis.Client
	prefix string
	gate   cooldown.Gate
	// Cooldown after a failed call; default 1s.
	Cooldown time.Duration
}

var _ Store = (*Redis)(nil)

// errCooling fails calls while the store cools down after a failure.
var errCooling = errors.New("cache store: unreachable a moment ago; not retried yet")

// NewRedis returns a store over the Redis at addr (host:port), its keys
// under prefix. Calls time out quickly: a slow cache is bypassed.
func NewRedis(addr, prefix string) *Redis {
	return &Redis{prefix: prefix, Cooldown: time.Second, client: redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: 500 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond,
		MaxRetries: 0, DialerRetries: 1, PoolSize: 64,
	})}
}

// Close closes the connections.
func (r *Redis) Close() error { return r.client.Close() }

func (r *Redis) name(k Key) string {
	return r.prefix + hex.EncodeToString([]byte(k.Namespace)) + ":" + hex.EncodeToString([]byte(k.Model)) + ":" + hex.EncodeToString(k.Hash[:])
}

// call runs f unless the store is cooling down, and starts a cooldown when
// it fails (not when the caller gave up).
func (r *Redis) call(ctx context.Context, f func() error) error {
	if !r.gate.Allow(r.Cooldown) {
		return errCooling
	}
	err := f()
	if err != nil && !errors.Is(err, redis.Nil) {
		if ctx.Err() == nil {
			r.gate.Failed(r.Cooldown)
		}
		return fmt.Errorf("cache store: %w", err)
	}
	r.gate.OK()
	return err
}

// Get implements Store. An unreadable entry (another format version)
// reads as missing.
func (r *Redis) Get(ctx context.Context, k Key) (*Entry, bool, error) {
	var b []byte
	err := r.call(ctx, func() (err error) {
		b, err = r.client.Get(ctx, r.name(k)).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	e, err := decode(b)
	if err != nil {
		return nil, false, nil
	}
	return e, true, nil
}

// Put implements Store.
func (r *Redis) Put(ctx context.Context, k Key, e *Entry, ttl time.Duration) error {
	return r.call(ctx, func() error { return r.client.Set(ctx, r.name(k), encode(e), ttl).Err() })
}

// Purge implements Store: SCAN for the matching names, UNLINK them in
// batches. Names hold only hex digits and colons after the prefix, so the
// pattern needs no escaping beyond the prefix's.
func (r *Redis) Purge(ctx context.Context, namespace, model string) (int64, error) {
	ns, m := "*", "*"
	if namespace != "" {
		ns = hex.EncodeToString([]byte(namespace))
	}
	if model != "" {
		m = hex.EncodeToString([]byte(model))
	}
	pattern := globEscape(r.prefix) + ns + ":" + m + ":*"
	var n int64
	err := r.call(ctx, func() error {
		iter := r.client.Scan(ctx, 0, pattern, 1000).Iterator()
		batch := make([]string, 0, 256)
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			d, err := r.client.Unlink(ctx, batch...).Result()
			n += d
			batch = batch[:0]
			return err
		}
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) == cap(batch) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		return flush()
	})
	return n, err
}

// globEscape escapes Redis glob metacharacters.
func globEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}
