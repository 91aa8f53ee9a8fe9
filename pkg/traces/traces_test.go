package traces

import (
	"strings"
	"testing"
	"time"
)

// trace builds a request's spans as the mesh leaves them: the router's
// server span, its client span for the attempt, the worker's server span.
func trace(t0 time.Time) Trace {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	return Trace{ID: "t1", Spans: []Span{
		{SpanID: "r", Service: "router", Kind: "server", Operation: RouterGenerate, Start: t0, Duration: ms(100),
			Tags: map[string]any{"llm.request_id": "req-1", "gen_ai.request.model": "m", "llm.admission_wait_ms": 1.5, "llm.decision_ms": 0.25,
				"llm.relay_ms": 97.0, "llm.attempts": 1.0, "llm.failovers": 0.0, "gen_ai.usage.input_tokens": 12.0, "gen_ai.usage.output_tokens": 30.0}},
		{SpanID: "c", ParentID: "r", Service: "router", Kind: "client", Operation: EngineGenerate, Start: t0.Add(ms(2)), Duration: ms(96)},
		{SpanID: "w", ParentID: "c", Service: "engine-gguf", Kind: "server", Operation: EngineGenerate, Start: t0.Add(ms(3)), Duration: ms(94),
			Tags: map[string]any{"llm.queue_wait_ms": 4.0, "llm.prefill_ms": 10.0, "llm.ttft_ms": 15.0, "llm.decode_ms": 78.0, "llm.batch_size_max": 3.0,
				"llm.prefill_tokens": 12.0, "gen_ai.usage.cache_read.input_tokens": 0.0}},
	}}
}

func TestBreakdown(t *testing.T) {
	h, err := Breakdown(trace(time.Unix(100, 0)))
	if err != nil {
		t.Fatal(err)
	}
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	want := Hops{RequestID: "req-1", Model: "m", Total: ms(100), AdmissionWait: ms(1.5), Decision: ms(0.25), Relay: ms(97),
		ToWorker: ms(3), Network: ms(2), Worker: ms(94), Queue: ms(4), Prefill: ms(10), TTFT: ms(15), Decode: ms(78), BatchMax: 3,
		Attempts: 1, InputTokens: 12, OutputTokens: 30, PrefillTokens: 12, Spans: 3, ExpectedSpans: 3}
	if h != want {
		t.Fatalf("got  %+v\nwant %+v", h, want)
	}
	tr := trace(time.Unix(100, 0))
	tr.Spans = tr.Spans[:2] // the worker's span never arrived
	if _, err := Breakdown(tr); err == nil || !strings.Contains(err.Error(), "no worker span") {
		t.Fatalf("incomplete trace: %v", err)
	}
}

func TestBreakdownLeavesOutLostHedges(t *testing.T) {
	tr := trace(time.Unix(100, 0))
	// Two attempts, one cancelled (its hedge race lost) before its call
	// began: it left no span, and the trace is complete without it.
	tr.Spans[0].Tags["llm.attempts"], tr.Spans[0].Tags["llm.hedges_lost"] = 2.0, 1.0
	h, err := Breakdown(tr)
	if err != nil || h.Spans != 3 || h.ExpectedSpans != 3 {
		t.Fatalf("spans %d of %d expected: %v", h.Spans, h.ExpectedSpans, err)
	}
	delete(tr.Spans[0].Tags, "llm.hedges_lost") // an ordinary second attempt must leave its spans
	if h, _ := Breakdown(tr); h.ExpectedSpans != 5 {
		t.Fatalf("expected spans %d, want 5", h.ExpectedSpans)
	}
}

func TestPercentileAndSummary(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if p := Percentile(ds, 50); p != 50*time.Millisecond {
		t.Errorf("p50 %v", p)
	}
	if p := Percentile(ds, 99); p != 99*time.Millisecond {
		t.Errorf("p99 %v", p)
	}
	if p := Percentile(ds[:1], 99); p != time.Millisecond {
		t.Errorf("p99 of one %v", p)
	}
	h, _ := Breakdown(trace(time.Unix(100, 0)))
	rows := Summarize([]Hops{h, h})
	if rows[0].Hop != "total (router span)" || rows[0].N != 2 || rows[0].P50 != 100*time.Millisecond {
		t.Errorf("%+v", rows[0])
	}
	if last := rows[len(rows)-1]; last.P50 != 3*time.Millisecond { // 100 − 3 − 94
		t.Errorf("after the worker: %+v", last)
	}
	if tab := Table(rows); !strings.Contains(tab, "| worker: prefill | 2 | 10.00 | 10.00 | 10.00 |") {
		t.Errorf("table:\n%s", tab)
	}
}

func TestWaterfall(t *testing.T) {
	w := Waterfall(trace(time.Unix(100, 0)))
	lines := strings.Split(strings.TrimSpace(w), "\n")
	if len(lines) != 5 || !strings.Contains(lines[2], "router server "+RouterGenerate) ||
		!strings.Contains(lines[3], "  router client") || !strings.Contains(lines[4], "    engine-gguf server") ||
		!strings.Contains(lines[4], "prefill_ms=10") || !strings.HasPrefix(strings.TrimSpace(lines[4]), "3.00") {
		t.Fatalf("waterfall:\n%s", w)
	}
}
