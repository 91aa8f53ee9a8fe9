package server

import (
	"encoding/binary"
	"hash/fnv"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
)

// Prefix blocks for cache affinity: the prompt's leading bytes in blocks of
// prefixBlockSize, at most prefixMaxBlocks, each hash chained over all the
// blocks before it. Only whole blocks count, so a prompt that extends
// another shares its blocks.
const (
	prefixBlockSize = 64
	prefixMaxBlocks = 32
)

// PrefixBlocks hashes the prompt's leading blocks (text, chat turns with
// their roles, or token ids as bytes).
func PrefixBlocks(p *generationv1.Prompt) []uint64 {
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
