package strategy

import (
	"fmt"
	"testing"

	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
)

func endpoints(n int) []*pool.Endpoint {
	eps := make([]*pool.Endpoint, n)
	for i := range eps {
		eps[i] = &pool.Endpoint{ID: fmt.Sprintf("w%d", i), Address: fmt.Sprintf("127.0.0.1:%d", 9000+i)}
	}
	return eps
}

func TestRoundRobin(t *testing.T) {
	tests := []struct {
		n, picks int
		want     []string
	}{
		{1, 3, []string{"w0", "w0", "w0"}},
		{3, 7, []string{"w0", "w1", "w2", "w0", "w1", "w2", "w0"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			p, ok := Builtin().Get(RoundRobinName)
			if !ok {
				t.Fatal("round-robin not registered")
			}
			eps := endpoints(tt.n)
			for i, w := range tt.want {
				if got := p.Pick(&Request{}, eps).ID; got != w {
					t.Fatalf("pick %d = %s, want %s", i, got, w)
				}
			}
		})
	}
}

func TestAffineIsStickyAndMovesOnlyLeavers(t *testing.T) {
	eps := endpoints(5)
	before := map[string]string{}
	counts := map[string]int{}
	for i := range 1000 {
		s := fmt.Sprint("s", i)
		before[s] = Affine(s, eps).ID
		counts[before[s]]++
		if Affine(s, eps).ID != before[s] {
			t.Fatal("same session, same candidates, different pick")
		}
	}
	for id, c := range counts {
		if c < 120 || c > 280 { // 200 expected each
			t.Fatalf("uneven spread: %s has %d of 1000 sessions", id, c)
		}
	}
	// Remove w2: only its sessions move.
	remaining := append(append([]*pool.Endpoint{}, eps[:2]...), eps[3:]...)
	for s, id := range before {
		got := Affine(s, remaining).ID
		if id != "w2" && got != id {
			t.Fatalf("session %s moved from %s to %s though %s stayed", s, id, got, id)
		}
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	r.Register("a", func() Picker { return &RoundRobin{} })
	if _, ok := r.Get("b"); ok {
		t.Fatal("unknown strategy found")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("duplicate registration did not panic")
		}
	}()
	r.Register("a", func() Picker { return &RoundRobin{} })
}
