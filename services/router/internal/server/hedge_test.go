package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/services/router/internal/admission"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

// loadSlowed is a sim worker whose time to first token grows by perActive
// for each sequence already running on it: quick while idle, slow while
// busy() holds a sequence open on it.
func loadSlowed(t *testing.T, perActive time.Duration) *worker {
	cfg := simCfg()
	cfg.TTFT, cfg.TTFTPerActive = 5*time.Millisecond, perActive
	// busy's sequence runs 8 s.
	cfg.TokensPerSecond, cfg.Models[0].OutputTokens = 500, 4000
	return startWorker(t, cfg)
}

// busy holds a long sequence open on w (as another router's request would)
// until the test ends.
func busy(t *testing.T, w *worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := w.client.Generate(ctx, &enginev1.GenerateRequest{Model: "m",
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "hold"}}, Sampling: &genv1.SamplingParams{MaxTokens: 4000}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if _, err := s.Recv(); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// warm sends n quick requests, so each model has a distribution of times
// to first token to hedge from.
func warm(t *testing.T, m *mesh, model string, n int) {
	t.Helper()
	for i := range n {
		if _, err := run(context.Background(), m.client, req(model, 2)); err != nil {
			t.Fatalf("warm-up %d: %v", i, err)
		}
	}
}

// hedged counts a request's hedge attempts.
func hedged(end *genv1.EndEvent) int {
	n := 0
	for _, a := range end.GetAttempts() {
		if a.GetReason() == genv1.AttemptReason_ATTEMPT_REASON_HEDGE {
			n++
		}
	}
	return n
}

func TestHedgeWinsOverSlowFirstAttempt(t *testing.T) {
	slow, fast := loadSlowed(t, time.Second), loadSlowed(t, 0)
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Hedge: server.HedgeConfig{Budget: 1}}, ep(slow.addr), ep(fast.addr))
	warm(t, m, "m", 60)
	busy(t, slow)

	var won *genv1.EndEvent
	for i := 0; i < 6 && won == nil; i++ {
		began := time.Now()
		r, err := run(context.Background(), m.client, req("m", 4))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		took := time.Since(began)
		at := r.end.GetAttempts()
		if at[0].GetEndpoint() != slow.addr {
			continue // (a hedge may race it too, if it is late for its first token)
		}
		won = r.end
		if len(at) != 2 || at[1].GetReason() != genv1.AttemptReason_ATTEMPT_REASON_HEDGE || at[1].GetEndpoint() != fast.addr ||
			at[1].GetOutcome() != genv1.AttemptOutcome_ATTEMPT_OUTCOME_OK || at[0].GetOutcome() != genv1.AttemptOutcome_ATTEMPT_OUTCOME_HEDGE_LOST {
			t.Fatalf("request %d: want the first attempt lost to a hedge on %s, got %v", i, fast.addr, at)
		}
		if r.start.GetEndpoint() != fast.addr || r.tokens != 4 {
			t.Fatalf("request %d: start %v, %d tokens", i, r.start, r.tokens)
		}
		if took > 700*time.Millisecond {
			t.Fatalf("request %d took %v: the slow worker's first token was waited for", i, took)
		}
		// Billed once: the loser cost nothing and delivered nothing.
		if at[0].GetCostUsd() != 0 || at[0].GetCompletionTokens() != 0 || r.end.GetCostUsd() != at[1].GetCostUsd() ||
			r.end.GetUsage().GetCompletionTokens() != 4 || r.end.GetCostUsd() <= 0 {
			t.Fatalf("request %d billed %v USD, usage %v, attempts %v", i, r.end.GetCostUsd(), r.end.GetUsage(), at)
		}
	}
	if won == nil {
		t.Fatal("no request started on the slow worker")
	}
	// The loser's sequence was cancelled: only the one busy() holds runs.
	deadline := time.Now().Add(3 * time.Second)
	for slow.backend.Status().GetActiveSequences() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the losing attempt still runs: %d sequences on the slow worker", slow.backend.Status().GetActiveSequences())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := metric(t, m, `llmrouter_hedges_total{model="m",result="won"}`); got < 1 {
		t.Fatalf("llmrouter_hedges_total won = %v", got)
	}
	if got := metric(t, m, `llmrouter_attempts_total{model="m",outcome="hedge_lost",reason="first"}`); got < 1 {
		t.Fatalf("attempts lost to a hedge = %v", got)
	}
	if got := metric(t, m, `llmrouter_hedge_wasted_seconds_total{model="m"}`); got <= 0 {
		t.Fatalf("wasted seconds = %v", got)
	}
}

func TestHedgeBudgetCapsHedges(t *testing.T) {
	slow, fast := loadSlowed(t, 150*time.Millisecond), loadSlowed(t, 0)
	m := startRouter(t, ep(slow.addr), ep(fast.addr)) // the default budget: 5 %
	warm(t, m, "m", 50)
	busy(t, slow)
	const n = 20
	hedges, onSlow := 0, 0
	for i := range n {
		r, err := run(context.Background(), m.client, req("m", 2))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		hedges += hedged(r.end)
		if r.end.GetAttempts()[0].GetEndpoint() == slow.addr {
			onSlow++
		}
	}
	// 70 requests earn the budget 3.5 hedges.
	if hedges < 1 || hedges > 3 || onSlow <= hedges {
		t.Fatalf("%d hedges for %d slow first attempts of %d requests after 50 quick ones; the budget allows 3", hedges, onSlow, n)
	}
	if got := metric(t, m, `llmrouter_hedges_skipped_total{model="m",reason="budget"}`); got < float64(onSlow-hedges) {
		t.Fatalf("hedges skipped for the budget = %v, want at least %d", got, onSlow-hedges)
	}
}

// hostedEp describes a worker whose model is a hosted API's.
func hostedEp(addr string) discovery.Endpoint {
	e := ep(addr)
	e.Models[0].Format = "api"
	return e
}

func TestHostedModelsHedgeOnlyByPolicy(t *testing.T) {
	for _, optIn := range []bool{false, true} {
		t.Run(fmt.Sprintf("policy_hedge_%v", optIn), func(t *testing.T) {
			slow, fast := loadSlowed(t, time.Second), loadSlowed(t, 0)
			edit := func(c *scheduling.Config) {
				if optIn {
					c.Policies = map[string]scheduling.Policy{"m": {Hedge: &optIn}}
				}
			}
			m := startRouterSched(t, 50*time.Millisecond, server.Config{MaxAttempts: 3, Hedge: server.HedgeConfig{Budget: 1}}, edit, hostedEp(slow.addr), hostedEp(fast.addr))
			warm(t, m, "m", 60)
			busy(t, slow)
			hedges, onSlow := 0, 0
			for i := range 4 {
				r, err := run(context.Background(), m.client, req("m", 2))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				hedges += hedged(r.end)
				if r.end.GetAttempts()[0].GetEndpoint() == slow.addr {
					onSlow++
				}
			}
			if onSlow == 0 || optIn && hedges != onSlow || !optIn && hedges != 0 {
				t.Fatalf("%d hedges of 4 requests (%d on the slow worker) with the policy's hedge %v", hedges, onSlow, optIn)
			}
		})
	}
}

func TestPolicyTurnsHedgingOffForALocalModel(t *testing.T) {
	slow, fast := loadSlowed(t, time.Second), loadSlowed(t, 0)
	off := false
	edit := func(c *scheduling.Config) { c.Policies = map[string]scheduling.Policy{"m": {Hedge: &off}} }
	m := startRouterSched(t, 50*time.Millisecond, server.Config{MaxAttempts: 3, Hedge: server.HedgeConfig{Budget: 1}}, edit, ep(slow.addr), ep(fast.addr))
	warm(t, m, "m", 60)
	busy(t, slow)
	onSlow := 0
	for i := range 4 {
		r, err := run(context.Background(), m.client, req("m", 2))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if hedged(r.end) != 0 {
			t.Fatalf("request %d hedged despite the policy: %v", i, r.end.GetAttempts())
		}
		if r.end.GetAttempts()[0].GetEndpoint() == slow.addr {
			onSlow++
		}
	}
	if onSlow == 0 {
		t.Fatal("no request started on the slow worker: the policy was not tested")
	}
}

func TestNoHedgeUnderOverload(t *testing.T) {
	slow, fast := loadSlowed(t, 400*time.Millisecond), loadSlowed(t, 0)
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Admission: admission.New(1, 4, 5*time.Second),
		Hedge: server.HedgeConfig{Budget: 1, MinDelay: 100 * time.Millisecond}}, ep(slow.addr), ep(fast.addr))
	warm(t, m, "m", 60)
	busy(t, slow)
	for i := range 4 {
		// x takes the only admission slot; y waits for it while x's hedge
		// falls due.
		var x *genv1.EndEvent
		var errX error
		var wg sync.WaitGroup
		wg.Go(func() {
			r, err := run(context.Background(), m.client, req("m", 2))
			x, errX = r.end, err
		})
		time.Sleep(20 * time.Millisecond)
		if _, err := run(context.Background(), m.client, req("m", 2)); err != nil {
			t.Fatalf("round %d: the waiting request: %v", i, err)
		}
		wg.Wait()
		if errX != nil {
			t.Fatalf("round %d: %v", i, errX)
		}
		if x.GetAttempts()[0].GetEndpoint() != slow.addr {
			continue
		}
		if hedged(x) != 0 {
			t.Fatalf("round %d: hedged while a request waited for admission: %v", i, x.GetAttempts())
		}
		if got := metric(t, m, `llmrouter_hedges_skipped_total{model="m",reason="overload"}`); got < 1 {
			t.Fatalf("hedges skipped for overload = %v", got)
		}
		return
	}
	t.Fatal("no first request started on the slow worker")
}
