// Package prefix is the cache-affinity scorer: it remembers, in a bounded
// LRU, which endpoint last served each prompt-prefix block (chained block
// hashes of the prompt, see Blocks) and scores a candidate by the
// share of the request's leading blocks it holds, since that worker likely
// still has their KV cache. Pair it with the loadguard filter so a hot prefix
// cannot overload one worker.
package prefix

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"

	lru "github.com/hashicorp/golang-lru/v2"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// Params: {"capacity": N} blocks remembered (default 65536, about 5 MB).
type Params struct {
	Capacity int `json:"capacity"`
}

// Scorer scores by remembered prefix ownership and learns from outcomes.
type Scorer struct {
	owners *lru.Cache[uint64, string]
}

var (
	_ scheduling.Scorer   = (*Scorer)(nil)
	_ scheduling.Observer = (*Scorer)(nil)
)

// New decodes the parameters.
func New(raw json.RawMessage) (scheduling.Scorer, error) {
	p := Params{Capacity: 1 << 16}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
	}
	if p.Capacity <= 0 {
		return nil, fmt.Errorf("capacity must be positive")
	}
	c, err := lru.New[uint64, string](p.Capacity)
	if err != nil {
		return nil, err
	}
	return &Scorer{owners: c}, nil
}

// Score implements scheduling.Scorer.
func (s *Scorer) Score(r *scheduling.Request, c []scheduling.Candidate, out []float64) {
	blocks := Blocks(r.Prompt)
	n := len(blocks)
	if n == 0 {
		return
	}
	// Deepest block held by each owner; owners are few, candidates many.
	type held struct {
		id    string
		depth int
	}
	var owners []held
	for i, b := range blocks {
		owner, ok := s.owners.Peek(b)
		if !ok {
			break // chained hashes: no later block can match either
		}
		found := false
		for j := range owners {
			if owners[j].id == owner {
				owners[j].depth, found = i+1, true
			}
		}
		if !found {
			owners = append(owners, held{owner, i + 1})
		}
	}
	if len(owners) == 0 {
		return
	}
	for j, cand := range c {
		for _, o := range owners {
			if cand.Endpoint.ID == o.id {
				out[j] = float64(o.depth) / float64(n)
			}
		}
	}
}

// Observe records the serving endpoint as the owner of the prefix blocks.
func (s *Scorer) Observe(r *scheduling.Request, chosen scheduling.Candidate, o scheduling.Outcome) {
	if !o.FirstToken {
		return
	}
	for _, b := range Blocks(r.Prompt) {
		s.owners.Add(b, chosen.Endpoint.ID)
	}
}

// Len is the number of remembered blocks.
func (s *Scorer) Len() int { return s.owners.Len() }

// Prefix blocks: the prompt's leading bytes in blocks of
// prefixBlockSize, at most prefixMaxBlocks, each hash chained over all the
// blocks before it. Only whole blocks count, so a prompt that extends
// another shares its blocks.
const (
	prefixBlockSize = 64
	prefixMaxBlocks = 32
)

// Blocks hashes the prompt's leading blocks (text, chat turns with
// their roles, or token ids as bytes): block i's hash covers blocks 0..i, so
// equal hashes mean equal prefixes.
func Blocks(p *generationv1.Prompt) []uint64 {
	var b []byte
	limit := prefixBlockSize * prefixMaxBlocks
	switch k := p.GetKind().(type) {
	case *generationv1.Prompt_Text:
		b = []byte(k.Text[:min(len(k.Text), limit)])
	case *generationv1.Prompt_Chat:
		for _, m := range k.Chat.GetMessages() {
			if len(b) >= limit {
				break
			}
			b = append(b, byte(m.GetRole()))
			b = append(b, m.GetContent()...)
			b = append(b, 0)
		}
	case *generationv1.Prompt_Tokens:
		for _, id := range k.Tokens.GetIds() {
			if len(b) >= limit {
				break
			}
			b = binary.LittleEndian.AppendUint32(b, id)
		}
	}
	n := min(len(b)/prefixBlockSize, prefixMaxBlocks)
	if n == 0 {
		return nil
	}
	out := make([]uint64, n)
	h := fnv.New64a()
	for i := range n {
		h.Write(b[i*prefixBlockSize : (i+1)*prefixBlockSize])
		out[i] = h.Sum64()
	}
	return out
}
