// Package plugins registers every built-in scheduling plugin and holds the
// default strategies. A new plugin is a new package plus one line in Register.
package plugins

import (
	_ "embed"
	"encoding/json"

	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/adaptive"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/capacity"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/constraints"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/cost"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/fits"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/healthy"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/latency"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/load"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/loadguard"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/maxscore"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/prefix"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/quality"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/roundrobin"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/session"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/weight"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins/weightedrandom"
)

// Register adds the built-in plugins to r.
func Register(r *scheduling.Registry) {
	r.AddFilter("healthy", healthy.New)
	r.AddFilter("constraints", constraints.New)
	r.AddFilter("loadguard", loadguard.New)
	r.AddFilter("fits", fits.New)
	r.AddFilter("session", session.New)
	r.AddFilter("capacity", capacity.New)
	r.AddScorer("quality", quality.New)
	r.AddScorer("cost", cost.New)
	r.AddScorer("load", load.New)
	r.AddScorer("latency", latency.New)
	r.AddScorer("adaptive", adaptive.New)
	r.AddScorer("prefix", prefix.New)
	r.AddScorer("weight", weight.New)
	r.AddPicker("max-score", maxscore.New)
	r.AddPicker("round-robin", roundrobin.New)
	r.AddPicker("weighted-random", weightedrandom.New)
}

//go:embed default.json
var defaultConfig []byte

// DefaultConfig is the built-in strategies: balanced (the default),
// quality-first, cost-optimized, speed-priority, round-robin, weighted,
// least-loaded, adaptive and cache-affinity.
func DefaultConfig() scheduling.Config {
	var c scheduling.Config
	if err := json.Unmarshal(defaultConfig, &c); err != nil {
		panic("plugins: default.json: " + err.Error()) // a build-time defect, caught by tests
	}
	return c
}

// Builtin returns a registry with every built-in plugin.
func Builtin() *scheduling.Registry {
	r := scheduling.NewRegistry()
	Register(r)
	return r
}
