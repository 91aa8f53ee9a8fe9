package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/grpc"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/traces"
)

// Env is what the report's sections share: the mesh, a traced router with
// the default strategy, the model files, the mode, where plots go, and
// results one section leaves for another.
type Env struct {
	// Ctx bounds the table being measured: its requests use it.
	Ctx    context.Context
	M      *Mesh
	Router *Router
	Models Models
	Quick  bool
	// Dir receives the plots (PNG); sections name them relative to it.
	Dir     string
	Traces  *traces.Client
	Threads int
	// Shared results: load time and peak RSS by model file kind, and the
	// single-stream generation rate (response tokens over latency, through
	// the router) by quantization.
	LoadMS, PeakMiB, GenTPS map[string]float64
}

// pick returns quick in quick mode, else full.
func pick[T any](e *Env, quick, full T) T {
	if e.Quick {
		return quick
	}
	return full
}

// ggufWorker starts engine-gguf serving path as name with the env's threads.
func (e *Env) ggufWorker(name, path string, extra ...string) *testkit.Proc {
	t := strconv.Itoa(e.Threads)
	return e.M.GGUF(append([]string{"-model", name + "=" + path, "-threads", t, "-threads-batch", t}, extra...)...)
}

// onnxWorker starts engine-onnx serving the model directory path as name
// with the env's threads.
func (e *Env) onnxWorker(name, path string) *testkit.Proc {
	return e.M.ONNX("-model", name+"="+path, "-threads", strconv.Itoa(e.Threads))
}

// waitModel waits until the router routes model to n (or more) healthy
// endpoints.
func (e *Env) waitModel(r *Router, model string, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := r.Client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
		for _, m := range l.GetModels() {
			if m.GetInfo().GetName() == model && len(m.GetEndpoints()) >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router never saw %d endpoints of %s: %v", n, model, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// engineClient dials a worker directly (as the router would).
func (e *Env) engineClient(p *testkit.Proc) enginev1.EngineServiceClient {
	conn, err := grpc.NewClient(p.Addr, e.M.Certs.Dial(e.M.R, mtls.RoleRouter, mtls.RoleEngine))
	if err != nil {
		e.M.R.Fatal(err)
	}
	e.M.R.Cleanup(func() { conn.Close() })
	return enginev1.NewEngineServiceClient(conn)
}

// adminClient dials a worker as an administrator (LoadModel, UnloadModel).
func (e *Env) adminClient(p *testkit.Proc) enginev1.EngineServiceClient {
	conn, err := grpc.NewClient(p.Addr, e.M.Certs.Dial(e.M.R, mtls.RoleAdmin, mtls.RoleEngine))
	if err != nil {
		e.M.R.Fatal(err)
	}
	e.M.R.Cleanup(func() { conn.Close() })
	return enginev1.NewEngineServiceClient(conn)
}

// tokens is n seeded token ids from GPT-2's vocabulary (skipping the
// lowest ids, control-like pieces).
func tokens(seed uint64, n int) []uint32 {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(256 + r.IntN(50000))
	}
	return out
}

// TokenRequest is a greedy request for model with a token prompt.
func TokenRequest(model string, prompt []uint32, maxTokens int) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{Model: model, Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Tokens{Tokens: &genv1.TokenIds{Ids: prompt}}},
		Sampling: &genv1.SamplingParams{Temperature: new(float32), MaxTokens: int32(maxTokens)}}
}

// direct streams a greedy generation straight from a worker.
func direct(ctx context.Context, c enginev1.EngineServiceClient, model string, prompt []uint32, maxTokens int) Result {
	t0 := time.Now()
	s, err := c.Generate(ctx, &enginev1.GenerateRequest{Model: model, Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Tokens{Tokens: &genv1.TokenIds{Ids: prompt}}},
		Sampling: &genv1.SamplingParams{Temperature: new(float32), MaxTokens: int32(maxTokens)}})
	if err != nil {
		return Result{Err: err}
	}
	return read(t0, Result{}, s.Recv)
}

// median of ds.
func median(ds []time.Duration) time.Duration {
	return time.Duration(percentile(ds, 0.5) * float64(time.Millisecond))
}

// percentile is the p-quantile (p in [0, 1]) of ds in milliseconds.
func percentile(ds []time.Duration, p float64) float64 { return harness.Percentile(ds, p) }

// decodeRate is tokens/s after the first token.
func decodeRate(r Result) float64 {
	if r.Tokens < 2 || r.E2E <= r.TTFT {
		return 0
	}
	return float64(r.Tokens-1) / (r.E2E - r.TTFT).Seconds()
}

// collect reads the traces of requests ids sent since since, waiting at
// most traces.CollectTimeout for them to arrive.
func (e *Env) collect(ids []string, since time.Time) (traces.Collected, error) {
	ctx, cancel := context.WithTimeout(e.Ctx, traces.CollectTimeout)
	defer cancel()
	return e.Traces.Collect(ctx, ids, since)
}
