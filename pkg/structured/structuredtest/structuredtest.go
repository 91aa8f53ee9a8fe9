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
	"strings"
	"sync"
	"time"

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

// Run is one generation of the corpus test: a schema, a temperature (0:
// greedy) and a seed.
type Run struct {
	Schema int
	Temp   float32
	Seed   uint64
}

// Result is what an engine answered: the text, whether the model ended it
// (rather than a token limit), and its token count.
type Result struct {
	Text   string
	Ended  bool
	Tokens int
}

// TB is the part of testing.TB RunCorpus uses.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// RunCorpus generates with every corpus schema, greedy and at temperatures
// 0.7 and 1.3 with seeds 1 and 2, workers at a time, and fails unless
// every answer ended by itself and validates (independent validator).
func RunCorpus(t TB, workers int, generate func(schema []byte, r Run) (Result, error)) {
	t.Helper()
	schemas := Schemas()
	validators := make([]*Validator, len(schemas))
	var runs []Run
	for i, s := range schemas {
		v, err := NewValidator(s)
		if err != nil {
			t.Fatalf("schema %d: %v", i, err)
		}
		validators[i] = v
		runs = append(runs, Run{Schema: i})
		for _, temp := range []float32{0.7, 1.3} {
			for seed := range uint64(2) {
				runs = append(runs, Run{Schema: i, Temp: temp, Seed: seed + 1})
			}
		}
	}
	began := time.Now()
	var (
		mu            sync.Mutex
		passed, total int
		fails         []string
		wg            sync.WaitGroup
		next          = make(chan Run)
	)
	for range workers {
		wg.Go(func() {
			for r := range next {
				res, err := generate(schemas[r.Schema], r)
				mu.Lock()
				total += res.Tokens
				switch {
				case err != nil:
					fails = append(fails, fmt.Sprintf("schema %d temp %v seed %d: %v", r.Schema, r.Temp, r.Seed, err))
				case !res.Ended:
					fails = append(fails, fmt.Sprintf("schema %d temp %v seed %d: no end after %d tokens: %q", r.Schema, r.Temp, r.Seed, res.Tokens, res.Text))
				default:
					if err := validators[r.Schema].Validate([]byte(res.Text)); err != nil {
						fails = append(fails, fmt.Sprintf("schema %d temp %v seed %d: %q: %v", r.Schema, r.Temp, r.Seed, res.Text, err))
					} else {
						passed++
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, r := range runs {
		next <- r
	}
	close(next)
	wg.Wait()
	t.Logf("%d schemas × %d runs each (greedy, temperatures 0.7 and 1.3 × 2 seeds): %d of %d valid, %d tokens in %v",
		len(schemas), len(runs)/len(schemas), passed, len(runs), total, time.Since(began).Round(time.Millisecond))
	if len(fails) > 0 {
		t.Fatalf("%d of %d failed:\n%s", len(fails), len(runs), strings.Join(fails, "\n"))
	}
}
