// Package bpe is GPT-2's byte-level BPE tokenizer in pure Go, reading the
// original encoder.json and vocab.bpe files. It gives the same ids as
// llama.cpp's "gpt-2" tokenizer (tested against llama.cpp's own test
// vectors and against llama.cpp itself), so a worker without llama.cpp
// (engine-onnx) tokenizes like engine-gguf. A Tokenizer is safe for
// concurrent use.
package bpe

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Tokenizer encodes text to token ids and back.
type Tokenizer struct {
	encoder  map[string]uint32
	decoder  []string // id -> symbol string (bytes mapped to runes)
	ranks    map[[2]string]int
	byteRune [256]rune
	runeByte map[rune]byte
	added    []Added  // matched whole by EncodeSpecial, longest first
	cache    sync.Map // pre-token -> []uint32
}

// Load reads encoder.json (symbol → id) and vocab.bpe (ranked merges).
func Load(encoderPath, mergesPath string) (*Tokenizer, error) {
	eb, err := os.ReadFile(encoderPath)
	if err != nil {
		return nil, err
	}
	var enc map[string]uint32
	if err := json.Unmarshal(eb, &enc); err != nil {
		return nil, fmt.Errorf("%s: %w", encoderPath, err)
	}
	mb, err := os.ReadFile(mergesPath)
	if err != nil {
		return nil, err
	}
	var merges [][2]string
	for i, line := range strings.Split(string(mb), "\n") {
		if i == 0 && strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		a, b, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("%s: line %d is not a merge: %q", mergesPath, i+1, line)
		}
		merges = append(merges, [2]string{a, b})
	}
	return build(enc, merges), nil
}

// build makes a tokenizer from a vocabulary and merges in rank order.
func build(enc map[string]uint32, merges [][2]string) *Tokenizer {
	t := &Tokenizer{encoder: enc, ranks: make(map[[2]string]int, len(merges)), runeByte: map[rune]byte{}}
	for _, m := range merges {
		if _, dup := t.ranks[m]; !dup {
			t.ranks[m] = len(t.ranks)
		}
	}
	maxID := uint32(0)
	for _, id := range enc {
		maxID = max(maxID, id)
	}
	t.decoder = make([]string, maxID+1)
	for s, id := range enc {
		t.decoder[id] = s
	}
	// GPT-2 maps every byte to a printable rune: printable Latin-1 bytes to
	// themselves, the rest to 256 upwards, in byte order.
	n := 0
	for b := range 256 {
		r := rune(b)
		if !(b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF) {
			r = rune(256 + n)
			n++
		}
		t.byteRune[b] = r
		t.runeByte[r] = byte(b)
	}
	return t
}

// Encode returns the token ids of text.
func (t *Tokenizer) Encode(text string) []uint32 {
	var ids []uint32
	for _, piece := range pretokenize(text) {
		if v, ok := t.cache.Load(piece); ok {
			ids = append(ids, v.([]uint32)...)
			continue
		}
		pieceIDs := t.bpe(piece)
		t.cache.Store(piece, pieceIDs)
		ids = append(ids, pieceIDs...)
	}
	return ids
}

// bpe merges one pre-token's byte symbols by rank.
func (t *Tokenizer) bpe(piece string) []uint32 {
	syms := make([]string, 0, len(piece))
	for i := 0; i < len(piece); i++ {
		syms = append(syms, string(t.byteRune[piece[i]]))
	}
	for len(syms) > 1 {
		best, at := -1, -1
		for i := 0; i+1 < len(syms); i++ {
			if r, ok := t.ranks[[2]string{syms[i], syms[i+1]}]; ok && (best < 0 || r < best) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		merged := syms[at] + syms[at+1]
		out := syms[:0:0]
		for i := 0; i < len(syms); i++ {
			if i+1 < len(syms) && syms[i]+syms[i+1] == merged && t.ranks[[2]string{syms[i], syms[i+1]}] == best {
				out = append(out, merged)
				i++
				continue
			}
			out = append(out, syms[i])
		}
		syms = out
	}
	ids := make([]uint32, len(syms))
	for i, s := range syms {
		ids[i] = t.encoder[s]
	}
	return ids
}

// Decode returns the bytes of ids (possibly not valid UTF-8 at the edges).
func (t *Tokenizer) Decode(ids []uint32) []byte {
	var out []byte
	for _, id := range ids {
		if int(id) >= len(t.decoder) {
			continue
		}
		for _, r := range t.decoder[id] {
			out = append(out, t.runeByte[r])
		}
	}
	return out
}

// VocabSize is the number of ids.
func (t *Tokenizer) VocabSize() int { return len(t.decoder) }

// pretokenize splits text as GPT-2's pattern does:
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// written out by hand because Go's regexp has no lookahead.
func pretokenize(text string) []string {
	var out []string
	for i := 0; i < len(text); {
		n := match(text[i:])
		out = append(out, text[i:i+n])
		i += n
	}
	return out
}

func match(s string) int {
	for _, c := range []string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"} {
		if strings.HasPrefix(s, c) {
			return len(c)
		}
	}
	start := 0
	if s[0] == ' ' && len(s) > 1 {
		start = 1
	}
	r, _ := utf8.DecodeRuneInString(s[start:])
	switch {
	case unicode.IsLetter(r):
		return start + run(s[start:], unicode.IsLetter)
	case unicode.IsNumber(r):
		return start + run(s[start:], unicode.IsNumber)
	case !unicode.IsSpace(r):
		return start + run(s[start:], func(r rune) bool { return !unicode.IsSpace(r) && !unicode.IsLetter(r) && !unicode.IsNumber(r) })
	}
	// Whitespace: \s+(?!\S) takes the run but leaves its last character when
	// a non-space follows (that character then starts the next token); a
	// single whitespace character before a non-space is taken by \s+.
	n := run(s, unicode.IsSpace)
	if n < len(s) && n > 1 {
		_, last := utf8.DecodeLastRuneInString(s[:n])
		return n - last
	}
	return n
}

// run is the byte length of the prefix of s whose runes satisfy f.
func run(s string, f func(rune) bool) int {
	for i, r := range s {
		if !f(r) {
			return i
		}
	}
	return len(s)
}
