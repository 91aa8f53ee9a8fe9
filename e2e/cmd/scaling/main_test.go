package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The sweep's code on tiny settings: every row is produced and the table
// agrees with itself (speeds are not asserted).
func TestQuickSweep(t *testing.T) {
	out := t.TempDir()
	var b strings.Builder
	if err := run([]string{"-quick", "-out", out}, &b); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "scaling.md"))
	if err != nil || string(md) != b.String() {
		t.Fatalf("scaling.md: %v", err)
	}
	rows := strings.Split(strings.TrimSpace(b.String()), "\n")
	// header line, blank, table header, separator, then 1w/1r, 2w/1r, 2w/2r
	if len(rows) != 7 || !strings.HasPrefix(rows[4], "| 1 | 1 | 8 |") || !strings.HasPrefix(rows[5], "| 2 | 1 | 16 |") ||
		!strings.HasPrefix(rows[6], "| 2 | 2 | 16 |") || !strings.Contains(rows[4], "| 1.000 | 0 |") {
		t.Fatalf("table:\n%s", b.String())
	}
	for _, f := range []string{"scaling.json", "scaling-throughput.png", "scaling-efficiency.png"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
}
