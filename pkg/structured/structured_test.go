package structured

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/llm-runner-router/llmrouter/pkg/structured/structuredtest"
)

// sample expands g at random into one string: alternatives are chosen at
// random until the output is long, then the shortest ones, so that it
// ends.
func sample(g *Grammar, rng *rand.Rand) string {
	minLen := make([]int, len(g.rules))
	for i := range minLen {
		minLen[i] = 1 << 30
	}
	for changed := true; changed; {
		changed = false
		for i, r := range g.rules {
			for _, alt := range r {
				n := 0
				for _, e := range alt {
					if e.class == nil && e.raw == 0 {
						n += minLen[e.ref]
					} else {
						n++
					}
				}
				if n < minLen[i] {
					minLen[i], changed = n, true
				}
			}
		}
	}
	var out []byte
	var expand func(id int)
	expand = func(id int) {
		alts := g.rules[id]
		alt := alts[rng.IntN(len(alts))]
		if len(out) > 200 {
			best := 1 << 30
			for _, a := range alts {
				n := 0
				for _, e := range a {
					if e.class == nil && e.raw == 0 {
						n += minLen[e.ref]
					} else {
						n++
					}
				}
				if n < best {
					best, alt = n, a
				}
			}
		}
		for _, e := range alt {
			switch {
			case e.raw != 0:
				out = append(out, byte(e.raw))
			case e.class != nil:
				var choices []byte
				for b := range 128 {
					if e.class.has(byte(b)) {
						choices = append(choices, byte(b))
					}
				}
				if e.class.nonASCII && (len(choices) == 0 || rng.IntN(8) == 0) {
					out = utf8.AppendRune(out, []rune("éü€𝄞")[rng.IntN(4)])
				} else {
					out = append(out, choices[rng.IntN(len(choices))])
				}
			default:
				expand(e.ref)
			}
		}
	}
	expand(0)
	return string(out)
}

// Every string the grammar of each corpus schema produces is JSON that
// validates against the schema (checked by an independent validator).
func TestCorpusGrammarsProduceValidJSON(t *testing.T) {
	schemas := structuredtest.Schemas()
	if len(schemas) < 50 {
		t.Fatalf("corpus has %d schemas, want at least 50", len(schemas))
	}
	total := 0
	for i, s := range schemas {
		g, err := Compile(s)
		if err != nil {
			t.Fatalf("schema %d %s: %v", i, s, err)
		}
		v, err := structuredtest.NewValidator(s)
		if err != nil {
			t.Fatalf("validator for schema %d: %v", i, err)
		}
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		for range 200 {
			out := sample(g, rng)
			if err := v.Validate([]byte(out)); err != nil {
				t.Fatalf("schema %d %s\ngrammar:\n%s\nproduced %s: %v", i, s, g.GBNF(), out, err)
			}
			total++
		}
	}
	t.Logf("%d schemas, %d sampled outputs, all valid", len(schemas), total)
}

// Maps (additionalProperties with a schema, or true) are unbounded, so
// they are not in the corpus, which random-weight models must finish.
func TestAdditionalProperties(t *testing.T) {
	for _, schema := range []string{
		`{"type":"object","additionalProperties":{"type":"boolean"}}`,
		`{"type":"object","additionalProperties":true}`,
		`{"type":"object","additionalProperties":{"type":"integer","minimum":1,"maximum":3}}`,
	} {
		checkSamples(t, schema, 200, 3)
	}
}

// checkSamples compiles schema and validates n random expansions of its
// grammar.
func checkSamples(t *testing.T, schema string, n int, seed uint64) {
	t.Helper()
	g, err := Compile([]byte(schema))
	if err != nil {
		t.Fatalf("%s: %v", schema, err)
	}
	v, err := structuredtest.NewValidator([]byte(schema))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 4))
	for range n {
		if out := sample(g, rng); v.Validate([]byte(out)) != nil {
			t.Fatalf("%s produced %s: %v", schema, out, v.Validate([]byte(out)))
		}
	}
}

func TestJSONObjectGrammar(t *testing.T) {
	g := JSONObject()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		out := sample(g, rng)
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("json_object produced %q: %v", out, err)
		}
	}
}

// Unsupported features are refused, each named with where it is.
func TestUnsupportedFeaturesAreNamed(t *testing.T) {
	for _, tt := range []struct{ schema, want string }{
		{`{"type":"object","patternProperties":{"^x":{}}}`, `"patternProperties" at #`},
		{`{"type":"object","properties":{"a":{"type":"string","not":{"const":"x"}}}}`, `"not" at #/properties/a`},
		{`{"type":"array","uniqueItems":true,"contains":{}}`, `"uniqueItems" at #, "contains" at #`},
		{`{"type":"string","format":"email"}`, `format "email" at #`},
		{`{"type":"string","pattern":"(?=x)y"}`, `lookaround`},
		{`{"type":"string","pattern":"(a)\\1"}`, `\1 is not supported`},
		{`{"$ref":"https://example.invalid/s.json"}`, `$ref "https://example.invalid/s.json"`},
		{`{"allOf":[{"type":"string"},{"maxLength":3}]}`, `allOf of more than one schema`},
		{`{"type":"string","maxLength":5000}`, `maxLength over 1000`},
		{`{"type":"integer","multipleOf":3}`, `"multipleOf" at #`},
		{`{"oneOf":[{"type":"number"},{"type":"integer"}]}`, `oneOf whose branches may overlap`},
		{`{"oneOf":[{"type":"string"},{"maxLength":3}]}`, `oneOf whose branches may overlap`},
		{`{"type":"object","properties":{"a":{"type":"boolean"}},"additionalProperties":true}`, `additionalProperties beside properties`},
		{`{"enum":["a","b"],"maxLength":1}`, `"maxLength" beside "enum"`},
		{`{"$ref":"#/$defs/x","maxLength":3,"$defs":{"x":{"type":"string"}}}`, `"maxLength" beside "$ref"`},
		{`{"type":"object","properties":{"a":{"type":"integer"}},"anyOf":[{"properties":{"a":{"type":"string"}}}]}`, `"properties" both beside and inside anyOf`},
	} {
		_, err := Compile([]byte(tt.schema))
		var se *Error
		if !errors.As(err, &se) || len(se.Unsupported) == 0 || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("%s: %v, want it named: %s", tt.schema, err, tt.want)
		}
	}
	for _, tt := range []struct{ schema, want string }{
		{`{"type":`, "not valid JSON"},
		{`{"type":"integer","minimum":5,"maximum":4}`, "no integer lies within the bounds"},
		{`{"type":"object","required":["x"]}`, `"x" is required but not among the properties`},
		{`{"$ref":"#/$defs/missing"}`, "points at nothing"},
		{`{"type":"thing"}`, `unknown type "thing"`},
		{`{"type":"string","enum":[1,2]}`, "no value is of the schema's type"},
		{`{"type":"object","properties":{"self":{"$ref":"#"}},"required":["self"]}`, "allows no finite document"},
		{`{"type":"string","pattern":"^[\\n]$"}`, "allows no finite document"},
		{`{"anyOf":[{"$ref":"#"},{"type":"null"}]}`, "left-recursive"},
		{strings.Repeat(`{"type":"array","items":`, 40) + `{}` + strings.Repeat(`}`, 40), "nested deeper than 32"},
		{`{"type":"string","description":"` + strings.Repeat("x", MaxSchemaBytes) + `"}`, "over the limit"},
	} {
		if _, err := Compile([]byte(tt.schema)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("%.80s: %v, want %q", tt.schema, err, tt.want)
		}
	}
}

// The Matcher accepts every string the grammar produces, byte by byte, and
// ends exactly there; it refuses invalid UTF-8 and bytes after the end.
func TestMatcherAcceptsTheGrammarsStrings(t *testing.T) {
	for i, s := range structuredtest.Schemas() {
		g, err := Compile(s)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(i), 9))
		for range 50 {
			out := sample(g, rng)
			m := NewMatcher(g)
			for j := range len(out) {
				if !m.Accept([]byte{out[j]}) {
					t.Fatalf("schema %d: byte %d of %q refused", i, j, out)
				}
			}
			if !m.CanEnd() {
				t.Fatalf("schema %d: %q is complete but the matcher cannot end", i, out)
			}
			if m.Allows([]byte("x")) || m.Allows([]byte{0xff}) {
				t.Fatalf("schema %d: bytes allowed after the complete %q", i, out)
			}
		}
	}
	m := NewMatcher(JSONObject())
	for _, bad := range [][]byte{{'{', '"', 0xC0, 0x80}, {'{', '"', 0xED, 0xA0}, {'{', '"', 0xE2, 'x'}, {'{', '"', 0x80}, {'['}} {
		if m.Allows(bad) {
			t.Fatalf("json_object allowed %q", bad)
		}
	}
	if !m.Allows([]byte(`{"é€𝄞":`)) || !m.Allows([]byte{'{', '"', 0xE2, 0x82}) {
		t.Fatal("json_object refused well-formed UTF-8 (or an unfinished character)")
	}
}

// Long repetitions end: a 1000-character string and a 700-item array are
// matched to their end (a stack that grew with every repetition would
// stop allowing the closing byte).
func TestMatcherLongRepetitions(t *testing.T) {
	for _, tt := range []struct{ schema, doc string }{
		{`{"type":"string"}`, `"` + strings.Repeat("x", 1000) + `"`},
		{`{"type":"string","maxLength":1000}`, `"` + strings.Repeat("y", 1000) + `"`},
		{`{"type":"array","items":{"type":"integer","minimum":0,"maximum":9}}`, "[" + strings.Repeat("1,", 699) + "1]"},
	} {
		g, err := Compile([]byte(tt.schema))
		if err != nil {
			t.Fatal(err)
		}
		m := NewMatcher(g)
		if !m.Accept([]byte(tt.doc)) || !m.CanEnd() {
			t.Fatalf("%s: %d-byte document not matched to its end", tt.schema, len(tt.doc))
		}
	}
}

// Escapes in patterns stand for their characters (not the letters), and
// strings that need JSON escapes get them.
func TestPatternEscapes(t *testing.T) {
	for _, pattern := range []string{`^\x41é[\x30-\x39]{2}$`, `^[\t a-c]{3}$`, `^a\.b\-c\/d$`, `^\f\v\n$`, `^["\\]{2}$`, `^[^a-z]{2}$`} {
		checkSamples(t, `{"type":"string","pattern":`+strconvQuote(pattern)+`}`, 100, 5)
	}
	for _, bad := range []string{`\q`, `[\W]`, `\ud800`, `\x4`} {
		if _, err := Compile([]byte(`{"type":"string","pattern":` + strconvQuote(bad) + `}`)); err == nil {
			t.Fatalf("pattern %s compiled", bad)
		}
	}
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
