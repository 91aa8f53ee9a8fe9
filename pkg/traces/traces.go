// Package traces reads a run's traces back from Jaeger's HTTP query API
// and breaks each request down per hop: the router's admission wait,
// decision and relay, the network and gRPC between router and worker, and
// the worker's queue, prefill, first token and decode, from the spans'
// attributes (OpenTelemetry GenAI names and llm.*). Summaries give p50 and
// p99 per hop over many requests; Waterfall lays out one request.
//
// A Client is safe for concurrent use; the other values are plain data.
package traces

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Operation names of the spans a request leaves.
const (
	RouterGenerate = "llmrouter.router.v1.RouterService/Generate"
	EngineGenerate = "llmrouter.engine.v1.EngineService/Generate"
)

// Span is one span of a trace.
type Span struct {
	TraceID, SpanID, ParentID string
	Service, Operation        string
	// Kind is the span.kind tag: "server", "client", "internal".
	Kind     string
	Start    time.Time
	Duration time.Duration
	Tags     map[string]any
}

// End is when the span ended.
func (s Span) End() time.Time { return s.Start.Add(s.Duration) }

// Float is a numeric tag (0 when absent).
func (s Span) Float(key string) float64 {
	switch v := s.Tags[key].(type) {
	case float64:
		return v
	case string:
		f, _ := strconv.ParseFloat(v, 64)
		return f
	}
	return 0
}

// Ms is a tag holding milliseconds, as a duration.
func (s Span) Ms(key string) time.Duration {
	return time.Duration(s.Float(key) * float64(time.Millisecond))
}

// String is a tag as text ("" when absent).
func (s Span) String(key string) string {
	if v, ok := s.Tags[key]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// Trace is one trace's spans, in start order.
type Trace struct {
	ID    string
	Spans []Span
}

// Client reads from a Jaeger query service.
type Client struct {
	// Base is the query API's URL, e.g. http://127.0.0.1:16686.
	Base string
	HTTP *http.Client
}

// Query selects traces.
type Query struct {
	Service, Operation string
	// Tags every returned trace must have on some span, e.g.
	// {"llm.request_id": "r1"}.
	Tags       map[string]string
	Start, End time.Time
	// Limit is the most traces returned (Jaeger's default is 20).
	Limit int
}

// Find returns the traces matching q.
func (c *Client) Find(ctx context.Context, q Query) ([]Trace, error) {
	v := url.Values{"service": {q.Service}}
	if q.Operation != "" {
		v.Set("operation", q.Operation)
	}
	if len(q.Tags) > 0 {
		b, _ := json.Marshal(q.Tags)
		v.Set("tags", string(b))
	}
	if !q.Start.IsZero() {
		v.Set("start", strconv.FormatInt(q.Start.UnixMicro(), 10))
	}
	if !q.End.IsZero() {
		v.Set("end", strconv.FormatInt(q.End.UnixMicro(), 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return c.get(ctx, "/api/traces?"+v.Encode())
}

// Get returns one trace by its id.
func (c *Client) Get(ctx context.Context, traceID string) (Trace, error) {
	trs, err := c.get(ctx, "/api/traces/"+url.PathEscape(traceID))
	if err != nil {
		return Trace{}, err
	}
	if len(trs) != 1 {
		return Trace{}, fmt.Errorf("jaeger: trace %s: %d traces in the answer", traceID, len(trs))
	}
	return trs[0], nil
}

// wire is Jaeger's JSON (its UI's format).
type wire struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			TraceID       string `json:"traceID"`
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			References    []struct {
				RefType string `json:"refType"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			StartTime int64 `json:"startTime"` // µs
			Duration  int64 `json:"duration"`  // µs
			Tags      []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"tags"`
			ProcessID string `json:"processID"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

func (c *Client) get(ctx context.Context, path string) ([]Trace, error) {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.Base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jaeger: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("jaeger: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger: %s: HTTP %d: %.200s", path, resp.StatusCode, body)
	}
	var w wire
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("jaeger: %s: %w", path, err)
	}
	if len(w.Errors) > 0 {
		return nil, fmt.Errorf("jaeger: %s: %s", path, w.Errors[0].Msg)
	}
	out := make([]Trace, 0, len(w.Data))
	for _, d := range w.Data {
		tr := Trace{ID: d.TraceID}
		for _, s := range d.Spans {
			sp := Span{
				TraceID: s.TraceID, SpanID: s.SpanID, Operation: s.OperationName,
				Service:  d.Processes[s.ProcessID].ServiceName,
				Start:    time.UnixMicro(s.StartTime),
				Duration: time.Duration(s.Duration) * time.Microsecond,
				Tags:     make(map[string]any, len(s.Tags)),
			}
			for _, r := range s.References {
				if r.RefType == "CHILD_OF" {
					sp.ParentID = r.SpanID
				}
			}
			for _, t := range s.Tags {
				sp.Tags[t.Key] = t.Value
			}
			sp.Kind = sp.String("span.kind")
			tr.Spans = append(tr.Spans, sp)
		}
		sort.SliceStable(tr.Spans, func(i, j int) bool { return tr.Spans[i].Start.Before(tr.Spans[j].Start) })
		out = append(out, tr)
	}
	return out, nil
}
