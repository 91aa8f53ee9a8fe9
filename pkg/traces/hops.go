package traces

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Hops is one request's time, hop by hop, from its trace.
type Hops struct {
	RequestID, Model string
	// Total is the router's server span: the whole request as the router
	// served it.
	Total time.Duration
	// The router's own steps (its span's attributes): waiting for
	// admission, choosing routes, and relaying (first attempt to the end).
	AdmissionWait, Decision, Relay time.Duration
	// ToWorker is from the router's span start to the answering worker's
	// span start (admission, decision, earlier attempts, the call's
	// network and TLS); Network is the router's client span minus the
	// worker's server span (both directions, gRPC and transport).
	ToWorker, Network time.Duration
	// The answering worker: its server span, and the steps its span
	// records.
	Worker                       time.Duration
	Queue, Prefill, TTFT, Decode time.Duration
	BatchMax                     int
	// Attempts and Failovers the router made; tokens delivered.
	Attempts, Failovers        int
	InputTokens, OutputTokens  int
	PrefillTokens, CachedInput int
	// Spans counts the request's spans in the trace (the router's server
	// span, the router's client spans, the workers' server spans; others
	// are not counted); ExpectedSpans is what a request with these
	// attempts leaves: the server span, then a client and a worker span per
	// attempt (an attempt whose connection failed leaves no worker span, so
	// its trace reads as incomplete). Attempts cancelled because their
	// hedge race was lost (llm.hedges_lost) are not counted: cancelled
	// before their call began, they leave no span at all.
	Spans, ExpectedSpans int
}

// ErrIncomplete: the trace lacks the router's or the answering worker's
// span (dropped by an exporter, or not yet flushed).
var ErrIncomplete = errors.New("trace incomplete")

// Breakdown reads a request's hops from its trace.
func Breakdown(tr Trace) (Hops, error) {
	var router *Span
	var workers, clients []Span
	for i := range tr.Spans {
		s := tr.Spans[i]
		switch {
		case s.Operation == RouterGenerate && s.Kind == "server":
			router = &tr.Spans[i]
		case s.Operation == EngineGenerate && s.Kind == "server":
			workers = append(workers, s)
		case s.Operation == EngineGenerate && s.Kind == "client":
			clients = append(clients, s)
		}
	}
	if router == nil {
		return Hops{}, fmt.Errorf("%w: trace %s has no router span", ErrIncomplete, tr.ID)
	}
	h := Hops{
		RequestID: router.String("llm.request_id"), Model: router.String("gen_ai.request.model"),
		Total: router.Duration, AdmissionWait: router.Ms("llm.admission_wait_ms"),
		Decision: router.Ms("llm.decision_ms"), Relay: router.Ms("llm.relay_ms"),
		Attempts: int(router.Float("llm.attempts")), Failovers: int(router.Float("llm.failovers")),
		InputTokens: int(router.Float("gen_ai.usage.input_tokens")), OutputTokens: int(router.Float("gen_ai.usage.output_tokens")),
		Spans: 1 + len(clients) + len(workers),
	}
	if h.Attempts == 0 {
		h.Attempts = len(clients)
	}
	h.ExpectedSpans = 1 + 2*(h.Attempts-int(router.Float("llm.hedges_lost")))
	if len(workers) == 0 {
		return h, fmt.Errorf("%w: trace %s (request %s) has no worker span", ErrIncomplete, tr.ID, h.RequestID)
	}
	w := workers[len(workers)-1] // the answering one started last
	h.Worker = w.Duration
	h.ToWorker = w.Start.Sub(router.Start)
	h.Queue, h.Prefill = w.Ms("llm.queue_wait_ms"), w.Ms("llm.prefill_ms")
	h.TTFT, h.Decode = w.Ms("llm.ttft_ms"), w.Ms("llm.decode_ms")
	h.BatchMax = int(w.Float("llm.batch_size_max"))
	h.PrefillTokens, h.CachedInput = int(w.Float("llm.prefill_tokens")), int(w.Float("gen_ai.usage.cache_read.input_tokens"))
	for _, c := range clients {
		if c.SpanID == w.ParentID {
			h.Network = c.Duration - w.Duration
		}
	}
	return h, nil
}

// Row is one hop's distribution over many requests.
type Row struct {
	Hop            string
	N              int
	P50, P99, Mean time.Duration
}

// hopsOf names the durations Summarize reports, in order.
var hopsOf = []struct {
	name string
	get  func(Hops) time.Duration
}{
	{"total (router span)", func(h Hops) time.Duration { return h.Total }},
	{"router: admission wait", func(h Hops) time.Duration { return h.AdmissionWait }},
	{"router: decision", func(h Hops) time.Duration { return h.Decision }},
	{"router → worker span start", func(h Hops) time.Duration { return h.ToWorker }},
	{"network + gRPC (client − server span)", func(h Hops) time.Duration { return h.Network }},
	{"worker span", func(h Hops) time.Duration { return h.Worker }},
	{"worker: queue wait", func(h Hops) time.Duration { return h.Queue }},
	{"worker: prefill", func(h Hops) time.Duration { return h.Prefill }},
	{"worker: time to first token", func(h Hops) time.Duration { return h.TTFT }},
	{"worker: decode", func(h Hops) time.Duration { return h.Decode }},
	{"router: after the worker (total − to worker − worker)", func(h Hops) time.Duration { return h.Total - h.ToWorker - h.Worker }},
}

// Summarize gives every hop's p50, p99 and mean over hs.
func Summarize(hs []Hops) []Row {
	rows := make([]Row, 0, len(hopsOf))
	for _, hop := range hopsOf {
		ds := make([]time.Duration, len(hs))
		var sum time.Duration
		for i, h := range hs {
			ds[i] = hop.get(h)
			sum += ds[i]
		}
		r := Row{Hop: hop.name, N: len(ds)}
		if len(ds) > 0 {
			r.P50, r.P99, r.Mean = Percentile(ds, 50), Percentile(ds, 99), sum/time.Duration(len(ds))
		}
		rows = append(rows, r)
	}
	return rows
}

// Percentile is the p-th percentile of ds (nearest rank); ds is not
// changed.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// Table renders rows as a Markdown table (milliseconds).
func Table(rows []Row) string {
	var b strings.Builder
	b.WriteString("| hop | n | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %.2f |\n", r.Hop, r.N, msf(r.P50), msf(r.P99), msf(r.Mean))
	}
	return b.String()
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Node is a span in a trace's tree: its depth under its root.
type Node struct {
	Span
	Depth int
}

// Tree orders a trace's spans depth first, each after its parent and its
// children by start time (spans whose parent is not in the trace are
// roots).
func Tree(tr Trace) []Node {
	children := map[string][]Span{}
	ids := map[string]bool{}
	for _, s := range tr.Spans {
		ids[s.SpanID] = true
	}
	var roots []Span
	for _, s := range tr.Spans {
		if s.ParentID == "" || !ids[s.ParentID] {
			roots = append(roots, s)
		} else {
			children[s.ParentID] = append(children[s.ParentID], s)
		}
	}
	var out []Node
	var walk func(s Span, depth int)
	walk = func(s Span, depth int) {
		out = append(out, Node{s, depth})
		kids := children[s.SpanID]
		sort.SliceStable(kids, func(i, j int) bool { return kids[i].Start.Before(kids[j].Start) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return out
}

// Waterfall lays out one trace: every span indented under its parent, its
// start offset from the trace's first span, its duration, and the hop
// attributes it carries.
func Waterfall(tr Trace) string {
	if len(tr.Spans) == 0 {
		return ""
	}
	t0 := tr.Spans[0].Start
	var b strings.Builder
	fmt.Fprintf(&b, "trace %s\n%10s %10s  span\n", tr.ID, "start ms", "dur ms")
	for _, n := range Tree(tr) {
		fmt.Fprintf(&b, "%10.2f %10.2f  %s%s %s %s%s\n", msf(n.Start.Sub(t0)), msf(n.Duration), strings.Repeat("  ", n.Depth),
			n.Service, n.Kind, n.Operation, HopTags(n.Span))
	}
	return b.String()
}

// HopTags are the span's timing attributes, as Waterfall shows them.
func HopTags(s Span) string {
	var parts []string
	for _, k := range []string{"llm.admission_wait_ms", "llm.decision_ms", "llm.relay_ms", "llm.queue_wait_ms", "llm.prefill_ms",
		"llm.ttft_ms", "llm.decode_ms", "llm.batch_size_max", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "llm.endpoint"} {
		if v, ok := s.Tags[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%v", strings.TrimPrefix(strings.TrimPrefix(k, "llm."), "gen_ai.usage."), v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " [" + strings.Join(parts, " ") + "]"
}

// Collected is what a run left in Jaeger for the requests it sent.
type Collected struct {
	// Hops of every request whose trace is complete, by request id.
	Hops map[string]Hops
	// Missing requests (no router span found); Incomplete ones (a span
	// missing); spans expected and received over the complete ones.
	Missing, Incomplete []string
	ExpectedSpans       int
	ReceivedSpans       int
}

// CollectTimeout bounds Collect when ctx has no deadline.
const CollectTimeout = 30 * time.Second

// Collect finds the traces of the requests ids sent since since, through
// the router's spans, and breaks each down. Traces still arriving (the
// exporters batch) are waited for until ctx ends (or CollectTimeout); then
// what is missing or incomplete is reported, not an error.
func (c *Client) Collect(ctx context.Context, ids []string, since time.Time) (Collected, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, CollectTimeout)
		defer cancel()
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var out Collected
	for {
		trs, err := c.Find(ctx, Query{Service: "router", Operation: RouterGenerate, Start: since.Add(-time.Second), End: time.Now().Add(time.Minute), Limit: 4*len(ids) + 100})
		switch {
		case err != nil && ctx.Err() != nil:
			return out, nil // the last complete poll stands
		case err != nil:
			return out, err
		}
		next := Collected{Hops: map[string]Hops{}}
		incomplete := map[string]bool{}
		for _, tr := range trs {
			h, err := Breakdown(tr)
			if !want[h.RequestID] {
				continue
			}
			if err != nil || h.Spans < h.ExpectedSpans {
				incomplete[h.RequestID] = true
				continue
			}
			next.Hops[h.RequestID] = h
			next.ExpectedSpans += h.ExpectedSpans
			// A lost hedge's spans, when it left any, are not expected:
			// they do not make up for a missing one.
			next.ReceivedSpans += min(h.Spans, h.ExpectedSpans)
		}
		for _, id := range ids {
			if _, ok := next.Hops[id]; ok {
				continue
			}
			if incomplete[id] {
				next.Incomplete = append(next.Incomplete, id)
			} else {
				next.Missing = append(next.Missing, id)
			}
		}
		out = next
		if len(out.Missing) == 0 && len(out.Incomplete) == 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}
