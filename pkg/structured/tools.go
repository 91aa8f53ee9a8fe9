package structured

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Tool is a function a tool-call grammar allows calls of.
type Tool struct {
	Name string
	// Parameters is the JSON Schema of the arguments object; empty: any
	// object.
	Parameters string
	// Strict: the arguments must validate against Parameters. A schema
	// with features the grammar cannot express is then refused; without
	// Strict such a tool's arguments are any JSON object (OpenAI's
	// non-strict functions promise no more).
	Strict bool
}

// Format is the response format an answer that may call tools takes when
// it does not: JSON matching Schema (empty: any JSON object).
type Format struct{ Schema string }

// ToolCallSyntax is how a model writes a tool call: Open, then the call as
// the JSON object {"name": NAME, ArgsKey: ARGUMENTS}, then Close; calls
// in one turn are separated by Sep.
type ToolCallSyntax struct {
	Open, Close, Sep string
	ArgsKey          string
}

// Hermes is the tool-call syntax of the Hermes and Qwen chat templates
// (and of the test models): <tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>.
var Hermes = ToolCallSyntax{Open: "<tool_call>\n", Close: "\n</tool_call>", Sep: "\n", ArgsKey: "arguments"}

// Trigger is the part of Open that, once written, commits the answer to a
// call: Open without its trailing whitespace.
func (syn ToolCallSyntax) Trigger() string {
	return strings.TrimRight(syn.Open, " \t\r\n")
}

// ToolCalls is the grammar of a turn that consists of tool calls in the
// given syntax: one call of any of tools, or with parallel one or more.
// Each call's arguments validate against its tool's schema (as Compile
// turns it into a grammar); a schema Compile refuses is an *Error naming
// the tool.
func ToolCalls(tools []Tool, syn ToolCallSyntax, parallel bool) (*Grammar, error) {
	return toolGrammar(tools, syn, parallel, false, nil)
}

// ToolCallsAuto is the grammar of an answer under tool_choice auto, as a
// lazy grammar in llama.cpp's server constrains it: any text that does not
// contain syn's Trigger, optionally followed by calls as ToolCalls allows
// them (the answer ends with its calls). The text is free, so a model may
// answer in words; once it writes the trigger, the call is held to the
// tools' names and schemas. The trigger must be ASCII.
func ToolCallsAuto(tools []Tool, syn ToolCallSyntax, parallel bool) (*Grammar, error) {
	return toolGrammar(tools, syn, parallel, true, nil)
}

// ToolCallsOr is the grammar of an answer under tool_choice auto with a
// response format: calls as ToolCalls allows them, or JSON in format.
// A schema of format that Compile refuses is an *Error as Compile's.
func ToolCallsOr(tools []Tool, syn ToolCallSyntax, parallel bool, format Format) (*Grammar, error) {
	return toolGrammar(tools, syn, parallel, true, &format)
}

func toolGrammar(tools []Tool, syn ToolCallSyntax, parallel, auto bool, format *Format) (*Grammar, error) {
	if len(tools) == 0 {
		return nil, errors.New("no tools to call")
	}
	b := newBuilder()
	alts := make([][]elem, 0, len(tools))
	for _, t := range tools {
		args, err := toolArgs(b, t)
		if err != nil {
			return nil, err
		}
		name, _ := json.Marshal(t.Name)
		alts = append(alts, seq(lit(`{"name":`+string(name)+`,"`+syn.ArgsKey+`":`), one(args), lit("}")))
	}
	body := b.define("call", alts...)
	call := seq(lit(syn.Open), one(body), lit(syn.Close))
	var more []elem
	if parallel {
		more = b.repeat("more-calls", seq(lit(syn.Sep), call), 0, -1)
	}
	root := seq(call, more)
	switch {
	case format != nil:
		answer, err := formatAnswer(b, format.Schema)
		if err != nil {
			return nil, err
		}
		root = one(b.define("answer-or-calls", one(answer), root))
	case auto:
		trigger := syn.Trigger()
		calls := b.define("calls", seq(lit(syn.Open[len(trigger):]), one(body), lit(syn.Close), more))
		text, err := b.textWithout(trigger, calls)
		if err != nil {
			return nil, err
		}
		root = one(text)
	}
	if b.err != nil {
		return nil, &Error{Msg: "tools: " + b.err.Error()}
	}
	b.g.rules[0] = rule{root}
	if err := b.g.prune(); err != nil {
		return nil, &Error{Msg: "tools: " + err.Error()}
	}
	return &b.g, nil
}

// textWithout defines the rule of any text (printable or not, any code
// point but NUL) in which trigger does not occur, or that ends with the
// first occurrence of trigger followed by then. It is the automaton of a
// substring search (state k: the text ends with trigger[:k] and with no
// longer prefix), one rule per state, each of which may end the text.
func (b *builder) textWithout(trigger string, then elem) (elem, error) {
	n := len(trigger)
	if n == 0 {
		return elem{}, errors.New("tools: the call syntax has no opening tag")
	}
	for i := range n {
		if trigger[i] == 0 || trigger[i] >= 128 {
			return elem{}, errors.New("tools: the call syntax's opening tag is not printable ASCII")
		}
	}
	// next(k, c): the longest prefix of trigger that ends trigger[:k]+c.
	next := func(k int, c byte) int {
		s := trigger[:k] + string(c)
		for l := min(len(s), n); l > 0; l-- {
			if strings.HasSuffix(s, trigger[:l]) {
				return l
			}
		}
		return 0
	}
	states := make([]int, n)
	for k := range n {
		states[k] = b.rule(fmt.Sprintf("text-%d", k))
	}
	for k := range n {
		to := map[int]*class{}
		for c := 1; c < 128; c++ {
			t := next(k, byte(c))
			if to[t] == nil {
				to[t] = &class{}
			}
			to[t].add(byte(c), byte(c))
		}
		if to[0] == nil {
			to[0] = &class{}
		}
		to[0].nonASCII = true
		r := rule{nil} // the text may end in any state
		for t := 0; t <= n; t++ {
			cl := to[t]
			if cl == nil {
				continue
			}
			dst := then
			if t < n {
				dst = elem{ref: states[t]}
			}
			r = append(r, []elem{{class: cl}, dst})
		}
		b.g.rules[states[k]] = r
	}
	return elem{ref: states[0]}, nil
}

// formatAnswer compiles a response format's schema into b.
func formatAnswer(b *builder, schema string) (elem, error) {
	if schema == "" {
		return b.anyObject(), nil
	}
	if len(schema) > MaxSchemaBytes {
		return elem{}, &Error{Msg: fmt.Sprintf("schema is %d bytes, over the limit of %d", len(schema), MaxSchemaBytes)}
	}
	root, err := parseOrdered([]byte(schema))
	if err != nil {
		return elem{}, &Error{Msg: "schema is not valid JSON: " + err.Error()}
	}
	c := &compiler{b: b, root: root, refs: map[string]int{}}
	e := c.schema(root, "#", 0)
	switch {
	case len(c.unsupported) > 0:
		return elem{}, &Error{Msg: "schema uses features structured output does not support: " + strings.Join(c.unsupported, ", "), Unsupported: c.unsupported}
	case c.err != nil:
		return elem{}, &Error{Msg: "schema: " + c.err.Error()}
	}
	return b.define("answer", e), nil
}

// toolArgs compiles one tool's parameter schema into b.
func toolArgs(b *builder, t Tool) (elem, error) {
	if strings.TrimSpace(t.Parameters) == "" {
		return b.anyObject(), nil
	}
	if len(t.Parameters) > MaxSchemaBytes {
		return elem{}, &Error{Msg: fmt.Sprintf("tool %q: parameters schema is %d bytes, over the limit of %d", t.Name, len(t.Parameters), MaxSchemaBytes)}
	}
	root, err := parseOrdered([]byte(t.Parameters))
	if err != nil {
		return elem{}, &Error{Msg: fmt.Sprintf("tool %q: parameters is not valid JSON: %v", t.Name, err)}
	}
	if o, ok := root.(*object); ok {
		if ts, err := typesOf(o); err == nil && len(ts) > 0 && (len(ts) != 1 || ts[0] != "object") {
			return elem{}, &Error{Msg: fmt.Sprintf("tool %q: parameters must be an object schema, not %s", t.Name, strings.Join(ts, " or "))}
		}
	}
	// A schema the grammar cannot express is compiled into a scratch
	// builder first, so that a non-strict tool's fallback leaves no rules.
	// A non-strict tool whose schema the grammar cannot hold (features it
	// lacks, limits it has, a schema it finds at fault) takes any object,
	// as a provider that does not enforce the schema would.
	probe := &compiler{b: newBuilder(), root: root, refs: map[string]int{}}
	probe.schema(root, "#", 0)
	switch {
	case (probe.err != nil || len(probe.unsupported) > 0 || probe.b.err != nil) && !t.Strict:
		return b.anyObject(), nil
	case len(probe.unsupported) > 0:
		return elem{}, &Error{Msg: fmt.Sprintf("tool %q: parameters schema uses features tool calling does not support: %s", t.Name, strings.Join(probe.unsupported, ", ")), Unsupported: probe.unsupported}
	case probe.err != nil:
		return elem{}, &Error{Msg: fmt.Sprintf("tool %q: parameters schema: %v", t.Name, probe.err)}
	}
	c := &compiler{b: b, root: root, refs: map[string]int{}}
	e := c.schema(root, "#", 0)
	return b.define(t.Name+"-args", e), nil
}

// ToolCallsCached is ToolCalls, with auto ToolCallsAuto, and with auto
// and a format ToolCallsOr, with a process-wide cache of recent tool sets.
func ToolCallsCached(tools []Tool, syn ToolCallSyntax, parallel, auto bool, format *Format) (*Grammar, error) {
	if !auto {
		format = nil
	}
	key, _ := json.Marshal(struct {
		T    []Tool
		S    ToolCallSyntax
		P, A bool
		F    *Format
	}{tools, syn, parallel, auto, format})
	return toolCache.get(string(key), 5*MaxSchemaBytes, func() (*Grammar, error) { return toolGrammar(tools, syn, parallel, auto, format) })
}
