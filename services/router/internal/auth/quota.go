package auth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llm-runner-router/llmrouter/services/router/internal/cooldown"
)

// Limiter enforces per-key quotas by reservation: a request reserves one
// request and its token estimate at admission, all or nothing, and settles
// the tokens it really used at the end. Concurrent requests therefore cannot
// spend more than the quota holds; a refused request spends nothing.
//
// Quotas are token buckets per key that refill continuously to a minute's
// worth (RequestsPerMinute, TokensPerMinute).
type Limiter interface {
	// Reserve takes one request and tokens from k's quotas. Refused, ok is
	// false and retryAfter says when the quota will hold them; err reports a
	// quota store that could not answer.
	Reserve(ctx context.Context, k *Key, tokens int) (retryAfter time.Duration, ok bool, err error)
	// Settle returns reserved-used tokens to k's quota (or, when used is
	// larger, charges the difference).
	Settle(ctx context.Context, k *Key, reserved, used int) error
}

// Memory is the Limiter of a single router.
type Memory struct {
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*buckets
}

type buckets struct {
	reqs, toks float64
	last       time.Time
}

var _ Limiter = (*Memory)(nil)

// NewMemory returns an empty in-memory limiter; now is its clock (nil:
// time.Now).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, buckets: map[string]*buckets{}}
}

// refilled returns k's buckets refilled to now; m.mu is held.
func (m *Memory) refilled(k *Key) *buckets {
	now := m.now()
	b, ok := m.buckets[k.Name]
	if !ok {
		b = &buckets{reqs: float64(k.RequestsPerMinute), toks: float64(k.TokensPerMinute), last: now}
		m.buckets[k.Name] = b
	}
	if dt := now.Sub(b.last).Minutes(); dt > 0 {
		b.reqs = min(float64(k.RequestsPerMinute), b.reqs+dt*float64(k.RequestsPerMinute))
		b.toks = min(float64(k.TokensPerMinute), b.toks+dt*float64(k.TokensPerMinute))
		b.last = now
	}
	return b
}

// Reserve implements Limiter.
func (m *Memory) Reserve(_ context.Context, k *Key, tokens int) (time.Duration, bool, error) {
	if k.RequestsPerMinute == 0 && k.TokensPerMinute == 0 {
		return 0, true, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.refilled(k)
	if wait := shortfall(b.reqs, b.toks, k, tokens); wait > 0 {
		return wait, false, nil
	}
	if k.RequestsPerMinute > 0 {
		b.reqs--
	}
	if k.TokensPerMinute > 0 {
		b.toks -= float64(tokens)
	}
	return 0, true, nil
}

// shortfall is how long until the buckets hold one request and tokens (0:
// they do now).
func shortfall(reqs, toks float64, k *Key, tokens int) time.Duration {
	var wait float64 // minutes
	if k.RequestsPerMinute > 0 && reqs < 1 {
		wait = (1 - reqs) / float64(k.RequestsPerMinute)
	}
	if k.TokensPerMinute > 0 && toks < float64(tokens) {
		wait = math.Max(wait, (float64(tokens)-toks)/float64(k.TokensPerMinute))
	}
	return time.Duration(math.Ceil(wait * float64(time.Minute)))
}

// Settle implements Limiter.
func (m *Memory) Settle(_ context.Context, k *Key, reserved, used int) error {
	if k.TokensPerMinute == 0 || reserved == used {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.refilled(k)
	b.toks = min(float64(k.TokensPerMinute), b.toks+float64(reserved-used))
	return nil
}

// Redis is the Limiter shared by router replicas: the same buckets, kept in
// Redis and changed by scripts that run atomically on the server, on the
// server's clock (so replicas' clocks need not agree).
type Redis struct {
	client *redis.Client
	prefix string
	// gate: after a failure, reservations fail at once for Cooldown
	// instead of each waiting for a dial timeout; then one call probes
	// while the others keep failing fast.
	gate cooldown.Gate
	// Cooldown after a failed call; default 1s.
	Cooldown time.Duration
}

// errCooling fails calls while the store is cooling down after a failure.
var errCooling = errors.New("quota store: unreachable a moment ago; not retried yet")

var _ Limiter = (*Redis)(nil)

// NewRedis returns a limiter over the Redis at addr (host:port); keys are
// named PREFIX{key name}.
func NewRedis(addr, prefix string) *Redis {
	return &Redis{prefix: prefix, Cooldown: time.Second, client: redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: time.Second, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond,
		MaxRetries: 1, PoolSize: 64,
	})}
}

// Close closes the connections.
func (r *Redis) Close() error { return r.client.Close() }

// refill is the shared part of both scripts: the buckets refilled to the
// server's time. ARGV[1] and ARGV[2] are the request and token capacities.
const refill = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rcap, tcap = tonumber(ARGV[1]), tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r = tonumber(h[1]) or rcap
local tk = tonumber(h[2]) or tcap
local ts = tonumber(h[3]) or now
local dt = math.max(0, now - ts) / 60000
r = math.min(rcap, r + dt * rcap)
tk = math.min(tcap, tk + dt * tcap)
`

// reserveScript: ARGV[3] tokens. Returns {1, 0} or {0, wait ms}.
var reserveScript = redis.NewScript(refill + `
local need = tonumber(ARGV[3])
local wait = 0
if rcap > 0 and r < 1 then wait = (1 - r) / rcap * 60000 end
if tcap > 0 and tk < need then wait = math.max(wait, (need - tk) / tcap * 60000) end
if wait == 0 then
  if rcap > 0 then r = r - 1 end
  if tcap > 0 then tk = tk - need end
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(tk), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 180000)
if wait == 0 then return {1, 0} end
return {0, math.ceil(wait)}
`)

// settleScript: ARGV[3] tokens to return (negative: to charge).
var settleScript = redis.NewScript(refill + `
tk = math.min(tcap, tk + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(tk), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 180000)
return 1
`)

// Reserve implements Limiter.
func (r *Redis) Reserve(ctx context.Context, k *Key, tokens int) (time.Duration, bool, error) {
	if k.RequestsPerMinute == 0 && k.TokensPerMinute == 0 {
		return 0, true, nil
	}
	if !r.mayTry() {
		return 0, false, errCooling
	}
	res, err := reserveScript.Run(ctx, r.client, []string{r.prefix + k.Name}, k.RequestsPerMinute, k.TokensPerMinute, tokens).Int64Slice()
	if err != nil {
		if ctx.Err() == nil {
			r.failed()
		}
		return 0, false, fmt.Errorf("quota store: %w", err)
	}
	r.gate.OK()
	if len(res) != 2 {
		return 0, false, fmt.Errorf("quota store: unexpected reply %v", res)
	}
	return time.Duration(res[1]) * time.Millisecond, res[0] == 1, nil
}

// Settle implements Limiter.
func (r *Redis) Settle(ctx context.Context, k *Key, reserved, used int) error {
	if k.TokensPerMinute == 0 || reserved == used {
		return nil
	}
	// Refunds are always tried (a skipped one overcharges the key).
	if err := settleScript.Run(ctx, r.client, []string{r.prefix + k.Name}, k.RequestsPerMinute, k.TokensPerMinute, reserved-used).Err(); err != nil {
		if ctx.Err() == nil {
			r.failed()
		}
		return fmt.Errorf("quota store: %w", err)
	}
	return nil
}

// mayTry reports whether a reservation may call Redis (cooldown.Gate).
func (r *Redis) mayTry() bool { return r.gate.Allow(r.Cooldown) }

func (r *Redis) failed() { r.gate.Failed(r.Cooldown) }
