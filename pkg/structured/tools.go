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
}

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

// ToolCalls is the grammar of a turn that consists of tool calls in the
// given syntax: one call of any of tools, or with parallel one or more.
// Each call's arguments validate against its tool's schema (as Compile
// turns it into a grammar); a schema Compile refuses is an *Error naming
// the tool.
func ToolCalls(tools []Tool, syn ToolCallSyntax, parallel bool) (*Grammar, error) {
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
	call := seq(lit(syn.Open), one(b.define("call", alts...)), lit(syn.Close))
	root := call
	if parallel {
		root = seq(call, b.repeat("more-calls", seq(lit(syn.Sep), call), 0, -1))
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
	c := &compiler{b: b, root: root, refs: map[string]int{}}
	e := c.schema(root, "#", 0)
	switch {
	case len(c.unsupported) > 0:
		return elem{}, &Error{Msg: fmt.Sprintf("tool %q: parameters schema uses features tool calling does not support: %s", t.Name, strings.Join(c.unsupported, ", ")), Unsupported: c.unsupported}
	case c.err != nil:
		return elem{}, &Error{Msg: fmt.Sprintf("tool %q: parameters schema: %v", t.Name, c.err)}
	}
	if o, ok := root.(*object); ok {
		if ts, err := typesOf(o); err == nil && len(ts) > 0 && (len(ts) != 1 || ts[0] != "object") {
			return elem{}, &Error{Msg: fmt.Sprintf("tool %q: parameters must be an object schema, not %s", t.Name, strings.Join(ts, " or "))}
		}
	}
	return b.define(t.Name+"-args", e), nil
}

// ToolCallsCached is ToolCalls with a process-wide cache of recent tool
// sets.
func ToolCallsCached(tools []Tool, syn ToolCallSyntax, parallel bool) (*Grammar, error) {
	key, _ := json.Marshal(struct {
		T []Tool
		S ToolCallSyntax
		P bool
	}{tools, syn, parallel})
	return toolCache.get(string(key), 4*MaxSchemaBytes, func() (*Grammar, error) { return ToolCalls(tools, syn, parallel) })
}
