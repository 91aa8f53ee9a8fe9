package cache

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func unit(v []float32) []float32 {
	var s float64
	for _, x := range v {
		s += float64(x * x)
	}
	for i := range v {
		v[i] /= float32(math.Sqrt(s))
	}
	return v
}

// clustered returns n unit vectors of dim around 40 centres (as sentence
// embeddings of related questions crowd together).
func clustered(r *rand.Rand, n, dim int) [][]float32 {
	centres := make([][]float32, 40)
	for i := range centres {
		c := make([]float32, dim)
		for j := range c {
			c[j] = float32(r.NormFloat64())
		}
		centres[i] = unit(c)
	}
	out := make([][]float32, n)
	for i := range out {
		c := centres[r.IntN(len(centres))]
		v := make([]float32, dim)
		for j := range v {
			v[j] = c[j] + 0.05*float32(r.NormFloat64())
		}
		out[i] = unit(v)
	}
	return out
}

// TestHNSWRecall: the graph finds the true nearest neighbour (by brute
// force) for at least 97% of queries, also after a fifth of the nodes were
// removed and after removals forced a rebuild.
func TestHNSWRecall(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	vecs := clustered(r, 3000, 128)
	g := newHNSW(hnswM, hnswEfBuild, hnswEfSearch)
	for i, v := range vecs {
		g.add(uint64(i), v)
	}
	live := map[int]bool{}
	for i := range vecs {
		live[i] = true
	}
	check := func(stage string) {
		hits, queries := 0, 300
		for range queries {
			base := vecs[r.IntN(len(vecs))]
			q := make([]float32, len(base))
			for j := range q {
				q[j] = base[j] + 0.03*float32(r.NormFloat64())
			}
			unit(q)
			best, bs := -1, float32(-2)
			for i := range live {
				if s := dot(q, vecs[i]); s > bs {
					best, bs = i, s
				}
			}
			if id, _, ok := g.search(q); ok && int(id) == best {
				hits++
			}
		}
		if recall := float64(hits) / float64(queries); recall < 0.97 {
			t.Errorf("%s: recall@1 %.3f, want at least 0.97", stage, recall)
		}
	}
	check("built")
	for i := range 600 {
		g.remove(uint64(i))
		delete(live, i)
	}
	check("a fifth removed")
	for i := 600; i < 1600; i++ {
		g.remove(uint64(i))
		delete(live, i)
	}
	if !g.garbage() {
		t.Fatal("more than half removed, yet no compaction due")
	}
	g = g.compacted()
	if len(g.nodes) != len(live) || g.live != len(live) {
		t.Fatalf("compacted: %d nodes, %d live, want %d", len(g.nodes), g.live, len(live))
	}
	check("rebuilt")
	// Removing the entry point leaves the rest searchable.
	g.remove(g.nodes[g.entry].id)
	delete(live, int(g.nodes[g.entry].id))
	check("entry point removed")
}

func TestSemanticBoundsTTLAndPurge(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewSemantic(3)
	s.now = func() time.Time { return now }
	vec := func(i int) []float32 {
		v := make([]float32, 8)
		v[i%8] = 1
		return v
	}
	add := func(i int, ns string) {
		s.Add(SemanticEntry{Space: "space-" + ns, Key: key(ns, "m", byte(i)), Text: "q", Vec: vec(i)}, time.Minute)
	}
	add(1, "a")
	add(2, "a")
	if e, sim, ok := s.Nearest("space-a", vec(2)); !ok || e.Key != key("a", "m", 2) || sim < 0.999 {
		t.Fatalf("Nearest = %v %v %v", e.Key, sim, ok)
	}
	if _, _, ok := s.Nearest("space-b", vec(2)); ok {
		t.Fatal("another space's vector was found")
	}
	add(3, "a")
	add(4, "b") // evicts the least recently used: 1 (2 was just read)
	if st := s.Stats(); st.Entries != 3 || st.Evictions != 1 {
		t.Fatalf("stats %+v, want 3 entries and 1 eviction", st)
	}
	if e, _, _ := s.Nearest("space-a", vec(1)); e.Key == key("a", "m", 1) {
		t.Fatal("the evicted entry was found")
	}
	add(3, "a") // the same answer again replaces its vector
	if st := s.Stats(); st.Entries != 3 {
		t.Fatalf("re-adding an answer made %d entries", st.Entries)
	}
	if n := s.Purge("b", ""); n != 1 {
		t.Fatalf("Purge(b) removed %d", n)
	}
	now = now.Add(2 * time.Minute)
	if _, _, ok := s.Nearest("space-a", vec(2)); ok {
		t.Fatal("an expired entry was found")
	}
	if st := s.Stats(); st.Entries != 0 || st.Spaces != 0 {
		t.Fatalf("after expiry: %+v", st)
	}
}

// A big space is compacted off the lock, keeping what changed meanwhile.
func TestSemanticCompactsInBackground(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	vecs := clustered(r, 3*syncCompact, 32)
	s := NewSemantic(len(vecs))
	for i, v := range vecs {
		s.Add(SemanticEntry{Space: "s", Key: key("", "m", byte(i%250)), Vec: v}, time.Hour)
		s.byKey = map[Key]uint64{} // distinct answers despite the byte keys
	}
	for id := uint64(1); id <= uint64(2*syncCompact); id++ {
		s.mu.Lock()
		s.removeLocked(id)
		s.mu.Unlock()
	}
	s.Wait()
	g := s.spaces["s"]
	if g == nil || len(g.nodes) >= len(vecs) || g.live != len(vecs)-2*syncCompact {
		t.Fatalf("after compaction: %v", g != nil && true)
	}
	if e, sim, ok := s.Nearest("s", vecs[len(vecs)-1]); !ok || sim < 0.999 {
		t.Fatalf("the last vector is not found after compaction: %v %v", e, sim)
	}
}
