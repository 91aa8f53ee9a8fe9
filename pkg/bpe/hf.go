package bpe

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// hfFile is the part of a Hugging Face tokenizer.json that a byte-level BPE
// tokenizer uses.
type hfFile struct {
	Version     string    `json:"version"`
	AddedTokens []hfAdded `json:"added_tokens"`
	// PreTokenizer is ByteLevel, or a Sequence holding one.
	PreTokenizer *hfPre `json:"pre_tokenizer"`
	Decoder      *hfPre `json:"decoder"`
	Model        struct {
		Type   string            `json:"type"`
		Vocab  map[string]uint32 `json:"vocab"`
		Merges []json.RawMessage `json:"merges"`
		// ByteFallback marks SentencePiece-style models, which are not
		// byte-level BPE.
		ByteFallback bool `json:"byte_fallback,omitempty"`
	} `json:"model"`
}

type hfAdded struct {
	ID      uint32 `json:"id"`
	Content string `json:"content"`
	Special bool   `json:"special"`
}

type hfPre struct {
	Type           string  `json:"type"`
	AddPrefixSpace bool    `json:"add_prefix_space"`
	TrimOffsets    bool    `json:"trim_offsets,omitempty"`
	UseRegex       bool    `json:"use_regex,omitempty"`
	Pretokenizers  []hfPre `json:"pretokenizers,omitempty"`
}

func (p *hfPre) byteLevel() (*hfPre, bool) {
	if p == nil {
		return nil, false
	}
	if p.Type == "ByteLevel" {
		return p, true
	}
	if p.Type == "Sequence" && len(p.Pretokenizers) == 1 {
		return p.Pretokenizers[0].byteLevel()
	}
	return nil, false
}

// LoadHF reads a Hugging Face tokenizer.json holding a GPT-2-style
// byte-level BPE model (model.type "BPE", a ByteLevel pre-tokenizer without
// a prefix space). Other tokenizers are refused with an error saying why.
func LoadHF(path string) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f hfFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case f.Model.Type != "BPE":
		return nil, fmt.Errorf("%s: model type %q is not supported (want byte-level BPE)", path, f.Model.Type)
	case f.Model.ByteFallback:
		return nil, fmt.Errorf("%s: a SentencePiece-style BPE (byte_fallback) is not supported, only GPT-2 byte-level BPE", path)
	case len(f.Model.Vocab) == 0:
		return nil, fmt.Errorf("%s: the vocabulary is empty", path)
	}
	pre, ok := f.PreTokenizer.byteLevel()
	if !ok {
		return nil, fmt.Errorf("%s: pre-tokenizer is not ByteLevel; only GPT-2 byte-level BPE is supported", path)
	}
	if pre.AddPrefixSpace {
		return nil, fmt.Errorf("%s: ByteLevel with add_prefix_space is not supported", path)
	}
	merges := make([][2]string, 0, len(f.Model.Merges))
	for i, raw := range f.Model.Merges {
		var pair [2]string
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("%s: merge %d is not a pair: %q", path, i, s)
			}
			pair = [2]string{a, b}
		} else if err := json.Unmarshal(raw, &pair); err != nil {
			return nil, fmt.Errorf("%s: merge %d: %w", path, i, err)
		}
		merges = append(merges, pair)
	}
	t := build(f.Model.Vocab, merges)
	for _, a := range f.AddedTokens {
		if a.Content == "" {
			return nil, fmt.Errorf("%s: added token %d has no content", path, a.ID)
		}
		t.added = append(t.added, Added{ID: a.ID, Content: a.Content, Special: a.Special})
		if int(a.ID) >= len(t.decoder) {
			t.decoder = append(t.decoder, make([]string, int(a.ID)+1-len(t.decoder))...)
		}
		if t.decoder[a.ID] == "" {
			t.decoder[a.ID] = t.toSymbols(a.Content)
		}
	}
	// Longest first, so that one added token that prefixes another does not
	// split it.
	slices.SortStableFunc(t.added, func(a, b Added) int { return len(b.Content) - len(a.Content) })
	return t, nil
}

// WriteHF writes the tokenizer as a Hugging Face tokenizer.json, with the
// given added (special) tokens.
func (t *Tokenizer) WriteHF(w io.Writer, added []Added) error {
	var f hfFile
	f.Version = "1.0"
	for _, a := range added {
		f.AddedTokens = append(f.AddedTokens, hfAdded(a))
	}
	f.PreTokenizer = &hfPre{Type: "ByteLevel", TrimOffsets: true, UseRegex: true}
	f.Decoder = &hfPre{Type: "ByteLevel", TrimOffsets: true, UseRegex: true}
	f.Model.Type = "BPE"
	f.Model.Vocab = t.encoder
	for _, m := range t.Merges() {
		raw, err := json.Marshal(m[0] + " " + m[1])
		if err != nil {
			return err
		}
		f.Model.Merges = append(f.Model.Merges, raw)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(&f)
}

// Merges returns the merge rules in rank order.
func (t *Tokenizer) Merges() [][2]string {
	out := make([][2]string, len(t.ranks))
	for pair, r := range t.ranks {
		out[r] = pair
	}
	return out
}

// Added is a token matched as a whole before BPE (such as <|endoftext|>).
type Added struct {
	ID      uint32
	Content string
	Special bool
}

// TokenID returns the id of a symbol or added token written as text.
func (t *Tokenizer) TokenID(text string) (uint32, bool) {
	for _, a := range t.added {
		if a.Content == text {
			return a.ID, true
		}
	}
	id, ok := t.encoder[t.toSymbols(text)]
	return id, ok
}

// toSymbols maps bytes to GPT-2's printable runes.
func (t *Tokenizer) toSymbols(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		sb.WriteRune(t.byteRune[s[i]])
	}
	return sb.String()
}

// EncodeSpecial is Encode that also recognises added tokens written in the
// text (as llama.cpp does when asked to parse special tokens).
func (t *Tokenizer) EncodeSpecial(text string) []uint32 {
	var ids []uint32
	for text != "" {
		at, which := len(text), -1
		for i, a := range t.added {
			if j := strings.Index(text, a.Content); j >= 0 && j < at {
				at, which = j, i
			}
		}
		ids = append(ids, t.Encode(text[:at])...)
		if which < 0 {
			break
		}
		ids = append(ids, t.added[which].ID)
		text = text[at+len(t.added[which].Content):]
	}
	return ids
}
