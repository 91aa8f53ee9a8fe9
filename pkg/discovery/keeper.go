package discovery

import (
	"context"
	"log/slog"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

// Registrar is the part of Consul a Keeper uses.
type Registrar interface {
	Register(ctx context.Context, r Registration) error
	Registered(ctx context.Context, id string) (bool, error)
	Deregister(ctx context.Context, id string) error
}

// Keeper keeps a service's registration true: it registers at start (and
// keeps trying while the agent is down, the service serving meanwhile),
// again whenever the models change, and again when the agent lost it (an
// agent restarted empty). Its methods are safe for concurrent use.
type Keeper struct {
	reg      Registrar
	r        Registration
	models   func() []*enginev1.ModelInfo
	interval time.Duration
	log      *slog.Logger

	kick chan struct{}
	stop context.CancelFunc
	done chan struct{}
}

// Keep starts keeping r registered, with models' answer as its models (nil:
// none), checking every interval.
func Keep(reg Registrar, r Registration, models func() []*enginev1.ModelInfo, interval time.Duration, log *slog.Logger) *Keeper {
	if models == nil {
		models = func() []*enginev1.ModelInfo { return nil }
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Keeper{reg: reg, r: r, models: models, interval: interval, log: log, kick: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	go k.run(ctx)
	return k
}

// Changed asks for a registration with the current models.
func (k *Keeper) Changed() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

func (k *Keeper) run(ctx context.Context) {
	defer close(k.done)
	need, failing := true, false
	t := time.NewTicker(k.interval)
	defer t.Stop()
	var warned time.Time
	report := func(msg string, err error) {
		// One line per minute while the agent stays down.
		if time.Since(warned) >= time.Minute {
			warned = time.Now()
			k.log.Warn(msg, "id", k.r.ID, "err", err, "retry_every", k.interval)
		}
	}
	for {
		if need {
			r := k.r
			r.Models = k.models()
			cctx, cancel := context.WithTimeout(ctx, k.interval+time.Second)
			err := k.reg.Register(cctx, r)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				report("consul registration failed; serving anyway and retrying", err)
				failing = true
			case err == nil:
				if failing {
					k.log.Info("registered in consul again", "id", k.r.ID, "models", len(r.Models))
				}
				need, failing = false, false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-k.kick:
			need = true
		case <-t.C:
			if need {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, k.interval)
			ok, err := k.reg.Registered(cctx, k.r.ID)
			cancel()
			if err != nil {
				report("consul unreachable; will re-register when it answers", err)
				failing = true
			}
			// Registered again after an outage: the agent may have lost
			// the registration, or kept a stale one; register either way.
			need = !ok || failing
		}
	}
}

// Close stops the loop and deregisters.
func (k *Keeper) Close(ctx context.Context) error {
	k.stop()
	<-k.done
	return k.reg.Deregister(ctx, k.r.ID)
}
