package cache

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// Memory is an in-process Store bounded by bytes: storing past the bound
// evicts the least recently used entries. Expired entries are dropped when
// read and when the bound needs room. Safe for concurrent use.
type Memory struct {
	max int64
	now func() time.Time

	mu        sync.Mutex
	lru       *list.List // of *memEntry, most recently used first
	byKey     map[Key]*list.Element
	bytes     int64
	evictions int64
}

type memEntry struct {
	key     Key
	e       *Entry
	size    int64
	expires time.Time
}

var _ Store = (*Memory)(nil)

// NewMemory returns a store holding at most maxBytes (as Entry.Size counts
// them).
func NewMemory(maxBytes int64) *Memory {
	return &Memory{max: maxBytes, now: time.Now, lru: list.New(), byKey: map[Key]*list.Element{}}
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, k Key) (*Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.byKey[k]
	if !ok {
		return nil, false, nil
	}
	me := el.Value.(*memEntry)
	if !m.now().Before(me.expires) {
		m.remove(el)
		return nil, false, nil
	}
	m.lru.MoveToFront(el)
	return me.e, true, nil
}

// Put implements Store. An entry bigger than the whole bound is not stored.
func (m *Memory) Put(_ context.Context, k Key, e *Entry, ttl time.Duration) error {
	size := int64(e.Size())
	if size > m.max {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.byKey[k]; ok {
		m.remove(el)
	}
	m.byKey[k] = m.lru.PushFront(&memEntry{key: k, e: e, size: size, expires: m.now().Add(ttl)})
	m.bytes += size
	m.dropExpired()
	for m.bytes > m.max {
		m.remove(m.lru.Back())
		m.evictions++
	}
	return nil
}

// dropExpired removes expired entries from the least recently used end,
// up to the first live one.
func (m *Memory) dropExpired() {
	now := m.now()
	for el := m.lru.Back(); el != nil; {
		prev := el.Prev()
		if me := el.Value.(*memEntry); now.Before(me.expires) {
			return
		}
		m.remove(el)
		el = prev
	}
}

func (m *Memory) remove(el *list.Element) {
	me := m.lru.Remove(el).(*memEntry)
	delete(m.byKey, me.key)
	m.bytes -= me.size
}

// Purge implements Store.
func (m *Memory) Purge(_ context.Context, namespace, model string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, el := range m.byKey {
		if (namespace == "" || k.Namespace == namespace) && (model == "" || k.Model == model) {
			m.remove(el)
			n++
		}
	}
	return n, nil
}

// Stats returns the entries and bytes held and the entries evicted so far.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Entries: m.lru.Len(), Bytes: m.bytes, Evictions: m.evictions}
}
