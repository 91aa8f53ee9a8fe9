package structured

import (
	"errors"
	"math"
	"slices"
)

// Matcher runs a grammar over output bytes, as llama.cpp's grammar does
// over code points: a set of stacks, each a path through the rules whose
// top is at the next byte to match. It checks UTF-8 well-formedness
// itself. A Matcher belongs to one sequence.
type Matcher struct {
	g      *Grammar
	stacks []*frame // tops at terminals; nil: the document may end here
	intern map[frameKey]*frame
	buf    []*frame // scratch of step
	cur    []*frame // scratch of run
	seen   map[*frame]bool
}

// frame is a position in a rule (or, with need > 0, inside a multi-byte
// character: need more continuation bytes, the next in [lo, hi]); next is
// the frame to continue with. Frames are interned, so equal stacks are the
// same pointer.
type frame struct {
	rule, alt, pos int32
	need, lo, hi   uint8
	next           *frame
}

type frameKey struct {
	rule, alt, pos int32
	need, lo, hi   uint8
	next           *frame
}

// maxExpand bounds rule expansion without consuming a byte (left
// recursion in a schema would otherwise never end).
const maxExpand = 512

// NewMatcher starts a matcher at the beginning of g's root.
func NewMatcher(g *Grammar) *Matcher {
	m := &Matcher{g: g, intern: map[frameKey]*frame{}, seen: map[*frame]bool{}}
	var out []*frame
	for a := range g.rules[0] {
		out = m.expand(m.mk(frameKey{rule: 0, alt: int32(a)}), out, 0)
	}
	m.stacks = m.dedupe(out)
	return m
}

func (m *Matcher) mk(k frameKey) *frame {
	if f, ok := m.intern[k]; ok {
		return f
	}
	f := &frame{rule: k.rule, alt: k.alt, pos: k.pos, need: k.need, lo: k.lo, hi: k.hi, next: k.next}
	m.intern[k] = f
	return f
}

// after is the frame that follows f's element: at the end of its
// alternative that is f.next itself (a tail call), so a right-recursive
// repetition does not grow the stack with every pass.
func (m *Matcher) after(f *frame) *frame {
	if int(f.pos)+1 == len(m.g.rules[f.rule][f.alt]) {
		return f.next
	}
	return m.mk(frameKey{rule: f.rule, alt: f.alt, pos: f.pos + 1, next: f.next})
}

// expand appends the stacks f leads to whose tops are terminals.
func (m *Matcher) expand(f *frame, out []*frame, depth int) []*frame {
	for {
		if depth > maxExpand {
			return out
		}
		if f == nil || f.need > 0 {
			return append(out, f)
		}
		alt := m.g.rules[f.rule][f.alt]
		if int(f.pos) == len(alt) {
			f = f.next
			depth++
			continue
		}
		e := alt[f.pos]
		if e.class != nil || e.raw != 0 {
			return append(out, f)
		}
		after := m.after(f)
		for a := range m.g.rules[e.ref] {
			out = m.expand(m.mk(frameKey{rule: int32(e.ref), alt: int32(a), next: after}), out, depth+1)
		}
		return out
	}
}

func (m *Matcher) dedupe(s []*frame) []*frame {
	clear(m.seen)
	out := s[:0]
	for _, f := range s {
		if !m.seen[f] {
			m.seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// step returns the stacks after byte b (empty: b is not allowed).
func (m *Matcher) step(stacks []*frame, b byte, out []*frame) []*frame {
	for _, f := range stacks {
		switch {
		case f == nil:
		case f.need > 0:
			if b < f.lo || b > f.hi {
				continue
			}
			if f.need == 1 {
				out = m.expand(f.next, out, 0)
			} else {
				out = append(out, m.mk(frameKey{rule: -1, need: f.need - 1, lo: 0x80, hi: 0xBF, next: f.next}))
			}
		default:
			e := m.g.rules[f.rule][f.alt][f.pos]
			after := func() *frame { return m.after(f) }
			switch {
			case e.raw != 0:
				if int(b) == e.raw {
					out = m.expand(after(), out, 0)
				}
			case b < 0x80:
				if e.class.has(b) {
					out = m.expand(after(), out, 0)
				}
			case e.class.nonASCII:
				need, lo, hi := utf8Lead(b)
				if need > 0 {
					out = append(out, m.mk(frameKey{rule: -1, need: need, lo: lo, hi: hi, next: after()}))
				}
			}
		}
	}
	return m.dedupe(out)
}

// utf8Lead is how many continuation bytes a lead byte needs and the range
// of the first one (0: not a lead byte of well-formed UTF-8).
func utf8Lead(b byte) (need, lo, hi uint8) {
	switch {
	case b >= 0xC2 && b <= 0xDF:
		return 1, 0x80, 0xBF
	case b == 0xE0:
		return 2, 0xA0, 0xBF
	case b == 0xED:
		return 2, 0x80, 0x9F
	case b >= 0xE1 && b <= 0xEF:
		return 2, 0x80, 0xBF
	case b == 0xF0:
		return 3, 0x90, 0xBF
	case b >= 0xF1 && b <= 0xF3:
		return 3, 0x80, 0xBF
	case b == 0xF4:
		return 3, 0x80, 0x8F
	}
	return 0, 0, 0
}

// run returns the stacks after bytes p (non-empty) from m.stacks, in
// scratch that the next run reuses (nil: p is not allowed).
func (m *Matcher) run(p []byte) []*frame {
	cur := m.stacks
	for i, b := range p {
		m.buf = m.step(cur, b, m.buf[:0])
		if len(m.buf) == 0 {
			return nil
		}
		if i < len(p)-1 {
			m.cur = append(m.cur[:0], m.buf...)
			cur = m.cur
		}
	}
	return m.buf
}

// Allows reports whether bytes p may come next.
func (m *Matcher) Allows(p []byte) bool { return len(p) == 0 || len(m.run(p)) > 0 }

// Accept advances over p; false (and no change) if p is not allowed.
func (m *Matcher) Accept(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	next := m.run(p)
	if len(next) == 0 {
		return false
	}
	m.stacks = slices.Clone(next)
	return true
}

// CanEnd reports whether the output so far is a complete document.
func (m *Matcher) CanEnd() bool {
	for _, f := range m.stacks {
		if f == nil {
			return true
		}
	}
	return false
}

// Vocab is a model's tokens as bytes, for token-level constraints.
type Vocab struct {
	Pieces [][]byte
	EOG    []bool
}

// TokenConstraint constrains a sampler's tokens to a grammar: a token is
// allowed when its bytes may come next, an end-of-generation token when
// the document is complete.
type TokenConstraint struct {
	m     *Matcher
	vocab *Vocab
}

// NewTokenConstraint starts a constraint over vocab.
func NewTokenConstraint(g *Grammar, vocab *Vocab) *TokenConstraint {
	return &TokenConstraint{m: NewMatcher(g), vocab: vocab}
}

// Allows reports whether token id may come next.
func (c *TokenConstraint) Allows(id uint32) bool {
	if int(id) >= len(c.vocab.Pieces) {
		return false
	}
	if c.vocab.EOG[id] {
		return c.m.CanEnd()
	}
	p := c.vocab.Pieces[id]
	return len(p) > 0 && c.m.Allows(p)
}

// Mask sets the logits of the tokens that may not come next to -Inf; it
// reports false when none may.
func (c *TokenConstraint) Mask(logits []float32) bool {
	var first [256]bool // bytes some stack accepts first: cheap rejections
	for b := range 256 {
		first[b] = len(c.m.step(c.m.stacks, byte(b), c.m.buf[:0])) > 0
	}
	canEnd, any := c.m.CanEnd(), false
	for id := range logits {
		ok := false
		switch {
		case id >= len(c.vocab.Pieces):
		case c.vocab.EOG[id]:
			ok = canEnd
		default:
			p := c.vocab.Pieces[id]
			ok = len(p) > 0 && first[p[0]] && (len(p) == 1 || c.m.Allows(p))
		}
		if ok {
			any = true
		} else {
			logits[id] = float32(math.Inf(-1))
		}
	}
	return any
}

// ErrNotAllowed is a token the grammar does not allow.
var ErrNotAllowed = errors.New("structured: the token does not fit the response format")

// Accept advances over token id.
func (c *TokenConstraint) Accept(id uint32) error {
	if !c.Allows(id) {
		return ErrNotAllowed
	}
	if !c.vocab.EOG[id] {
		c.m.Accept(c.vocab.Pieces[id])
	}
	return nil
}
