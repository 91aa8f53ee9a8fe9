// Command proxybench measures what provider-proxy adds to a hosted-API
// stream: a local upstream speaking OpenAI's streaming format at a fixed
// token rate is called directly (HTTP + SSE) and through provider-proxy
// (gRPC), in interleaved runs of one invocation, at 1 and 256 concurrent
// streams. It reports TTFT and inter-token deltas (proxy minus direct,
// p50/p99) and the proxy's CPU per relayed token from its own accounting.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

const key = "sk-bench-upstream"

// client is the direct runs' HTTP client, pooled like the proxy's.
var client = &http.Client{Transport: func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 4096, 1024
	return t
}()}

// upstream streams tokens chunks at rate per second after ttft.
func upstream(tokens int, rate float64, ttft time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		start := time.Now()
		send := func(s string) {
			fmt.Fprintf(w, "data: %s\n\n", s)
			w.(http.Flusher).Flush()
		}
		for i := range tokens {
			due := start.Add(ttft + time.Duration(float64(i)/rate*float64(time.Second)))
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Until(due)):
			}
			send(fmt.Sprintf(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[{"index":0,"delta":{"content":" tok%d"},"finish_reason":null}]}`, i))
		}
		send(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`)
		send(fmt.Sprintf(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":%d,"total_tokens":%d}}`, tokens, tokens+5))
		send("[DONE]")
	})
}

type sample struct {
	ttft, gaps []time.Duration
	tokens     int
	errs       int
}

func (s *sample) add(ttft time.Duration, gaps []time.Duration, n int, err error) {
	if err != nil {
		s.errs++
		return
	}
	s.ttft = append(s.ttft, ttft)
	s.gaps = append(s.gaps, gaps...)
	s.tokens += n
}

type timer struct {
	start, last time.Time
	ttft        time.Duration
	gaps        []time.Duration
	n           int
}

func (t *timer) token() {
	now := time.Now()
	if t.n == 0 {
		t.ttft = now.Sub(t.start)
	} else {
		t.gaps = append(t.gaps, now.Sub(t.last))
	}
	t.last = now
	t.n++
}

func direct(ctx context.Context, url string) (time.Duration, []time.Duration, int, error) {
	t := &timer{start: time.Now()}
	body := `{"model":"up","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(line), &c) == nil && len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			t.token()
		}
	}
	return t.ttft, t.gaps, t.n, sc.Err()
}

func viaProxy(ctx context.Context, c enginev1.EngineServiceClient) (time.Duration, []time.Duration, int, error) {
	t := &timer{start: time.Now()}
	s, err := c.Generate(ctx, &enginev1.GenerateRequest{Model: "hosted",
		Prompt:   &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: "hi"}},
		Sampling: &genv1.SamplingParams{Temperature: proto.Float32(0)}})
	if err != nil {
		return 0, nil, 0, err
	}
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return t.ttft, t.gaps, t.n, nil
		}
		if err != nil {
			return 0, nil, 0, err
		}
		if msg.GetDelta().GetText() != "" {
			t.token()
		}
	}
}

// load runs n streams whose starts are spread evenly over period (as
// meshbench does), so the proxy sees a steady arrival rate, not one burst.
func load(n int, period time.Duration, f func(context.Context) (time.Duration, []time.Duration, int, error)) *sample {
	s := &sample{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range n {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * period / time.Duration(n))
			ttft, gaps, k, err := f(ctx)
			mu.Lock()
			s.add(ttft, gaps, k, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	return s
}

func run(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("proxybench", flag.ContinueOnError)
	out := fs.String("out", "bench/out", "directory for results")
	tokens := fs.Int("tokens", 64, "tokens per stream")
	rate := fs.Float64("rate", 50, "upstream tokens per second per stream")
	rounds := fs.Int("rounds", 2, "interleaved direct/proxy run pairs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := harness.NewRunner()
	defer r.Close()
	defer r.Recover(&err)
	bins, err := harness.Build(r.TempDir())
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	up := &http.Server{Handler: upstream(*tokens, *rate, 20*time.Millisecond)}
	go up.Serve(lis)
	defer up.Close()
	upURL := "http://" + lis.Addr().String() + "/v1/"
	cfg := filepath.Join(r.TempDir(), "proxy.json")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `{"providers":[{"name":"up","kind":"openai","base_url":%q,"api_key_env":"BENCH_KEY"}],
	  "models":[{"name":"hosted","provider":"up","upstream_model":"up","price_in_per_1m":1,"price_out_per_1m":2,"quality":0.5,"context_length":8192}]}`, upURL), 0o600); err != nil {
		return err
	}
	certs := testkit.DevCerts(r)
	proxyProc := testkit.Start(r, "provider-proxy", bins.ProviderProxy, testkit.StartOptions{WaitListening: true, Env: []string{"BENCH_KEY=" + key}}, certs.Args(mtls.RoleProviderProxy, "-config", cfg)...)
	conn, err := grpc.NewClient(proxyProc.Addr, certs.Dial(r, mtls.RoleRouter, mtls.RoleProviderProxy))
	if err != nil {
		return err
	}
	defer conn.Close()
	proxyClient := enginev1.NewEngineServiceClient(conn)
	viaProxy(context.Background(), proxyClient) // warm up
	var b strings.Builder
	fmt.Fprintf(&b, "proxybench: local OpenAI-format upstream at %.0f tokens/s per stream, TTFT 20 ms, %d tokens per stream;\n", *rate, *tokens)
	fmt.Fprintf(&b, "stream starts spread over one stream's duration; %d interleaved direct/proxy rounds\n", *rounds)
	fmt.Fprintf(&b, "deltas are proxy minus direct at the same percentile (ms); CPU is the proxy process's own\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\ttokens\terrors\tTTFT p50 direct\tΔTTFT p50\tΔTTFT p99\tITL p50 direct\tΔITL p50\tΔITL p99\tproxy CPU/token µs\t")
	period := time.Duration(float64(*tokens) / *rate * float64(time.Second))
	for _, n := range []int{1, 256} {
		d, p := &sample{}, &sample{}
		var cpu time.Duration
		for range *rounds {
			ds := load(n, period, func(ctx context.Context) (time.Duration, []time.Duration, int, error) { return direct(ctx, upURL) })
			d.ttft, d.gaps, d.tokens, d.errs = append(d.ttft, ds.ttft...), append(d.gaps, ds.gaps...), d.tokens+ds.tokens, d.errs+ds.errs
			before, _ := harness.ProcCPU(proxyProc.Cmd.Process.Pid)
			ps := load(n, period, func(ctx context.Context) (time.Duration, []time.Duration, int, error) {
				return viaProxy(ctx, proxyClient)
			})
			after, _ := harness.ProcCPU(proxyProc.Cmd.Process.Pid)
			cpu += after - before
			p.ttft, p.gaps, p.tokens, p.errs = append(p.ttft, ps.ttft...), append(p.gaps, ps.gaps...), p.tokens+ps.tokens, p.errs+ps.errs
		}
		pc := harness.Percentile
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f\t%+.3f\t%+.3f\t%.2f\t%+.3f\t%+.3f\t%.1f\t\n", n, p.tokens, d.errs+p.errs,
			pc(d.ttft, 0.5), pc(p.ttft, 0.5)-pc(d.ttft, 0.5), pc(p.ttft, 0.99)-pc(d.ttft, 0.99),
			pc(d.gaps, 0.5), pc(p.gaps, 0.5)-pc(d.gaps, 0.5), pc(p.gaps, 0.99)-pc(d.gaps, 0.99),
			float64(cpu)/float64(time.Microsecond)/float64(max(p.tokens, 1)))
	}
	tw.Flush()
	fmt.Fprintln(&b, "\ntarget: under 1 ms p99 added")
	fmt.Fprint(stdout, b.String())
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "proxybench.txt"), []byte(b.String()), 0o644)
}
