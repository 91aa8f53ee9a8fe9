// Command ggufbench measures engine-gguf against llama.cpp's own tools, built
// from the same release against the same libraries, in one run:
//
//   - single-stream prefill and decode tokens/s (F16 and Q4_0 of the ~124M
//     bench model) versus llama-bench with the same threads;
//   - 1/4/16/64 concurrent streams (aggregate and per-stream tokens/s, TTFT
//     p50/p99, errors) versus llama-batched-bench with the same prompt and
//     generation lengths, threads, KV layout (not unified) and greedy sampling;
//   - load time and peak RSS per quantization (F16, Q8_0, Q4_0);
//   - TTFT with and without a shared 512-token prompt prefix.
//
// The worker is measured over gRPC, as clients use it. Results print as
// tables and are written under bench/out/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ggufbench:", err)
		os.Exit(1)
	}
}

type config struct {
	threads  int
	models   string
	llamaDir string
	out      string
	streams  harness.Counts
	reps     int
}

func run(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("ggufbench", flag.ContinueOnError)
	var c config
	c.streams = harness.Counts{1, 4, 16, 64}
	threadCounts := harness.Counts{1, 2}
	fs.Var(&threadCounts, "threads", "thread counts to compare at (engine-gguf and the llama.cpp tools alike)")
	fs.StringVar(&c.models, "models", "", "directory for the generated bench models (default: the tool cache)")
	fs.StringVar(&c.llamaDir, "llama", "", "llama.cpp directory from tools/install.sh --llama (lib/llama-bench ...)")
	fs.StringVar(&c.out, "out", "bench/out", "directory for results")
	fs.Var(&c.streams, "streams", "concurrent stream counts")
	fs.IntVar(&c.reps, "reps", 3, "repetitions of each single-stream measurement")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c.threads = slices.Max(threadCounts)
	if c.llamaDir == "" {
		return errors.New("-llama is required (make bench passes it)")
	}
	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return err
	}
	if c.models == "" {
		c.models = filepath.Join(filepath.Dir(c.llamaDir), "models")
	}
	models, err := prepareModels(c, bins)
	if err != nil {
		return err
	}
	var report strings.Builder
	fmt.Fprintf(&report, "ggufbench: bench model %s (%d parameters); llama.cpp %s; engine measured over gRPC from a client on the same machine\n",
		testmodel.Bench.Name, testmodel.Bench.Params(50257), filepath.Base(c.llamaDir))
	results := map[string]any{}
	for _, t := range threadCounts {
		tc := c
		tc.threads = t
		single, err := singleStream(r, tc, bins, models)
		if err != nil {
			return err
		}
		results[fmt.Sprintf("single_stream_%dt", t)] = single
		fmt.Fprintf(&report, "\n== %d thread(s) ==\n", t)
		writeSingle(&report, single)
		conc, err := concurrent(r, tc, bins, models["Q4_0"])
		if err != nil {
			return err
		}
		results[fmt.Sprintf("concurrent_%dt", t)] = conc
		writeConcurrent(&report, conc)
	}
	fmt.Fprintf(&report, "\n== load, memory and prefix reuse (%d threads) ==\n", c.threads)

	loads, err := loadAndRSS(r, c, bins, models)
	if err != nil {
		return err
	}
	results["load"] = loads
	writeLoads(&report, loads)

	prefix, err := prefixTTFT(r, c, bins, models["Q4_0"])
	if err != nil {
		return err
	}
	results["prefix"] = prefix
	fmt.Fprintf(&report, "\nTTFT with a 512-token prompt (+8 distinct tokens), Q4_0, median of %d:\n  cold prefix %.1f ms, shared prefix reused %.1f ms (%.1fx faster; %d prompt tokens reused)\n",
		c.reps, prefix.ColdMS, prefix.CachedMS, prefix.ColdMS/prefix.CachedMS, prefix.Reused)

	fmt.Fprint(stdout, report.String())
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.out, "ggufbench.txt"), []byte(report.String()), 0o644); err != nil {
		return err
	}
	j, _ := json.MarshalIndent(results, "", "  ")
	return os.WriteFile(filepath.Join(c.out, "ggufbench.json"), j, 0o644)
}

// prepareModels writes the bench model (F16) once and quantizes it.
func prepareModels(c config, bins harness.Binaries) (map[string]string, error) {
	if err := os.MkdirAll(c.models, 0o755); err != nil {
		return nil, err
	}
	f16 := filepath.Join(c.models, "bench-124m-f16.gguf")
	if _, err := os.Stat(f16); err != nil {
		if err := testmodel.WriteFile(f16, testmodel.Bench, filepath.Join(c.llamaDir, "vocab", "ggml-vocab-gpt-2.gguf")); err != nil {
			return nil, err
		}
	}
	out := map[string]string{"F16": f16}
	for _, q := range []string{"Q8_0", "Q4_0"} {
		p := filepath.Join(c.models, "bench-124m-"+strings.ToLower(q)+".gguf")
		if _, err := os.Stat(p); err != nil {
			if msg, err := exec.Command(bins.GGUFQuantize, "-type", q, f16, p).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("quantize %s: %v\n%s", q, err, msg)
			}
		}
		out[q] = p
	}
	return out, nil
}

func startWorker(t testkit.T, c config, bins harness.Binaries, model string, extra ...string) (*testkit.Proc, enginev1.EngineServiceClient, func()) {
	certs := testkit.DevCerts(t)
	args := append([]string{"-model", "m=" + model, "-threads", strconv.Itoa(c.threads), "-threads-batch", strconv.Itoa(c.threads)}, extra...)
	p := testkit.Start(t, "engine-gguf", bins.EngineGGUF, testkit.StartOptions{WaitListening: true, Timeout: 2 * time.Minute}, certs.Args(mtls.RoleEngine, args...)...)
	conn, err := grpc.NewClient(p.Addr, certs.Dial(t, mtls.RoleRouter, mtls.RoleEngine))
	if err != nil {
		t.Fatal(err)
	}
	return p, enginev1.NewEngineServiceClient(conn), func() { conn.Close(); p.Stop(5 * time.Second) }
}

type singleRow struct {
	Quant                string
	EnginePrefill, RefPP float64
	EngineDecode, RefTG  float64
}

// llamaBench runs llama-bench -p 512 -n 128 and returns pp and tg tokens/s.
func llamaBench(c config, model string) (pp, tg float64, err error) {
	cmd := exec.Command(filepath.Join(c.llamaDir, "lib", "llama-bench"), "-m", model, "-p", "512", "-n", "128",
		"-t", strconv.Itoa(c.threads), "-r", strconv.Itoa(c.reps), "-o", "json")
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("llama-bench: %w", err)
	}
	var rows []struct {
		NPrompt int     `json:"n_prompt"`
		NGen    int     `json:"n_gen"`
		AvgTS   float64 `json:"avg_ts"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		return 0, 0, fmt.Errorf("llama-bench output: %w", err)
	}
	for _, r := range rows {
		if r.NPrompt > 0 {
			pp = r.AvgTS
		} else {
			tg = r.AvgTS
		}
	}
	return pp, tg, nil
}

func singleStream(r *harness.Runner, c config, bins harness.Binaries, models map[string]string) ([]singleRow, error) {
	var rows []singleRow
	for _, q := range []string{"F16", "Q4_0"} {
		_, cl, stop := startWorker(r, c, bins, models[q], "-parallel", "1", "-ctx", "1024", "-batch", "512", "-prefill-chunk", "512")
		rng := rand.New(rand.NewPCG(1, 2))
		var prefill, decode []float64
		harness.Generate(context.Background(), cl, harness.RandomPrompt(rng, 16), 4) // warm up
		for range c.reps {
			o := harness.Generate(context.Background(), cl, harness.RandomPrompt(rng, 512), 1)
			if o.Err != nil {
				stop()
				return nil, o.Err
			}
			prefill = append(prefill, 512/o.End.GetTimings().GetTimeToFirstToken().AsDuration().Seconds())
			o = harness.Generate(context.Background(), cl, harness.RandomPrompt(rng, 1), 129)
			if o.Err != nil {
				stop()
				return nil, o.Err
			}
			decode = append(decode, o.End.GetTimings().GetTokensPerSecond())
		}
		stop()
		pp, tg, err := llamaBench(c, models[q])
		if err != nil {
			return nil, err
		}
		rows = append(rows, singleRow{Quant: q, EnginePrefill: mean(prefill), RefPP: pp, EngineDecode: mean(decode), RefTG: tg})
	}
	return rows, nil
}

func writeSingle(w io.Writer, rows []singleRow) {
	fmt.Fprintln(w, "Single stream (prefill: 512-token prompt; decode: 128 tokens) vs llama-bench pp512/tg128, same threads:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tprefill t/s\tllama-bench pp512\tratio\tdecode t/s\tllama-bench tg128\tratio\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.3f\t%.1f\t%.1f\t%.3f\t\n", r.Quant, r.EnginePrefill, r.RefPP, r.EnginePrefill/r.RefPP, r.EngineDecode, r.RefTG, r.EngineDecode/r.RefTG)
	}
	tw.Flush()
	fmt.Fprintln(w, "target: ratio >= 0.95")
}

type concRow struct {
	Streams              int
	Aggregate, PerStream float64
	TTFTp50, TTFTp99     float64 // ms
	Errors               int
	RefAggregate, RefTG  float64 // llama-batched-bench: pl*tg/T, S_TG
}

func concurrent(r *harness.Runner, c config, bins harness.Binaries, model string) ([]concRow, error) {
	const pp, tg = 128, 128
	maxStreams := slices.Max(c.streams)
	npl := make([]string, len(c.streams))
	for i, s := range c.streams {
		npl[i] = strconv.Itoa(s)
	}
	ref := map[int][2]float64{}
	cmd := exec.Command(filepath.Join(c.llamaDir, "lib", "llama-batched-bench"), "-m", model, "-c", strconv.Itoa(maxStreams*(pp+tg)),
		"-b", "2048", "-ub", "512", "-npp", strconv.Itoa(pp), "-ntg", strconv.Itoa(tg), "-npl", strings.Join(npl, ","),
		"-t", strconv.Itoa(c.threads), "-tb", strconv.Itoa(c.threads), "--output-format", "jsonl")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("llama-batched-bench: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		var row struct {
			PL      int     `json:"pl"`
			T       float64 `json:"t"`
			SpeedTG float64 `json:"speed_tg"`
		}
		if json.Unmarshal([]byte(line), &row) == nil && row.PL > 0 {
			ref[row.PL] = [2]float64{float64(row.PL*tg) / row.T, row.SpeedTG}
		}
	}

	_, cl, stop := startWorker(r, c, bins, model, "-parallel", strconv.Itoa(maxStreams), "-ctx", strconv.Itoa(pp+tg),
		"-batch", "2048", "-prefill-chunk", strconv.Itoa(pp), "-queue", strconv.Itoa(maxStreams))
	defer stop()
	rng := rand.New(rand.NewPCG(3, 4))
	harness.Generate(context.Background(), cl, harness.RandomPrompt(rng, 16), 4)
	var rows []concRow
	for _, n := range c.streams {
		prompts := make([][]uint32, n)
		for i := range prompts {
			prompts[i] = harness.RandomPrompt(rng, pp)
		}
		outs := make([]harness.Outcome, n)
		var wg sync.WaitGroup
		began := time.Now()
		for i := range n {
			wg.Go(func() { outs[i] = harness.Generate(context.Background(), cl, prompts[i], tg) })
		}
		wg.Wait()
		wall := time.Since(began)
		row := concRow{Streams: n, RefAggregate: ref[n][0], RefTG: ref[n][1]}
		var ttfts []time.Duration
		var per []float64
		total := 0
		for _, o := range outs {
			if o.Err != nil || o.Tokens != tg {
				row.Errors++
				continue
			}
			total += o.Tokens
			ttfts = append(ttfts, o.TTFT)
			per = append(per, o.End.GetTimings().GetTokensPerSecond())
		}
		row.Aggregate = float64(total) / wall.Seconds()
		row.PerStream = mean(per)
		row.TTFTp50, row.TTFTp99 = harness.Percentile(ttfts, 0.5), harness.Percentile(ttfts, 0.99)
		rows = append(rows, row)
	}
	return rows, nil
}

func writeConcurrent(w io.Writer, rows []concRow) {
	fmt.Fprintln(w, "\nConcurrent streams, Q4_0, 128-token prompts, 128 generated tokens each, greedy, KV not unified,")
	fmt.Fprintln(w, "vs llama-batched-bench (-npp 128 -ntg 128, same threads; its aggregate = pl*tg / (T_PP + T_TG)):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\taggregate t/s\tbatched-bench t/s\tratio\tper-stream t/s\tTTFT p50 ms\tTTFT p99 ms\terrors\tbatched-bench S_TG\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.3f\t%.1f\t%.1f\t%.1f\t%d\t%.1f\t\n", r.Streams, r.Aggregate, r.RefAggregate, r.Aggregate/r.RefAggregate, r.PerStream, r.TTFTp50, r.TTFTp99, r.Errors, r.RefTG)
	}
	tw.Flush()
	fmt.Fprintln(w, "target: zero errors, aggregate ratio >= 0.9")
}

type loadRow struct {
	Quant  string
	LoadMS float64
	RSSMiB float64
	File   float64 // MiB
}

func loadAndRSS(r *harness.Runner, c config, bins harness.Binaries, models map[string]string) ([]loadRow, error) {
	var rows []loadRow
	for _, q := range []string{"F16", "Q8_0", "Q4_0"} {
		began := time.Now()
		p, cl, stop := startWorker(r, c, bins, models[q], "-parallel", "4", "-ctx", "1024")
		load := time.Since(began)
		o := harness.Generate(context.Background(), cl, harness.RandomPrompt(rand.New(rand.NewPCG(5, 6)), 64), 16)
		_, rss := harness.ProcRSS(p.Cmd.Process.Pid)
		stop()
		if o.Err != nil {
			return nil, o.Err
		}
		st, _ := os.Stat(models[q])
		rows = append(rows, loadRow{Quant: q, LoadMS: float64(load) / 1e6, RSSMiB: rss, File: float64(st.Size()) / (1 << 20)})
	}
	return rows, nil
}

func writeLoads(w io.Writer, rows []loadRow) {
	fmt.Fprintln(w, "\nLoad (process start to serving, model preloaded; mmap) and peak RSS after a request (4 slots x 1024 ctx):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tfile MiB\tload ms\tpeak RSS MiB\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.1f\t%.0f\t%.1f\t\n", r.Quant, r.File, r.LoadMS, r.RSSMiB)
	}
	tw.Flush()
}

type prefixResult struct {
	ColdMS, CachedMS float64
	Reused           int32
}

func prefixTTFT(r *harness.Runner, c config, bins harness.Binaries, model string) (prefixResult, error) {
	_, cl, stop := startWorker(r, c, bins, model, "-parallel", "4", "-ctx", "1024", "-batch", "512", "-prefill-chunk", "512")
	defer stop()
	rng := rand.New(rand.NewPCG(7, 8))
	var cold, cached []time.Duration
	var reused int32
	for range c.reps {
		shared := harness.RandomPrompt(rng, 512)
		first := harness.Generate(context.Background(), cl, append(slices.Clone(shared), harness.RandomPrompt(rng, 8)...), 1)
		second := harness.Generate(context.Background(), cl, append(slices.Clone(shared), harness.RandomPrompt(rng, 8)...), 1)
		if first.Err != nil || second.Err != nil {
			return prefixResult{}, errors.Join(first.Err, second.Err)
		}
		cold = append(cold, first.TTFT)
		cached = append(cached, second.TTFT)
		reused = second.End.GetUsage().GetCachedPromptTokens()
	}
	return prefixResult{ColdMS: harness.Percentile(cold, 0.5), CachedMS: harness.Percentile(cached, 0.5), Reused: reused}, nil
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
