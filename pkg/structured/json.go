package structured

// The grammar's JSON building blocks, each made once per grammar.

// stringChar is one character of a JSON string: anything but a quote, a
// backslash or a control character, or an escape.
func (b *builder) stringChar() elem {
	if id, ok := b.named["char"]; ok {
		return elem{ref: id - 1}
	}
	plain := &class{nonASCII: true}
	plain.add(0x20, 0x7e)
	plain.ascii['"'>>6] &^= 1 << ('"' & 63)
	plain.ascii['\\'>>6] &^= 1 << ('\\' & 63)
	plain.add(0x7f, 0x7f)
	esc := (&class{}).add('"', '"').add('\\', '\\').add('/', '/').add('b', 'b').add('f', 'f').add('n', 'n').add('r', 'r').add('t', 't')
	hex := elem{class: (&class{}).add('0', '9').add('a', 'f').add('A', 'F')}
	// \uXXXX outside the surrogates (a pair would be one character of two
	// escapes, which minLength and maxLength would miscount).
	notD := elem{class: (&class{}).add('0', '9').add('a', 'c').add('A', 'C').add('e', 'f').add('E', 'F')}
	d := elem{class: (&class{}).add('d', 'd').add('D', 'D')}
	low := elem{class: (&class{}).add('0', '7')}
	u := b.define("unicode-escape", []elem{notD, hex, hex, hex}, []elem{d, low, hex, hex})
	return b.define("char", one(elem{class: plain}), seq(lit(`\`), one(elem{class: esc})), seq(lit(`\u`), one(u)))
}

// stringValue is any JSON string.
func (b *builder) stringValue() elem {
	if id, ok := b.named["string"]; ok {
		return elem{ref: id - 1}
	}
	ch := b.stringChar()
	id := b.rule("string")
	b.g.rules[id] = rule{seq(lit(`"`), b.repeat("string", one(ch), 0, -1), lit(`"`))}
	return elem{ref: id}
}

// anyValue is any JSON value.
func (b *builder) anyValue() elem {
	if id, ok := b.named["value"]; ok {
		return elem{ref: id - 1}
	}
	id := b.rule("value")
	v := elem{ref: id}
	str := b.stringValue()
	digits := b.repeat("digits", one(digit(0, 9)), 1, -1)
	expDigits := b.repeat("exp-digits", one(digit(0, 9)), 1, 2) // within float64
	num := b.define("number",
		seq(b.optLit("minus", "-"), one(b.define("int", lit("0"), seq(one(digit(1, 9)), b.repeat("int-digits", one(digit(0, 9)), 0, -1)))),
			one(b.opt("frac", seq(lit("."), digits))),
			one(b.opt("exp", seq(one(elem{class: (&class{}).add('e', 'e').add('E', 'E')}), one(b.opt("sign", one(elem{class: (&class{}).add('+', '+').add('-', '-')}))), expDigits)))))
	arr := b.define("array", seq(lit("["), one(b.opt("elements", seq(one(v), b.repeat("elements", seq(lit(","), one(v)), 0, -1)))), lit("]")))
	b.g.rules[id] = rule{one(b.objectOf(v, str)), one(arr), one(str), one(num), lit("true"), lit("false"), lit("null")}
	return v
}

func (b *builder) optLit(name, s string) []elem { return one(b.opt(name, lit(s))) }

// anyObject is any JSON object.
func (b *builder) anyObject() elem {
	b.anyValue() // defines "object" too
	return elem{ref: b.named["object"] - 1}
}

// objectOf is an object whose values match v.
func (b *builder) objectOf(v, str elem) elem {
	kv := seq(one(str), lit(":"), one(v))
	return b.define("object", seq(lit("{"), one(b.opt("members", seq(kv, b.repeat("members", seq(lit(","), kv), 0, -1)))), lit("}")))
}
