package sampling

import (
	"math"
	"testing"
)

func TestGreedyAndPenalty(t *testing.T) {
	logits := []float32{1, 3, 2.9, -1}
	s := New(Params{})
	if got := s.Sample(append([]float32(nil), logits...)); got != 1 {
		t.Fatalf("greedy picked %d", got)
	}
	// With token 1 recently seen and a penalty of 2, its logit halves to 1.5
	// and token 2 wins.
	p := New(Params{RepeatPenalty: 2})
	p.Accept(1)
	if got := p.Sample(append([]float32(nil), logits...)); got != 2 {
		t.Fatalf("penalised greedy picked %d", got)
	}
	// Negative logits grow more negative.
	l := []float32{-1, -2}
	p2 := New(Params{RepeatPenalty: 3})
	p2.Accept(0)
	if got := p2.Sample(l); got != 1 || l[0] != -3 {
		t.Fatalf("negative penalty: picked %d, logits %v", got, l)
	}
}

func TestDrawFollowsFilters(t *testing.T) {
	logits := []float32{5, 4.9, 4.8, -10, -10}
	counts := map[uint32]int{}
	s := New(Params{Temperature: 1, TopK: 2, Seed: 7})
	for range 2000 {
		counts[s.Sample(append([]float32(nil), logits...))]++
	}
	if counts[2] != 0 || counts[3] != 0 || counts[0] < 800 || counts[1] < 800 {
		t.Fatalf("top-k 2 draws: %v", counts)
	}
	// min-p 0.5 keeps tokens at least half as likely as the best: 0, 1, 2.
	counts = map[uint32]int{}
	s = New(Params{Temperature: 1, MinP: 0.5, Seed: 7})
	for range 3000 {
		counts[s.Sample(append([]float32(nil), logits...))]++
	}
	if counts[3] != 0 || counts[4] != 0 || counts[2] < 700 {
		t.Fatalf("min-p draws: %v", counts)
	}
	// top-p 0.3 keeps only the best token (its probability is about 0.35).
	s = New(Params{Temperature: 1, TopP: 0.3, Seed: 7})
	for range 200 {
		if got := s.Sample(append([]float32(nil), logits...)); got != 0 {
			t.Fatalf("top-p 0.3 drew %d", got)
		}
	}
	// The same seed draws the same sequence.
	a, b := New(Params{Temperature: 0.8, Seed: 42}), New(Params{Temperature: 0.8, Seed: 42})
	for range 100 {
		if a.Sample(append([]float32(nil), logits...)) != b.Sample(append([]float32(nil), logits...)) {
			t.Fatal("same seed, different draws")
		}
	}
}

func TestLogprobs(t *testing.T) {
	lp, top := Logprobs([]float32{0, math.Float32frombits(0x3f317218) /* ln 2 */, -1}, 1, 2)
	// p = [1, 2, e^-1] / (3 + e^-1)
	want := math.Log(2 / (3 + math.Exp(-1)))
	if math.Abs(float64(lp)-want) > 1e-5 {
		t.Fatalf("logprob %v, want %v", lp, want)
	}
	if len(top) != 2 || top[0].ID != 1 || top[1].ID != 0 {
		t.Fatalf("top %v", top)
	}
}
