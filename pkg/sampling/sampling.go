// Package sampling picks tokens from logits in pure Go, with the chain
// engine-gguf gets from llama.cpp: logit bias, then the repeat, frequency
// and presence penalties over the last tokens, then argmax at temperature 0,
// else top-k, top-p, min-p, temperature and a seeded draw. It also computes log-probabilities for the API's logprobs.
// A Sampler belongs to one sequence and is not safe for concurrent use.
package sampling

import (
	"cmp"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
)

// Params configure a Sampler.
type Params struct {
	Temperature   float32 // <= 0: greedy
	TopK          int     // 0: off
	TopP          float32 // 0 or 1: off
	MinP          float32 // 0: off
	RepeatPenalty float32 // 0 or 1: off
	// FrequencyPenalty is subtracted once per occurrence of a token in the
	// window, PresencePenalty once for any occurrence; 0: off.
	FrequencyPenalty float32
	PresencePenalty  float32
	RepeatLastN      int // tokens the penalties look back over; 0: 64
	// LogitBias is added to the logits of its token ids (ids outside the
	// vocabulary are ignored: callers validate them).
	LogitBias map[uint32]float32
	// Constraint, when set, limits the tokens that may be picked (a
	// response format's grammar).
	Constraint Constraint
	Seed       uint64
}

// Constraint limits the tokens a sampler may pick.
type Constraint interface {
	// Allows reports whether token id may come next.
	Allows(id uint32) bool
	// Mask sets the logits of the tokens that may not come next to -Inf,
	// and reports false when none may.
	Mask(logits []float32) bool
	// Accept records the picked token.
	Accept(id uint32) error
}

// ErrNoToken is a constraint that allows no token.
var ErrNoToken = errors.New("sampling: the constraint allows no token")

// Sampler picks tokens for one sequence.
type Sampler struct {
	p       Params
	rng     *rand.Rand
	recent  []uint32 // ring of the last RepeatLastN tokens
	next    int
	cand    []candidate // reused buffer
	weights []float64   // reused buffer of drawAll
}

type candidate struct {
	id    uint32
	logit float32
	p     float64
}

// New returns a sampler.
func New(p Params) *Sampler {
	if p.RepeatLastN == 0 {
		p.RepeatLastN = 64
	}
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))}
}

func (s *Sampler) penalised() bool {
	return (s.p.RepeatPenalty != 0 && s.p.RepeatPenalty != 1) || s.p.FrequencyPenalty != 0 || s.p.PresencePenalty != 0
}

// Accept records a token for the penalties (prompt tokens, and the
// sampled ones, which Sample records itself).
func (s *Sampler) Accept(id uint32) {
	if !s.penalised() {
		return
	}
	if len(s.recent) < s.p.RepeatLastN {
		s.recent = append(s.recent, id)
		return
	}
	s.recent[s.next] = id
	s.next = (s.next + 1) % len(s.recent)
}

// Sample picks a token from logits (one per vocabulary entry); logits are
// modified by the bias and the penalties. With a constraint, the pick is
// kept when the constraint allows it, else the disallowed tokens are
// masked and the sampler picks again, at the cost of a mask only when the
// first pick fails. Without top-k, top-p or min-p that is exactly the
// distribution restricted to the allowed tokens (p(t)/p(allowed)); with
// them, the first pick is filtered before the mask and the second after
// (as in llama.cpp's own sampler). The error is ErrNoToken when nothing is allowed.
func (s *Sampler) Sample(logits []float32) (uint32, error) {
	s.Adjust(logits)
	id := s.pick(logits)
	if c := s.p.Constraint; c != nil {
		if !c.Allows(id) {
			if !c.Mask(logits) {
				return 0, ErrNoToken
			}
			id = s.pick(logits)
		}
		if err := c.Accept(id); err != nil {
			return 0, err
		}
	}
	s.Accept(id)
	return id, nil
}

func (s *Sampler) pick(logits []float32) uint32 {
	if s.p.Temperature <= 0 {
		return Argmax(logits)
	}
	return s.draw(logits)
}

// Adjust applies the logit bias and the penalties to logits in place, as
// Sample does before it picks.
func (s *Sampler) Adjust(logits []float32) {
	for id, b := range s.p.LogitBias {
		if int(id) < len(logits) {
			logits[id] += b
		}
	}
	if !s.penalised() {
		return
	}
	counts := map[uint32]int{}
	for _, id := range s.recent {
		if int(id) < len(logits) {
			counts[id]++
		}
	}
	rp := s.p.RepeatPenalty
	if rp == 0 {
		rp = 1
	}
	for id, n := range counts {
		// llama.cpp's rule: shrink positive logits, grow negative ones,
		// then subtract the frequency and presence penalties.
		if logits[id] > 0 {
			logits[id] /= rp
		} else {
			logits[id] *= rp
		}
		logits[id] -= float32(n)*s.p.FrequencyPenalty + s.p.PresencePenalty
	}
}

// Argmax is the index of the largest logit (the first on ties).
func Argmax(logits []float32) uint32 {
	best := 0
	for i, l := range logits {
		if l > logits[best] {
			best = i
		}
	}
	return uint32(best)
}

func (s *Sampler) draw(logits []float32) uint32 {
	if (s.p.TopK <= 0 || s.p.TopK >= len(logits)) && (s.p.TopP <= 0 || s.p.TopP >= 1) && s.p.MinP <= 0 {
		return s.drawAll(logits)
	}
	c := s.cand[:0]
	for i, l := range logits {
		c = append(c, candidate{id: uint32(i), logit: l})
	}
	s.cand = c
	slices.SortFunc(c, func(a, b candidate) int { return cmp.Compare(b.logit, a.logit) })
	if k := s.p.TopK; k > 0 && k < len(c) {
		c = c[:k]
	}
	softmax(c, 1)
	if p := s.p.TopP; p > 0 && p < 1 {
		sum, n := 0.0, len(c)
		for i := range c {
			sum += c[i].p
			if sum >= float64(p) {
				n = i + 1
				break
			}
		}
		c = c[:n]
	}
	if m := s.p.MinP; m > 0 {
		floor := c[0].p * float64(m)
		n := 1
		for n < len(c) && c[n].p >= floor {
			n++
		}
		c = c[:n]
	}
	softmax(c, s.p.Temperature)
	r := s.rng.Float64()
	for _, x := range c {
		if r < x.p {
			return x.id
		}
		r -= x.p
	}
	return c[len(c)-1].id
}

// drawAll draws from softmax(logits/temperature) over the whole
// vocabulary in two passes, without sorting (no filter needs the order).
func (s *Sampler) drawAll(logits []float32) uint32 {
	maxL := float32(math.Inf(-1))
	for _, l := range logits {
		maxL = max(maxL, l)
	}
	t := float64(s.p.Temperature)
	w := s.weights[:0]
	sum := 0.0
	for _, l := range logits {
		p := math.Exp(float64(l-maxL) / t)
		w = append(w, p)
		sum += p
	}
	s.weights = w
	r := s.rng.Float64() * sum
	last := uint32(0)
	for i, p := range w {
		if p == 0 {
			continue
		}
		if r < p {
			return uint32(i)
		}
		r -= p
		last = uint32(i)
	}
	return last
}

// softmax sets p from logit/temp over c, which is sorted by logit.
func softmax(c []candidate, temp float32) {
	maxL := float64(c[0].logit)
	sum := 0.0
	for i := range c {
		c[i].p = math.Exp((float64(c[i].logit) - maxL) / float64(temp))
		sum += c[i].p
	}
	for i := range c {
		c[i].p /= sum
	}
}

// Alternative is a candidate token with its log-probability.
type Alternative struct {
	ID      uint32
	Logprob float32
}

// Logprobs returns the chosen token's log-probability under logits and the
// top alternatives (most likely first).
func Logprobs(logits []float32, chosen uint32, top int) (float32, []Alternative) {
	maxL := float32(math.Inf(-1))
	for _, l := range logits {
		maxL = max(maxL, l)
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l - maxL))
	}
	lse := maxL + float32(math.Log(sum))
	var alts []Alternative
	if top > 0 {
		idx := make([]uint32, len(logits))
		for i := range idx {
			idx[i] = uint32(i)
		}
		slices.SortStableFunc(idx, func(a, b uint32) int { return cmp.Compare(logits[b], logits[a]) })
		for _, id := range idx[:min(top, len(idx))] {
			alts = append(alts, Alternative{ID: id, Logprob: logits[id] - lse})
		}
	}
	return logits[chosen] - lse, alts
}
