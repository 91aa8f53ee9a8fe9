package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// Real llama.cpp workers behind Consul and the router.
func TestGGUFWorkersThroughConsulAndRouter(t *testing.T) {
	model, err := harness.TinyModel(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	consul := testkit.StartConsul(t, 0)
	var workers []*testkit.Proc
	for i := range 2 {
		workers = append(workers, testkit.Start(t, fmt.Sprintf("gguf%d", i), bins.EngineGGUF,
			testkit.StartOptions{WaitListening: true, Timeout: 60 * time.Second}, certs.Args(mtls.RoleEngine,
				"-consul", consul.HTTPAddr, "-check-interval", "1s", "-model", "tiny="+model,
				"-ctx", "512", "-parallel", "2", "-threads", "1", "-threads-batch", "1", "-grace", "2s")...))
	}
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter, "-consul", consul.HTTPAddr)...)
	conn, err := grpc.NewClient(router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := routerv1.NewRouterServiceClient(conn)
	deadline := time.Now().Add(15 * time.Second)
	for {
		list, err := client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
		if err == nil && len(list.GetModels()) == 1 && len(list.GetModels()[0].GetEndpoints()) == 2 {
			info := list.GetModels()[0].GetInfo()
			if info.GetFormat() != "gguf" || info.GetArchitecture() != "llama" || info.GetContextLength() != 512 || info.GetQuantization() != "F32" {
				t.Fatalf("metadata from consul: %v", info)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router never saw both gguf workers: %v %v", list, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Direct to a worker, then twice through the router (round robin hits
	// both workers): the same greedy text every time.
	wconn, err := grpc.NewClient(workers[0].Addr, certs.Dial(t, mtls.RoleRouter, mtls.RoleEngine))
	if err != nil {
		t.Fatal(err)
	}
	defer wconn.Close()
	prompt := &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: "Say something."}}}}}
	sampling := &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 12}
	ws, err := enginev1.NewEngineServiceClient(wconn).Generate(context.Background(), &enginev1.GenerateRequest{Model: "tiny", Prompt: prompt, Sampling: sampling})
	if err != nil {
		t.Fatal(err)
	}
	var direct string
	for {
		msg, err := ws.Recv()
		if err != nil {
			break
		}
		direct += msg.GetDelta().GetText()
	}
	seen := map[string]bool{}
	for range 2 {
		s, err := client.Generate(context.Background(), &routerv1.GenerateRequest{Model: "tiny", Prompt: prompt, Sampling: sampling})
		if err != nil {
			t.Fatal(err)
		}
		r := consume(s, nil)
		if r.err != nil || r.tokens != 12 || r.text != direct {
			t.Fatalf("through router: %d tokens %q (%v), direct %q", r.tokens, r.text, r.err, direct)
		}
		seen[r.endpoint] = true
	}
	if len(seen) != 2 {
		t.Fatalf("requests served by %v, want both workers", seen)
	}

	// Mid-stream failover with real llama.cpp: kill the serving worker after
	// 40 tokens; the other worker prefills prompt + those tokens and goes
	// on. Greedy text must equal the uninterrupted run.
	long := &genv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 300}
	ref, err := client.Generate(context.Background(), &routerv1.GenerateRequest{Model: "tiny", Prompt: prompt, Sampling: long})
	if err != nil {
		t.Fatal(err)
	}
	want := consume(ref, nil)
	if want.err != nil || want.tokens != 300 {
		t.Fatalf("reference run: %+v", want)
	}
	s, err := client.Generate(context.Background(), &routerv1.GenerateRequest{Model: "tiny", Prompt: prompt, Sampling: long})
	if err != nil {
		t.Fatal(err)
	}
	var got streamResult
	byAddr := map[string]*testkit.Proc{workers[0].Addr: workers[0], workers[1].Addr: workers[1]}
	for {
		msg, err := s.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				got.err = err
			}
			break
		}
		switch e := msg.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			got.endpoint = e.Start.GetEndpoint()
		case *routerv1.GenerateResponse_Delta:
			before := got.tokens
			got.tokens += len(e.Delta.GetTokenIds())
			got.text += e.Delta.GetText()
			if before < 40 && got.tokens >= 40 {
				byAddr[got.endpoint].Kill()
			}
		case *routerv1.GenerateResponse_End:
			got.end = e.End
		}
	}
	if got.err != nil || got.tokens != 300 || got.end.GetFailovers() != 1 {
		t.Fatalf("failed-over stream: %d tokens, %d failovers, %v", got.tokens, got.end.GetFailovers(), got.err)
	}
	if got.text != want.text {
		t.Fatalf("failed-over text differs from the uninterrupted run:\n got %q\nwant %q", got.text, want.text)
	}
}
