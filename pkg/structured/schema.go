package structured

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Limits of the schemas Compile accepts.
const (
	MaxSchemaBytes = 64 << 10
	MaxSchemaDepth = 32
	maxEnum        = 1024
)

// Error is a schema Compile refuses; Unsupported names the features it
// found that the grammar cannot express (JSON pointers into the schema).
type Error struct {
	Msg         string
	Unsupported []string
}

func (e *Error) Error() string { return e.Msg }

// JSONObject is the grammar of any JSON object (response_format
// json_object).
func JSONObject() *Grammar {
	b := newBuilder()
	b.g.rules[0] = rule{one(b.anyObject())}
	return &b.g
}

// Compile turns a JSON Schema into the grammar of the JSON texts that
// validate against it (compact, no whitespace). Supported: type (and type
// lists), properties, required, additionalProperties (absent or false:
// no other keys, as in OpenAI's strict mode; true or a schema: other keys),
// items, minItems, maxItems, enum, const, string minLength, maxLength,
// pattern (a regular-expression subset) and format (date, time, date-time,
// uuid), integer and number minimum, maximum, exclusiveMinimum and
// exclusiveMaximum (number bounds are met by integer parts within them),
// anyOf, oneOf (when its branches are disjoint: different types, or
// different const tags), allOf of one schema, and $ref to #, #/$defs/...
// and #/definitions/.... Annotations (title, description, default,
// examples, ...) are ignored; any other keyword is refused.
func Compile(schema []byte) (*Grammar, error) {
	if len(schema) > MaxSchemaBytes {
		return nil, &Error{Msg: fmt.Sprintf("schema is %d bytes, over the limit of %d", len(schema), MaxSchemaBytes)}
	}
	root, err := parseOrdered(schema)
	if err != nil {
		return nil, &Error{Msg: "schema is not valid JSON: " + err.Error()}
	}
	c := &compiler{b: newBuilder(), root: root, refs: map[string]int{}}
	e := c.schema(root, "#", 0)
	if len(c.unsupported) > 0 {
		return nil, &Error{Msg: "schema uses features structured output does not support: " + strings.Join(c.unsupported, ", "), Unsupported: c.unsupported}
	}
	if c.err != nil {
		return nil, &Error{Msg: "schema: " + c.err.Error()}
	}
	if c.b.err != nil {
		return nil, &Error{Msg: "schema: " + c.b.err.Error()}
	}
	c.b.g.rules[0] = rule{e}
	if err := c.b.g.prune(); err != nil {
		return nil, &Error{Msg: "schema: " + err.Error()}
	}
	return &c.b.g, nil
}

type compiler struct {
	b           *builder
	root        any
	refs        map[string]int // $ref → rule
	unsupported []string
	err         error
}

func (c *compiler) refuse(path, what string) {
	c.unsupported = append(c.unsupported, what+" at "+path)
}

func (c *compiler) fail(path, format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
}

// annotations are keywords that do not constrain values.
var annotations = map[string]bool{
	"title": true, "description": true, "default": true, "examples": true, "$comment": true, "$schema": true,
	"$id": true, "deprecated": true, "readOnly": true, "writeOnly": true, "$defs": true, "definitions": true,
	"strict": true, "contentMediaType": true, "contentEncoding": true,
}

var known = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true, "items": true, "minItems": true,
	"maxItems": true, "enum": true, "const": true, "minLength": true, "maxLength": true, "pattern": true, "format": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "anyOf": true, "oneOf": true,
	"allOf": true, "$ref": true, "nullable": true,
}

// schema returns the sequence matching values of s.
func (c *compiler) schema(s any, path string, depth int) []elem {
	if depth > MaxSchemaDepth {
		c.fail(path, "nested deeper than %d levels", MaxSchemaDepth)
		return nil
	}
	switch v := s.(type) {
	case bool:
		if v {
			return one(c.anyValue())
		}
		c.fail(path, "schema false allows no value")
		return nil
	case *object:
		return c.object(v, path, depth)
	}
	c.fail(path, "a schema must be an object or a boolean")
	return nil
}

func (c *compiler) anyValue() elem { return c.b.anyValue() }

func (c *compiler) object(s *object, path string, depth int) []elem {
	for _, k := range s.keys {
		if !known[k] && !annotations[k] {
			c.refuse(path, strconv.Quote(k))
		}
	}
	for _, k := range []string{"$ref", "const", "enum"} {
		if _, ok := s.vals[k]; !ok {
			continue
		}
		for _, other := range s.keys {
			if other != k && !annotations[other] && (other != "type" || k == "$ref") {
				c.refuse(path, fmt.Sprintf("%q beside %q", other, k))
				return nil
			}
		}
	}
	if ref, ok := s.vals["$ref"]; ok {
		r, _ := ref.(string)
		return one(c.ref(r, path+"/$ref", depth))
	}
	if v, ok := s.vals["const"]; ok {
		return c.values(s, []any{v}, path+"/const")
	}
	if v, ok := s.vals["enum"]; ok {
		list, ok := v.([]any)
		if !ok || len(list) == 0 || len(list) > maxEnum {
			c.fail(path+"/enum", "want an array of 1 to %d values", maxEnum)
			return nil
		}
		return c.values(s, list, path+"/enum")
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if v, ok := s.vals[k]; ok {
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				c.fail(path+"/"+k, "want a non-empty array of schemas")
				return nil
			}
			if k == "oneOf" && !disjoint(list) {
				c.refuse(path, "oneOf whose branches may overlap (exactly one must match; use anyOf, or branches of different types or with different const tags)")
				return nil
			}
			alts := make([][]elem, len(list))
			for i, x := range list {
				m, conflict := merge(s, x, k)
				if conflict != "" {
					c.refuse(fmt.Sprintf("%s/%s/%d", path, k, i), fmt.Sprintf("%q both beside and inside %s", conflict, k))
					return nil
				}
				alts[i] = c.schema(m, fmt.Sprintf("%s/%s/%d", path, k, i), depth+1)
			}
			return one(c.b.define(name(path, k), alts...))
		}
	}
	if v, ok := s.vals["allOf"]; ok {
		list, ok := v.([]any)
		if !ok || len(list) != 1 {
			c.refuse(path, "allOf of more than one schema")
			return nil
		}
		m, conflict := merge(s, list[0], "allOf")
		if conflict != "" {
			c.refuse(path+"/allOf/0", fmt.Sprintf("%q both beside and inside allOf", conflict))
			return nil
		}
		return c.schema(m, path+"/allOf/0", depth+1)
	}
	types, err := typesOf(s)
	if err != nil {
		c.fail(path+"/type", "%v", err)
		return nil
	}
	if n, _ := s.vals["nullable"].(bool); n && !slices.Contains(types, "null") && len(types) > 0 {
		types = append(types, "null")
	}
	if len(types) == 0 {
		types = inferTypes(s)
	}
	if len(types) == 0 {
		return one(c.anyValue())
	}
	alts := make([][]elem, 0, len(types))
	for _, t := range types {
		alts = append(alts, c.typed(s, t, path, depth))
	}
	if len(alts) == 1 {
		return alts[0]
	}
	return one(c.b.define(name(path, "types"), alts...))
}

// values is the literal choice of list, keeping those of the schema's
// type when it names one.
func (c *compiler) values(s *object, list []any, path string) []elem {
	types, err := typesOf(s)
	if err != nil {
		c.fail(path, "%v", err)
		return nil
	}
	var alts [][]elem
	for _, x := range list {
		if len(types) == 0 || slices.ContainsFunc(types, func(t string) bool { return typeMatches(t, x) }) {
			alts = append(alts, lit(compact(x)))
		}
	}
	if len(alts) == 0 {
		c.fail(path, "no value is of the schema's type")
		return nil
	}
	if len(alts) == 1 {
		return alts[0]
	}
	return one(c.b.define(name(path, "enum"), alts...))
}

// typeMatches reports whether JSON value x is of JSON Schema type t.
func typeMatches(t string, x any) bool {
	switch v := x.(type) {
	case nil:
		return t == "null"
	case bool:
		return t == "boolean"
	case string:
		return t == "string"
	case json.Number:
		if t == "number" {
			return true
		}
		f, err := v.Float64()
		return t == "integer" && err == nil && f == math.Trunc(f)
	case []any:
		return t == "array"
	case *object:
		return t == "object"
	}
	return false
}

// disjoint reports whether no value can match two of the branches: each
// has its own types (integer and number overlap), or all are objects that
// require one property with different const values (a tagged union).
func disjoint(branches []any) bool {
	typeSets := make([][]string, len(branches))
	ok := true
	for i, b := range branches {
		o, isObj := b.(*object)
		if !isObj {
			return false
		}
		ts, err := typesOf(o)
		if err != nil || len(ts) == 0 {
			ok = false
			break
		}
		for _, t := range ts {
			if t == "integer" {
				t = "number"
			}
			typeSets[i] = append(typeSets[i], t)
		}
	}
	if ok {
		seen := map[string]bool{}
		for _, ts := range typeSets {
			for _, t := range ts {
				if seen[t] {
					ok = false
				}
			}
			for _, t := range ts {
				seen[t] = true
			}
		}
		if ok {
			return true
		}
	}
	// A tagged union: some property required by every branch with a const,
	// different in each.
	first, _ := branches[0].(*object)
	props, _ := first.vals["properties"].(*object)
	if props == nil {
		return false
	}
	for _, k := range props.keys {
		tags := map[string]bool{}
		for _, b := range branches {
			o := b.(*object)
			p, _ := o.vals["properties"].(*object)
			req, _ := o.vals["required"].([]any)
			var tag *object
			if p != nil {
				tag, _ = p.vals[k].(*object)
			}
			if tag == nil || !slices.Contains(req, any(k)) {
				tags = nil
				break
			}
			cv, has := tag.vals["const"]
			if !has || tags[compact(cv)] {
				tags = nil
				break
			}
			tags[compact(cv)] = true
		}
		if tags != nil {
			return true
		}
	}
	return false
}

// merge is x with the parent's other keywords (anyOf siblings apply to
// every branch), when there are any besides annotations; conflict names a
// keyword both set (their intersection is not computed).
func merge(parent *object, x any, skip string) (any, string) {
	xo, ok := x.(*object)
	if !ok {
		return x, ""
	}
	out := &object{vals: map[string]any{}}
	for _, k := range parent.keys {
		if k != skip && !annotations[k] {
			out.keys, out.vals[k] = append(out.keys, k), parent.vals[k]
		}
	}
	if len(out.keys) == 0 {
		return x, ""
	}
	for _, k := range xo.keys {
		if pv, dup := out.vals[k]; dup {
			if annotations[k] || compact(pv) == compact(xo.vals[k]) {
				continue
			}
			return nil, k
		}
		out.keys = append(out.keys, k)
		out.vals[k] = xo.vals[k]
	}
	return out, ""
}

func typesOf(s *object) ([]string, error) {
	switch t := s.vals["type"].(type) {
	case nil:
		return nil, nil
	case string:
		return []string{t}, nil
	case []any:
		var out []string
		for _, x := range t {
			str, ok := x.(string)
			if !ok {
				return nil, errors.New("type list entries must be strings")
			}
			out = append(out, str)
		}
		return out, nil
	}
	return nil, errors.New("type must be a string or an array of strings")
}

// inferTypes guesses the type of a schema without one from its keywords.
func inferTypes(s *object) []string {
	has := func(ks ...string) bool {
		return slices.ContainsFunc(ks, func(k string) bool { _, ok := s.vals[k]; return ok })
	}
	switch {
	case has("properties", "required", "additionalProperties"):
		return []string{"object"}
	case has("items", "minItems", "maxItems"):
		return []string{"array"}
	case has("minLength", "maxLength", "pattern", "format"):
		return []string{"string"}
	case has("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
		return []string{"number"}
	}
	return nil
}

func (c *compiler) typed(s *object, t, path string, depth int) []elem {
	switch t {
	case "object":
		return c.objectType(s, path, depth)
	case "array":
		return c.array(s, path, depth)
	case "string":
		return c.str(s, path)
	case "integer", "number":
		return c.number(s, t == "integer", path)
	case "boolean":
		return one(c.b.define(name(path, "bool"), lit("true"), lit("false")))
	case "null":
		return lit("null")
	}
	c.fail(path+"/type", "unknown type %q", t)
	return nil
}

func (c *compiler) objectType(s *object, path string, depth int) []elem {
	props, _ := s.vals["properties"].(*object)
	if _, ok := s.vals["properties"]; ok && props == nil {
		c.fail(path+"/properties", "want an object")
		return nil
	}
	required := map[string]bool{}
	if r, ok := s.vals["required"]; ok {
		list, ok := r.([]any)
		if !ok {
			c.fail(path+"/required", "want an array of property names")
			return nil
		}
		for _, x := range list {
			k, ok := x.(string)
			if !ok {
				c.fail(path+"/required", "want an array of property names")
				return nil
			}
			if props == nil || props.vals[k] == nil {
				c.fail(path+"/required", "%q is required but not among the properties", k)
				return nil
			}
			required[k] = true
		}
	}
	var extra []elem // the grammar of one other key-value pair, if allowed
	if ap, ok := s.vals["additionalProperties"]; ok && ap != false && props != nil && len(props.keys) > 0 {
		// An other key could spell a declared one, with a value its schema
		// refuses: the grammar has no "any string but these".
		c.refuse(path, "additionalProperties beside properties (use one or the other)")
		return nil
	}
	switch ap := s.vals["additionalProperties"].(type) {
	case nil:
	case bool:
		if ap {
			extra = seq(one(c.b.stringValue()), lit(":"), one(c.anyValue()))
		}
	case *object:
		extra = seq(one(c.b.stringValue()), lit(":"), c.schema(ap, path+"/additionalProperties", depth+1))
	}
	type slot struct {
		kv   []elem
		many bool // other keys: any number of them
	}
	var req [][]elem
	var slots []slot
	if props != nil {
		for _, k := range props.keys {
			kv := seq(lit(compact(k)+":"), c.schema(props.vals[k], path+"/properties/"+escapePointer(k), depth+1))
			if required[k] {
				req = append(req, kv)
			} else {
				slots = append(slots, slot{kv: kv})
			}
		}
	}
	if extra != nil {
		slots = append(slots, slot{kv: extra, many: true})
	}
	// tail(j): each later slot or not, in order, each after a comma.
	tail := func(j int) []elem {
		var out []elem
		for _, sl := range slots[j:] {
			if sl.many {
				out = append(out, c.b.repeat(name(path, "extra"), seq(lit(","), sl.kv), 0, -1)...)
			} else {
				out = append(out, c.b.opt(name(path, "opt"), seq(lit(","), sl.kv)))
			}
		}
		return out
	}
	// Required keys in order, then the optional ones (and other keys)
	// that are present, in order.
	out := lit("{")
	if len(req) > 0 {
		for i, kv := range req {
			if i > 0 {
				out = append(out, lit(",")...)
			}
			out = append(out, kv...)
		}
		out = append(out, tail(0)...)
		return append(out, lit("}")...)
	}
	if len(slots) == 0 {
		return append(out, lit("}")...)
	}
	// No key required: the first present one has no comma before it.
	// from(i) ::= slot[i] tail(i+1) | from(i+1)
	var from elem
	for i := len(slots) - 1; i >= 0; i-- {
		first := slices.Clone(slots[i].kv)
		if slots[i].many {
			first = append(first, c.b.repeat(name(path, "extra"), seq(lit(","), slots[i].kv), 0, -1)...)
		}
		first = append(first, tail(i+1)...)
		if i == len(slots)-1 {
			from = c.b.define(name(path, "from"), first)
		} else {
			from = c.b.define(name(path, "from"), first, one(from))
		}
	}
	out = append(out, c.b.opt(name(path, "keys"), one(from)))
	return append(out, lit("}")...)
}

func (c *compiler) array(s *object, path string, depth int) []elem {
	lo, hi, ok := c.bounds(s, "minItems", "maxItems", path)
	if !ok {
		return nil
	}
	var item []elem
	if it, ok := s.vals["items"]; ok {
		if _, isList := it.([]any); isList {
			c.refuse(path, "items as an array (tuple validation; use prefixItems-free schemas)")
			return nil
		}
		item = c.schema(it, path+"/items", depth+1)
	} else {
		item = one(c.anyValue())
	}
	itemRule := c.b.define(name(path, "item"), item)
	out := lit("[")
	if hi == 0 {
		return append(out, lit("]")...)
	}
	rest := c.b.repeat(name(path, "items"), seq(lit(","), one(itemRule)), max(lo-1, 0), decr(hi))
	body := seq(one(itemRule), rest)
	if lo == 0 {
		out = append(out, c.b.opt(name(path, "list"), body))
	} else {
		out = append(out, body...)
	}
	return append(out, lit("]")...)
}

func decr(hi int) int {
	if hi < 0 {
		return -1
	}
	return hi - 1
}

// bounds reads a min/max count pair; hi < 0: unbounded.
func (c *compiler) bounds(s *object, minKey, maxKey, path string) (int, int, bool) {
	lo, hi := 0, -1
	for _, k := range []string{minKey, maxKey} {
		v, ok := s.vals[k]
		if !ok {
			continue
		}
		n, ok := v.(json.Number)
		i, err := n.Int64()
		if !ok || err != nil || i < 0 {
			c.fail(path+"/"+k, "want a non-negative integer")
			return 0, 0, false
		}
		if i > maxRepeat {
			c.refuse(path, fmt.Sprintf("%s over %d", k, maxRepeat))
			return 0, 0, false
		}
		if k == minKey {
			lo = int(i)
		} else {
			hi = int(i)
		}
	}
	if hi >= 0 && lo > hi {
		c.fail(path, "%s %d is over %s %d", minKey, lo, maxKey, hi)
		return 0, 0, false
	}
	return lo, hi, true
}

func (c *compiler) str(s *object, path string) []elem {
	lo, hi, ok := c.bounds(s, "minLength", "maxLength", path)
	if !ok {
		return nil
	}
	pattern, hasPattern := s.vals["pattern"].(string)
	if f, ok := s.vals["format"].(string); ok {
		p, known := formats[f]
		if !known {
			c.refuse(path, fmt.Sprintf("format %q", f))
			return nil
		}
		if hasPattern {
			c.refuse(path, "format together with pattern")
			return nil
		}
		pattern, hasPattern = p, true
	}
	if hasPattern {
		if lo > 0 || hi >= 0 {
			c.refuse(path, "pattern together with minLength or maxLength")
			return nil
		}
		body, err := c.b.regex(pattern, name(path, "pattern"))
		if err != nil {
			c.refuse(path, fmt.Sprintf("pattern %q (%v)", pattern, err))
			return nil
		}
		return seq(lit(`"`), body, lit(`"`))
	}
	ch := c.b.stringChar()
	return seq(lit(`"`), c.b.repeat(name(path, "chars"), one(ch), lo, hi), lit(`"`))
}

// formats are the string formats supported, as patterns.
var formats = map[string]string{
	// Days up to 28: every one exists in every month (a subset of the
	// valid dates, so every output is valid).
	"date":      `^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$`,
	"time":      `^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`,
	"date-time": `^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`,
	"uuid":      `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`,
}

// number builds an integer or number within the schema's bounds. Bounds
// are rounded inward to integers; a number then has an integer part within
// them and a fraction only where the fraction cannot cross a bound.
func (c *compiler) number(s *object, integer bool, path string) []elem {
	lo, hi := math.Inf(-1), math.Inf(1)
	for _, k := range []string{"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"} {
		v, ok := s.vals[k]
		if !ok {
			continue
		}
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil {
			c.fail(path+"/"+k, "want a number")
			return nil
		}
		switch k {
		case "minimum":
			lo = max(lo, math.Ceil(f))
		case "exclusiveMinimum":
			lo = max(lo, math.Floor(f)+1)
		case "maximum":
			hi = min(hi, math.Floor(f))
		case "exclusiveMaximum":
			hi = min(hi, math.Ceil(f)-1)
		}
	}
	const limit = 1e15 // integer parts stay exact in float64
	if lo < -limit || math.IsInf(lo, -1) {
		lo = -limit + 1
	}
	if hi > limit || math.IsInf(hi, 1) {
		hi = limit - 1
	}
	if lo > hi {
		c.fail(path, "no %s lies within the bounds", map[bool]string{true: "integer", false: "number"}[integer])
		return nil
	}
	ilo, ihi := int64(lo), int64(hi)
	if integer {
		return one(c.b.intRange(name(path, "int"), ilo, ihi))
	}
	frac := c.b.define(name(path, "frac"), seq(lit("."), c.b.repeat(name(path, "frac-digits"), one(digit(0, 9)), 1, 15)))
	var alts [][]elem
	// Integer parts I >= 0 with I+1 <= hi take any fraction; negative ones
	// with I-1 >= lo too; every integer in range may stand alone.
	if a, b := max(ilo, 0), ihi-1; a <= b {
		alts = append(alts, seq(one(c.b.intRange(name(path, "int"), a, b)), one(frac)))
	}
	if a, b := ilo+1, min(ihi, -1); a <= b {
		alts = append(alts, seq(one(c.b.intRange(name(path, "int"), a, b)), one(frac)))
	}
	alts = append(alts, one(c.b.intRange(name(path, "int"), ilo, ihi)))
	return one(c.b.define(name(path, "number"), alts...))
}

func digit(lo, hi byte) elem { return elem{class: (&class{}).add('0'+lo, '0'+hi)} }

// intRange matches the decimal integers in [lo, hi] (no leading zeros, no
// "-0").
func (b *builder) intRange(name string, lo, hi int64) elem {
	var alts [][]elem
	if lo < 0 {
		// -n for n in [max(1, -hi), -lo]
		nlo := uint64(1)
		if hi < 0 {
			nlo = uint64(-hi)
		}
		for _, a := range uintRange(nlo, uint64(-lo)) {
			alts = append(alts, seq(lit("-"), a))
		}
	}
	if hi >= 0 {
		alts = append(alts, uintRange(uint64(max(lo, 0)), uint64(hi))...)
	}
	return b.define(name, alts...)
}

// uintRange returns sequences that together match [lo, hi] exactly.
func uintRange(lo, hi uint64) [][]elem {
	var out [][]elem
	for d := len(strconv.FormatUint(lo, 10)); d <= len(strconv.FormatUint(hi, 10)); d++ {
		a, z := lo, hi
		if p := pow10(d - 1); d > 1 && a < p {
			a = p
		}
		if p := pow10(d) - 1; z > p {
			z = p
		}
		if a > z {
			continue
		}
		out = append(out, sameLength(strconv.FormatUint(a, 10), strconv.FormatUint(z, 10))...)
	}
	return out
}

func pow10(n int) uint64 {
	p := uint64(1)
	for range n {
		p *= 10
	}
	return p
}

// sameLength matches the numbers from lo to hi, equal-length digit strings.
func sameLength(lo, hi string) [][]elem {
	if lo == "" {
		return [][]elem{nil}
	}
	if strings.Trim(lo[1:], "0") == "" && strings.Trim(hi[1:], "9") == "" {
		tail := make([]elem, len(lo)-1)
		for i := range tail {
			tail[i] = digit(0, 9)
		}
		return [][]elem{append([]elem{digit(lo[0]-'0', hi[0]-'0')}, tail...)}
	}
	if lo[0] == hi[0] {
		var out [][]elem
		for _, rest := range sameLength(lo[1:], hi[1:]) {
			out = append(out, append([]elem{digit(lo[0]-'0', lo[0]-'0')}, rest...))
		}
		return out
	}
	var out [][]elem
	nines := strings.Repeat("9", len(lo)-1)
	zeros := strings.Repeat("0", len(lo)-1)
	out = append(out, sameLength(lo, lo[:1]+nines)...)
	if lo[0]+1 <= hi[0]-1 {
		out = append(out, sameLength(string(lo[0]+1)+zeros, string(hi[0]-1)+nines)...)
	}
	return append(out, sameLength(hi[:1]+zeros, hi)...)
}

// ref resolves #, #/$defs/NAME and #/definitions/NAME to a rule, made once
// (recursive schemas refer to their own rule).
func (c *compiler) ref(r, path string, depth int) elem {
	if id, ok := c.refs[r]; ok {
		return elem{ref: id}
	}
	var target any
	switch {
	case r == "#":
		target = c.root
	case strings.HasPrefix(r, "#/$defs/") || strings.HasPrefix(r, "#/definitions/"):
		i := strings.Index(r[2:], "/") + 2
		defs, _ := c.root.(*object)
		if defs != nil {
			d, _ := defs.vals[r[2:i]].(*object)
			if d != nil {
				target = d.vals[unescapePointer(r[i+1:])]
			}
		}
	default:
		c.refuse(path, fmt.Sprintf("$ref %q (only #, #/$defs/... and #/definitions/...)", r))
		return elem{}
	}
	if target == nil {
		c.fail(path, "$ref %q points at nothing", r)
		return elem{}
	}
	id := c.b.rule(name(r, "ref"))
	c.refs[r] = id
	c.b.g.rules[id] = rule{c.schema(target, r, depth+1)}
	return elem{ref: id}
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func unescapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

func name(path, what string) string {
	p := strings.TrimPrefix(path, "#")
	if i := strings.LastIndex(p, "/"); i >= 0 && len(p)-i < 24 {
		p = p[i+1:]
	}
	return p + "-" + what
}

// compact is v as compact JSON (without HTML escaping), as the output
// must spell it.
func compact(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(plain(v))
	return strings.TrimSuffix(buf.String(), "\n")
}

// plain turns ordered objects back into maps (key order does not matter
// for const and enum values... except that the output must match one
// spelling: sort keys, as encoding/json does).
func plain(v any) any {
	switch x := v.(type) {
	case *object:
		m := make(map[string]any, len(x.keys))
		for _, k := range x.keys {
			m[k] = plain(x.vals[k])
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

// object is a JSON object with its key order.
type object struct {
	keys []string
	vals map[string]any
}

// parseOrdered decodes JSON keeping object key order; numbers stay
// json.Number.
func parseOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("data after the schema")
	}
	return v, nil
}

func parseValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := &object{vals: map[string]any{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k := kt.(string)
				v, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				if _, dup := o.vals[k]; !dup {
					o.keys = append(o.keys, k)
				}
				o.vals[k] = v
			}
			_, err := dec.Token()
			return o, err
		case '[':
			list := []any{}
			for dec.More() {
				v, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			_, err := dec.Token()
			return list, err
		}
	}
	return tok, nil
}

// cache holds recently compiled grammars by schema text, toolCache by a
// request's tools: a client that sends the same schema or tools with every
// request compiles them once (in the router and in each engine).
var cache, toolCache = newGrammarCache(), newGrammarCache()

type cached struct {
	g   *Grammar
	err error
}

const cacheSize = 256

// grammarCache maps a key to a compiled grammar (or its error), keeping at
// most cacheSize entries.
type grammarCache struct {
	sync.Mutex
	m map[string]cached
}

func newGrammarCache() *grammarCache { return &grammarCache{m: map[string]cached{}} }

// get returns key's grammar, compiling it with compile on a miss. Keys
// longer than limit are compiled every time (refused for their size: not
// worth keeping).
func (c *grammarCache) get(key string, limit int, compile func() (*Grammar, error)) (*Grammar, error) {
	c.Lock()
	e, ok := c.m[key]
	c.Unlock()
	if ok {
		return e.g, e.err
	}
	g, err := compile()
	if len(key) > limit {
		return g, err
	}
	c.Lock()
	if len(c.m) >= cacheSize {
		for k := range c.m { // drop an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[key] = cached{g, err}
	c.Unlock()
	return g, err
}

// CompileCached is Compile with a process-wide cache of recent schemas.
func CompileCached(schema string) (*Grammar, error) {
	return cache.get(schema, MaxSchemaBytes, func() (*Grammar, error) { return Compile([]byte(schema)) })
}
