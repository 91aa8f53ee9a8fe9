package cache

import (
	"container/list"
	"sync"
	"time"
)

// Semantic indexes stored answers by the embedding of their last user turn,
// so that a question in other words finds the answer to an earlier one. It
// holds vectors and texts only: the answers stay in the Store, under the
// exact Key each vector points at. Vectors live in spaces (one approximate
// nearest-neighbour graph each): the caller puts everything that must match
// exactly (key, model, system prompt, earlier turns, tools, sampling) into
// the space's name. Bounded by entries, least-recently-used, with a TTL.
// Safe for concurrent use. One router's index is its own: replicas sharing
// a Redis store share exact answers, and each indexes what it stored.
type Semantic struct {
	mu      sync.Mutex
	max     int
	spaces  map[string]*hnsw
	entries map[uint64]*list.Element
	byKey   map[Key]uint64
	lru     *list.List // front: most recently served *semEntry
	next    uint64
	now     func() time.Time
	evicted int64
	bytes   int64
	// compacting: spaces whose graph is being rebuilt off the lock.
	compacting map[string]bool
	wg         sync.WaitGroup
}

// entryBytes estimates an entry's memory: its vector, text and space name,
// its graph links (about 1.3 levels of up to 2M links) and bookkeeping.
func entryBytes(e *SemanticEntry) int64 {
	return int64(4*len(e.Vec)+len(e.Text)+len(e.Space)) + 4*3*hnswM + 160
}

// SemanticEntry is what a vector points at.
type SemanticEntry struct {
	Space string
	Key   Key    // the stored answer
	Text  string // the last user turn it answered
	Vec   []float32
}

type semEntry struct {
	SemanticEntry
	id      uint64
	expires time.Time
}

// NewSemantic returns an index of at most maxEntries vectors.
func NewSemantic(maxEntries int) *Semantic {
	return &Semantic{max: maxEntries, spaces: map[string]*hnsw{}, entries: map[uint64]*list.Element{},
		byKey: map[Key]uint64{}, lru: list.New(), now: time.Now, compacting: map[string]bool{}}
}

// Graph parameters: 16 links a node (32 on the bottom level), wide
// candidate lists for construction and search (recall over speed: the
// vectors are few and a miss costs a generation).
const (
	hnswM        = 16
	hnswEfBuild  = 100
	hnswEfSearch = 128
)

// Add indexes e (replacing what pointed at the same answer) for ttl.
func (s *Semantic) Add(e SemanticEntry, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.byKey[e.Key]; ok {
		s.removeLocked(id)
	}
	s.next++
	g := s.spaces[e.Space]
	if g == nil {
		g = newHNSW(hnswM, hnswEfBuild, hnswEfSearch)
		s.spaces[e.Space] = g
	}
	g.add(s.next, e.Vec)
	s.entries[s.next] = s.lru.PushFront(&semEntry{SemanticEntry: e, id: s.next, expires: s.now().Add(ttl)})
	s.byKey[e.Key] = s.next
	s.bytes += entryBytes(&e)
	for s.lru.Len() > s.max {
		s.removeLocked(s.lru.Back().Value.(*semEntry).id)
		s.evicted++
	}
}

// Nearest returns the entry of space most similar to vec and the
// similarity (cosine: the caller stores and asks with unit vectors, of one
// size per space), or ok false. It does not count as a use: Touch does,
// once the entry's answer is served.
func (s *Semantic) Nearest(space string, vec []float32) (e SemanticEntry, sim float32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.spaces[space]
	if g == nil {
		return e, 0, false
	}
	for {
		id, sim, ok := g.search(vec)
		if !ok {
			return e, 0, false
		}
		el := s.entries[id]
		se := el.Value.(*semEntry)
		if s.now().After(se.expires) {
			s.removeLocked(id)
			if g = s.spaces[space]; g == nil {
				return e, 0, false
			}
			continue
		}
		return se.SemanticEntry, sim, true
	}
}

// Touch marks k's entry used (its answer was served), for the LRU.
func (s *Semantic) Touch(k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.byKey[k]; ok {
		s.lru.MoveToFront(s.entries[id])
	}
}

// RemoveEntry drops e's vector, if it is still the one for its answer
// (not one indexed since).
func (s *Semantic) RemoveEntry(e SemanticEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.byKey[e.Key]; ok {
		if cur := s.entries[id].Value.(*semEntry); cur.Space == e.Space && cur.Text == e.Text {
			s.removeLocked(id)
		}
	}
}

func (s *Semantic) removeLocked(id uint64) {
	el, ok := s.entries[id]
	if !ok {
		return
	}
	se := el.Value.(*semEntry)
	s.lru.Remove(el)
	delete(s.entries, id)
	if s.byKey[se.Key] == id {
		delete(s.byKey, se.Key)
	}
	s.bytes -= entryBytes(&se.SemanticEntry)
	g := s.spaces[se.Space]
	g.remove(id)
	switch {
	case g.live == 0:
		delete(s.spaces, se.Space)
	case g.garbage() && !s.compacting[se.Space]:
		s.compact(se.Space, g)
	}
}

// syncCompact is the largest graph rebuilt under the lock (a few ms); a
// larger one is rebuilt off it, so lookups do not wait for it.
const syncCompact = 2048

// compact replaces a space's graph by one of its live nodes.
func (s *Semantic) compact(space string, g *hnsw) {
	if len(g.nodes) <= syncCompact {
		s.spaces[space] = g.compacted()
		return
	}
	// Off the lock: a copy of the live nodes, rebuilt, then swapped in with
	// what changed meanwhile (vectors removed, or added after the copy).
	s.compacting[space] = true
	snapshot := &hnsw{m: g.m, efBuild: g.efBuild, efSearch: g.efSearch}
	last := s.next
	for _, n := range g.nodes {
		if !n.deleted {
			snapshot.nodes = append(snapshot.nodes, n)
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fresh := snapshot.compacted()
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.compacting, space)
		cur := s.spaces[space]
		if cur == nil {
			return // emptied meanwhile
		}
		for id := range fresh.byID {
			if _, ok := cur.byID[id]; !ok {
				fresh.remove(id)
			}
		}
		for id, at := range cur.byID {
			if id > last {
				fresh.add(id, cur.nodes[at].vec)
			}
		}
		s.spaces[space] = fresh
	}()
}

// Wait waits for background compactions (for tests and shutdown).
func (s *Semantic) Wait() { s.wg.Wait() }

// Purge drops the vectors of a namespace and model ("" matches all), as
// Store.Purge does for answers.
func (s *Semantic) Purge(namespace, model string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []uint64
	for id, el := range s.entries {
		k := el.Value.(*semEntry).Key
		if (namespace == "" || k.Namespace == namespace) && (model == "" || k.Model == model) {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		s.removeLocked(id)
	}
	return int64(len(ids))
}

// SemanticStats describe the index, for metrics and the cache table.
type SemanticStats struct {
	Entries, Spaces int
	Bytes           int64 // vectors, texts and graph links (estimated per entry)
	Evictions       int64
}

// Stats counts the index's contents.
func (s *Semantic) Stats() SemanticStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SemanticStats{Entries: len(s.entries), Spaces: len(s.spaces), Evictions: s.evicted, Bytes: s.bytes}
}
