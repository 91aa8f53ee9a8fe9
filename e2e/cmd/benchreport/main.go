// Command benchreport regenerates docs/BENCHMARKS.md and its plots
// (docs/bench/*.png): every table of the benchmark document this project
// was specified by, beside what this mesh measures on this machine (e2e/bench
// has one function per table). It starts its own mesh of real processes
// (Consul, Jaeger, router, sim, engine-gguf and engine-onnx workers) on
// loopback, writes the report even when a table fails (saying which and
// why), and exits non-zero if one did.
//
//	make bench-report                 # the full report
//	make bench-report BENCH_FLAGS=-quick
//
// -quick runs tiny settings (a ~3M-parameter model, short windows) for
// tests; its numbers mean little.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/llm-runner-router/llmrouter/e2e/bench"
	"github.com/llm-runner-router/llmrouter/e2e/harness"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
	"github.com/llm-runner-router/llmrouter/pkg/traces"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// sections in the document's order; each may read what an earlier one
// left in the Env.
var sections = []func(*bench.Env) (bench.Section, error){
	bench.RouterInit, bench.ModelSelection, bench.FormatLoading, bench.ConcurrentLoading, bench.SingleInference,
	bench.Ensemble, bench.PromptLength, bench.TokenStreaming, bench.ConcurrentStreaming, bench.BaseMemory,
	bench.MemoryOptimizations, bench.UserLoad, bench.HorizontalScaling, bench.Framework, bench.ModelFormat,
	bench.CacheOptimization, bench.RoutingStrategies, bench.MemoryImpact, bench.Production, bench.Usage,
	// Ours, after the document's: each names its own title.
	bench.Hedging, bench.SemanticAccuracy,
}

func run(args []string, log io.Writer) (err error) {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	out := fs.String("out", "", "directory for BENCHMARKS.md, plots in its bench/ (default: docs, or bench/out with -quick or -only, so the committed report is only ever a full one)")
	quick := fs.Bool("quick", false, "tiny settings, for tests")
	only := fs.String("only", "", "comma-separated table numbers to run (1-22: the document's 20, then hedged requests and semantic cache accuracy; default all)")
	threads := fs.Int("threads", 2, "threads of each engine worker")
	models := fs.String("models", "", "directory for the generated models (default: the tool cache's models/, or a temporary one with -quick)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		*out = "docs"
		if *quick || *only != "" {
			*out = "bench/out"
		}
	}
	began := time.Now()
	meta := bench.Meta{Date: began.UTC().Format("2006-01-02 15:04 UTC"), Machine: bench.Machine(), Go: runtime.Version(), Commit: bench.Commit(),
		LoadBefore: bench.LoadAvg(), Quick: *quick}
	if l := os.Getenv("LLMROUTER_LLAMA"); l != "" {
		meta.Versions = append(meta.Versions, "llama.cpp="+filepath.Base(l)+" (`"+"tools/install.sh`)")
	}
	if o := os.Getenv("LLMROUTER_ORT_LIB"); o != "" {
		meta.Versions = append(meta.Versions, "ONNX Runtime="+filepath.Base(filepath.Dir(filepath.Dir(o))))
	}
	meta.Versions = append(meta.Versions, "Consul=v1.14.11", "Jaeger=v1.76.0")

	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return err
	}
	cfg, dir := testmodel.Bench, *models
	if *quick {
		cfg = bench.Quick
		if dir == "" {
			dir = r.TempDir()
		}
	} else if dir == "" {
		if os.Getenv("LLMROUTER_BIN") == "" {
			return fmt.Errorf("-models or LLMROUTER_BIN (set by make) is required")
		}
		dir = filepath.Join(filepath.Dir(os.Getenv("LLMROUTER_BIN")), "models")
	}
	ms, err := bench.PrepareModels(dir, cfg, bins)
	if err != nil {
		return err
	}
	plots := filepath.Join(*out, "bench")
	if err := os.MkdirAll(plots, 0o755); err != nil {
		return err
	}
	m := bench.NewMesh(r, bins, true)
	e := &bench.Env{M: m, Models: ms, Quick: *quick, Dir: plots, Traces: &traces.Client{Base: m.Jaeger.Query}, Threads: *threads,
		LoadMS: map[string]float64{}, PeakMiB: map[string]float64{}, GenTPS: map[string]float64{}}
	e.Router = m.Router()
	want := map[int]bool{}
	for _, f := range strings.Split(*only, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err == nil {
			want[n] = true
		}
	}
	titles := bench.DocumentTitles()
	var done []bench.Section
	var failed []string
	for i, f := range sections {
		if len(want) > 0 && !want[i+1] {
			continue
		}
		t0 := time.Now()
		title := "table of our own"
		if i < len(titles) {
			title = titles[i]
		}
		fmt.Fprintf(log, "benchreport: %d. %s ...\n", i+1, title)
		s, err := runSection(r, e, f)
		s.Took, s.Number = time.Since(t0), i+1
		if s.Title == "" {
			s.Title = title
		}
		if err != nil {
			s.Status, s.Method, s.Table, s.Plots = bench.Failed, fmt.Sprintf("Failed: %v", err), "", nil
			failed = append(failed, fmt.Sprintf("%d. %s: %v", i+1, s.Title, err))
		}
		fmt.Fprintf(log, "benchreport: %d. %s: %s in %v\n", i+1, s.Title, s.Status, s.Took.Round(100*time.Millisecond))
		done = append(done, s)
	}
	meta.LoadAfter, meta.Took = bench.LoadAvg(), time.Since(began)
	if err := os.WriteFile(filepath.Join(*out, "BENCHMARKS.md"), []byte(bench.Render(meta, done)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "benchreport: wrote %s in %v\n", filepath.Join(*out, "BENCHMARKS.md"), meta.Took.Round(time.Second))
	if len(failed) > 0 {
		return fmt.Errorf("%d table(s) failed:\n%s", len(failed), strings.Join(failed, "\n"))
	}
	return nil
}

// runSection runs one table, turning a harness Fatal into its error.
// Whatever it started is stopped when it returns, so that it cannot load
// the machine under the next table.
// Its requests share a deadline (e.Ctx), so a hung stream fails the table
// instead of hanging the report.
func runSection(r *harness.Runner, e *bench.Env, f func(*bench.Env) (bench.Section, error)) (s bench.Section, err error) {
	limit := 10 * time.Minute
	if e.Quick {
		limit = 3 * time.Minute
	}
	var cancel context.CancelFunc
	e.Ctx, cancel = context.WithTimeout(context.Background(), limit)
	defer cancel()
	defer e.M.StopSince(e.M.Mark())
	defer r.Recover(&err)
	s, err = f(e)
	if err == nil && e.Ctx.Err() != nil {
		err = fmt.Errorf("over its %v limit", limit)
	}
	return s, err
}
