package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/llm-runner-router/llmrouter/e2e/faults"
)

// The fault matrix with short limits: every fault ends as required, over
// gRPC and the HTTP API, streaming and not (the report goes to a temporary
// directory; make faults writes docs/reliability.md with realistic limits).
func TestFaultMatrix(t *testing.T) {
	results := faults.Run(t, bins, faults.Fast)
	f, err := os.Create(filepath.Join(t.TempDir(), "reliability.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	faults.Report(f, faults.Fast, results)
	for _, r := range results {
		for _, fail := range r.Failures {
			t.Errorf("%s: %s", r.Row.Fault, fail)
		}
	}
	if len(results) < 20 {
		t.Fatalf("%d rows ran", len(results))
	}
}
