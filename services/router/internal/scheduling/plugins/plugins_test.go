package plugins_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/prefix"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/session"
)

type spec struct {
	id               string
	quality, costOut float64
	busy             int           // worker-reported active sequences
	slots            int           // advertised max_concurrency; 0: none
	ttft             time.Duration // observed; 0: none
	failures         int
	unhealthy        bool
}

func build(specs ...spec) []scheduling.Candidate {
	var out []scheduling.Candidate
	for _, s := range specs {
		m := &enginev1.ModelInfo{Name: "m", Quality: s.quality, CostPer_1KOutput: s.costOut, MaxConcurrency: int32(s.slots)}
		e := pool.NewEndpoint(s.id, s.id+":1", !s.unhealthy, m)
		e.SetLoad(&enginev1.GetStatusResponse{ActiveSequences: int32(s.busy), Models: []*enginev1.ModelLoad{{Model: "m", ActiveSequences: int32(s.busy)}}})
		for range 6 {
			if s.ttft > 0 {
				e.ObserveSuccess(s.ttft)
			}
		}
		for range s.failures {
			e.ObserveFailure(time.Time{}) // eject in the past: only the error rate counts
		}
		out = append(out, scheduling.Candidate{Endpoint: e, Model: m})
	}
	return out
}

func scheduler(t testing.TB) *scheduling.Scheduler {
	t.Helper()
	s, err := plugins.Builtin().Build(plugins.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pick(t *testing.T, s *scheduling.Scheduler, strategy string, r *scheduling.Request, c []scheduling.Candidate) string {
	t.Helper()
	p, ok := s.Profile(strategy)
	if !ok {
		t.Fatalf("strategy %q missing", strategy)
	}
	d, err := p.Schedule(r, slices.Clone(c))
	if err != nil {
		t.Fatal(err)
	}
	return d.Chosen.Endpoint.ID
}

func TestStrategiesOnDeterministicInputs(t *testing.T) {
	s := scheduler(t)
	now := time.Now()
	tests := []struct {
		strategy string
		cands    []scheduling.Candidate
		want     string
	}{
		{"quality-first", build(spec{id: "a", quality: 0.9, busy: 1}, spec{id: "b", quality: 0.5}), "a"},
		{"cost-optimized", build(spec{id: "a", costOut: 0.02}, spec{id: "b", costOut: 0.001, busy: 1}), "b"},
		{"speed-priority", build(spec{id: "a", ttft: 100 * time.Millisecond}, spec{id: "b", ttft: 10 * time.Millisecond}), "b"},
		{"least-loaded", build(spec{id: "a", busy: 5}, spec{id: "b", busy: 1}, spec{id: "c", busy: 3}), "b"},
		{"balanced", build(
			spec{id: "a", quality: 0.9, costOut: 0.02, ttft: 10 * time.Millisecond},
			spec{id: "b", quality: 0.2, costOut: 0.0, busy: 8, ttft: 100 * time.Millisecond}), "a"},
		{"balanced", build(spec{id: "a", quality: 0.5, busy: 9}, spec{id: "b", quality: 0.5}), "b"},
		{"adaptive", build(spec{id: "a", ttft: 5 * time.Millisecond, failures: 10}, spec{id: "b", ttft: 20 * time.Millisecond}), "b"},
		// Fewer than 5 observations: explored optimistically.
		{"adaptive", build(spec{id: "a", ttft: 50 * time.Millisecond}, spec{id: "fresh"}), "fresh"},
		{"least-loaded", build(spec{id: "a", busy: 0, unhealthy: true}, spec{id: "b", busy: 7}), "b"},
		// Load is relative to capacity: 4 of 8 slots beats 2 of 2.
		{"least-loaded", build(spec{id: "a", busy: 2, slots: 2}, spec{id: "b", busy: 4, slots: 8}), "b"},
		// The fastest-looking worker is full: balanced sends the request
		// where a slot is free rather than queue it (no herding).
		{"balanced", build(
			spec{id: "fast", busy: 8, slots: 8, ttft: 10 * time.Millisecond},
			spec{id: "slow", busy: 7, slots: 8, ttft: 200 * time.Millisecond}), "slow"},
		{"speed-priority", build(
			spec{id: "fast", busy: 8, slots: 8, ttft: 10 * time.Millisecond},
			spec{id: "slow", busy: 7, slots: 8, ttft: 200 * time.Millisecond}), "slow"},
		// Everyone full: the scorers choose among the queues.
		{"balanced", build(
			spec{id: "fast", busy: 9, slots: 8, ttft: 10 * time.Millisecond},
			spec{id: "slow", busy: 12, slots: 8, ttft: 200 * time.Millisecond}), "fast"},
		// Cost-optimized keeps the cheap model even when it is full.
		{"cost-optimized", build(spec{id: "cheap", costOut: 0.001, busy: 8, slots: 8}, spec{id: "dear", costOut: 0.02, slots: 8}), "cheap"},
	}
	for _, tt := range tests {
		t.Run(tt.strategy+"/"+tt.want, func(t *testing.T) {
			if got := pick(t, s, tt.strategy, &scheduling.Request{Model: "m", Now: now}, tt.cands); got != tt.want {
				t.Fatalf("%s picked %s, want %s", tt.strategy, got, tt.want)
			}
		})
	}
}

func TestRoundRobinAndTies(t *testing.T) {
	s := scheduler(t)
	c := build(spec{id: "a"}, spec{id: "b"}, spec{id: "c"})
	var got []string
	for range 6 {
		got = append(got, pick(t, s, "round-robin", &scheduling.Request{}, c))
	}
	if fmt.Sprint(got) != "[a b c a b c]" {
		t.Fatalf("round robin %v", got)
	}
	// Equal scores under max-score share traffic instead of herding.
	seen := map[string]int{}
	for range 30 {
		seen[pick(t, s, "least-loaded", &scheduling.Request{}, c)]++
	}
	if seen["a"] != 10 || seen["b"] != 10 || seen["c"] != 10 {
		t.Fatalf("ties %v", seen)
	}
}

func TestWeighted(t *testing.T) {
	cfg := plugins.DefaultConfig()
	w := cfg.Strategies["weighted"]
	w.Scorers[0].Params = []byte(`{"weights": {"a:1": 3, "b:1": 1}}`)
	cfg.Strategies["weighted"] = w
	s, err := plugins.Builtin().Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := build(spec{id: "a"}, spec{id: "b"})
	n := map[string]int{}
	for range 4000 {
		n[pick(t, s, "weighted", &scheduling.Request{}, c)]++
	}
	if share := float64(n["a"]) / 4000; share < 0.70 || share > 0.80 {
		t.Fatalf("weight 3:1 gave a share of %.3f to a", share)
	}
}

func TestCacheAffinityWithLoadGuard(t *testing.T) {
	s := scheduler(t)
	p, _ := s.Profile("cache-affinity")
	long := make([]byte, 300)
	for i := range long {
		long[i] = byte('a' + i%26)
	}
	prompt := &generationv1.Prompt{Kind: &generationv1.Prompt_Text{Text: string(long)}}
	r := &scheduling.Request{Prompt: prompt}
	if n := len(prefix.Blocks(prompt)); n != 4 {
		t.Fatalf("%d blocks for 300 bytes", n)
	}
	c := build(spec{id: "a"}, spec{id: "b"})
	p.Observe(r, c[1], scheduling.Outcome{FirstToken: true})
	// b holds the prefix: chosen although a is idler.
	c = build(spec{id: "a"}, spec{id: "b", busy: 3})
	if got := pick(t, s, "cache-affinity", r, c); got != "b" {
		t.Fatalf("affinity picked %s", got)
	}
	// A prompt extending the same prefix also goes to b.
	ext := &generationv1.Prompt{Kind: &generationv1.Prompt_Text{Text: string(long) + " and more words after it, long enough"}}
	if got := pick(t, s, "cache-affinity", &scheduling.Request{Prompt: ext}, c); got != "b" {
		t.Fatalf("extended prefix picked %s", got)
	}
	// Beyond the guard (4 more requests than the least loaded): b is skipped.
	c = build(spec{id: "a"}, spec{id: "b", busy: 5})
	if got := pick(t, s, "cache-affinity", r, c); got != "a" {
		t.Fatalf("overloaded affinity target still picked: %s", got)
	}
	// A failed request does not teach affinity.
	other := &scheduling.Request{Prompt: &generationv1.Prompt{Kind: &generationv1.Prompt_Text{Text: strings.Repeat("z", 64)}}}
	p.Observe(other, c[1], scheduling.Outcome{FirstToken: false})
	if got := pick(t, s, "cache-affinity", other, build(spec{id: "a"}, spec{id: "b", busy: 1})); got != "a" {
		t.Fatalf("failure taught affinity: %s", got)
	}
}

func TestAffineIsStickyAndMovesOnlyLeavers(t *testing.T) {
	var specs []spec
	for i := range 5 {
		specs = append(specs, spec{id: fmt.Sprint("w", i)})
	}
	c := build(specs...)
	before := map[string]string{}
	counts := map[string]int{}
	for i := range 1000 {
		s := fmt.Sprint("s", i)
		before[s] = c[session.Affine(s, c)].Endpoint.ID
		counts[before[s]]++
	}
	for id, n := range counts {
		if n < 120 || n > 280 {
			t.Fatalf("uneven spread: %s has %d of 1000 sessions", id, n)
		}
	}
	remaining := slices.Delete(slices.Clone(c), 2, 3)
	for s, id := range before {
		if got := remaining[session.Affine(s, remaining)].Endpoint.ID; id != "w2" && got != id {
			t.Fatalf("session %s moved from %s to %s", s, id, got)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	r := plugins.Builtin()
	bad := []struct {
		name string
		cfg  scheduling.Config
	}{
		{"unknown default", scheduling.Config{Default: "x", Strategies: map[string]scheduling.ProfileConfig{"y": {Picker: scheduling.PluginConfig{Type: "round-robin"}}}}},
		{"unknown picker", scheduling.Config{Default: "y", Strategies: map[string]scheduling.ProfileConfig{"y": {Picker: scheduling.PluginConfig{Type: "dice"}}}}},
		{"unknown scorer", scheduling.Config{Default: "y", Strategies: map[string]scheduling.ProfileConfig{"y": {
			Scorers: []scheduling.ScorerConfig{{PluginConfig: scheduling.PluginConfig{Type: "vibes"}, Weight: 1}}, Picker: scheduling.PluginConfig{Type: "max-score"}}}}},
		{"zero weight", scheduling.Config{Default: "y", Strategies: map[string]scheduling.ProfileConfig{"y": {
			Scorers: []scheduling.ScorerConfig{{PluginConfig: scheduling.PluginConfig{Type: "load"}}}, Picker: scheduling.PluginConfig{Type: "max-score"}}}}},
		{"bad params", scheduling.Config{Default: "y", Strategies: map[string]scheduling.ProfileConfig{"y": {
			Filters: []scheduling.PluginConfig{{Type: "loadguard", Params: []byte(`{"max_extra": -1}`)}}, Picker: scheduling.PluginConfig{Type: "max-score"}}}}},
	}
	for _, b := range bad {
		if _, err := r.Build(b.cfg); err == nil {
			t.Errorf("%s: accepted", b.name)
		}
	}
}

// BenchmarkSchedule measures one decision per strategy over 10, 100 and
// 1,000 endpoints with random load, quality, cost and latency; it reports
// the p99 of single decisions besides the mean.
func BenchmarkSchedule(b *testing.B) {
	s := scheduler(b)
	names := []string{"balanced", "quality-first", "cost-optimized", "speed-priority", "round-robin", "weighted", "least-loaded", "adaptive", "cache-affinity"}
	for _, n := range []int{10, 100, 1000} {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		var specs []spec
		for i := range n {
			specs = append(specs, spec{id: fmt.Sprint("w", i), quality: rng.Float64(), costOut: rng.Float64() / 100,
				busy: rng.IntN(8), ttft: time.Duration(1+rng.IntN(100)) * time.Millisecond})
		}
		cands := build(specs...)
		prompt := &generationv1.Prompt{Kind: &generationv1.Prompt_Text{Text: string(make([]byte, 1024))}}
		req := &scheduling.Request{Model: "m", Prompt: prompt, Now: time.Now()}
		for _, name := range names {
			p, _ := s.Profile(name)
			p.Observe(req, cands[n/2], scheduling.Outcome{FirstToken: true})
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				buf := make([]scheduling.Candidate, n)
				lat := make([]time.Duration, 0, 1<<16)
				for b.Loop() {
					copy(buf, cands)
					t0 := time.Now()
					if _, err := p.Schedule(req, buf); err != nil {
						b.Fatal(err)
					}
					if len(lat) < cap(lat) {
						lat = append(lat, time.Since(t0))
					}
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			})
		}
	}
}
