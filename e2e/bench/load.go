// Package bench holds the measurements behind make bench-report and make
// scaling: a mesh of real processes (Consul, Jaeger, routers, sim,
// engine-gguf and engine-onnx workers) on loopback, closed-loop and
// think-time load drivers, and one function per table of the benchmark
// document (../shared/seed/LLM-Runner-Router-benchmarks.md), each returning
// a Section that the report renders beside the document's figures.
//
// Everything here runs on one machine; functions are not safe for
// concurrent use unless they say so (the drivers start their own
// goroutines and wait for them).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
)

// Result is one streamed request as the client saw it.
type Result struct {
	// Setup is the time to the start event (the router chose and the worker
	// accepted), TTFT to the first token, E2E to the end of the stream.
	Setup, TTFT, E2E    time.Duration
	Tokens, Deltas      int
	ID, Model, Endpoint string
	Usage               *genv1.Usage
	// Attempts are the router's attempts, from its end event.
	Attempts []*genv1.Attempt
	// End is the end event; Text the streamed text.
	End  *genv1.EndEvent
	Text string
	Err  error
}

// Stream sends req through a router and reads the stream to its end; a
// stream with fewer tokens than max_tokens is an error.
func Stream(ctx context.Context, c routerv1.RouterServiceClient, req *routerv1.GenerateRequest) Result {
	t0 := time.Now()
	r := Result{ID: req.GetRequestId()}
	s, err := c.Generate(ctx, req)
	if err != nil {
		r.Err = err
		return r
	}
	r = read(t0, r, s.Recv)
	if want := int(req.GetSampling().GetMaxTokens()); want > 0 && r.Tokens != want && r.Err == nil {
		r.Err = fmt.Errorf("%d of %d tokens", r.Tokens, want)
	}
	return r
}

// event is a Generate stream message, the router's or a worker's.
type event interface {
	GetStart() *genv1.StartEvent
	GetDelta() *genv1.TokenDelta
	GetEnd() *genv1.EndEvent
}

// read receives a stream sent at t0 to its end into r.
func read[M event](t0 time.Time, r Result, recv func() (M, error)) Result {
	for {
		m, err := recv()
		if err != nil {
			r.E2E = time.Since(t0)
			if !errors.Is(err, io.EOF) {
				r.Err = err
			}
			return r
		}
		if st := m.GetStart(); st != nil {
			r.Setup = time.Since(t0)
			r.Model, r.Endpoint = st.GetModel(), st.GetEndpoint()
		}
		r.Text += m.GetDelta().GetText()
		if n := len(m.GetDelta().GetTokenIds()); n > 0 {
			if r.Tokens == 0 {
				r.TTFT = time.Since(t0)
			}
			r.Tokens += n
			r.Deltas++
		}
		if end := m.GetEnd(); end != nil {
			r.Usage, r.Attempts, r.End = end.GetUsage(), end.GetAttempts(), end
		}
	}
}

// TextRequest is a greedy request for model with a text prompt.
func TextRequest(model, prompt string, maxTokens int) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{Model: model, Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}},
		Sampling: &genv1.SamplingParams{Temperature: new(float32), MaxTokens: int32(maxTokens)}}
}

// Load is a load pattern: Clients loops, each sending Request(i, j) (client
// i's j-th request) to Routers[i % len], waiting Think between requests
// (nil: none, a closed loop), starts staggered over Stagger.
type Load struct {
	Routers  []routerv1.RouterServiceClient
	Clients  int
	Request  func(i, j int) *routerv1.GenerateRequest
	Think    func(r *rand.Rand) time.Duration
	Stagger  time.Duration
	Warmup   time.Duration
	Duration time.Duration
	Seed     uint64
	// During runs once the measured window opens, Before and After around
	// it (CPU and memory readings).
	Before, After func()
}

// Stats is what a Load measured in its window: requests that finished in
// it (by their end), their results and errors.
type Stats struct {
	Wall     time.Duration
	Results  []Result
	Errors   int
	FirstErr error
	Tokens   int
	// ErrorCodes counts the errors by gRPC code; Unfinished is the requests
	// still in flight when the window closed (counted neither as results
	// nor as errors: under overload they are the longest waits).
	ErrorCodes map[codes.Code]int
	Unfinished int
}

// TTFTs and E2Es of the successful results.
func (s Stats) TTFTs() []time.Duration {
	return durations(s.Results, func(r Result) time.Duration { return r.TTFT })
}
func (s Stats) E2Es() []time.Duration {
	return durations(s.Results, func(r Result) time.Duration { return r.E2E })
}

func durations(rs []Result, f func(Result) time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		out = append(out, f(r))
	}
	return out
}

// PerSecond is n per second of the window.
func (s Stats) PerSecond(n int) float64 { return float64(n) / s.Wall.Seconds() }

// Run drives l and returns what finished inside the measured window.
func (l Load) Run() Stats {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		measuring atomic.Bool
		inFlight  atomic.Int64
		mu        sync.Mutex
		st        = Stats{ErrorCodes: map[codes.Code]int{}}
		wg        sync.WaitGroup
	)
	for i := range l.Clients {
		c := l.Routers[i%len(l.Routers)]
		rng := rand.New(rand.NewPCG(l.Seed, uint64(i)))
		wg.Go(func() {
			// Staggered starts: clients in step would finish together and
			// the window would count completions in lumps.
			if l.Stagger > 0 && !sleep(ctx, time.Duration(i)*l.Stagger/time.Duration(l.Clients)) {
				return
			}
			for j := 0; ctx.Err() == nil; j++ {
				inFlight.Add(1)
				r := Stream(ctx, c, l.Request(i, j))
				inFlight.Add(-1)
				if ctx.Err() != nil {
					return
				}
				if measuring.Load() {
					mu.Lock()
					if r.Err != nil {
						st.Errors++
						st.ErrorCodes[status.Code(r.Err)]++
						if st.FirstErr == nil {
							st.FirstErr = r.Err
						}
					} else {
						st.Results = append(st.Results, r)
						st.Tokens += r.Tokens
					}
					mu.Unlock()
				}
				if l.Think != nil && !sleep(ctx, l.Think(rng)) {
					return
				}
			}
		})
	}
	sleep(ctx, l.Warmup)
	if l.Before != nil {
		l.Before()
	}
	began := time.Now()
	measuring.Store(true)
	sleep(ctx, l.Duration)
	measuring.Store(false)
	mu.Lock()
	st.Wall = time.Since(began)
	st.Unfinished = int(inFlight.Load())
	mu.Unlock()
	if l.After != nil {
		l.After()
	}
	cancel()
	wg.Wait()
	return st
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
