package cache

import (
	"container/heap"
	"math"
	"math/rand/v2"
)

// hnsw is a hierarchical navigable small-world graph over unit vectors
// (similarity: the dot product), for approximate nearest-neighbour search
// (Malkov & Yashunin, 2016). Removal marks a node deleted: it still routes
// searches but is never returned; the owner rebuilds the graph from the
// live nodes once the deleted ones are half of it (Semantic compacts). (github.com/coder/hnsw
// v0.6.1, the package the module proxy serves, crashes in Search after a
// Delete, which a bounded index needs.) Not safe for concurrent use.
type hnsw struct {
	m, efBuild, efSearch int
	ml                   float64
	nodes                []hnode
	entry                int32 // -1 when empty
	top                  int
	live                 int
	byID                 map[uint64]int32
	rng                  *rand.Rand
}

type hnode struct {
	id      uint64
	vec     []float32
	links   [][]int32 // per level
	deleted bool
}

func newHNSW(m, efBuild, efSearch int) *hnsw {
	return &hnsw{m: m, efBuild: efBuild, efSearch: efSearch, ml: 1 / math.Log(float64(m)), entry: -1,
		byID: map[uint64]int32{}, rng: rand.New(rand.NewPCG(1, 2))}
}

// dot is the similarity of two unit vectors (0 for vectors of different
// sizes, which the caller keeps apart).
func dot(a, b []float32) float32 {
	if len(a) != len(b) {
		return 0
	}
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// cand is a node and its similarity to the query.
type cand struct {
	at  int32
	sim float32
}

// nearer is a heap with the most similar first; farther the least.
type nearer []cand
type farther []cand

func (h nearer) Len() int            { return len(h) }
func (h nearer) Less(i, j int) bool  { return h[i].sim > h[j].sim }
func (h nearer) Swap(i, j int)       { h[i], h[j] = h[j], h[i] }
func (h *nearer) Push(x any)         { *h = append(*h, x.(cand)) }
func (h *nearer) Pop() any           { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }
func (h farther) Len() int           { return len(h) }
func (h farther) Less(i, j int) bool { return h[i].sim < h[j].sim }
func (h farther) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *farther) Push(x any)        { *h = append(*h, x.(cand)) }
func (h *farther) Pop() any          { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }

// searchLayer returns up to ef nodes near q on one level, from the entry
// points, most similar first.
func (g *hnsw) searchLayer(q []float32, from []cand, ef, level int) []cand {
	seen := map[int32]bool{}
	var todo nearer
	var found farther
	for _, c := range from {
		seen[c.at] = true
		heap.Push(&todo, c)
		heap.Push(&found, c)
	}
	for todo.Len() > 0 {
		c := heap.Pop(&todo).(cand)
		if found.Len() >= ef && c.sim < found[0].sim {
			break
		}
		for _, nb := range g.nodes[c.at].links[level] {
			if seen[nb] {
				continue
			}
			seen[nb] = true
			s := dot(q, g.nodes[nb].vec)
			if found.Len() < ef || s > found[0].sim {
				heap.Push(&todo, cand{nb, s})
				heap.Push(&found, cand{nb, s})
				if found.Len() > ef {
					heap.Pop(&found)
				}
			}
		}
	}
	out := make([]cand, found.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(&found).(cand)
	}
	return out
}

// descend walks greedily from the entry point down to level stop+1.
func (g *hnsw) descend(q []float32, stop int) []cand {
	at := []cand{{g.entry, dot(q, g.nodes[g.entry].vec)}}
	for l := g.top; l > stop; l-- {
		at = g.searchLayer(q, at, 1, l)
	}
	return at
}

// add inserts a unit vector under a new id.
func (g *hnsw) add(id uint64, vec []float32) {
	level := int(-math.Log(1-g.rng.Float64()) * g.ml)
	at := int32(len(g.nodes))
	g.nodes = append(g.nodes, hnode{id: id, vec: vec, links: make([][]int32, level+1)})
	g.live++
	g.byID[id] = at
	if g.entry < 0 {
		g.entry, g.top = at, level
		return
	}
	from := g.descend(vec, level)
	for l := min(level, g.top); l >= 0; l-- {
		near := g.searchLayer(vec, from, g.efBuild, l)
		limit := g.m
		if l == 0 {
			limit = 2 * g.m
		}
		for _, c := range near[:min(len(near), g.m)] {
			g.nodes[at].links[l] = append(g.nodes[at].links[l], c.at)
			g.link(c.at, at, l, limit)
		}
		from = near
	}
	if level > g.top {
		g.entry, g.top = at, level
	}
}

// link adds to's edge from a node, keeping its limit most similar ones.
func (g *hnsw) link(from, to int32, level, limit int) {
	n := &g.nodes[from]
	n.links[level] = append(n.links[level], to)
	if len(n.links[level]) <= limit {
		return
	}
	worst, ws := 0, float32(2)
	for i, nb := range n.links[level] {
		if s := dot(n.vec, g.nodes[nb].vec); s < ws {
			worst, ws = i, s
		}
	}
	last := len(n.links[level]) - 1
	n.links[level][worst] = n.links[level][last]
	n.links[level] = n.links[level][:last]
}

// remove marks id's node deleted: it still routes searches, and
// compacted drops it.
func (g *hnsw) remove(id uint64) {
	at, ok := g.byID[id]
	if !ok {
		return
	}
	delete(g.byID, id)
	g.nodes[at].deleted = true
	g.live--
}

// garbage reports whether deleted nodes are at least half of a graph worth
// rebuilding.
func (g *hnsw) garbage() bool { return len(g.nodes) >= 32 && g.live*2 <= len(g.nodes) }

// compacted returns a new graph of the live nodes.
func (g *hnsw) compacted() *hnsw {
	out := newHNSW(g.m, g.efBuild, g.efSearch)
	for _, n := range g.nodes {
		if !n.deleted {
			out.add(n.id, n.vec)
		}
	}
	return out
}

// search returns the id of the live node most similar to q and the
// similarity, or ok false.
func (g *hnsw) search(q []float32) (id uint64, sim float32, ok bool) {
	if g.live == 0 {
		return 0, 0, false
	}
	for _, c := range g.searchLayer(q, g.descend(q, 0), g.efSearch, 0) {
		if n := &g.nodes[c.at]; !n.deleted {
			return n.id, c.sim, true
		}
	}
	return 0, 0, false
}
