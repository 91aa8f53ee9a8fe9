package structured

import (
	"errors"
	"fmt"
	"strconv"
)

// regex compiles a pattern (the common subset of ECMA-262 and RE2:
// literals, escapes, classes, ., groups, alternation, quantifiers) to the
// sequence of a JSON string's contents whose decoded text matches it in
// whole. A pattern without anchors matches where it occurs, so a string
// that is a whole match is valid either way. Characters JSON must escape
// are written escaped; control characters are left out of classes.
func (b *builder) regex(pattern, name string) ([]elem, error) {
	p := &reParser{b: b, src: []rune(pattern), name: name}
	if len(p.src) > 0 && p.src[0] == '^' {
		p.src = p.src[1:]
	}
	if n := len(p.src); n > 0 && p.src[n-1] == '$' && (n < 2 || p.src[n-2] != '\\') {
		p.src = p.src[:n-1]
	}
	out, err := p.alternation()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.src) {
		return nil, fmt.Errorf("unexpected %q at %d", p.src[p.pos], p.pos)
	}
	return out, nil
}

type reParser struct {
	b    *builder
	src  []rune
	pos  int
	name string
}

func (p *reParser) peek() (rune, bool) {
	if p.pos < len(p.src) {
		return p.src[p.pos], true
	}
	return 0, false
}

func (p *reParser) alternation() ([]elem, error) {
	var alts [][]elem
	for {
		s, err := p.sequence()
		if err != nil {
			return nil, err
		}
		alts = append(alts, s)
		if r, ok := p.peek(); !ok || r != '|' {
			break
		}
		p.pos++
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return one(p.b.define(p.name+"-alt", alts...)), nil
}

func (p *reParser) sequence() ([]elem, error) {
	var out []elem
	for {
		r, ok := p.peek()
		if !ok || r == '|' || r == ')' {
			return out, nil
		}
		atom, err := p.atom()
		if err != nil {
			return nil, err
		}
		atom, err = p.quantified(atom)
		if err != nil {
			return nil, err
		}
		out = append(out, atom...)
	}
}

func (p *reParser) quantified(atom []elem) ([]elem, error) {
	r, ok := p.peek()
	if !ok {
		return atom, nil
	}
	lo, hi := -1, -1
	switch r {
	case '*':
		lo, hi = 0, -1
		p.pos++
	case '+':
		lo, hi = 1, -1
		p.pos++
	case '?':
		lo, hi = 0, 1
		p.pos++
	case '{':
		end := p.pos + 1
		for end < len(p.src) && p.src[end] != '}' {
			end++
		}
		if end == len(p.src) {
			return nil, errors.New("unclosed {")
		}
		body := string(p.src[p.pos+1 : end])
		var err error
		lo, hi, err = repeatBounds(body)
		if err != nil {
			return nil, err
		}
		p.pos = end + 1
	default:
		return atom, nil
	}
	if r, ok := p.peek(); ok && r == '?' {
		p.pos++ // lazy: the same set of strings
	}
	if r, ok := p.peek(); ok && (r == '*' || r == '+' || r == '?' || r == '{') {
		return nil, errors.New("a quantifier after a quantifier")
	}
	rule := p.b.define(p.name+"-atom", atom)
	return p.b.repeat(p.name+"-rep", one(rule), lo, hi), nil
}

func repeatBounds(body string) (int, int, error) {
	for i := range len(body) {
		if body[i] == ',' {
			lo, err := strconv.Atoi(body[:i])
			if err != nil {
				return 0, 0, fmt.Errorf("bad repetition {%s}", body)
			}
			if body[i+1:] == "" {
				return lo, -1, nil
			}
			hi, err := strconv.Atoi(body[i+1:])
			if err != nil {
				return 0, 0, fmt.Errorf("bad repetition {%s}", body)
			}
			return lo, hi, nil
		}
	}
	n, err := strconv.Atoi(body)
	if err != nil {
		return 0, 0, fmt.Errorf("bad repetition {%s}", body)
	}
	return n, n, nil
}

func (p *reParser) atom() ([]elem, error) {
	r := p.src[p.pos]
	p.pos++
	switch r {
	case '(':
		if r, ok := p.peek(); ok && r == '?' {
			if p.pos+1 < len(p.src) && p.src[p.pos+1] == ':' {
				p.pos += 2
			} else {
				return nil, errors.New("lookaround and named groups are not supported")
			}
		}
		inner, err := p.alternation()
		if err != nil {
			return nil, err
		}
		if r, ok := p.peek(); !ok || r != ')' {
			return nil, errors.New("unclosed (")
		}
		p.pos++
		return inner, nil
	case '[':
		c, err := p.class()
		if err != nil {
			return nil, err
		}
		return one(p.b.charOf(c)), nil
	case '.':
		c := (&class{nonASCII: true}).add(0, 127)
		c.ascii[0] &^= 1 << '\n'
		return one(p.b.charOf(c)), nil
	case '\\':
		return p.escape()
	case '^', '$':
		return nil, errors.New("anchors inside the pattern are not supported")
	case '*', '+', '?', '{':
		return nil, fmt.Errorf("nothing to repeat before %q", r)
	}
	return literalChar(r), nil
}

// literalChar is r as it appears inside a JSON string.
func literalChar(r rune) []elem {
	switch {
	case r == '"':
		return lit(`\"`)
	case r == '\\':
		return lit(`\\`)
	case r < 0x20:
		return lit(fmt.Sprintf(`\u%04x`, r))
	}
	return lit(string(r))
}

var escapeClasses = map[rune]func() *class{
	'd': func() *class { return (&class{}).add('0', '9') },
	'w': func() *class { return (&class{}).add('0', '9').add('a', 'z').add('A', 'Z').add('_', '_') },
	's': func() *class { return (&class{}).add(' ', ' ') }, // tabs and newlines would need escapes: space only
}

func (p *reParser) escape() ([]elem, error) {
	if p.pos >= len(p.src) {
		return nil, errors.New("trailing backslash")
	}
	r := p.src[p.pos]
	p.pos++
	if f, ok := escapeClasses[r]; ok {
		return one(p.b.charOf(f())), nil
	}
	if r == 'D' || r == 'W' || r == 'S' {
		c := escapeClasses[r+'a'-'A']()
		for i := range c.ascii {
			c.ascii[i] = ^c.ascii[i]
		}
		c.nonASCII = true
		return one(p.b.charOf(c)), nil
	}
	ch, err := p.escapedChar(r)
	if err != nil {
		return nil, err
	}
	return literalChar(ch), nil
}

// escapedChar is the character an escape other than a class stands for:
// \n \t \r \f \v, \xHH, \uHHHH, or a punctuation character itself.
func (p *reParser) escapedChar(r rune) (rune, error) {
	switch r {
	case 'n':
		return '\n', nil
	case 't':
		return '\t', nil
	case 'r':
		return '\r', nil
	case 'f':
		return '\f', nil
	case 'v':
		return '\v', nil
	case 'x', 'u':
		n := 2
		if r == 'u' {
			n = 4
		}
		if p.pos+n > len(p.src) {
			return 0, fmt.Errorf(`\%c needs %d hex digits`, r, n)
		}
		v, err := strconv.ParseUint(string(p.src[p.pos:p.pos+n]), 16, 32)
		if err != nil {
			return 0, fmt.Errorf(`\%c needs %d hex digits`, r, n)
		}
		p.pos += n
		if v >= 0xD800 && v <= 0xDFFF {
			return 0, errors.New("surrogate escapes are not supported")
		}
		return rune(v), nil
	}
	if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
		return 0, fmt.Errorf(`\%c is not supported`, r)
	}
	return r, nil
}

func (p *reParser) class() (*class, error) {
	c := &class{}
	negate := false
	if r, ok := p.peek(); ok && r == '^' {
		negate = true
		p.pos++
	}
	first := true
	for {
		r, ok := p.peek()
		if !ok {
			return nil, errors.New("unclosed [")
		}
		p.pos++
		if r == ']' && !first {
			break
		}
		first = false
		if r == '\\' {
			if p.pos >= len(p.src) {
				return nil, errors.New("trailing backslash")
			}
			e := p.src[p.pos]
			p.pos++
			if f, ok := escapeClasses[e]; ok {
				fc := f()
				c.ascii[0] |= fc.ascii[0]
				c.ascii[1] |= fc.ascii[1]
				continue
			}
			ch, err := p.escapedChar(e)
			if err != nil {
				return nil, err
			}
			r = ch
		}
		hi := r
		if p.pos+1 < len(p.src) && p.src[p.pos] == '-' && p.src[p.pos+1] != ']' {
			hi = p.src[p.pos+1]
			p.pos += 2
			if hi == '\\' {
				if p.pos >= len(p.src) {
					return nil, errors.New("trailing backslash")
				}
				e := p.src[p.pos]
				p.pos++
				ch, err := p.escapedChar(e)
				if err != nil {
					return nil, err
				}
				hi = ch
			}
		}
		if r > 127 || hi > 127 {
			return nil, errors.New("character classes with non-ASCII characters are not supported")
		}
		if hi < r {
			return nil, fmt.Errorf("bad range %c-%c", r, hi)
		}
		c.add(byte(r), byte(hi))
	}
	if negate {
		for i := range c.ascii {
			c.ascii[i] = ^c.ascii[i]
		}
		c.nonASCII = true
	}
	return c, nil
}

// charOf is one character of class c inside a JSON string: control
// characters left out, a quote or backslash written escaped.
func (b *builder) charOf(c *class) elem {
	quote, backslash := c.has('"'), c.has('\\')
	plain := *c
	plain.ascii[0] &^= 0xffffffff // no control characters
	plain.ascii['"'>>6] &^= 1 << ('"' & 63)
	plain.ascii['\\'>>6] &^= 1 << ('\\' & 63)
	plain.ascii[1] &^= 1 << (0x7f - 64)
	var alts [][]elem
	if plain.ascii != [2]uint64{} || plain.nonASCII {
		alts = append(alts, one(elem{class: &plain}))
	}
	if quote {
		alts = append(alts, lit(`\"`))
	}
	if backslash {
		alts = append(alts, lit(`\\`))
	}
	if len(alts) == 1 && alts[0][0].class == &plain {
		return elem{class: &plain}
	}
	return b.define("pchar", alts...) // no alternatives: Compile refuses it
}
