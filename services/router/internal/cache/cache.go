// Package cache stores whole routed answers, as the stream of events the
// client received, so that a repeated deterministic request is replayed
// without touching a worker. Two stores implement Store: Memory, bounded by
// bytes and least-recently-used, for one router; Redis, shared by replicas
// and bounded by the Redis server's maxmemory with an LRU eviction policy.
// Both expire entries after their TTL.
package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Key names one answer: the namespace (the API key's name, or "" when
// answers are shared across keys), the requested model or alias (so purges
// can select it) and the hash of the normalised request.
type Key struct {
	Namespace string
	Model     string
	Hash      [32]byte
}

// Entry is one stored answer.
type Entry struct {
	// Events are the marshalled router events the client received, the
	// start event first and the end event last.
	Events [][]byte
	// Took is how long generating the answer took (what a hit saves).
	Took time.Duration
	// Stored is when it was stored.
	Stored time.Time
}

// Size is the entry's size in bytes, as the stores count it.
func (e *Entry) Size() int {
	n := 64
	for _, ev := range e.Events {
		n += len(ev) + 24
	}
	return n
}

// Store holds entries. Get returns ok false for a missing or expired
// entry; an error means the store could not answer (the caller bypasses
// the cache). Purge removes the entries of a namespace and model, "" in
// either matching all, and returns how many it removed.
type Store interface {
	Get(ctx context.Context, k Key) (e *Entry, ok bool, err error)
	Put(ctx context.Context, k Key, e *Entry, ttl time.Duration) error
	Purge(ctx context.Context, namespace, model string) (int64, error)
}

// Stats describe a store's contents, for metrics.
type Stats struct {
	Entries   int
	Bytes     int64
	Evictions int64
}

// formatVersion leads every encoded entry; an entry of another version
// reads as missing.
const formatVersion = 1

// encode writes e as protobuf wire fields: 1 events (repeated bytes),
// 2 took (ns), 3 stored (unix ns), after a version byte.
func encode(e *Entry) []byte {
	b := make([]byte, 0, e.Size())
	b = append(b, formatVersion)
	for _, ev := range e.Events {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, ev)
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.Took))
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.Stored.UnixNano()))
	return b
}

var errFormat = errors.New("cache entry: unreadable")

// decode reads what encode wrote.
func decode(b []byte) (*Entry, error) {
	if len(b) == 0 || b[0] != formatVersion {
		return nil, errFormat
	}
	b = b[1:]
	e := &Entry{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errFormat
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, errFormat
			}
			e.Events = append(e.Events, v)
			b = b[m:]
		case (num == 2 || num == 3) && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return nil, errFormat
			}
			if num == 2 {
				e.Took = time.Duration(v)
			} else {
				e.Stored = time.Unix(0, int64(v))
			}
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, errFormat
			}
			b = b[m:]
		}
	}
	if len(e.Events) < 2 {
		return nil, fmt.Errorf("%w: %d events", errFormat, len(e.Events))
	}
	return e, nil
}
