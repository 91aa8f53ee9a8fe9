// Package sentencepiece tokenizes text with a SentencePiece unigram
// vocabulary as the Universal Sentence Encoder's TF.js release does: NFKC,
// spaces as '▁' with one in front, then the segmentation of highest total
// piece score (Viterbi over every vocabulary piece that matches), unknown
// characters as id 0 with runs of them merged into one.
package sentencepiece

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// separator stands for a space, and starts the text.
const separator = '\u2581'

// Reserved is how many leading ids are control symbols (unknown, <s>, </s>,
// …) that never match text.
const Reserved = 6

// Tokenizer holds a vocabulary. It is safe for concurrent use.
type Tokenizer struct {
	pieces  map[string]piece
	lengths []int // piece lengths in runes, for the unknown id's step back
	maxLen  int   // the longest piece, in runes
}

type piece struct {
	id    int32
	score float64
}

// Load reads a vocabulary file: a JSON array of [piece, score] pairs in id
// order (the TF.js release's vocab.json).
func Load(path string) (*Tokenizer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries [][2]any // a null score counts as 0, as in the TF.js tokenizer
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("%s: not a [piece, score] list: %w", path, err)
	}
	pieces := make([]string, len(entries))
	scores := make([]float64, len(entries))
	for i, e := range entries {
		p, ok1 := e[0].(string)
		s, ok2 := e[1].(float64)
		if e[1] == nil {
			ok2 = true
		}
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%s: entry %d is not [string, number]", path, i)
		}
		pieces[i], scores[i] = p, s
	}
	return New(pieces, scores)
}

// New builds a tokenizer from pieces and their scores in id order.
func New(pieces []string, scores []float64) (*Tokenizer, error) {
	if len(pieces) <= Reserved || len(pieces) != len(scores) {
		return nil, fmt.Errorf("a vocabulary needs more than %d pieces, each with a score", Reserved)
	}
	t := &Tokenizer{pieces: make(map[string]piece, len(pieces)), lengths: make([]int, len(pieces))}
	for i, p := range pieces {
		n := len([]rune(p))
		t.lengths[i] = n
		if i < Reserved || n == 0 {
			continue
		}
		t.pieces[p] = piece{id: int32(i), score: scores[i]} // a later duplicate wins
		t.maxLen = max(t.maxLen, n)
	}
	t.lengths[0] = 1 // the unknown id stands for one character
	return t, nil
}

// Size is the vocabulary's size.
func (t *Tokenizer) Size() int { return len(t.lengths) }

// EncodePrefix returns the ids of text's start, at most n of them, without
// segmenting far past them: a text longer than n+1 longest pieces is cut
// there first. The best segmentations of the text and of its cut agree far
// before the cut (they rejoin at a word boundary, each space being a
// piece's start), so the first n ids are Encode's.
func (t *Tokenizer) EncodePrefix(text string, n int) []int32 {
	if limit := (n + 1) * t.maxLen; len(text) > limit {
		if runes := []rune(text); len(runes) > limit {
			text = string(runes[:limit])
		}
	}
	ids := t.Encode(text)
	return ids[:min(len(ids), n)]
}

// Encode returns text's ids. Empty text has none.
func (t *Tokenizer) Encode(text string) []int32 {
	text = norm.NFKC.String(text)
	if text == "" {
		return nil
	}
	symbols := []rune(string(separator) + strings.ReplaceAll(text, " ", string(separator)))
	n := len(symbols)
	// best[e] is the highest score of a segmentation of symbols[:e] and
	// last[e] its final piece; a position no piece reaches keeps the
	// unknown id, score 0. As in the reference, a best of exactly 0 counts
	// as unset (any candidate replaces it) and ties go to the later one.
	best := make([]float64, n+1)
	last := make([]int32, n+1)
	var key strings.Builder
	for start := range n {
		key.Reset()
		for l := 1; l <= t.maxLen && start+l <= n; l++ {
			key.WriteRune(symbols[start+l-1])
			p, ok := t.pieces[key.String()]
			if !ok {
				continue
			}
			end := start + l
			score := p.score + best[start]
			if best[end] == 0 || score >= best[end] {
				best[end], last[end] = score, p.id
			}
		}
	}
	var ids []int32
	for at := n; at > 0; at -= t.lengths[last[at]] {
		ids = append(ids, last[at])
	}
	// Reverse, merging runs of unknowns.
	out := ids[:0:0]
	for i := len(ids) - 1; i >= 0; i-- {
		if ids[i] == 0 && len(out) > 0 && out[len(out)-1] == 0 {
			continue
		}
		out = append(out, ids[i])
	}
	return out
}
