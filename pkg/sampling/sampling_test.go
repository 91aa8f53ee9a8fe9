package sampling

import (
	"math"
	"testing"
)

func TestGreedyAndPenalty(t *testing.T) {
	logits := []float32{1, 3, 2.9, -1}
	s := New(Params{})
	if got := must(s.Sample(append([]float32(nil), logits...))); got != 1 {
		t.Fatalf("greedy picked %d", got)
	}
	// With token 1 recently seen and a penalty of 2, its logit halves to 1.5
	// and token 2 wins.
	p := New(Params{RepeatPenalty: 2})
	p.Accept(1)
	if got := must(p.Sample(append([]float32(nil), logits...))); got != 2 {
		t.Fatalf("penalised greedy picked %d", got)
	}
	// Negative logits grow more negative.
	l := []float32{-1, -2}
	p2 := New(Params{RepeatPenalty: 3})
	p2.Accept(0)
	if got := must(p2.Sample(l)); got != 1 || l[0] != -3 {
		t.Fatalf("negative penalty: picked %d, logits %v", got, l)
	}
}

func TestDrawFollowsFilters(t *testing.T) {
	logits := []float32{5, 4.9, 4.8, -10, -10}
	counts := map[uint32]int{}
	s := New(Params{Temperature: 1, TopK: 2, Seed: 7})
	for range 2000 {
		counts[must(s.Sample(append([]float32(nil), logits...)))]++
	}
	if counts[2] != 0 || counts[3] != 0 || counts[0] < 800 || counts[1] < 800 {
		t.Fatalf("top-k 2 draws: %v", counts)
	}
	// min-p 0.5 keeps tokens at least half as likely as the best: 0, 1, 2.
	counts = map[uint32]int{}
	s = New(Params{Temperature: 1, MinP: 0.5, Seed: 7})
	for range 3000 {
		counts[must(s.Sample(append([]float32(nil), logits...)))]++
	}
	if counts[3] != 0 || counts[4] != 0 || counts[2] < 700 {
		t.Fatalf("min-p draws: %v", counts)
	}
	// top-p 0.3 keeps only the best token (its probability is about 0.35).
	s = New(Params{Temperature: 1, TopP: 0.3, Seed: 7})
	for range 200 {
		if got := must(s.Sample(append([]float32(nil), logits...))); got != 0 {
			t.Fatalf("top-p 0.3 drew %d", got)
		}
	}
	// The same seed draws the same sequence.
	a, b := New(Params{Temperature: 0.8, Seed: 42}), New(Params{Temperature: 0.8, Seed: 42})
	for range 100 {
		if must(a.Sample(append([]float32(nil), logits...))) != must(b.Sample(append([]float32(nil), logits...))) {
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

func TestLogitBiasAndPenalties(t *testing.T) {
	logits := []float32{1, 3, 2.9, -1}
	// A bias of -100 bans the best token, +100 forces the worst one.
	if got := must(New(Params{LogitBias: map[uint32]float32{1: -100}}).Sample(append([]float32(nil), logits...))); got != 2 {
		t.Fatalf("banned token 1, picked %d", got)
	}
	s := New(Params{Temperature: 1, Seed: 3, LogitBias: map[uint32]float32{3: 100, 99: 5}})
	for range 100 {
		if got := must(s.Sample(append([]float32(nil), logits...))); got != 3 {
			t.Fatalf("forced token 3, drew %d", got)
		}
	}
	// Frequency counts every occurrence, presence only once: token 1 seen
	// twice loses 2*0.1 + 0.05 = 0.25 and falls below token 2 (2.9).
	p := New(Params{FrequencyPenalty: 0.1, PresencePenalty: 0.05})
	p.Accept(1)
	p.Accept(1)
	l := append([]float32(nil), logits...)
	if got := must(p.Sample(l)); got != 2 {
		t.Fatalf("penalised token 1 still picked (%d), logits %v", got, l)
	}
	if math.Abs(float64(l[1])-2.75) > 1e-6 {
		t.Fatalf("token 1's logit = %v, want 3 - 0.25", l[1])
	}
	// A negative frequency penalty favours repeats.
	q := New(Params{FrequencyPenalty: -2})
	q.Accept(0)
	if got := must(q.Sample(append([]float32(nil), logits...))); got != 0 {
		t.Fatalf("negative frequency penalty: picked %d, want the repeat 0", got)
	}
	// Only the window counts: after 64 other tokens, token 1 is forgotten.
	w := New(Params{PresencePenalty: 2})
	w.Accept(1)
	for range 64 {
		w.Accept(3)
	}
	if got := must(w.Sample(append([]float32(nil), logits...))); got != 1 {
		t.Fatalf("token 1 left the window but was penalised (picked %d)", got)
	}
}

func must(id uint32, err error) uint32 {
	if err != nil {
		panic(err)
	}
	return id
}

// allowEven is a constraint that allows even token ids only.
type allowEven struct{ accepted []uint32 }

func (a *allowEven) Allows(id uint32) bool { return id%2 == 0 }
func (a *allowEven) Mask(l []float32) bool {
	for i := range l {
		if i%2 == 1 {
			l[i] = float32(math.Inf(-1))
		}
	}
	return len(l) > 0
}
func (a *allowEven) Accept(id uint32) error { a.accepted = append(a.accepted, id); return nil }

// A constraint's disallowed tokens are never picked, greedy or drawn, and
// the allowed ones keep their relative odds.
func TestConstraint(t *testing.T) {
	logits := []float32{1, 3, 2.9, -1}
	c := &allowEven{}
	if got := must(New(Params{Constraint: c}).Sample(append([]float32(nil), logits...))); got != 2 || len(c.accepted) != 1 {
		t.Fatalf("greedy under the constraint picked %d (accepted %v)", got, c.accepted)
	}
	s := New(Params{Temperature: 1, Seed: 9, Constraint: &allowEven{}})
	counts := map[uint32]int{}
	for range 4000 {
		counts[must(s.Sample(append([]float32(nil), logits...)))]++
	}
	// p(0)/p(2) = e^(1-2.9) ≈ 0.15
	if counts[1] != 0 || counts[3] != 0 || counts[0] < 300 || counts[0] > 800 {
		t.Fatalf("draws under the constraint: %v", counts)
	}
}
