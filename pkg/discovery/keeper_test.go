package discovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

// agent is a Consul agent in memory that can be down or lose everything.
type agent struct {
	mu      sync.Mutex
	down    bool
	regs    map[string]Registration
	history []int // models per registration, in order
}

func (a *agent) Register(_ context.Context, r Registration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down {
		return errors.New("connection refused")
	}
	a.regs[r.ID] = r
	a.history = append(a.history, len(r.Models))
	return nil
}

func (a *agent) Registered(_ context.Context, id string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down {
		return false, errors.New("connection refused")
	}
	_, ok := a.regs[id]
	return ok, nil
}

func (a *agent) Deregister(_ context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.regs, id)
	return nil
}

func (a *agent) set(f func(a *agent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func (a *agent) models(id string) (int, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.regs[id]
	return len(r.Models), ok
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The keeper registers once the agent answers (the worker serving
// meanwhile), again with the new models after a change, again after the
// agent lost the registration, and deregisters at close.
func TestKeeperKeepsTheRegistrationTrue(t *testing.T) {
	a := &agent{down: true, regs: map[string]Registration{}}
	var mu sync.Mutex
	models := []*enginev1.ModelInfo{{Name: "a"}}
	current := func() []*enginev1.ModelInfo {
		mu.Lock()
		defer mu.Unlock()
		return models
	}
	k := Keep(a, Registration{ID: "w"}, current, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	time.Sleep(30 * time.Millisecond)
	if _, ok := a.models("w"); ok {
		t.Fatal("registered while the agent was down")
	}
	a.set(func(a *agent) { a.down = false })
	eventually(t, "registered after the agent came up", func() bool { _, ok := a.models("w"); return ok })

	mu.Lock()
	models = append(models, &enginev1.ModelInfo{Name: "b"})
	mu.Unlock()
	k.Changed()
	eventually(t, "registered with the loaded model", func() bool { n, _ := a.models("w"); return n == 2 })

	a.set(func(a *agent) { a.regs = map[string]Registration{} }) // an agent restarted empty
	eventually(t, "registered again after the agent lost it", func() bool { n, ok := a.models("w"); return ok && n == 2 })

	if err := k.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.models("w"); ok {
		t.Fatal("still registered after close")
	}
	n := len(a.history)
	time.Sleep(30 * time.Millisecond)
	if len(a.history) != n {
		t.Fatal("registered after close")
	}
}
