// Package structured turns a response format (any JSON object, or a JSON
// Schema) into a context-free grammar over the output's bytes, which an
// engine uses to constrain sampling: engine-gguf hands GBNF (GBNF) to
// llama.cpp's grammar sampler, engine-onnx runs the same grammar with the
// Matcher in its Go sampler. Every output the grammar allows is JSON that
// validates against the schema; schema features the grammar cannot express
// are refused by Compile with an error that names them.
package structured

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Grammar is a context-free grammar: rule 0 is the root; each rule is a
// choice of sequences of elements. A Grammar is immutable once compiled
// and safe for concurrent use.
type Grammar struct {
	rules []rule
	names []string // GBNF rule names, unique

	gbnfOnce sync.Once
	gbnf     string
}

type rule [][]elem // alternatives; an empty one matches nothing (epsilon)

// elem is one of: a class of code points, one exact byte of a multi-byte
// character (in a literal), or a reference to a rule.
type elem struct {
	class *class
	raw   int // 0x80..0xFF: that byte; 0: not a raw byte
	ref   int // with class == nil and raw == 0
}

// class is a set of code points: ASCII bytes (bits), and with nonASCII
// every code point above U+007F (as well-formed UTF-8).
type class struct {
	ascii    [2]uint64
	nonASCII bool
}

func (c *class) has(b byte) bool { return b < 128 && c.ascii[b>>6]&(1<<(b&63)) != 0 }

func (c *class) add(lo, hi byte) *class {
	for b := int(lo); b <= int(hi); b++ {
		c.ascii[b>>6] |= 1 << (b & 63)
	}
	return c
}

// limits of a grammar's size (a schema that needs more is refused).
const (
	maxRules  = 20000
	maxRepeat = 1000
)

// builder assembles a grammar.
type builder struct {
	g     Grammar
	named map[string]int
	err   error
}

func newBuilder() *builder {
	b := &builder{named: map[string]int{}}
	b.rule("root") // rule 0, filled in last
	return b
}

// rule adds an empty rule named after name (made unique) and returns it.
func (b *builder) rule(name string) int {
	if len(b.g.rules) >= maxRules && b.err == nil {
		b.err = fmt.Errorf("the schema needs a grammar of over %d rules", maxRules)
	}
	base := sanitize(name)
	n := base
	for i := 2; b.named[n] != 0 || (n == "root" && len(b.g.rules) > 0); i++ {
		n = base + strconv.Itoa(i)
	}
	b.named[n] = len(b.g.rules) + 1
	b.g.rules = append(b.g.rules, nil)
	b.g.names = append(b.g.names, n)
	return len(b.g.rules) - 1
}

func sanitize(s string) string {
	var sb strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			sb.WriteRune(r)
		} else if sb.Len() > 0 && !strings.HasSuffix(sb.String(), "-") {
			sb.WriteByte('-')
		}
	}
	out := strings.Trim(sb.String(), "-")
	if out == "" {
		return "r"
	}
	if len(out) > 40 {
		out = out[:40]
	}
	return out
}

// define makes a new rule with these alternatives and returns a reference.
func (b *builder) define(name string, alts ...[]elem) elem {
	id := b.rule(name)
	b.g.rules[id] = alts
	return elem{ref: id}
}

// lit is the sequence matching s byte for byte.
func lit(s string) []elem {
	out := make([]elem, len(s))
	for i := range len(s) {
		if s[i] >= 128 {
			out[i] = elem{raw: int(s[i])} // a byte of a multi-byte character
			continue
		}
		out[i] = elem{class: (&class{}).add(s[i], s[i])}
	}
	return out
}

// seq concatenates sequences.
func seq(parts ...[]elem) []elem {
	var out []elem
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func one(e elem) []elem { return []elem{e} }

// opt is e or nothing.
func (b *builder) opt(name string, e []elem) elem { return b.define(name, e, nil) }

// repeat matches e between lo and hi times (hi < 0: unbounded), as
// llama.cpp expands it: lo copies, then nested optional rules.
func (b *builder) repeat(name string, e []elem, lo, hi int) []elem {
	if hi >= 0 && (hi > maxRepeat || lo > hi) || lo > maxRepeat {
		if b.err == nil {
			b.err = fmt.Errorf("a repetition of %d to %d is over the limit of %d", lo, hi, maxRepeat)
		}
		return nil
	}
	var out []elem
	for range lo {
		out = append(out, e...)
	}
	if hi < 0 {
		id := b.rule(name + "-star")
		b.g.rules[id] = rule{seq(e, one(elem{ref: id})), nil}
		return append(out, elem{ref: id})
	}
	if hi == lo {
		return out
	}
	// tail(k) ::= e tail(k-1) | ε, tail(1) ::= e | ε
	prev := -1
	for k := 1; k <= hi-lo; k++ {
		id := b.rule(name + "-opt")
		alt := slices.Clone(e)
		if prev >= 0 {
			alt = append(alt, elem{ref: prev})
		}
		b.g.rules[id] = rule{alt, nil}
		prev = id
	}
	return append(out, elem{ref: prev})
}

// GBNF is the grammar in llama.cpp's GBNF, root first (written once).
func (g *Grammar) GBNF() string {
	g.gbnfOnce.Do(func() { g.gbnf = g.writeGBNF() })
	return g.gbnf
}

func (g *Grammar) writeGBNF() string {
	var sb strings.Builder
	for i, r := range g.rules {
		sb.WriteString(g.names[i])
		sb.WriteString(" ::= ")
		for j, alt := range r {
			if j > 0 {
				sb.WriteString(" | ")
			}
			if len(alt) == 0 {
				sb.WriteString(`""`)
				continue
			}
			for k := 0; k < len(alt); k++ {
				if k > 0 {
					sb.WriteByte(' ')
				}
				e := alt[k]
				switch {
				case e.raw != 0:
					// A run of raw bytes is characters to llama.cpp, which
					// decodes UTF-8: write them as a string literal.
					var raw []byte
					for ; k < len(alt) && alt[k].raw != 0; k++ {
						raw = append(raw, byte(alt[k].raw))
					}
					k--
					sb.WriteString(gbnfQuote(raw))
				case e.class == nil:
					sb.WriteString(g.names[e.ref])
				default:
					sb.WriteString(e.class.gbnf())
				}
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

func (c *class) gbnf() string {
	n := 0
	for b := range 128 {
		if c.has(byte(b)) {
			n++
		}
	}
	if n == 1 && !c.nonASCII {
		for b := range 128 {
			if c.has(byte(b)) {
				return gbnfQuote([]byte{byte(b)})
			}
		}
	}
	var sb strings.Builder
	// With every non-ASCII code point in, write the complement of the
	// missing ASCII bytes.
	negate := c.nonASCII
	if negate && n == 128 {
		return `[\x00-\U0010FFFF]`
	}
	sb.WriteByte('[')
	if negate {
		sb.WriteByte('^')
	}
	for b := 0; b < 128; {
		if c.has(byte(b)) == negate {
			b++
			continue
		}
		e := b
		for e+1 < 128 && c.has(byte(e+1)) != negate {
			e++
		}
		sb.WriteString(gbnfChar(byte(b)))
		if e > b {
			sb.WriteByte('-')
			sb.WriteString(gbnfChar(byte(e)))
		}
		b = e + 1
	}
	sb.WriteByte(']')
	return sb.String()
}

func gbnfChar(b byte) string {
	if b < 0x20 || b == 0x7f || strings.IndexByte(`[]^-\"`, b) >= 0 {
		return fmt.Sprintf(`\x%02X`, b)
	}
	return string(rune(b))
}

// gbnfQuote is a GBNF string literal: quotes, backslashes and control
// bytes escaped, UTF-8 as is.
func gbnfQuote(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&sb, `\x%02X`, c)
		default:
			sb.WriteByte(c)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// fixpoint returns the rules that have an alternative whose every element
// satisfies ok, which reads the set found so far (a least fixed point:
// productive rules, nullable rules).
func (g *Grammar) fixpoint(ok func(e elem, set []bool) bool) []bool {
	set := make([]bool, len(g.rules))
	for changed := true; changed; {
		changed = false
		for i, r := range g.rules {
			if set[i] {
				continue
			}
			for _, alt := range r {
				if !slices.ContainsFunc(alt, func(e elem) bool { return !ok(e, set) }) {
					set[i], changed = true, true
					break
				}
			}
		}
	}
	return set
}

// prune drops the alternatives that can never finish (an empty class, or
// a rule that cannot derive a finite string, such as a required
// self-reference) and refuses left recursion, which no matcher could
// expand. It fails when the root itself cannot finish.
func (g *Grammar) prune() error {
	finishes := func(e elem, productive []bool) bool {
		switch {
		case e.raw != 0:
			return true
		case e.class != nil:
			return e.class.ascii != [2]uint64{} || e.class.nonASCII
		}
		return productive[e.ref]
	}
	productive := g.fixpoint(finishes)
	elemOK := func(e elem) bool { return finishes(e, productive) }
	if !productive[0] {
		return errors.New("the schema allows no finite document (an empty pattern class, or a required property that refers back to its object)")
	}
	for i, r := range g.rules {
		kept := r[:0]
		for _, alt := range r {
			if !slices.ContainsFunc(alt, func(e elem) bool { return !elemOK(e) }) {
				kept = append(kept, alt)
			}
		}
		g.rules[i] = kept
	}
	// Left recursion: a rule reachable from its own start without a byte.
	nullable := g.fixpoint(func(e elem, nullable []bool) bool { return e.class == nil && e.raw == 0 && nullable[e.ref] })
	state := make([]uint8, len(g.rules)) // 0 new, 1 on the path, 2 done
	var visit func(i int) bool
	visit = func(i int) bool {
		if state[i] == 1 {
			return false
		}
		if state[i] == 2 {
			return true
		}
		state[i] = 1
		for _, alt := range g.rules[i] {
			for _, e := range alt {
				if e.class != nil || e.raw != 0 {
					break
				}
				if !visit(e.ref) {
					return false
				}
				if !nullable[e.ref] {
					break
				}
			}
		}
		state[i] = 2
		return true
	}
	for i := range g.rules {
		if !visit(i) {
			return errors.New("the schema is left-recursive (a $ref that reaches itself before any character)")
		}
	}
	return nil
}
