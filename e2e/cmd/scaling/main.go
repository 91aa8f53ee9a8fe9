// Command scaling measures horizontal scaling: 1, 2, 4, 8 sim workers
// (each a fixed number of slots at a fixed token rate, found through
// Consul) behind the router, the offered load rising with N (a closed loop
// of slots × N clients, so every worker is kept full), and N = 8 again with
// two router replicas. Per N it reports throughput (requests/s, tokens/s),
// TTFT and end-to-end p50/p99 as the clients see them, the router's CPU
// (cores, from its own accounting) and memory, the workers' memory, and the
// scaling efficiency E(N) = X(N) / (N · X(1)). A Markdown table goes to
// stdout and to -out/scaling.md, the raw numbers to -out/scaling.json, the
// curves to -out/scaling-throughput.png and scaling-efficiency.png.
//
// The workers are simulated because two cores cannot host eight real
// engines; what is measured is the mesh (discovery, routing, relaying),
// which is what scales. make bench-report runs the same sweep among its
// tables (e2e/bench).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/llm-runner-router/llmrouter/e2e/bench"
	"github.com/llm-runner-router/llmrouter/e2e/harness"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "scaling:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("scaling", flag.ContinueOnError)
	var cfg bench.ScalingConfig
	cfg.AddFlags(fs)
	out := fs.String("out", "bench/out", "directory for scaling.md and scaling.json (empty: none)")
	quick := fs.Bool("quick", false, "1 and 2 workers, 2 s each (for tests)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		cfg.Workers, cfg.Duration, cfg.Warmup = harness.Counts{1, 2}, 2*time.Second, 500*time.Millisecond
	}
	// Workers are only added: the counts run in rising order, once each.
	slices.Sort(cfg.Workers)
	cfg.Workers = slices.Compact(cfg.Workers)

	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return err
	}
	rows, err := bench.Scaling(bench.NewMesh(r, bins, false), cfg)
	if err != nil {
		return err
	}
	table := cfg.Describe() + "\n\n" + bench.ScalingTable(rows)
	fmt.Fprint(stdout, table)
	if *out == "" {
		return nil
	}
	if err := bench.WriteSweep(*out, "scaling", table, cfg, rows); err != nil {
		return err
	}
	return bench.ScalingPlot(rows, filepath.Join(*out, "scaling-throughput.png"), filepath.Join(*out, "scaling-efficiency.png"))
}
