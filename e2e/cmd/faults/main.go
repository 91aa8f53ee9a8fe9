// Command faults runs the fault matrix with realistic limits against real
// provider-proxy and router processes and writes docs/reliability.md.
//
//	make faults
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/llm-runner-router/llmrouter/e2e/faults"
	"github.com/llm-runner-router/llmrouter/e2e/harness"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	out := flag.String("out", "docs/reliability.md", "where to write the report")
	fast := flag.Bool("fast", false, "use the test suite's short limits")
	flag.Parse()
	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return err
	}
	tm := faults.Realistic
	if *fast {
		tm = faults.Fast
	}
	results := faults.Run(r, bins, tm)
	var b bytes.Buffer
	faults.Report(&b, tm, results)
	if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
		return err
	}
	failed := 0
	for _, res := range results {
		for _, f := range res.Failures {
			fmt.Fprintf(os.Stderr, "FAIL %s: %s\n", res.Row.Fault, f)
			failed++
		}
	}
	fmt.Printf("%d rows, %d failed checks; report in %s\n", len(results), failed, *out)
	if failed > 0 {
		return fmt.Errorf("%d checks failed", failed)
	}
	return nil
}
