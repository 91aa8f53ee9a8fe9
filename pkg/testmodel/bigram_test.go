package testmodel

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// The bible command's layout: chapter headings after blank lines, numbered
// verses wrapped onto unindented lines.
func TestKJVVerses(t *testing.T) {
	text := "\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n  2 And the earth was without form, and void; and darkness was upon the face of\nthe deep.\n\nGenesis 2\n\n  1 Thus the heavens were finished.\n"
	got, err := KJVVerses(strings.NewReader(text))
	want := []string{"In the beginning God created the heaven and the earth.", "And the earth was without form, and void; and darkness was upon the face of the deep.", "Thus the heavens were finished."}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("verses %q (%v), want %q", got, err, want)
	}
	for _, bad := range []string{"\nGenesis 1\n\n  x not numbered\n", "\nGenesis 1\n\n  1 A verse.\n\norphan\nline\n"} {
		if _, err := KJVVerses(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// On a small vocabulary the factorisation keeps every context's most
// likely successor on top and puts almost all of the probability on pairs
// the sequences have; the written tables give the same logits through
// RMSNorm.
func TestFactorisedBigrams(t *testing.T) {
	const vocab = 60
	var seqs [][]uint32
	for i := range 40 {
		s := []uint32{}
		for j := range 8 {
			s = append(s, uint32((i*7+j*j*3+j)%50))
		}
		seqs = append(seqs, s)
	}
	b := CountBigrams(vocab, 50, 51, seqs)
	f, err := b.Factorise(40, 6, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Factorise(vocab, 1, 1); err == nil {
		t.Fatal("a rank over the distinct next tokens: no error")
	}
	logits := make([]float32, 0, vocab)
	for c := range uint32(vocab) {
		if b.Context[c] == 0 {
			continue
		}
		logits = f.Logits(c, logits)
		best, top := uint32(0), uint32(0)
		for n := range uint32(vocab) {
			if b.Pairs[[2]uint32{c, n}] > b.Pairs[[2]uint32{c, best}] {
				best = n
			}
			if logits[n] > logits[top] {
				top = n
			}
		}
		if b.Pairs[[2]uint32{c, top}] != b.Pairs[[2]uint32{c, best}] {
			t.Errorf("context %d: factorised argmax %d (count %d), counted %d (count %d)", c, top, b.Pairs[[2]uint32{c, top}], best, b.Pairs[[2]uint32{c, best}])
		}
	}
	// Through the tables and an RMSNorm, as llama.cpp computes them.
	e := f.K + padDims + 1
	embd, out := f.tables(e, 1e-5)
	for _, c := range []uint32{3, 17} {
		x := embd[int(c)*e : int(c+1)*e]
		var ms float64
		for _, v := range x {
			ms += float64(v) * float64(v)
		}
		r := math.Sqrt(ms/float64(e) + 1e-5)
		logits = f.Logits(c, logits)
		for n := range vocab {
			var l float64
			for i, v := range out[n*e : (n+1)*e] {
				l += float64(v) * float64(x[i]) / r
			}
			if math.Abs(l-float64(logits[n])) > 1e-3*max(1, math.Abs(l)) {
				t.Fatalf("context %d token %d: %v through the tables, %v factorised", c, n, l, logits[n])
			}
		}
	}
}
