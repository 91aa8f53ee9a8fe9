package pool

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

func names(e *Endpoint) []string {
	var out []string
	for _, m := range e.Models() {
		out = append(out, m.GetName())
	}
	slices.Sort(out)
	return out
}

// A discovered endpoint's models follow the worker: after an UnloadModel
// (its generation moves) the worker's own list wins over a stale discovery
// record, a new record wins again, and a model the router forgot (the
// worker denied hosting it) comes back from the worker's answer.
func TestModelsFollowTheWorker(t *testing.T) {
	w := testkit.ServeEngine(t, sim.New(sim.Config{Models: []sim.ModelConfig{{Name: "a"}, {Name: "b"}}}), enginehost.Limits{})
	p := New(telemetry.Noop(), slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
	t.Cleanup(func() {
		for _, e := range p.Endpoints() {
			e.conn.Close()
		}
	})
	record := func(models ...string) []discovery.Endpoint {
		var infos []*enginev1.ModelInfo
		for _, m := range models {
			infos = append(infos, &enginev1.ModelInfo{Name: m, Format: "sim"})
		}
		return []discovery.Endpoint{{ID: "w", Address: w.Addr, Healthy: true, Models: infos}}
	}
	p.apply(record("a", "b"))
	e := p.Endpoints()[0]
	ctx := context.Background()
	check := func(step string, want ...string) {
		t.Helper()
		if got := names(e); !slices.Equal(got, want) {
			t.Fatalf("%s: models %v, want %v", step, got, want)
		}
	}
	p.pollStatus(ctx)
	check("generation 0: discovery's record", "a", "b")

	if _, err := w.Client.UnloadModel(ctx, &enginev1.UnloadModelRequest{Model: "b"}); err != nil {
		t.Fatal(err)
	}
	p.pollStatus(ctx)
	check("after UnloadModel", "a")
	if p.Serves("b") {
		t.Fatal("the pool still serves b")
	}
	p.apply(record("a", "b")) // a stale discovery record
	check("stale record", "a")
	p.apply(record("a")) // the worker registered again
	check("new record", "a")

	p.Forget(e, "a")
	if len(e.Models()) != 0 {
		t.Fatalf("forgotten: models %v", names(e))
	}
	p.pollStatus(ctx)
	check("the worker's answer after forgetting", "a")
}
