package cache

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func entry(n int) *Entry {
	return &Entry{Events: [][]byte{[]byte("start"), bytes.Repeat([]byte("x"), n), []byte("end")}, Took: 42 * time.Millisecond, Stored: time.Unix(1700000000, 5)}
}

func key(ns, model string, b byte) Key { return Key{Namespace: ns, Model: model, Hash: [32]byte{b}} }

func TestEncodeRoundTrip(t *testing.T) {
	e := entry(300)
	got, err := decode(encode(e))
	if err != nil || len(got.Events) != 3 || !bytes.Equal(got.Events[1], e.Events[1]) || got.Took != e.Took || !got.Stored.Equal(e.Stored) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {2}, append(encode(e)[:10:10], 0xff)} {
		if _, err := decode(bad); err == nil {
			t.Fatalf("decode(%x) took garbage", bad)
		}
	}
}

func TestMemoryLRUAndTTL(t *testing.T) {
	ctx := context.Background()
	size := int64(entry(100).Size())
	m := NewMemory(3 * size)
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	for i := range 3 {
		if err := m.Put(ctx, key("a", "m", byte(i)), entry(100), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := m.Get(ctx, key("a", "m", 0)); !ok { // 0 is now the most recently used
		t.Fatal("entry 0 missing")
	}
	_ = m.Put(ctx, key("a", "m", 3), entry(100), time.Minute) // evicts 1, the least recently used
	if _, ok, _ := m.Get(ctx, key("a", "m", 1)); ok {
		t.Fatal("the least recently used entry survived")
	}
	for _, b := range []byte{0, 2, 3} {
		if _, ok, _ := m.Get(ctx, key("a", "m", b)); !ok {
			t.Fatalf("entry %d evicted", b)
		}
	}
	if st := m.Stats(); st.Entries != 3 || st.Bytes != 3*size || st.Evictions != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Bigger than the whole bound: not stored, nothing evicted for it.
	_ = m.Put(ctx, key("a", "m", 9), entry(int(4*size)), time.Minute)
	if _, ok, _ := m.Get(ctx, key("a", "m", 9)); ok || m.Stats().Entries != 3 {
		t.Fatal("an entry over the bound was stored")
	}
	now = now.Add(time.Minute)
	if _, ok, _ := m.Get(ctx, key("a", "m", 0)); ok {
		t.Fatal("an expired entry was served")
	}
}

func TestMemoryPurge(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(1 << 20)
	for i, k := range []Key{key("a", "m", 0), key("a", "n", 1), key("b", "m", 2), key("b", "n", 3)} {
		_ = m.Put(ctx, k, entry(i), time.Minute)
	}
	for _, tt := range []struct {
		ns, model string
		want      int64
	}{{"a", "m", 1}, {"", "n", 2}, {"b", "", 1}, {"", "", 0}} {
		if n, err := m.Purge(ctx, tt.ns, tt.model); err != nil || n != tt.want {
			t.Fatalf("purge(%q, %q) = %d, %v; want %d", tt.ns, tt.model, n, err, tt.want)
		}
	}
}

func TestGlobEscape(t *testing.T) {
	if got := globEscape(`a*b?[c]\`); got != `a\*b\?\[c\]\\` {
		t.Fatalf("globEscape: %s", got)
	}
}
