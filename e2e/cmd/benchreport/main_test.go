package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/llm-runner-router/llmrouter/e2e/bench"
)

// The report's code on tiny settings: every one of the document's 20 tables
// gets its section (then ours), none fails, the measured ones carry a table with rows,
// the plots exist, and the tables agree with themselves (speeds are not
// asserted).
func TestQuickReport(t *testing.T) {
	out := t.TempDir()
	var log strings.Builder
	if err := run([]string{"-quick", "-threads", "1", "-out", out}, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	titles := bench.DocumentTitles()
	if len(titles) != 20 {
		t.Fatalf("%d document tables, want 20", len(titles))
	}
	titles = append(titles, "Hedged requests (ours)", "Semantic cache accuracy (ours)")
	parts := regexp.MustCompile(`(?m)^## \d+\. `).Split(md, -1)[1:]
	if len(parts) != len(titles) {
		t.Fatalf("%d sections in the report, want %d", len(parts), len(titles))
	}
	for i, p := range parts {
		title := strings.SplitN(p, "\n", 2)[0]
		if title != titles[i] {
			t.Errorf("section %d is %q, want %q", i+1, title, titles[i])
		}
		status := regexp.MustCompile(`\*\*Measured here\*\* \(([a-z ]+)\)`).FindStringSubmatch(p)
		if status == nil {
			t.Errorf("%s: no status", title)
			continue
		}
		switch bench.Status(status[1]) {
		case bench.Failed:
			t.Errorf("%s failed: %s", title, p)
		case bench.Measured, bench.Partly:
			// Ours (after the document's): a header, its separator and at
			// least one row.
			ours := p[strings.Index(p, "**Measured here**"):]
			if !regexp.MustCompile(`(?m)^\|[^\n]*\|\n\|(---\|)+\n\| [^\n]*\|$`).MatchString(ours) {
				t.Errorf("%s: no measured table with rows:\n%s", title, ours)
			}
		case bench.Unmeasured:
			if !strings.Contains(p, "What would measure it") {
				t.Errorf("%s: unmeasured without saying what would measure it", title)
			}
		}
	}
	for _, plot := range regexp.MustCompile(`!\[[^\]]*\]\(([^)]+)\)`).FindAllStringSubmatch(md, -1) {
		fi, err := os.Stat(filepath.Join(out, plot[1]))
		if err != nil || fi.Size() == 0 {
			t.Errorf("plot %s: %v", plot[1], err)
		}
	}
	for _, want := range []string{"scaling-throughput.png", "scaling-efficiency.png", "ttft-vs-concurrency.png", "prompt-length.png", "memory-by-format.png"} {
		if !strings.Contains(md, "(bench/"+want+")") {
			t.Errorf("plot %s not in the report", want)
		}
	}
	// Self-consistency: the sweep's rows are 1, 2 and 2 workers (one
	// router, then two) without errors, and every request the selection
	// table timed had a complete trace.
	for _, row := range []string{`1 \| 1 \| 8`, `2 \| 1 \| 16`, `2 \| 2 \| 16`} {
		m := regexp.MustCompile(`(?m)^\| ` + row + ` \| [^\n]*\| [0-9.]+ \| 0 \| [0-9. ]+ \| [0-9.]+ / [0-9.]+ \| [0-9.]+ / [0-9.]+ \| (\d+) of (\d+) \(\d+ requests\) \|$`).FindStringSubmatch(md)
		if m == nil || m[1] != m[2] {
			t.Errorf("scaling table: no error-free row %q with every sampled span traced (%v)", row, m)
		}
	}
	if m := regexp.MustCompile(`spans expected (\d+), received (\d+), requests missing 0, incomplete 0`).FindStringSubmatch(md); m == nil || m[1] != m[2] {
		t.Errorf("selection traces: %v", m)
	}
	t.Logf("report:\n%s", log.String())
}
