package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/services/router/internal/rawcodec"
)

// forward sends an event to the client: decoded if given, else as the
// worker's bytes when the sink's codec takes frames, else decoded here.
func (s *Server) forward(out Sink, f *rawcodec.Frame, decoded *routerv1.GenerateResponse) error {
	if decoded != nil {
		return out.Send(decoded)
	}
	if raw, ok := out.(interface{ SendMsg(any) error }); ok && s.cfg.RawRelay {
		return raw.SendMsg(f)
	}
	var m routerv1.GenerateResponse
	if err := proto.Unmarshal(f.B, &m); err != nil {
		return fmt.Errorf("decode worker event: %w", err)
	}
	return out.Send(&m)
}

// relayTo is the generation op: it runs the request on the attempt's route
// and copies the worker's events to out. The worker's StartEvent is held
// until its first token or end event, so an attempt that fails before its
// first token is invisible to the client.
func (s *Server) relayTo(out Sink, req *routerv1.GenerateRequest) op {
	return func(ctx context.Context, r *request, a *attempt) result { return s.relay(ctx, r, a, out, req) }
}

// watchdog cancels an attempt that gives no first token in time, stalls, or
// trickles far below its route's usual rate. The relay loop only stores
// atomics; the checks run on a timer.
type watchdog struct {
	lim     limits
	sent    time.Time
	now     func() time.Time
	cancel  context.CancelFunc
	tick    time.Duration
	timer   *time.Timer
	last    atomic.Int64 // unix nanoseconds of the last token; 0 before the first
	tokens  atomic.Int64
	outcome atomic.Int32 // generationv1.AttemptOutcome once fired
	stopped atomic.Bool
	sending atomic.Bool // an event is being sent to the client

	// owned by the timer goroutine
	windowStart  time.Time
	windowTokens int64
}

func startWatchdog(lim limits, now func() time.Time, cancel context.CancelFunc) *watchdog {
	w := &watchdog{lim: lim, sent: now(), now: now, cancel: cancel}
	w.windowStart = w.sent
	w.tick = min(lim.firstToken, lim.stall) / 4
	w.tick = max(min(w.tick, time.Second), 5*time.Millisecond)
	// Armed only once w.timer is set, which check reads.
	w.timer = time.AfterFunc(time.Hour, w.check)
	w.timer.Reset(w.tick)
	return w
}

func (w *watchdog) stop() {
	w.stopped.Store(true)
	w.timer.Stop()
}

func (w *watchdog) token(n int, at time.Time) {
	w.last.Store(at.UnixNano())
	w.tokens.Add(int64(n))
}

func (w *watchdog) fire(o generationv1.AttemptOutcome) {
	if w.outcome.CompareAndSwap(0, int32(o)) {
		w.cancel()
	}
}

// fired returns the outcome the watchdog ended the attempt with, or 0.
func (w *watchdog) fired() generationv1.AttemptOutcome {
	return generationv1.AttemptOutcome(w.outcome.Load())
}

func (w *watchdog) check() {
	if w.stopped.Load() {
		return
	}
	now := w.now()
	last := w.last.Load()
	if w.sending.Load() {
		// Blocked on the client: the worker is not at fault. Count the
		// wait as progress.
		w.last.Store(now.UnixNano())
		w.windowStart, w.windowTokens = now, w.tokens.Load()
		w.timer.Reset(w.tick)
		return
	}
	switch {
	case last == 0:
		if now.Sub(w.sent) >= w.lim.firstToken {
			w.fire(generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FIRST_TOKEN_TIMEOUT)
			return
		}
	case now.Sub(time.Unix(0, last)) >= w.lim.stall:
		w.fire(generationv1.AttemptOutcome_ATTEMPT_OUTCOME_STALLED)
		return
	default:
		// Trickle: over a window of a second or more, tokens arrive far
		// slower than the route usually gives them.
		if span := now.Sub(w.windowStart); span >= time.Second {
			n := w.tokens.Load() - w.windowTokens
			if w.lim.usualITL > 0 && n > 0 && w.windowTokens > 0 &&
				span/time.Duration(n) > time.Duration(w.lim.trickle*float64(w.lim.usualITL)) {
				w.fire(generationv1.AttemptOutcome_ATTEMPT_OUTCOME_STALLED)
				return
			}
			w.windowStart, w.windowTokens = now, w.tokens.Load()
		}
	}
	w.timer.Reset(w.tick)
}

func (s *Server) relay(ctx context.Context, r *request, a *attempt, out Sink, req *routerv1.GenerateRequest) result {
	ep := a.endpoint
	defer ep.Begin(a.route)()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wd := startWatchdog(s.limitsFor(r, a.route, a.info.Model), s.now, cancel)
	defer wd.stop()

	ereq := &enginev1.GenerateRequest{Model: a.model, Prompt: req.GetPrompt(), Sampling: req.GetSampling(), RequestId: r.id, User: req.GetUser(),
		ContinuationText: req.GetPrefill()}
	mt := r.attemptMaxTokens(a.info.Model)
	if mt != req.GetSampling().GetMaxTokens() {
		sp := proto.CloneOf(req.GetSampling())
		if sp == nil {
			sp = &generationv1.SamplingParams{}
		}
		sp.MaxTokens = mt
		ereq.Sampling = sp
	}
	if a.race == nil && r.startSent {
		// (Raced attempts start before any token reached the client, and
		// r is their winner's to change: they must not read it here.) A
		// failover: the same model continues from the token ids the
		// client has; another model (or one without ids) from the text.
		if r.byIDs && len(r.ids) > 0 && a.model == r.models[len(r.models)-1] {
			ereq.Continuation, a.continuationIDs = r.ids, len(r.ids)
		} else {
			ereq.ContinuationText, a.continuationText = req.GetPrefill()+string(r.text), true
			r.byIDs = false // what follows is another model's, or text only
			if mt > 0 {
				sp := proto.CloneOf(ereq.GetSampling())
				sp.MaxTokens = max(mt-int32(r.delivered), 1)
				ereq.Sampling = sp
			}
		}
	}
	in, err := ep.Client.Generate(cctx, ereq)
	var (
		tokens            int
		ended             bool
		forwarded         bool
		firstTok, lastTok time.Time
		start             *rawcodec.Frame
		streamOver        bool // RecvMsg returned an error: Trailer is safe
	)
	for err == nil {
		var f rawcodec.Frame
		if err = in.RecvMsg(&f); err != nil {
			streamOver = true // the stream is over: its trailer may be read
			break
		}
		num, body := f.Event()
		if !forwarded && (num == 2 || num == 3) {
			if wd.fired() != 0 {
				break // lost the race with the watchdog: handled below
			}
			if !a.claim() {
				// The other attempt of a hedged request delivers: nothing
				// of this one may touch the request.
				return result{outcome: generationv1.AttemptOutcome_ATTEMPT_OUTCOME_HEDGE_LOST,
					err: status.Errorf(codes.Canceled, "model %s on %s: the other attempt of the hedged request answered first", a.model, ep.Address)}
			}
		}
		var (
			end      *routerv1.GenerateResponse
			ids      []uint32
			text     []byte
			n        int
			textOnly bool
		)
		switch num {
		case 1: // start: held until the first token
			start = &f
			continue
		case 2: // delta: forwarded as bytes
			var ok bool
			// Appended past the committed lengths, kept once forwarded.
			if ids, text, ok = rawcodec.AppendDelta(r.ids, r.text, body); !ok {
				err = status.Error(codes.Internal, "worker sent a malformed token delta")
				continue
			}
			// A text-only delta (a hosted model) counts as one token;
			// so does one with only tool-call pieces.
			n = len(ids) - len(r.ids)
			calls := rawcodec.DeltaHasToolCalls(body)
			if n == 0 && (len(text) > len(r.text) || calls) {
				n, textOnly = 1, true
			}
			if calls {
				r.calls = true // the text no longer holds the whole answer
			}
		case 3: // end: decoded for usage, cost and the attempts
			if !forwarded && wd.fired() != 0 {
				break // too late: handled below, as the watchdog decided
			}
			var e enginev1.GenerateResponse
			if err = proto.Unmarshal(f.B, &e); err != nil {
				continue
			}
			r.finish(a, e.GetEnd(), tokens)
			end = &routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_End{End: e.GetEnd()}}
			ended = true
		default:
			continue
		}
		if !forwarded {
			if wd.fired() != 0 {
				break // lost the race with the watchdog: handled below
			}
			forwarded = true
			a.firstToken = s.now()
			ttft := a.firstToken.Sub(a.began)
			ep.ObserveSuccess(ttft)
			a.route.ObserveTTFT(ttft)
			if !r.startSent {
				s.cfg.Metrics.FirstToken(req.GetModel(), s.now().Sub(r.received))
				if start != nil {
					if err := s.forward(out, start, nil); err != nil {
						return result{err: err, forwarded: true, clientGone: true}
					}
				}
			}
			r.startSent = true
			if len(r.models) == 0 || r.models[len(r.models)-1] != a.model {
				r.models = append(r.models, a.model)
			}
		}
		if n > 0 {
			lastTok = s.now()
			wd.token(n, lastTok)
		}
		wd.sending.Store(true) // a client slow to take it is not a stall
		err := s.forward(out, &f, end)
		wd.sending.Store(false)
		if err != nil {
			return result{err: err, forwarded: true, clientGone: true} // nothing to fail over to
		}
		if n > 0 {
			r.ids, r.text = ids, text
			if textOnly {
				r.byIDs = false
			}
			if tokens == 0 {
				firstTok = lastTok
			}
			tokens += n
			r.delivered += n
			a.tokens = tokens
		}
	}
	if streamOver && cctx.Err() == nil {
		// The worker's load as this stream ended (its trailer), also when
		// it ended with an error such as a full queue.
		if l, ok := enginehost.ParseLoad(in.Trailer()); ok {
			ep.StreamEnded(a.route, l)
		}
	}
	if ended && forwarded && !errors.Is(err, io.EOF) && ctx.Err() == nil {
		// The end event reached the client: whatever broke after it, the
		// answer is complete.
		err = io.EOF
	}
	if ended && errors.Is(err, io.EOF) {
		if tokens > 1 {
			itl := lastTok.Sub(firstTok) / time.Duration(tokens-1)
			ep.ObserveITL(itl)
			a.route.ObserveITL(itl)
		}
		return result{} // run closes the route's circuit
	}
	if errors.Is(err, io.EOF) {
		err = status.Error(codes.Unavailable, "worker closed the stream without an end event")
	}
	if o := wd.fired(); o != 0 {
		lim := wd.lim
		if o == generationv1.AttemptOutcome_ATTEMPT_OUTCOME_FIRST_TOKEN_TIMEOUT {
			return result{outcome: o, forwarded: forwarded, err: status.Errorf(codes.DeadlineExceeded, "model %s on %s: no first token within %v", a.model, ep.Address, lim.firstToken.Round(time.Millisecond))}
		}
		return result{outcome: o, forwarded: forwarded, err: status.Errorf(codes.DeadlineExceeded, "model %s on %s: stream stalled (no token within %v, or far below its usual rate)", a.model, ep.Address, lim.stall.Round(time.Millisecond))}
	}
	if ctx.Err() != nil {
		return result{err: ctx.Err(), forwarded: forwarded}
	}
	if status.Code(err) == codes.Canceled {
		// Our context is alive, so the connection was torn down under the
		// stream: the worker is gone as far as this request is concerned.
		err = status.Error(codes.Unavailable, status.Convert(err).Message())
	}
	return result{err: err, forwarded: forwarded}
}
