package sentencepiece

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMatchesTFJS checks the ids against the TF.js tokenizer's, recorded
// with the Universal Sentence Encoder lite vocabulary (see
// e2e/bench/testdata/semcache/use-lite-reference.json), quirks included:
// null scores, a repeated piece, runs of unknowns, a '▁' per space.
func TestMatchesTFJS(t *testing.T) {
	dir := os.Getenv("LLMROUTER_USE_LITE")
	if dir == "" {
		t.Skip("LLMROUTER_USE_LITE is not set: run through make (tools/install.sh use-lite)")
	}
	tok, err := Load(filepath.Join(dir, "vocab.json"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../e2e/bench/testdata/semcache/use-lite-reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Items []struct {
			Text string  `json:"text"`
			IDs  []int32 `json:"ids"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Items) < 30 {
		t.Fatalf("only %d reference items", len(ref.Items))
	}
	var long strings.Builder
	for _, it := range ref.Items {
		if got := tok.Encode(it.Text); !slices.Equal(got, it.IDs) {
			t.Errorf("Encode(%q) = %v, TF.js gives %v", it.Text, got, it.IDs)
		}
		long.WriteString(it.Text + " ")
	}
	// A long text's first ids, segmenting only its start.
	for range 20 {
		long.WriteString(long.String()[:200])
	}
	full := tok.Encode(long.String())
	if got := tok.EncodePrefix(long.String(), 128); len(full) < 1000 || !slices.Equal(got, full[:128]) {
		t.Errorf("EncodePrefix(…, 128) differs from Encode's first 128 ids (of %d)", len(full))
	}
}

func TestSmallVocabulary(t *testing.T) {
	pieces := []string{"<unk>", "<s>", "</s>", "r3", "r4", "r5", "▁a", "b", "▁ab", "▁"}
	scores := []float64{0, 0, 0, 0, 0, 0, -1, -1, -1.5, -3}
	tok, err := New(pieces, scores)
	if err != nil {
		t.Fatal(err)
	}
	for text, want := range map[string][]int32{
		"ab":   {8},       // one piece beats two
		"a b":  {6, 9, 7}, // each space is a '▁'
		"a€€b": {6, 0, 7}, // unknown characters merge into one id 0
		"":     nil,
	} {
		if got := tok.Encode(text); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v", text, got, want)
		}
	}
	if _, err := New(pieces[:3], scores[:3]); err == nil {
		t.Error("a vocabulary of only reserved pieces was accepted")
	}
}
