// Command enginecheck measures one engine worker serving model "m" over
// gRPC, as a quick check on a new machine (the GPU device checks use it):
// prefill tokens/s (512-token prompt), single-stream decode tokens/s (128
// tokens), and aggregate tokens/s of 4 and 16 concurrent streams (128-token
// prompts, 64 tokens each). It prints one line.
//
//	enginecheck -addr 127.0.0.1:7777 -label "cuda -ngl -1"
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "enginecheck:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("enginecheck", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7777", "the worker's Engine service")
	label := fs.String("label", "", "label printed at the start of the line")
	reps := fs.Int("reps", 3, "repetitions of the single-stream measurements")
	var tlsFlags mtls.Flags
	tlsFlags.AddFlags(fs)
	want := fs.String("worker-identities", mtls.RoleEngine, "identities the worker's certificate may carry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	creds := insecure.NewCredentials()
	if !tlsFlags.Insecure {
		src, err := mtls.Load(tlsFlags, nil)
		if err != nil {
			return err
		}
		ids, err := mtls.ParseIdentities(*want)
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(src.ClientConfig(ids...))
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	cl := enginev1.NewEngineServiceClient(conn)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	if o := harness.Generate(ctx, cl, harness.RandomPrompt(rng, 16), 4); o.Err != nil { // warm up
		return o.Err
	}
	var prefill, decode float64
	for range *reps {
		o := harness.Generate(ctx, cl, harness.RandomPrompt(rng, 512), 1)
		if o.Err != nil {
			return o.Err
		}
		prefill += 512 / o.TTFT.Seconds()
		if o = harness.Generate(ctx, cl, harness.RandomPrompt(rng, 1), 129); o.Err != nil {
			return o.Err
		}
		decode += o.End.GetTimings().GetTokensPerSecond()
	}
	aggregate := func(n int) (float64, error) {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			total int
			errs  []error
		)
		start := time.Now()
		for i := range n {
			ids := harness.RandomPrompt(rand.New(rand.NewPCG(uint64(n), uint64(i))), 128)
			wg.Go(func() {
				o := harness.Generate(ctx, cl, ids, 64)
				mu.Lock()
				defer mu.Unlock()
				total += o.Tokens
				if o.Err != nil {
					errs = append(errs, o.Err)
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			return 0, errs[0]
		}
		return float64(total) / time.Since(start).Seconds(), nil
	}
	four, err := aggregate(4)
	if err != nil {
		return err
	}
	sixteen, err := aggregate(16)
	if err != nil {
		return err
	}
	fmt.Printf("%-14s prefill %7.0f t/s  decode %6.1f t/s  4 streams %7.1f t/s  16 streams %7.1f t/s\n",
		*label, prefill/float64(*reps), decode/float64(*reps), four, sixteen)
	return nil
}
