package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// Timings are the limits the matrix runs under.
type Timings struct {
	Name          string
	WordDelay     time.Duration // a clean stream's pace
	FirstToken    time.Duration // router: hosted first-token deadline
	Stall         time.Duration // router: stall limit
	TTFTLimit     time.Duration // the per-model TTFT policy of the "late first token" row
	LateFirst     time.Duration // that row's upstream delay (over TTFTLimit)
	CircuitOpen   time.Duration // router: longest open interval
	TrickleEvery  time.Duration // the trickling upstream's pace
	MaxRetryAfter time.Duration
	LocalStall    time.Duration // the tiny model's stall policy (0: the router's local default)
	LocalFirst    time.Duration // the router's -local-first-token-timeout floor (0: its default)
}

// Fast is for the test suite; Realistic is what make faults uses.
var (
	Fast      = Timings{Name: "fast", WordDelay: 5 * time.Millisecond, FirstToken: time.Second, Stall: time.Second, TTFTLimit: 300 * time.Millisecond, LateFirst: 3 * time.Second, CircuitOpen: time.Second, TrickleEvery: 800 * time.Millisecond, MaxRetryAfter: 3 * time.Second, LocalStall: time.Second, LocalFirst: time.Second}
	Realistic = Timings{Name: "realistic", WordDelay: 20 * time.Millisecond, FirstToken: 30 * time.Second, Stall: 30 * time.Second, TTFTLimit: 2 * time.Second, LateFirst: 5 * time.Second, CircuitOpen: 10 * time.Second, TrickleEvery: 3 * time.Second, MaxRetryAfter: 10 * time.Second}
)

// Transports a row runs over.
var Transports = []string{"grpc", "http-stream", "http"}

// Outcome is what one client saw.
type Outcome struct {
	OK        bool
	Text      string
	Model     string // the model that finished the answer
	Models    []string
	Attempts  []string // "model:reason:outcome"
	Costs     []float64
	Cost      float64 // the end event's
	Failovers int
	Completed int // completion tokens in the usage
	Code      codes.Code
	HTTP      int    // HTTP status (HTTP transports)
	Error     string // the error message
	ErrEvent  bool   // an error event came after chunks (SSE)
	Done      bool   // [DONE] came (SSE)
	Took      time.Duration
	Note      string // what the report shows besides the outcome
	// RetryAfter is the gRPC status's RetryInfo.
	RetryAfter time.Duration
}

// Want is a row's required end.
type Want struct {
	OK      bool
	Model   string         // the answering model ("" with !OK)
	Full    bool           // the text is the whole clean answer
	Code    codes.Code     // the gRPC code when !OK
	Seen    map[string]int // upstream requests per model
	Gone    map[string]int // of those, abandoned by the proxy (cancelled)
	MinTook time.Duration
	MaxTook time.Duration
	ErrHas  string // the error message contains this
	// Attempts in order, as "model:reason:outcome" (the end event's list,
	// and the router's llmrouter_attempts_total for failed requests too).
	Attempts []string
	// Models that answered, and the failovers, when the answer is whole.
	Models    []string
	Failovers int
}

// model is a proxy model of a row.
type model struct {
	name           string
	acceptsPrefill bool
	contextLength  int
	faults         []Fault
	// provider: "" for the plain upstream, "tls" for the one whose
	// certificate the proxy does not trust.
	provider string
	// policy is the router's per-model policy for it, if any.
	policy map[string]any
}

// Row is one fault and its required behaviour.
type Row struct {
	Fault    string
	Required string
	Models   []model // the first is requested, the rest are fallbacks in order
	Prompt   string
	Want     Want
	// warm sends one clean request first (for rows that need the route's
	// usual rate), then runs with the model's script from its second entry.
	Warm bool
	// Only limits the row to these transports; Deadline is the gRPC
	// client's deadline (0: none to speak of).
	Only     []string
	Deadline time.Duration
	// BadEvents is how many stream events the proxy must count as skipped.
	BadEvents int
}

// Result is a row's outcome per transport.
type Result struct {
	Row      Row
	Outcomes map[string]Outcome
	Seen     map[string]map[string]int
	Failures []string
}

func rows(t Timings) []Row {
	ok := Fault{}
	rl := func(h map[string]string) Fault {
		return Fault{Status: 429, Header: h, Body: `{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`}
	}
	five := func(code int) Fault {
		return Fault{Status: code, Body: `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`}
	}
	m := func(name string, f ...Fault) model { return model{name: name, faults: f} }
	pre := func(name string, f ...Fault) model { return model{name: name, faults: f, acceptsPrefill: true} }
	seen := func(kv ...any) map[string]int {
		out := map[string]int{}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1].(int)
		}
		return out
	}
	retried := []string{"a:first:failed", "a:retry:ok"}
	fellBack := []string{"a:first:failed", "a:retry:failed", "b:fallback:ok"}
	return []Row{
		{Fault: "429 with `Retry-After: 1` (seconds)", Required: "wait as told, then the same model answers",
			Models: []model{m("a", rl(map[string]string{"Retry-After": "1"}), ok)},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), MinTook: 900 * time.Millisecond, Attempts: retried}},
		{Fault: "429 with `Retry-After` as an HTTP date", Required: "wait until then (capped), then the same model answers",
			Models: []model{m("a", rl(map[string]string{"Retry-After": "date+2s"}), ok)},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), MinTook: 900 * time.Millisecond, MaxTook: 3 * time.Second, Attempts: retried}},
		{Fault: "429 with a garbage `Retry-After`", Required: "the hint is ignored: a jittered backoff, then the same model answers",
			Models: []model{m("a", rl(map[string]string{"Retry-After": "soon-ish"}), ok)},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), MinTook: 50 * time.Millisecond, MaxTook: 2 * time.Second, Attempts: retried}},
		{Fault: "429 without a hint, persistent; a fallback", Required: "bounded attempts with backoff, then the fallback answers",
			Models: []model{m("a", rl(nil)), m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 2, "b", 1), MinTook: 50 * time.Millisecond, Attempts: fellBack}},
		{Fault: "429 without a hint, persistent; no fallback", Required: "the original error (429 / ResourceExhausted) after bounded attempts",
			Models: []model{m("a", rl(nil))},
			Want:   Want{Code: codes.ResourceExhausted, Seen: seen("a", 2), ErrHas: "Rate limit reached", MinTook: 50 * time.Millisecond, Attempts: []string{"a:first:failed", "a:retry:failed"}}},
		{Fault: "500 once", Required: "the same model is retried and answers",
			Models: []model{m("a", five(500), ok)},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), Attempts: retried}},
		{Fault: "503 persistent; a fallback", Required: "the fallback answers within the retry budget",
			Models: []model{m("a", five(503)), m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 2, "b", 1), Attempts: fellBack}},
		{Fault: "connection reset before headers, once", Required: "retried; answers",
			Models: []model{m("a", Fault{Reset: true}, ok)},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), Attempts: retried}},
		{Fault: "200 with an error body, once", Required: "treated as the error it is (not an empty answer); retried",
			Models: []model{m("a", Fault{ContentType: "application/json", Body: `{"error":{"message":"upstream overloaded","type":"server_error","param":null,"code":null}}`}, ok)},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), Attempts: retried}},
		{Fault: "200 with an unexpected content type, once", Required: "treated as an error; retried",
			Models: []model{m("a", Fault{ContentType: "text/html", Body: "<html>gateway</html>"}, ok)},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), Attempts: retried}},
		{Fault: "upstream accepts and never answers; a fallback", Required: "the first-token deadline (on by default) fails over; the silent route is not retried",
			Models: []model{m("a", Fault{Silent: true}), m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 1, "b", 1), Gone: seen("a", 1), MinTook: t.FirstToken, Attempts: []string{"a:first:first_token_timeout", "b:fallback:ok"}}},
		{Fault: "first token later than the model's TTFT limit; a fallback", Required: "fail over; the late attempt is cancelled",
			Models: []model{{name: "late", faults: []Fault{{FirstDelay: t.LateFirst}}, policy: map[string]any{"first_token_timeout": t.TTFTLimit.String()}}, m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("late", 1, "b", 1), Gone: seen("late", 1), MaxTook: t.LateFirst, Attempts: []string{"late:first:first_token_timeout", "b:fallback:ok"}}},
		{Fault: "stream cut mid-answer; the fallback takes a prefill", Required: "continued on the fallback from the partial answer: the whole answer, once",
			Models: []model{m("a", Fault{CutAfter: 5}), pre("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 1, "b", 1), Attempts: []string{"a:first:cut", "b:failover:ok"}, Models: []string{"a", "b"}, Failovers: 1}},
		{Fault: "stream stalls mid-answer; the fallback takes a prefill", Required: "stall detected (on by default); continued on the fallback",
			Models: []model{m("a", Fault{StallAfter: 5}), pre("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 1, "b", 1), Gone: seen("a", 1), Attempts: []string{"a:first:stalled", "b:failover:ok"}, Models: []string{"a", "b"}, Failovers: 1}},
		{Fault: "stream trickles far below its usual rate", Required: "treated as stalled; continued on the fallback",
			Warm:   true,
			Models: []model{m("a", ok, Fault{TrickleAfter: 3, TrickleEvery: t.TrickleEvery}), pre("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 2, "b", 1), Attempts: []string{"a:first:stalled", "b:failover:ok"}, Models: []string{"a", "b"}, Failovers: 1}},
		{Fault: "stream cut mid-answer; the fallback takes no prefill", Required: "a clear error naming the original failure (not the fallback's 400); SSE: an error event, no [DONE]",
			Models: []model{m("a", Fault{CutAfter: 5}), m("b", ok)},
			Want:   Want{Code: codes.Unavailable, Seen: seen("a", 1, "b", 0), ErrHas: "failed mid-stream", Attempts: []string{"a:first:cut"}}},
		{Fault: "stream cut before its first chunk; the fallback takes no prefill", Required: "nothing reached the client: restarted cleanly (the same model, then the fallback)",
			Models: []model{m("a", Fault{CutBeforeFirst: true}), m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 2, "b", 1), Attempts: fellBack}},
		{Fault: "malformed chunks in the stream", Required: "skipped and counted; the answer is whole",
			Models: []model{m("a", Fault{Malformed: 3})}, BadEvents: 3,
			Want: Want{OK: true, Model: "a", Full: true, Seen: seen("a", 1), Attempts: []string{"a:first:ok"}}},
		{Fault: "an oversized event (2 MiB) in the stream", Required: "skipped and counted; the answer is whole",
			Models: []model{m("a", Fault{Oversized: 2 << 20})}, BadEvents: 1,
			Want: Want{OK: true, Model: "a", Full: true, Seen: seen("a", 1), Attempts: []string{"a:first:ok"}}},
		{Fault: "more malformed events than the limit (9 > 8) before any text, once", Required: "the stream fails cleanly; retried; answers",
			Models: []model{m("a", Fault{MalformedFirst: 9}, ok)}, BadEvents: 9,
			Want: Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), Attempts: retried}},
		{Fault: "stream ends without `[DONE]` (connection held open)", Required: "finish at once with usage",
			Models: []model{m("a", Fault{NoDone: true})},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 1), Attempts: []string{"a:first:ok"}}},
		{Fault: "stream ends without `[DONE]` and without usage", Required: "finish at once; usage counted from what was sent",
			Models: []model{m("a", Fault{NoUsage: true})},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 1), Attempts: []string{"a:first:ok"}}},
		{Fault: "an error event (rate limit) before any chunk, once", Required: "the error it is; retried; answers",
			Models: []model{m("a", Fault{ErrorAfter: -1}, ok)},
			Want:   Want{OK: true, Model: "a", Full: true, Seen: seen("a", 2), Attempts: retried}},
		{Fault: "an error event mid-stream; the fallback takes a prefill", Required: "continued on the fallback: the whole answer",
			Models: []model{m("a", Fault{ErrorAfter: 6}), pre("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 1, "b", 1), Attempts: []string{"a:first:cut", "b:failover:ok"}, Models: []string{"a", "b"}, Failovers: 1}},
		{Fault: "prompt certainly over two models' contexts; a third fits", Required: "both ruled out before sending; the one that fits answers",
			Prompt: strings.Repeat("a long prompt ", 60),
			Models: []model{{name: "small", contextLength: 64}, {name: "small2", contextLength: 100}, m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("small", 0, "small2", 0, "b", 1), Attempts: []string{"b:first:ok"}}},
		{Fault: "context length exceeded (the provider's 400); a fallback", Required: "no same-model retry; the fallback answers",
			Models: []model{m("a", Fault{Status: 400, Body: `{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`}), m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 1, "b", 1), Attempts: []string{"a:first:failed", "b:fallback:ok"}}},
		{Fault: "prompt certainly over the model's context; a fallback", Required: "ruled out before sending; the fallback answers",
			Prompt: strings.Repeat("a long prompt ", 60),
			Models: []model{{name: "small", contextLength: 64}, m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("small", 0, "b", 1), Attempts: []string{"b:first:ok"}}},
		{Fault: "content-policy rejection; a fallback", Required: "no retry, no fallback; the provider's reason reaches the caller",
			Models: []model{m("a", Fault{Status: 400, Body: `{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}`}), m("b", ok)},
			Want:   Want{Code: codes.InvalidArgument, Seen: seen("a", 1, "b", 0), ErrHas: "safety system", Attempts: []string{"a:first:failed"}}},
		{Fault: "502 persistent; no fallback", Required: "bounded retries, then Unavailable (503) with the upstream's message",
			Models: []model{m("a", five(502))},
			Want:   Want{Code: codes.Unavailable, Seen: seen("a", 2), ErrHas: "HTTP 502", Attempts: []string{"a:first:failed", "a:retry:failed"}}},
		{Fault: "TLS handshake failure (an untrusted certificate); a fallback", Required: "retried, then the fallback answers",
			Models: []model{{name: "a", provider: "tls", faults: []Fault{ok}}, m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 0, "b", 1), Attempts: fellBack}},
		{Fault: "429 with `Retry-After: 2`; the model's policy falls back on rate limits", Required: "fall back at once, no wait",
			Models: []model{{name: "a", faults: []Fault{rl(map[string]string{"Retry-After": "2"})}, policy: map[string]any{"fallback_on_rate_limit": true}}, m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 1, "b", 1), MaxTook: time.Second, Attempts: []string{"a:first:failed", "b:fallback:ok"}}},
		{Fault: "429 with `Retry-After: 2`, longer than the request's deadline (gRPC, 1.5 s)", Required: "no wait past the deadline: fall back at once",
			Only: []string{"grpc"}, Deadline: 1500 * time.Millisecond,
			Models: []model{m("a", rl(map[string]string{"Retry-After": "2"})), m("b", ok)},
			Want:   Want{OK: true, Model: "b", Full: true, Seen: seen("a", 1, "b", 1), MaxTook: time.Second, Attempts: []string{"a:first:failed", "b:fallback:ok"}}},
	}
}

// Run runs every row over every transport against fresh processes and
// returns the results; t fails on the first set-up error.
func Run(t testkit.T, bins harness.Binaries, tm Timings) []Result {
	rs := rows(tm)
	words := make([]string, 16)
	for i := range words {
		words[i] = fmt.Sprintf(" w%02d", i)
	}
	up := NewUpstream(words, tm.WordDelay)
	t.Cleanup(up.Close)
	certs := testkit.DevCerts(t)

	// Every row's models, once per transport, so routes never share state.
	name := func(i int, tr, m string) string { return fmt.Sprintf("r%02d-%s-%s", i, m, tr) }
	var proxyModels []map[string]any
	policies := map[string]any{}
	for i, r := range rs {
		for _, tr := range Transports {
			for _, m := range r.Models {
				n := name(i, tr, m.name)
				prov := "fault"
				if m.provider != "" {
					prov = m.provider
				}
				proxyModels = append(proxyModels, map[string]any{"name": n, "provider": prov, "upstream_model": n,
					"price_in_per_1m": 1.0, "price_out_per_1m": 2.0, "quality": 0.8, "context_length": m.contextLength, "accepts_prefill": m.acceptsPrefill})
				if m.policy != nil {
					policies[n] = m.policy
				}
			}
		}
	}
	dir := t.TempDir()
	cfg := WriteJSON(t, dir, "proxy.json", map[string]any{
		"providers": []map[string]any{{"name": "fault", "kind": "openai-compatible", "base_url": up.URL},
			{"name": "tls", "kind": "openai-compatible", "base_url": up.TLSURL}},
		"models": proxyModels,
	})
	strategies := WriteJSON(t, dir, "strategies.json", map[string]any{
		"default": "balanced",
		"strategies": map[string]any{"balanced": map[string]any{
			"filters": []map[string]any{{"type": "healthy"}, {"type": "constraints"}, {"type": "fits"}, {"type": "session"}},
			"scorers": []map[string]any{{"type": "load", "weight": 1}},
			"picker":  map[string]any{"type": "max-score"},
		}},
		"policies": policies,
	})
	proxy := testkit.Start(t, "provider-proxy", bins.ProviderProxy, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleProviderProxy,
		"-config", cfg, "-metrics-listen", "127.0.0.1:0")...)
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
		"-static", proxy.Addr, "-http-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0", "-strategies", strategies, "-refresh", "200ms",
		"-hosted-first-token-timeout", tm.FirstToken.String(), "-stall-timeout", tm.Stall.String(),
		"-circuit-max-open", tm.CircuitOpen.String(), "-max-retry-after", tm.MaxRetryAfter.String())...)
	conn, err := grpc.NewClient(router.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &clients{grpc: routerv1.NewRouterServiceClient(conn), http: "http://" + router.Addrs["http"]}
	c.waitModels(t, len(proxyModels))

	var results []Result
	for i, r := range rs {
		res := Result{Row: r, Outcomes: map[string]Outcome{}, Seen: map[string]map[string]int{}}
		for _, tr := range Transports {
			if len(r.Only) > 0 && !slices.Contains(r.Only, tr) {
				continue
			}
			names := make([]string, len(r.Models))
			for j, m := range r.Models {
				names[j] = name(i, tr, m.name)
				fs := slices.Clone(m.faults)
				for k := range fs {
					if fs[k].Header["Retry-After"] == "date+2s" {
						fs[k].Header = map[string]string{"Retry-After": time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)}
					}
				}
				up.Script(names[j], fs...)
			}
			prompt := r.Prompt
			if prompt == "" {
				prompt = "tell me something"
			}
			if r.Warm {
				if o := c.run(tr, names[0], nil, prompt); !o.OK {
					res.Failures = append(res.Failures, fmt.Sprintf("%s: warm-up failed: %s", tr, o.Error))
				}
			}
			bad0 := scrape(proxy.Addrs["metrics"], "llmrouter_proxy_bad_stream_events_total")
			c.deadline = r.Deadline
			o := c.run(tr, names[0], names[1:], prompt)
			c.deadline = 0
			if r.BadEvents > 0 {
				if d := scrape(proxy.Addrs["metrics"], "llmrouter_proxy_bad_stream_events_total") - bad0; d != float64(r.BadEvents) {
					res.Failures = append(res.Failures, fmt.Sprintf("%s: proxy counted %v bad events, want %d", tr, d, r.BadEvents))
				}
			}
			// Cancellations reach the upstream a moment after the answer:
			// poll for them, within a hang guard.
			for guard := time.Now().Add(5 * time.Second); time.Now().Before(guard); time.Sleep(10 * time.Millisecond) {
				settled := true
				for j, m := range r.Models {
					settled = settled && up.Gone(names[j]) >= r.Want.Gone[m.name]
				}
				if settled {
					break
				}
			}
			seen := map[string]int{}
			gone := map[string]int{}
			for j, m := range r.Models {
				seen[m.name], gone[m.name] = up.Seen(names[j]), up.Gone(names[j])
			}
			res.Seen[tr] = seen
			short := func(n string) string {
				return strings.TrimPrefix(strings.TrimSuffix(n, "-"+tr), fmt.Sprintf("r%02d-", i))
			}
			o.Model = short(o.Model)
			for k := range o.Models {
				o.Models[k] = short(o.Models[k])
			}
			for k := range o.Attempts {
				o.Attempts[k] = short(strings.SplitN(o.Attempts[k], ":", 2)[0]) + ":" + strings.SplitN(o.Attempts[k], ":", 2)[1]
			}
			res.Outcomes[tr] = o
			res.Failures = append(res.Failures, check(tr, r, o, seen, gone, up.Answer())...)
			res.Failures = append(res.Failures, checkMetrics(tr, r, router.Addrs["metrics"], func(m string) string { return name(i, tr, m) })...)
		}
		results = append(results, res)
	}
	results = append(results, circuitRow(t, c, up, tm), hintRow(c, up, tm))
	return append(results, workerRows(t, bins, certs, tm)...)
}

func check(tr string, r Row, o Outcome, seen, gone map[string]int, answer string) []string {
	var f []string
	bad := func(format string, args ...any) { f = append(f, tr+": "+fmt.Sprintf(format, args...)) }
	w := r.Want
	switch {
	case w.OK && !o.OK:
		bad("failed: %v %s", o.Code, o.Error)
	case !w.OK && o.OK:
		bad("answered %q, want %v", o.Text, w.Code)
	case !w.OK && o.Code != w.Code:
		bad("code %v, want %v (%s)", o.Code, w.Code, o.Error)
	}
	if w.OK {
		if o.Model != w.Model {
			bad("answered by %s, want %s", o.Model, w.Model)
		}
		if w.Full && o.Text != answer {
			bad("text %q, want %q", o.Text, answer)
		}
		if w.Full && o.Completed != 16 {
			bad("usage counts %d completion tokens, want 16", o.Completed)
		}
		if tr == "http-stream" && !o.Done {
			bad("no [DONE]")
		}
		if w.Attempts != nil && !slices.Equal(o.Attempts, w.Attempts) {
			bad("attempts %v, want %v", o.Attempts, w.Attempts)
		}
		if w.Models != nil && !slices.Equal(o.Models, w.Models) {
			bad("answering models %v, want %v", o.Models, w.Models)
		}
		if o.Failovers != w.Failovers {
			bad("%d failovers, want %d", o.Failovers, w.Failovers)
		}
		sum := 0.0
		for _, c := range o.Costs {
			sum += c
		}
		if o.Cost <= 0 || math.Abs(sum-o.Cost) > 1e-12 {
			bad("cost %g is not the sum of the attempts' costs %v", o.Cost, o.Costs)
		}
		for k, a := range o.Attempts {
			if strings.HasSuffix(a, ":cut") || strings.HasSuffix(a, ":stalled") {
				if o.Costs[k] <= 0 {
					bad("attempt %s delivered tokens but costs %g", a, o.Costs[k])
				}
			}
		}
	} else {
		if w.ErrHas != "" && !strings.Contains(o.Error, w.ErrHas) {
			bad("error %q does not name %q", o.Error, w.ErrHas)
		}
		if tr == "http-stream" && o.Done {
			bad("[DONE] after an error")
		}
	}
	for m, n := range w.Seen {
		if seen[m] != n {
			bad("upstream saw %d requests for %s, want %d", seen[m], m, n)
		}
	}
	for m, n := range w.Gone {
		if gone[m] != n {
			bad("%d of %s's requests were abandoned, want %d", gone[m], m, n)
		}
	}
	if w.MinTook > 0 && o.Took < w.MinTook {
		bad("took %v, under %v", o.Took, w.MinTook)
	}
	if w.MaxTook > 0 && o.Took > w.MaxTook {
		bad("took %v, over %v", o.Took, w.MaxTook)
	}
	return f
}

var attemptMetric = regexp.MustCompile(`(?m)^llmrouter_attempts_total\{model="([^"]+)",outcome="([^"]+)",reason="([^"]+)"\} (\S+)$`)

// checkMetrics compares the router's llmrouter_attempts_total for the row's
// models with the attempts the row requires (failed requests included: their
// attempts appear in metrics, not as completions).
func checkMetrics(tr string, r Row, routerHTTP string, full func(string) string) []string {
	if r.Want.Attempts == nil {
		return nil
	}
	want := map[string]int{}
	expected := slices.Clone(r.Want.Attempts)
	if r.Warm {
		expected = append(expected, r.Models[0].name+":first:ok")
	}
	ours := map[string]bool{}
	for _, m := range r.Models {
		ours[full(m.name)] = true
	}
	for _, a := range expected {
		p := strings.Split(a, ":")
		want[full(p[0])+":"+p[1]+":"+p[2]]++
	}
	got := map[string]int{}
	resp, err := http.Get("http://" + routerHTTP + "/metrics")
	if err != nil {
		return []string{tr + ": metrics: " + err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, m := range attemptMetric.FindAllStringSubmatch(string(b), -1) {
		if ours[m[1]] {
			v, _ := strconv.ParseFloat(m[4], 64)
			got[m[1]+":"+m[3]+":"+m[2]] = int(v)
		}
	}
	var f []string
	for k, n := range want {
		if got[k] != n {
			f = append(f, fmt.Sprintf("%s: llmrouter_attempts_total %s = %d, want %d", tr, k, got[k], n))
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			f = append(f, fmt.Sprintf("%s: unexpected llmrouter_attempts_total %s = %d", tr, k, n))
		}
	}
	return f
}

// circuitRow: the primary fails for a while, then recovers. While its
// circuit is open the fallback serves without trying it; once it is healthy
// again, a half-open probe (within the capped interval) gives it traffic
// back.
func circuitRow(t testkit.T, c *clients, up *Upstream, tm Timings) Result {
	r := Row{Fault: "primary down for a while, then healthy", Required: "the circuit per (endpoint, model) opens, the fallback serves, half-open probes at a capped interval, the primary gets traffic again at the first successful probe"}
	res := Result{Row: r, Outcomes: map[string]Outcome{}, Seen: map[string]map[string]int{}}
	down := Fault{Status: 503, Body: `{"error":{"message":"down","type":"server_error","param":null,"code":null}}`}
	for _, tr := range Transports {
		bad := func(format string, args ...any) {
			res.Failures = append(res.Failures, tr+": "+fmt.Sprintf(format, args...))
		}
		// Row 06's models (503 persistent, a fallback) under fresh scripts.
		a, b := "r06-a-"+tr, "r06-b-"+tr
		up.Script(a, down)
		up.Script(b, Fault{})
		// Failures until the circuit opens: then a request is served by
		// the fallback without the primary being tried at all.
		opened := 0
		for i := range 8 {
			before := up.Seen(a)
			o := c.run(tr, a, []string{b}, "x")
			if o.OK && o.Model == b && up.Seen(a) == before {
				opened = i + 1
				break
			}
		}
		if opened == 0 {
			bad("the circuit never opened: every request tried the failing primary")
		}
		up.Script(a, Fault{})
		began := time.Now()
		var back time.Duration
		for time.Since(began) < 3*tm.CircuitOpen+2*time.Second {
			if o := c.run(tr, a, []string{b}, "x"); o.OK && o.Model == a {
				back = time.Since(began)
				break
			}
			time.Sleep(tm.CircuitOpen / 10)
		}
		if back == 0 {
			bad("the primary never got traffic back")
		} else if back > tm.CircuitOpen+time.Second {
			bad("the primary got traffic back after %v, over the probe interval %v", back, tm.CircuitOpen)
		}
		if o := c.run(tr, a, []string{b}, "x"); o.Model != a {
			bad("after the successful probe the next request went to %s", o.Model)
		}
		res.Outcomes[tr] = Outcome{OK: back > 0, Model: "a", Took: back,
			Note: fmt.Sprintf("open after request %d; the primary answered again %v after it recovered", opened, back.Round(time.Millisecond))}
		res.Seen[tr] = map[string]int{"a": up.Seen(a)}
	}
	return res
}

// hintRow: a Retry-After longer than the router waits, with no fallback,
// reaches the client (HTTP Retry-After, gRPC RetryInfo) at once; a client
// that waits it and retries succeeds.
func hintRow(c *clients, up *Upstream, tm Timings) Result {
	hint := int(tm.MaxRetryAfter/time.Second) + 1
	r := Row{Fault: fmt.Sprintf("429 with `Retry-After: %d`, over the router's cap; no fallback", hint),
		Required: "429 (ResourceExhausted) at once with the upstream's hint as `Retry-After` (gRPC: RetryInfo); the client waits it, retries and succeeds"}
	res := Result{Row: r, Outcomes: map[string]Outcome{}, Seen: map[string]map[string]int{}}
	for _, tr := range Transports {
		bad := func(format string, args ...any) {
			res.Failures = append(res.Failures, tr+": "+fmt.Sprintf(format, args...))
		}
		a := "r04-a-" + tr // row 04's model (429, no fallback) under a fresh script
		up.Script(a, Fault{Status: 429, Header: map[string]string{"Retry-After": strconv.Itoa(hint)},
			Body: `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`}, Fault{})
		began := time.Now()
		var told time.Duration
		if tr == "grpc" {
			o := c.viaGRPC(a, nil, "x")
			told = o.RetryAfter
			if o.Code != codes.ResourceExhausted {
				bad("first answer %v %s, want ResourceExhausted", o.Code, o.Error)
			}
		} else {
			body := `{"model":"` + a + `","messages":[{"role":"user","content":"x"}],"max_tokens":32,"stream":` + strconv.FormatBool(tr == "http-stream") + `}`
			resp, err := http.Post(c.http+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				bad("%v", err)
				continue
			}
			resp.Body.Close()
			secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			told = time.Duration(secs) * time.Second
			if resp.StatusCode != 429 {
				bad("first answer HTTP %d, want 429", resp.StatusCode)
			}
		}
		if told != time.Duration(hint)*time.Second || time.Since(began) > time.Second {
			bad("told to retry after %v, %v after the request; want %ds at once", told, time.Since(began).Round(time.Millisecond), hint)
		}
		time.Sleep(told)
		o := c.run(tr, a, nil, "x")
		if !o.OK {
			bad("the retry after the hint failed: %v %s", o.Code, o.Error)
		}
		o.Model, o.Took = "a", time.Since(began)
		res.Outcomes[tr] = o
		res.Seen[tr] = map[string]int{"a": up.Seen(a)}
		if up.Seen(a) != 2 {
			bad("upstream saw %d requests, want 2", up.Seen(a))
		}
	}
	return res
}

type clients struct {
	grpc     routerv1.RouterServiceClient
	http     string
	deadline time.Duration // of the next gRPC call; 0: 2 minutes
}

func (c *clients) waitModels(t testkit.T, n int) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, err := c.grpc.ListModels(context.Background(), &routerv1.ListModelsRequest{})
		if err == nil && len(l.GetModels()) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router lists %d models, want %d (%v)", len(l.GetModels()), n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *clients) run(tr, model string, fallbacks []string, prompt string) Outcome {
	began := time.Now()
	var o Outcome
	switch tr {
	case "grpc":
		o = c.viaGRPC(model, fallbacks, prompt)
	default:
		o = c.viaHTTP(model, fallbacks, prompt, tr == "http-stream")
	}
	o.Took = time.Since(began)
	return o
}

func (c *clients) viaGRPC(model string, fallbacks []string, prompt string) Outcome {
	d := 2 * time.Minute
	if c.deadline > 0 {
		d = c.deadline
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := c.grpc.Generate(ctx, &routerv1.GenerateRequest{Model: model,
		Prompt:   &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{{Role: genv1.Role_ROLE_USER, Content: prompt}}}}},
		Sampling: &genv1.SamplingParams{MaxTokens: 32},
		Routing:  &routerv1.RoutingOptions{FallbackModels: fallbacks}})
	var o Outcome
	for err == nil {
		var m *routerv1.GenerateResponse
		if m, err = s.Recv(); err != nil {
			break
		}
		o.Text += m.GetDelta().GetText()
		if e := m.GetEnd(); e != nil {
			o.OK, o.Models, o.Failovers, o.Completed, o.Cost = true, e.GetModels(), int(e.GetFailovers()), int(e.GetUsage().GetCompletionTokens()), e.GetCostUsd()
			for _, a := range e.GetAttempts() {
				o.Attempts = append(o.Attempts, a.GetModel()+":"+enumName(a.GetReason().String(), "ATTEMPT_REASON_")+":"+enumName(a.GetOutcome().String(), "ATTEMPT_OUTCOME_"))
				o.Costs = append(o.Costs, a.GetCostUsd())
			}
			if len(o.Models) > 0 {
				o.Model = o.Models[len(o.Models)-1]
			}
		}
	}
	if err != io.EOF {
		o.OK = false
		st := status.Convert(err)
		o.Code, o.Error, o.RetryAfter = st.Code(), st.Message(), rpcerr.RetryAfter(err)
	}
	return o
}

// sseChunk is one event of the HTTP API's chat completion stream.
type sseChunk struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	LLMRouter *report `json:"llmrouter"`
}

// readSSE calls each for every event of an SSE body, and reports whether
// [DONE] came; an event that is not a chunk is an error.
func readSSE(body io.Reader, each func(sseChunk)) (done bool, err error) {
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		switch {
		case !ok:
			continue
		case line == "[DONE]":
			done = true
			continue
		}
		var ch sseChunk
		if err := json.Unmarshal([]byte(line), &ch); err != nil {
			return done, fmt.Errorf("bad event %q: %v", line, err)
		}
		each(ch)
	}
	return done, sc.Err()
}

// report is the router's llmrouter extension field.
type report struct {
	Models    []string  `json:"models"`
	Failovers int       `json:"failovers"`
	Cost      float64   `json:"cost_usd"`
	Attempts  []attempt `json:"attempts"`
}

type attempt struct {
	Model   string  `json:"model"`
	Reason  string  `json:"reason"`
	Outcome string  `json:"outcome"`
	Cost    float64 `json:"cost_usd"`
}

func (r report) list() (out []string, costs []float64) {
	for _, a := range r.Attempts {
		out = append(out, a.Model+":"+a.Reason+":"+a.Outcome)
		costs = append(costs, a.Cost)
	}
	return out, costs
}

// eventCode reads an SSE error event's OpenAI type and code back as the
// gRPC code the router mapped to them.
func eventCode(typ string, code *string) codes.Code {
	c := ""
	if code != nil {
		c = *code
	}
	switch {
	case c == "service_unavailable":
		return codes.Unavailable
	case c == "rate_limit_exceeded":
		return codes.ResourceExhausted
	case c == "timeout":
		return codes.DeadlineExceeded
	case c == "model_not_found":
		return codes.NotFound
	case typ == "invalid_request_error":
		return codes.InvalidArgument
	}
	return codes.Internal
}

func enumName(v, prefix string) string { return strings.ToLower(strings.TrimPrefix(v, prefix)) }

var httpCodes = map[int]codes.Code{400: codes.InvalidArgument, 404: codes.NotFound, 429: codes.ResourceExhausted, 503: codes.Unavailable, 504: codes.DeadlineExceeded, 500: codes.Internal}

func (c *clients) viaHTTP(model string, fallbacks []string, prompt string, stream bool) Outcome {
	body, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": 32, "stream": stream, "stream_options": map[string]bool{"include_usage": stream}, "fallback_models": fallbacks})
	if !stream {
		body, _ = json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": prompt}},
			"max_tokens": 32, "fallback_models": fallbacks})
	}
	resp, err := http.Post(c.http+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return Outcome{Code: codes.Unknown, Error: err.Error()}
	}
	defer resp.Body.Close()
	o := Outcome{HTTP: resp.StatusCode}
	type errBody struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if resp.StatusCode != 200 {
		var e errBody
		_ = json.NewDecoder(resp.Body).Decode(&e)
		o.Code = httpCodes[resp.StatusCode]
		if e.Error != nil {
			o.Error = e.Error.Message
		}
		return o
	}
	if !stream {
		var r struct {
			Model   string `json:"model"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
			LLMRouter report `json:"llmrouter"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Choices) == 0 {
			return Outcome{Code: codes.Internal, Error: fmt.Sprintf("bad response: %v", err)}
		}
		o := Outcome{OK: true, HTTP: 200, Text: r.Choices[0].Message.Content, Model: r.Model, Models: r.LLMRouter.Models,
			Failovers: r.LLMRouter.Failovers, Completed: r.Usage.CompletionTokens, Cost: r.LLMRouter.Cost}
		o.Attempts, o.Costs = r.LLMRouter.list()
		return o
	}
	o.Done, _ = readSSE(resp.Body, func(ch sseChunk) {
		if ch.Error != nil {
			o.ErrEvent, o.Error, o.Code = true, ch.Error.Message, eventCode(ch.Error.Type, ch.Error.Code)
			return
		}
		for _, c := range ch.Choices {
			o.Text += c.Delta.Content
		}
		if ch.LLMRouter != nil {
			o.OK, o.Model, o.Models, o.Failovers, o.Cost = true, ch.Model, ch.LLMRouter.Models, ch.LLMRouter.Failovers, ch.LLMRouter.Cost
			o.Attempts, o.Costs = ch.LLMRouter.list()
		}
		if ch.Usage != nil {
			o.Completed = ch.Usage.CompletionTokens
		}
	})
	if o.ErrEvent {
		o.OK = false
	}
	return o
}

var metricLine = regexp.MustCompile(`(?m)^(\S+) (\S+)$`)

// scrape reads one counter from a Prometheus endpoint (0 when absent).
func scrape(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		if m[1] == name {
			v, _ := strconv.ParseFloat(m[2], 64)
			return v
		}
	}
	return 0
}

// WriteJSON writes v, indented, to dir/name and returns the path.
func WriteJSON(t testkit.T, dir, name string, v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Report writes the matrix as Markdown.
func Report(w io.Writer, tm Timings, results []Result) {
	fmt.Fprintf(w, "# Reliability: the fault matrix\n\n")
	fmt.Fprintf(w, "Generated by `make faults` (%s limits: hosted first-token deadline %v, stall limit %v, TTFT policy %v, circuit probe interval %v; a clean answer is 16 words at %v each) on %s. "+
		"Each fault is injected by a scripted OpenAI-format upstream behind a real provider-proxy and router, and sent through the router's gRPC API, its HTTP API streaming (SSE) and not. "+
		"A cell is the answering model (or the error's gRPC code), the requests the upstream saw per model, and the time to the answer's end.\n\n",
		tm.Name, tm.FirstToken, tm.Stall, tm.TTFTLimit, tm.CircuitOpen, tm.WordDelay, time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(w, "| Fault | Required behaviour | gRPC | HTTP (SSE) | HTTP | Passed |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		cells := make([]string, len(Transports))
		for i, tr := range Transports {
			o, ok := r.Outcomes[tr]
			if !ok {
				cells[i] = "—"
				continue
			}
			end := o.Model
			if !o.OK {
				end = o.Code.String()
				if tr == "http-stream" && o.ErrEvent {
					end += " (error event, no [DONE])"
				}
			}
			var seen []string
			for _, m := range []string{"a", "b", "late", "small", "small2"} {
				if n, ok := r.Seen[tr][m]; ok {
					seen = append(seen, fmt.Sprintf("%s×%d", m, n))
				}
			}
			if o.Note != "" {
				cells[i] = fmt.Sprintf("%s; %s; %v", end, o.Note, o.Took.Round(time.Millisecond))
				continue
			}
			cells[i] = fmt.Sprintf("%s; upstream %s; %v", end, strings.Join(seen, " "), o.Took.Round(time.Millisecond))
		}
		pass := "yes"
		if len(r.Failures) > 0 {
			pass = "**no**: " + strings.Join(r.Failures, "; ")
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.Row.Fault, r.Row.Required, cells[0], cells[1], cells[2], pass)
	}
	fmt.Fprintf(w, "\nThe last four rows are worker faults on five engine-gguf processes serving the generated tiny model with greedy decoding (a failed-over answer must equal an uninterrupted one, 400 tokens).\n")
}
