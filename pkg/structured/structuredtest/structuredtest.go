// Package structuredtest holds the schema corpus the structured-output
// tests run over, and validation with an independent JSON Schema library
// (santhosh-tekuri/jsonschema), for the tests of package structured and of
// the engines that use it.
package structuredtest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed schemas.json
var corpus []byte

// Schemas returns the corpus: nested objects, arrays with bounds, enums,
// required and optional fields, numbers with ranges, strings with
// patterns and formats, anyOf/oneOf, $ref.
func Schemas() []json.RawMessage {
	var out []json.RawMessage
	if err := json.Unmarshal(corpus, &out); err != nil {
		panic(err)
	}
	return out
}

// Validator checks documents against one schema.
type Validator struct{ s *jsonschema.Schema }

// NewValidator compiles schema (draft 2020-12, formats asserted).
func NewValidator(schema []byte) (*Validator, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("schema.json", doc); err != nil {
		return nil, err
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		return nil, err
	}
	return &Validator{s: s}, nil
}

// Validate reports whether out is one JSON value valid under the schema.
func (v *Validator) Validate(out []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(out))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return v.s.Validate(doc)
}
