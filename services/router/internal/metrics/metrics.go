// Package metrics defines the router's Prometheus metrics on a registry of
// its own (no global state). Labels carry models, codes, strategies and
// endpoint addresses, never API keys. A model label is only ever a model the
// router knows (one a worker advertises, or a configured alias); any other
// name a client sends is counted under OtherModel, so junk names cannot grow
// the series. All methods are safe for concurrent use, and a nil *Metrics
// records nothing.
package metrics

import (
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
)

// OtherModel is the label of every model name the router does not know.
const OtherModel = "_other"

// MaxUsers bounds the user label of llmrouter_user_tokens_total: the first
// MaxUsers distinct users get their own series, later ones are counted
// under OtherUser (user names come from clients, so they must not grow the
// series without bound).
const MaxUsers = 1000

// OtherUser is the user label past MaxUsers.
const OtherUser = "_other"

// Metrics are the router's instruments.
type Metrics struct {
	known       func(string) bool
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	ttft        *prometheus.HistogramVec
	duration    *prometheus.HistogramVec
	tokens      *prometheus.CounterVec
	decisions   *prometheus.CounterVec
	retries     prometheus.Counter
	fallbacks   *prometheus.CounterVec
	failovers   prometheus.Counter
	attempts    *prometheus.CounterVec
	quotaErrs   prometheus.Counter
	users       *prometheus.CounterVec
	cacheReqs   *prometheus.CounterVec
	semantic    *prometheus.CounterVec
	cacheStores *prometheus.CounterVec
	cacheErrs   prometheus.Counter
	cacheSaved  *prometheus.CounterVec
	cacheTokens *prometheus.CounterVec
	hedges      *prometheus.CounterVec
	hedgeSkips  *prometheus.CounterVec
	hedgeWaste  *prometheus.CounterVec
	hedgeCost   *prometheus.CounterVec
	ensembles   *prometheus.CounterVec

	mu        sync.Mutex
	userNames map[string]bool
}

// New registers the metrics; the pool's endpoints are read at scrape time.
// known reports the model names (besides those the pool's workers
// advertise) that get their own label, such as configured aliases.
func New(p *pool.Pool, known func(string) bool) *Metrics {
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	m := &Metrics{
		known: func(name string) bool { return p.Serves(name) || known != nil && known(name) },
		reg:   prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_requests_total",
			Help: "Generate requests by requested model and final gRPC code."}, []string{"model", "code"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "llmrouter_time_to_first_token_seconds",
			Help: "Time from receiving a request to relaying its first token.", Buckets: latency}, []string{"model"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "llmrouter_request_duration_seconds",
			Help: "Time from receiving a request to its end.", Buckets: latency}, []string{"model"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_tokens_total",
			Help: "Tokens by served model and kind (prompt, completion)."}, []string{"model", "kind"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_routing_decisions_total",
			Help: "Routing decisions by strategy."}, []string{"strategy"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "llmrouter_retries_total",
			Help: "Attempts on another worker after a failure before the first token."}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_fallbacks_total",
			Help: "Requests served by a fallback model, by requested and served model."}, []string{"model", "served_model"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "llmrouter_failovers_total",
			Help: "Streams moved to another worker mid-generation."}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_attempts_total",
			Help: "Attempts by routed model, reason (first, retry, fallback, failover, hedge) and outcome (ok, failed, first_token_timeout, cut, stalled, hedge_lost)."},
			[]string{"model", "reason", "outcome"}),
		users: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_user_tokens_total",
			Help: "Tokens by end user (the request's user field; at most MaxUsers distinct users, the rest as _other) and kind (prompt, completion)."},
			[]string{"user", "kind"}),
		userNames: map[string]bool{},
		quotaErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "llmrouter_quota_store_errors_total",
			Help: "Quota-store (Redis) calls that failed; requests were admitted (fail-open) or refused (fail-closed)."}),
	}
	m.cacheReqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_cache_requests_total",
		Help: "Cacheable requests by requested model and cache result (hit, miss, refresh, off, bypass: the store failed)."}, []string{"model", "result"})
	m.cacheStores = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_cache_stores_total",
		Help: "Answers offered to the response cache by result (stored, oversized: over the entry limit, not stored; error)."}, []string{"result"})
	m.cacheErrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "llmrouter_cache_store_errors_total",
		Help: "Response-cache store (Redis) calls that failed; the cache was bypassed."})
	m.cacheSaved = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_cache_saved_seconds_total",
		Help: "Generation time saved by cache hits (the stored answers' generation times), by requested model."}, []string{"model"})
	m.cacheTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_cache_saved_tokens_total",
		Help: "Tokens cache hits answered without a worker, by requested model and kind (prompt, completion); not in llmrouter_tokens_total."}, []string{"model", "kind"})
	m.semantic = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_semantic_cache_lookups_total",
		Help: "Semantic cache lookups after an exact miss, by requested model and result (hit; empty, below_threshold; negation, number, entity: refused by a guard; evicted, store_error; embed_failed: no embedding in time; embed_busy: too many embeddings in flight)."}, []string{"model", "result"})
	m.reg.MustRegister(m.semantic)
	m.reg.MustRegister(m.cacheReqs, m.cacheStores, m.cacheErrs, m.cacheSaved, m.cacheTokens)
	m.hedges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_hedges_total",
		Help: "Hedged requests by routed model and result (won: the hedge answered first; lost: the first attempt did; failed: neither gave a token)."}, []string{"model", "result"})
	m.hedgeSkips = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_hedges_skipped_total",
		Help: "Hedges due but not started, by routed model and reason (budget, overload: requests waiting for admission, no_endpoint, max_attempts)."}, []string{"model", "reason"})
	m.hedgeWaste = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_hedge_wasted_seconds_total",
		Help: "Worker time spent by attempts that lost a hedge race (cancelled, not billed), by routed model."}, []string{"model"})
	m.hedgeCost = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_hedge_wasted_cost_usd_total",
		Help: "Estimated cost (prompt at the model's input price) of attempts that lost a hedge race, by routed model."}, []string{"model"})
	m.ensembles = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_ensembles_total",
		Help: "Ensemble requests by combiner (first, vote, best-of, judge) and result (ok, failed)."}, []string{"combiner", "result"})
	m.reg.MustRegister(m.hedges, m.hedgeSkips, m.hedgeWaste, m.hedgeCost, m.ensembles)
	m.reg.MustRegister(m.requests, m.ttft, m.duration, m.tokens, m.decisions, m.retries, m.fallbacks, m.failovers, m.attempts, m.quotaErrs, m.users,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&endpoints{pool: p})
	return m
}

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Request records a finished request.
func (m *Metrics) Request(model, code string, d time.Duration) {
	if m == nil {
		return
	}
	model = m.model(model)
	m.requests.WithLabelValues(model, code).Inc()
	m.duration.WithLabelValues(model).Observe(d.Seconds())
}

// FirstToken records the time to first token.
func (m *Metrics) FirstToken(model string, d time.Duration) {
	if m != nil {
		m.ttft.WithLabelValues(m.model(model)).Observe(d.Seconds())
	}
}

// Tokens records a served request's token counts.
func (m *Metrics) Tokens(model string, prompt, completion int) {
	if m != nil {
		model = m.model(model)
		m.tokens.WithLabelValues(model, "prompt").Add(float64(prompt))
		m.tokens.WithLabelValues(model, "completion").Add(float64(completion))
	}
}

// UserTokens records a served request's token counts for its end user
// (nothing for a request that names none).
func (m *Metrics) UserTokens(user string, prompt, completion int) {
	if m == nil || user == "" {
		return
	}
	user = m.user(user)
	m.users.WithLabelValues(user, "prompt").Add(float64(prompt))
	m.users.WithLabelValues(user, "completion").Add(float64(completion))
}

func (m *Metrics) user(name string) string {
	if !utf8.ValidString(name) {
		return OtherUser
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.userNames[name] {
		if len(m.userNames) >= MaxUsers {
			return OtherUser
		}
		m.userNames[name] = true
	}
	return name
}

// model is the label of a model name: itself when known, else OtherModel
// (invalid UTF-8 included, which Prometheus would refuse).
func (m *Metrics) model(name string) string {
	if m.known(name) && utf8.ValidString(name) {
		return name
	}
	return OtherModel
}

// Decision records a routing decision.
func (m *Metrics) Decision(strategy string) {
	if m != nil {
		m.decisions.WithLabelValues(strategy).Inc()
	}
}

// Retry records a retry before the first token.
func (m *Metrics) Retry() {
	if m != nil {
		m.retries.Inc()
	}
}

// Fallback records a request served by another model than requested.
func (m *Metrics) Fallback(model, served string) {
	if m != nil {
		m.fallbacks.WithLabelValues(m.model(model), m.model(served)).Inc()
	}
}

// QuotaStoreError records a failed quota-store call.
func (m *Metrics) QuotaStoreError() {
	if m != nil {
		m.quotaErrs.Inc()
	}
}

// CacheLookup records a cacheable request's cache result.
func (m *Metrics) CacheLookup(model, result string) {
	if m != nil {
		m.cacheReqs.WithLabelValues(m.model(model), result).Inc()
	}
}

// SemanticLookup records a semantic cache lookup's result.
func (m *Metrics) SemanticLookup(model, result string) {
	if m != nil {
		m.semantic.WithLabelValues(m.model(model), result).Inc()
	}
}

// CacheStore records an answer offered to the cache.
func (m *Metrics) CacheStore(result string) {
	if m != nil {
		m.cacheStores.WithLabelValues(result).Inc()
	}
}

// CacheStoreError records a failed cache-store call.
func (m *Metrics) CacheStoreError() {
	if m != nil {
		m.cacheErrs.Inc()
	}
}

// CacheSaved records what a hit saved.
func (m *Metrics) CacheSaved(model string, took time.Duration, prompt, completion int) {
	if m != nil {
		model = m.model(model)
		m.cacheSaved.WithLabelValues(model).Add(took.Seconds())
		m.cacheTokens.WithLabelValues(model, "prompt").Add(float64(prompt))
		m.cacheTokens.WithLabelValues(model, "completion").Add(float64(completion))
	}
}

// WatchSemantic exports the semantic cache index's size at scrape time.
func (m *Metrics) WatchSemantic(stats func() (entries int, bytes, evictions int64)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llmrouter_semantic_cache_entries", Help: "Vectors held by the semantic cache's index."},
			func() float64 { n, _, _ := stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llmrouter_semantic_cache_bytes", Help: "Bytes of vectors, texts and graph links in the semantic cache's index."},
			func() float64 { _, b, _ := stats(); return float64(b) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "llmrouter_semantic_cache_evictions_total", Help: "Vectors the semantic index evicted to stay within its entries."},
			func() float64 { _, _, e := stats(); return float64(e) }),
	)
}

// WatchCache exports an in-process cache's size at scrape time: its
// entries, bytes and evictions so far.
func (m *Metrics) WatchCache(stats func() (entries int, bytes, evictions int64)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llmrouter_cache_entries", Help: "Answers held by the in-memory response cache."},
			func() float64 { n, _, _ := stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llmrouter_cache_bytes", Help: "Bytes held by the in-memory response cache."},
			func() float64 { _, b, _ := stats(); return float64(b) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "llmrouter_cache_evictions_total", Help: "Answers the in-memory response cache evicted to stay within its bytes."},
			func() float64 { _, _, e := stats(); return float64(e) }),
	)
}

// Hedge records a hedged request's result (won, lost, failed).
func (m *Metrics) Hedge(model, result string) {
	if m != nil {
		m.hedges.WithLabelValues(m.model(model), result).Inc()
	}
}

// HedgeSkipped records a hedge that was due but not started, and why.
func (m *Metrics) HedgeSkipped(model, reason string) {
	if m != nil {
		m.hedgeSkips.WithLabelValues(m.model(model), reason).Inc()
	}
}

// HedgeWaste records what an attempt that lost a hedge race spent.
func (m *Metrics) HedgeWaste(model string, took time.Duration, costUSD float64) {
	if m != nil {
		model = m.model(model)
		m.hedgeWaste.WithLabelValues(model).Add(took.Seconds())
		m.hedgeCost.WithLabelValues(model).Add(costUSD)
	}
}

// Ensemble records an ensemble request's end.
func (m *Metrics) Ensemble(combiner, result string) {
	if m != nil {
		m.ensembles.WithLabelValues(combiner, result).Inc()
	}
}

// Failover records a mid-stream move.
func (m *Metrics) Failover() {
	if m != nil {
		m.failovers.Inc()
	}
}

// Attempt records an attempt's end. The model is one a worker advertised
// (never a client-chosen name), so the label set stays bounded; reason and
// outcome are short names (first, retry, ...; ok, failed, ...).
func (m *Metrics) Attempt(model, reason, outcome string) {
	if m != nil {
		m.attempts.WithLabelValues(m.model(model), reason, outcome).Inc()
	}
}

// endpoints exports per-endpoint load from the pool at scrape time.
type endpoints struct{ pool *pool.Pool }

var (
	inFlightDesc = prometheus.NewDesc("llmrouter_endpoint_in_flight", "Requests the router is relaying to the endpoint.", []string{"endpoint"}, nil)
	busyDesc     = prometheus.NewDesc("llmrouter_endpoint_busy", "Endpoint load: the worker's sequences decoding and queued as last reported (status poll or stream trailer), plus the router's requests there since.", []string{"endpoint"}, nil)
	kvDesc       = prometheus.NewDesc("llmrouter_endpoint_kv_cache_usage", "KV-cache use the worker reports, [0, 1].", []string{"endpoint"}, nil)
	healthyDesc  = prometheus.NewDesc("llmrouter_endpoint_healthy", "1 when discovery reports the endpoint healthy and it is not ejected.", []string{"endpoint"}, nil)
	ttftDesc     = prometheus.NewDesc("llmrouter_endpoint_ttft_ewma_seconds", "Smoothed observed time to first token.", []string{"endpoint"}, nil)
)

func (e *endpoints) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{inFlightDesc, busyDesc, kvDesc, healthyDesc, ttftDesc} {
		ch <- d
	}
}

func (e *endpoints) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, ep := range e.pool.Endpoints() {
		healthy := 0.0
		if ep.Healthy() && !ep.Ejected(now) {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(ep.InFlight()), ep.Address)
		ch <- prometheus.MustNewConstMetric(busyDesc, prometheus.GaugeValue, float64(ep.Busy()), ep.Address)
		ch <- prometheus.MustNewConstMetric(kvDesc, prometheus.GaugeValue, ep.Status().GetKvCacheUsage(), ep.Address)
		ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, healthy, ep.Address)
		ch <- prometheus.MustNewConstMetric(ttftDesc, prometheus.GaugeValue, ep.TTFT().Seconds(), ep.Address)
	}
}
