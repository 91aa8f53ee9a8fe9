// Command mesh runs a local LLM Runner Router mesh on loopback, streams a
// sample answer through the router, and exits (or keeps serving with -serve).
// By default two engine-gguf workers serve the demo model with llama.cpp
// (a counted bigram model of the King James Bible, generated at start);
// -sim uses the token simulator instead.
//
//	make run                             # static discovery: 2 workers + router
//	make run-consul                      # with a Consul agent and Jaeger
//	go run ./e2e/cmd/mesh -serve         # keep running for grpcurl (under make's environment)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mesh:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	fs := flag.NewFlagSet("mesh", flag.ContinueOnError)
	useConsul := fs.Bool("consul", false, "discover workers through a Consul agent and export traces to Jaeger")
	serve := fs.Bool("serve", false, "keep the mesh running after the sample request, until interrupted")
	prompt := fs.String("prompt", "Explain in one sentence what a router does in an LLM serving mesh.", "sample prompt")
	maxTokens := fs.Int("max-tokens", 48, "tokens to generate")
	temperature := fs.Float64("temperature", 0.7, "sampling temperature (0: greedy)")
	seed := fs.Uint64("seed", 1, "sampling seed (the same answer every run)")
	minP := fs.Float64("min-p", 0.1, "min_p: drop tokens under this fraction of the most likely one's probability")
	useSim := fs.Bool("sim", false, "serve the token simulator instead of a llama.cpp model")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)

	binDir := r.TempDir()
	fmt.Fprintln(out, "building router and workers ...")
	bins, err := harness.Build(binDir)
	if err != nil {
		return err
	}
	model := "sim-small"
	workerBin := bins.EngineSim
	workerArgs := []string{"-models", "sim-small:quality=0.6;cost_in=0.0005;cost_out=0.0015", "-tps", "40", "-ttft", "80ms"}
	if !*useSim {
		began := time.Now()
		path, _, err := harness.KJVModel(r.TempDir(), false)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "model   %s: generated in %.1fs at %s\n        a counted bigram model of the King James Bible in a llama-architecture GGUF (GPT-2 vocabulary):\n        it writes KJV-like text from word-pair counts and ignores the question; not a trained transformer\n",
			testmodel.KJVName, time.Since(began).Seconds(), path)
		model, workerBin = testmodel.KJVName, bins.EngineGGUF
		workerArgs = []string{"-model", model + "=" + path, "-ctx", "1024", "-parallel", "4", "-threads", "1", "-threads-batch", "1",
			"-quality", "0.3", "-cost-in", "0.0001", "-cost-out", "0.0002"}
	}
	// mTLS on every hop, the client's too: a development CA and one
	// certificate per role.
	certs := testkit.DevCerts(r)
	routerArgs := []string{"-client-tls", "mtls"}
	var env []string
	if *useConsul {
		consul := testkit.StartConsul(r, 0)
		jaeger := harness.StartJaeger(r)
		env = jaeger.OTELEnv()
		workerArgs = append(workerArgs, "-consul", consul.HTTPAddr, "-check-interval", "1s")
		routerArgs = append(routerArgs, "-consul", consul.HTTPAddr)
		fmt.Fprintf(out, "consul  http://%s/ui (API)\njaeger  %s/api/traces?service=router\n", consul.HTTPAddr, jaeger.Query)
	}
	var workers []string
	for i := range 2 {
		w := testkit.Start(r, fmt.Sprintf("worker%d", i), workerBin,
			testkit.StartOptions{WaitListening: true, Timeout: time.Minute, Env: append(env, "OTEL_SERVICE_NAME="+filepath.Base(workerBin))}, certs.Args(mtls.RoleEngine, workerArgs...)...)
		workers = append(workers, w.Addr)
	}
	if !*useConsul {
		routerArgs = append(routerArgs, "-static", strings.Join(workers, ","))
	}
	router := testkit.Start(r, "router", bins.Router, testkit.StartOptions{WaitListening: true, Env: append(env, "OTEL_SERVICE_NAME=router")}, certs.Args(mtls.RoleRouter, routerArgs...)...)
	fmt.Fprintf(out, "workers %s\nrouter  %s\n", strings.Join(workers, ", "), router.Addr)

	conn, err := grpc.NewClient(router.Addr, certs.Dial(r, mtls.RoleClient, mtls.RoleRouter))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := routerv1.NewRouterServiceClient(conn)
	if err := waitRoutable(ctx, client, len(workers)); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n> %s\n", *prompt)
	sp := &genv1.SamplingParams{MaxTokens: int32(*maxTokens), Temperature: new(float32(*temperature)), Seed: seed, MinP: float32(*minP)}
	if err := sample(ctx, client, model, *prompt, sp, out); err != nil {
		return err
	}
	if !*serve {
		return nil
	}
	c := mtls.DevPaths(certs.Dir, mtls.RoleClient)
	fmt.Fprintf(out, "\nserving (mTLS; certificates in %s); try:\n  grpcurl -cacert %s -cert %s -key %s -d '{\"model\":\"%s\",\"prompt\":{\"text\":\"hi\"}}' %s llmrouter.router.v1.RouterService/Generate\nCtrl-C stops the mesh.\n",
		certs.Dir, c.CA, c.Cert, c.Key, model, router.Addr)
	<-ctx.Done()
	return nil
}

func waitRoutable(ctx context.Context, c routerv1.RouterServiceClient, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		list, err := c.ListModels(ctx, &routerv1.ListModelsRequest{})
		if err == nil && len(list.GetModels()) > 0 && len(list.GetModels()[0].GetEndpoints()) == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("router did not see %d workers: %v", n, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func sample(ctx context.Context, c routerv1.RouterServiceClient, model, prompt string, sp *genv1.SamplingParams, out io.Writer) error {
	stream, err := c.Generate(ctx, &routerv1.GenerateRequest{
		Model: model,
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{
			{Role: genv1.Role_ROLE_USER, Content: prompt},
		}}}},
		Sampling: sp,
	})
	if err != nil {
		return err
	}
	var start *genv1.StartEvent
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		switch e := msg.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			start = e.Start
		case *routerv1.GenerateResponse_Delta:
			fmt.Fprint(out, e.Delta.GetText())
		case *routerv1.GenerateResponse_End:
			end := e.End
			fmt.Fprintf(out, "\n\n[%s on %s, %s] %d prompt + %d completion tokens, TTFT %v, %.1f tokens/s, $%.6f\n",
				start.GetModel(), start.GetEndpoint(), end.GetFinishReason(),
				end.GetUsage().GetPromptTokens(), end.GetUsage().GetCompletionTokens(),
				end.GetTimings().GetTimeToFirstToken().AsDuration().Round(time.Millisecond),
				end.GetTimings().GetTokensPerSecond(), end.GetCostUsd())
		}
	}
}
