// Package app is the engine-sim process: flags, telemetry and the worker
// lifecycle around the simulator backend.
package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/healthcheck"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
)

// Options is the process's configuration.
type Options struct {
	Worker enginehost.WorkerConfig
	// Models is the -models flag, parsed by Validate into Sim.Models.
	Models string
	Sim    sim.Config
}

// AddFlags registers the flags with defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	o.Worker.AddFlags(fs)
	fs.StringVar(&o.Models, "models", "sim-small", "comma-separated models: NAME[:key=value;...] with keys ctx, quality, cost_in, cost_out, output_tokens")
	fs.DurationVar(&o.Sim.TTFT, "ttft", 50*time.Millisecond, "simulated time to first token (the median with -ttft-sigma)")
	fs.Float64Var(&o.Sim.TTFTSigma, "ttft-sigma", 0, "log-normal spread of each request's time to first token: ttft × e^(σZ); 0 is a fixed delay")
	fs.DurationVar(&o.Sim.TTFTPerActive, "ttft-per-active", 0, "extra time to first token per sequence already running (delay correlated with load)")
	fs.Float64Var(&o.Sim.TokensPerSecond, "tps", 50, "simulated tokens per second per sequence")
	fs.IntVar(&o.Sim.MaxConcurrency, "max-concurrency", 64, "sequences decoded at once")
	fs.IntVar(&o.Sim.QueueSize, "queue", 256, "requests that may wait for a slot before ResourceExhausted")
}

// Validate checks the options and parses the models.
func (o *Options) Validate() error {
	var err error
	if o.Sim.Models, err = ParseModels(o.Models); err != nil {
		return err
	}
	if o.Sim.TokensPerSecond <= 0 || o.Sim.TTFT < 0 {
		return fmt.Errorf("-tps must be positive and -ttft not negative")
	}
	if o.Sim.TTFTSigma < 0 || o.Sim.TTFTSigma > 4 || o.Sim.TTFTPerActive < 0 {
		return fmt.Errorf("-ttft-sigma must be within 0..4 and -ttft-per-active not negative")
	}
	return o.Worker.Validate()
}

// Run parses args and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Run(ctx, args[1:], stdout)
	}
	fs := flag.NewFlagSet("engine-sim", flag.ContinueOnError)
	var opt Options
	opt.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opt.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "engine-sim")
	tel, err := telemetry.Setup(ctx, "engine-sim", getenv)
	if err != nil {
		return err
	}
	return enginehost.RunWorker(ctx, opt.Worker, "engine-sim", sim.New(opt.Sim), tel, log, stdout)
}

// ParseModels parses the -models flag.
func ParseModels(s string) ([]sim.ModelConfig, error) {
	var out []sim.ModelConfig
	for _, spec := range strings.Split(s, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		name, opts, _ := strings.Cut(spec, ":")
		m := sim.ModelConfig{Name: name, Quality: 0.5}
		for _, kv := range strings.Split(opts, ";") {
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("model %q: option %q is not key=value", name, kv)
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 {
				return nil, fmt.Errorf("model %q: %s=%q is not a non-negative number", name, k, v)
			}
			switch k {
			case "ctx":
				m.ContextLength = int(f)
			case "quality":
				m.Quality = f
			case "cost_in":
				m.CostPer1KInput = f
			case "cost_out":
				m.CostPer1KOutput = f
			case "output_tokens":
				m.OutputTokens = int(f)
			default:
				return nil, fmt.Errorf("model %q: unknown option %q", name, k)
			}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-models names no model")
	}
	return out, nil
}
