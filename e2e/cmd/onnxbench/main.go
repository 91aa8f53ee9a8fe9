// Command onnxbench measures engine-onnx against engine-gguf serving the
// same weights (the ~124M bench model in f32, exported to both formats), in
// one run and with the same thread count, over gRPC as clients use them:
//
//   - single-stream prefill (512-token prompt) and decode (128 tokens)
//     tokens/s;
//   - 4 and 16 concurrent streams (128-token prompts, 64 tokens each):
//     aggregate prefill tokens/s (all prompts over the time to the last first
//     token), aggregate decode tokens/s (the sum of the streams' rates), TTFT
//     p50/p99;
//   - TTFT of a 512-token prompt cold and with its prefix cached;
//   - load time (process start to serving, model preloaded), a LoadModel RPC
//     (session or context creation) and peak RSS.
//
// Results print as a table with onnx/gguf ratios and are written under
// bench/out/.
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
	"github.com/llm-runner-router/llmrouter/pkg/gguf"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "onnxbench:", err)
		os.Exit(1)
	}
}

type config struct {
	threads int
	models  string
	out     string
	streams harness.Counts
	reps    int
}

// result is one engine's measurements.
type result struct {
	Engine          string
	LoadMS, RSSMiB  float64
	Prefill, Decode float64 // single stream, tokens/s
	Conc            []concRow
	// TTFT of a 512-token prompt plus 8 new tokens: cold, then after a
	// request with the same 512-token prefix (prefix reuse).
	PrefixColdMS, PrefixWarmMS float64
	// LoadModel RPC of the same model under a second name, file cached:
	// the session (context) creation itself.
	LoadRPCMS float64
}

type concRow struct {
	Streams          int
	Prefill, Decode  float64 // aggregate tokens/s
	TTFTp50, TTFTp99 float64 // ms
	Errors           int
}

func run(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("onnxbench", flag.ContinueOnError)
	var c config
	c.streams = harness.Counts{4, 16}
	fs.IntVar(&c.threads, "threads", 2, "threads for both engines")
	fs.StringVar(&c.models, "models", "", "directory for the generated bench models (default: the tool cache's models/)")
	fs.StringVar(&c.out, "out", "bench/out", "directory for results")
	fs.Var(&c.streams, "streams", "concurrent stream counts (the largest sets -parallel)")
	fs.IntVar(&c.reps, "reps", 3, "repetitions of each single-stream measurement")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.models == "" {
		bin := os.Getenv("LLMROUTER_BIN")
		if bin == "" {
			return errors.New("-models or LLMROUTER_BIN (set by make) is required")
		}
		c.models = filepath.Join(filepath.Dir(bin), "models")
	}
	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return err
	}
	lib, err := harness.ORTLibrary()
	if err != nil {
		return err
	}
	mc := testmodel.Bench
	mc.Name, mc.Type = "bench-124m-f32", gguf.F32
	ggufPath, onnxDir := filepath.Join(c.models, mc.Name+".gguf"), filepath.Join(c.models, mc.Name+"-onnx")
	if _, err := os.Stat(filepath.Join(onnxDir, testmodel.ONNXDataFile)); err != nil {
		fmt.Fprintf(stdout, "writing %s (GGUF and ONNX, f32) into %s ...\n", mc.Name, c.models)
		if err := os.MkdirAll(c.models, 0o755); err != nil {
			return err
		}
		if ggufPath, onnxDir, err = harness.ModelPair(c.models, mc); err != nil {
			return err
		}
	}
	t := strconv.Itoa(c.threads)
	engines := []struct {
		name, bin, source string
		args              []string
	}{
		{"engine-onnx", bins.EngineONNX, onnxDir, []string{"-ort-lib", lib, "-model", "m=" + onnxDir, "-threads", t, "-prefill-chunk", "512"}},
		{"engine-gguf", bins.EngineGGUF, ggufPath, []string{"-model", "m=" + ggufPath, "-threads", t, "-threads-batch", t, "-prefill-chunk", "512"}},
	}
	var results []result
	for _, e := range engines {
		res, err := measure(r, c, e.name, e.bin, e.source, e.args)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		results = append(results, res)
	}
	var report strings.Builder
	fmt.Fprintf(&report, "onnxbench: %s (%d parameters, f32 in both formats), %d threads each, greedy, over gRPC\n", mc.Name, mc.Params(50257), c.threads)
	write(&report, results[0], results[1])
	fmt.Fprint(stdout, report.String())
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.out, "onnxbench.txt"), []byte(report.String()), 0o644); err != nil {
		return err
	}
	j, _ := json.MarshalIndent(results, "", "  ")
	return os.WriteFile(filepath.Join(c.out, "onnxbench.json"), j, 0o644)
}

func measure(r *harness.Runner, c config, name, bin, source string, args []string) (result, error) {
	res := result{Engine: name}
	maxStreams := slices.Max(c.streams)
	began := time.Now()
	certs := testkit.DevCerts(r)
	p := testkit.Start(r, name, bin, testkit.StartOptions{WaitListening: true, Timeout: 5 * time.Minute},
		certs.Args(mtls.RoleEngine, append(args, "-parallel", strconv.Itoa(maxStreams), "-ctx", "1024", "-queue", "64",
			"-load-dir", filepath.Dir(source), "-allow-callers", "router,admin")...)...)
	res.LoadMS = float64(time.Since(began)) / 1e6
	defer p.Stop(5 * time.Second)
	// The admin's certificate: this client also calls LoadModel and
	// UnloadModel.
	conn, err := grpc.NewClient(p.Addr, certs.Dial(r, mtls.RoleAdmin, mtls.RoleEngine))
	if err != nil {
		return res, err
	}
	defer conn.Close()
	cl := enginev1.NewEngineServiceClient(conn)
	rng := rand.New(rand.NewPCG(1, 2))
	harness.Generate(context.Background(), cl, harness.RandomPrompt(rng, 8), 4) // warm up
	var pre, dec float64
	for range c.reps {
		o := harness.Generate(context.Background(), cl, harness.RandomPrompt(rng, 512), 1)
		if o.Err != nil {
			return res, o.Err
		}
		pre += 512 / o.TTFT.Seconds()
		o = harness.Generate(context.Background(), cl, harness.RandomPrompt(rng, 1), 129)
		if o.Err != nil {
			return res, o.Err
		}
		dec += o.End.GetTimings().GetTokensPerSecond()
	}
	res.Prefill, res.Decode = pre/float64(c.reps), dec/float64(c.reps)
	for _, n := range c.streams {
		const promptLen, gen = 128, 64
		outs := make([]harness.Outcome, n)
		var wg sync.WaitGroup
		for i := range n {
			ids := harness.RandomPrompt(rng, promptLen)
			wg.Go(func() { outs[i] = harness.Generate(context.Background(), cl, ids, gen) })
		}
		wg.Wait()
		row := concRow{Streams: n}
		var ttfts []time.Duration
		var lastFirst time.Duration
		for _, o := range outs {
			if o.Err != nil {
				row.Errors++
				continue
			}
			ttfts = append(ttfts, o.TTFT)
			lastFirst = max(lastFirst, o.TTFT)
			row.Decode += o.End.GetTimings().GetTokensPerSecond() // each stream's decode rate
		}
		if len(ttfts) > 0 {
			// Every prompt is in the cache once the last first token is out.
			row.Prefill = float64(len(ttfts)*promptLen) / lastFirst.Seconds()
			row.TTFTp50, row.TTFTp99 = harness.Percentile(ttfts, 0.5), harness.Percentile(ttfts, 0.99)
		}
		res.Conc = append(res.Conc, row)
	}
	shared := harness.RandomPrompt(rng, 512)
	o := harness.Generate(context.Background(), cl, append(slices.Clone(shared), harness.RandomPrompt(rng, 8)...), 1)
	w := harness.Generate(context.Background(), cl, append(slices.Clone(shared), harness.RandomPrompt(rng, 8)...), 1)
	if o.Err != nil || w.Err != nil {
		return res, errors.Join(o.Err, w.Err)
	}
	res.PrefixColdMS, res.PrefixWarmMS = float64(o.TTFT)/1e6, float64(w.TTFT)/1e6
	_, res.RSSMiB = harness.ProcRSS(p.Cmd.Process.Pid)
	if _, err := cl.UnloadModel(context.Background(), &enginev1.UnloadModelRequest{Model: "m"}); err != nil {
		return res, err
	}
	began = time.Now()
	if _, err := cl.LoadModel(context.Background(), &enginev1.LoadModelRequest{Model: "m2", Source: source}); err != nil {
		return res, err
	}
	res.LoadRPCMS = float64(time.Since(began)) / 1e6
	return res, nil
}

func write(w io.Writer, onnx, gguf result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measure\tengine-onnx\tengine-gguf\tonnx/gguf\t")
	row := func(name string, a, b float64, format string) {
		fmt.Fprintf(tw, "%s\t"+format+"\t"+format+"\t%.3f\t\n", name, a, b, a/b)
	}
	row("single-stream prefill t/s (512-token prompt)", onnx.Prefill, gguf.Prefill, "%.1f")
	row("single-stream decode t/s (128 tokens)", onnx.Decode, gguf.Decode, "%.1f")
	for i := range onnx.Conc {
		a, b := onnx.Conc[i], gguf.Conc[i]
		row(fmt.Sprintf("%d streams: aggregate prefill t/s", a.Streams), a.Prefill, b.Prefill, "%.1f")
		row(fmt.Sprintf("%d streams: aggregate decode t/s", a.Streams), a.Decode, b.Decode, "%.1f")
		row(fmt.Sprintf("%d streams: TTFT p50 ms", a.Streams), a.TTFTp50, b.TTFTp50, "%.0f")
		row(fmt.Sprintf("%d streams: TTFT p99 ms", a.Streams), a.TTFTp99, b.TTFTp99, "%.0f")
		if a.Errors+b.Errors > 0 {
			fmt.Fprintf(tw, "%d streams: errors\t%d\t%d\t\t\n", a.Streams, a.Errors, b.Errors)
		}
	}
	row("TTFT 512+8 tokens, cold ms", onnx.PrefixColdMS, gguf.PrefixColdMS, "%.0f")
	row("TTFT 512+8 tokens, shared 512 prefix cached ms", onnx.PrefixWarmMS, gguf.PrefixWarmMS, "%.0f")
	row("load: process start to serving ms", onnx.LoadMS, gguf.LoadMS, "%.0f")
	row("LoadModel RPC ms (session/context creation)", onnx.LoadRPCMS, gguf.LoadRPCMS, "%.0f")
	row("peak RSS MiB", onnx.RSSMiB, gguf.RSSMiB, "%.0f")
	tw.Flush()
	fmt.Fprintln(w, "(engine-gguf mmaps the GGUF file; ONNX Runtime maps the external weights file and keeps prepacked copies of the MatMul weights)")
}
