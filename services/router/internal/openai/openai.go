// Package openai serves the router's HTTP APIs. OpenAI's: POST
// /v1/chat/completions and /v1/completions (streaming as server-sent events
// in OpenAI's framing, including stream_options.include_usage, or whole
// responses), POST /v1/responses, GET /v1/models and POST /v1/embeddings,
// with OpenAI's error shape and status codes. Anthropic's: POST
// /v1/messages (its SSE event sequence) and /v1/messages/count_tokens, with
// its error shape and status codes (messages.go). Requests become Router
// requests and go through the same routing, retries and failover as gRPC
// ones. A Handler is safe for concurrent use.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Router is what the handler needs of the router.
type Router interface {
	Route(ctx context.Context, req *routerv1.GenerateRequest, sink interface {
		Send(*routerv1.GenerateResponse) error
	}) error
	ListModels(ctx context.Context, req *routerv1.ListModelsRequest) (*routerv1.ListModelsResponse, error)
	Embed(ctx context.Context, model string, inputs []string) (*enginev1.EmbedResponse, error)
	CountTokens(ctx context.Context, model string, prompt *genv1.Prompt) (int32, error)
}

// maxBody bounds a request body.
const maxBody = 8 << 20

// Handler is the HTTP API.
type Handler struct {
	router Router
	opt    Options
	mux    *http.ServeMux
	now    func() time.Time
}

// Options configure the handler.
type Options struct {
	// WriteTimeout bounds each write of a streamed response: a client that
	// stops reading is cut after it (and its generation cancelled).
	// Default 30s.
	WriteTimeout time.Duration
	// PingInterval spaces the ping events of a Messages API stream that
	// has gone quiet. Default 10s.
	PingInterval time.Duration
}

// New returns the handler.
func New(r Router, o Options) *Handler {
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 10 * time.Second
	}
	h := &Handler{router: r, opt: o, mux: http.NewServeMux(), now: time.Now}
	h.mux.HandleFunc("POST /v1/chat/completions", h.chat)
	h.mux.HandleFunc("POST /v1/completions", h.completions)
	h.mux.HandleFunc("GET /v1/models", h.models)
	h.mux.HandleFunc("POST /v1/embeddings", h.embeddings)
	h.mux.HandleFunc("POST /v1/responses", h.responses)
	h.mux.HandleFunc("POST /v1/messages", h.messages)
	h.mux.HandleFunc("POST /v1/messages/count_tokens", h.countTokens)
	h.mux.HandleFunc("/v1/responses/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "not_found", "responses are not stored by this router, so "+r.Method+" "+r.URL.Path+" finds none")
	})
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "not_found", fmt.Sprintf("unknown endpoint %s %s", r.Method, r.URL.Path))
	})
	return h
}

// ServeHTTP serves the API. The Authorization (or x-api-key) header travels
// as the gRPC metadata the router authenticates, so both APIs share one key
// check.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	md := metadata.MD{}
	if a := r.Header.Get("Authorization"); a != "" {
		md.Set("authorization", a)
	} else if k := r.Header.Get("X-Api-Key"); k != "" {
		md.Set("x-api-key", k)
	}
	if cc := r.Header.Values("Cache-Control"); len(cc) > 0 {
		md.Set("cache-control", cc...)
	}
	dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: h.opt.WriteTimeout}
	ctx := grpc.NewContextWithServerTransportStream(metadata.NewIncomingContext(r.Context(), md), &dw.headers)
	h.mux.ServeHTTP(dw, r.WithContext(ctx))
}

// deadlineWriter bounds every write of a response, streamed or not, by the
// write timeout: a client that stops reading is cut, never holds a handler.
// It also adds the response headers the router sets (headers) as the
// response's header is written.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	headers headerStream
	wrote   bool
}

func (w *deadlineWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		w.headers.writeTo(w.ResponseWriter.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.ResponseWriter.Write(b)
}

// headerStream receives the response headers the router sets with
// grpc.SetHeader (x-cache) while it serves an HTTP request; they are
// written with the response's header. The choices of one response (n > 1)
// each set theirs: equal values are given once, differing ones as a list.
type headerStream struct {
	mu     sync.Mutex
	md     metadata.MD
	closed bool
}

var _ grpc.ServerTransportStream = (*headerStream)(nil)

func (h *headerStream) Method() string { return "" }

func (h *headerStream) SetHeader(md metadata.MD) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errors.New("response headers already written")
	}
	if h.md == nil {
		h.md = metadata.MD{}
	}
	for k, vs := range md {
		h.md[k] = append(h.md[k], vs...)
	}
	return nil
}

func (h *headerStream) SendHeader(md metadata.MD) error { return h.SetHeader(md) }

func (h *headerStream) SetTrailer(metadata.MD) error { return nil }

func (h *headerStream) writeTo(hdr http.Header) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for k, vs := range h.md {
		hdr.Set(k, strings.Join(slices.Compact(slices.Clone(vs)), ", "))
	}
}

// Unwrap lets http.ResponseController reach the connection's own writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// apiError is OpenAI's error body.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func writeError(w http.ResponseWriter, httpStatus int, typ, param, code, msg string) {
	e := apiError{Message: msg, Type: typ}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_ = json.NewEncoder(w).Encode(map[string]apiError{"error": e})
}

// statusError maps a gRPC status to OpenAI's HTTP status, type and code.
func statusError(err error) (int, apiError) {
	st := status.Convert(err)
	msg := st.Message()
	code := func(s string) *string { return &s }
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest, apiError{Message: msg, Type: "invalid_request_error"}
	case codes.NotFound:
		return http.StatusNotFound, apiError{Message: msg, Type: "invalid_request_error", Code: code("model_not_found")}
	case codes.Unauthenticated:
		return http.StatusUnauthorized, apiError{Message: msg, Type: "authentication_error", Code: code("invalid_api_key")}
	case codes.PermissionDenied:
		return http.StatusForbidden, apiError{Message: msg, Type: "permission_error"}
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests, apiError{Message: msg, Type: "rate_limit_error", Code: code("rate_limit_exceeded")}
	case codes.Unavailable:
		return http.StatusServiceUnavailable, apiError{Message: msg, Type: "server_error", Code: code("service_unavailable")}
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout, apiError{Message: msg, Type: "server_error", Code: code("timeout")}
	case codes.Canceled:
		return 499, apiError{Message: msg, Type: "server_error"}
	}
	return http.StatusInternalServerError, apiError{Message: msg, Type: "server_error"}
}

func writeStatus(w http.ResponseWriter, err error) { writeStatusParam(w, err, "") }

// writeStatusParam is writeStatus naming param as the field at fault when
// err is a missing capability (the request field that needs it).
func writeStatusParam(w http.ResponseWriter, err error, param string) {
	code, e := statusError(err)
	if param != "" && rpcerr.Reason(err) == rpcerr.ReasonCapabilityMissing {
		e.Param = &param
	}
	if rpcerr.Reason(err) == rpcerr.ReasonCacheOption {
		p := "cache"
		e.Param = &p
	}
	w.Header().Set("Content-Type", "application/json")
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		if d := rpcerr.RetryAfter(err); d > 0 {
			// Whole seconds, rounded up: a client that waits this long and
			// retries is past the hint.
			w.Header().Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
		} else if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]apiError{"error": e})
}

// decode reads a JSON body strictly enough to report a precise error.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeBody(w, r, v, false)
}

// decodeStrict is decode refusing fields v does not have (the Responses
// API, whose unknown fields are refused as OpenAI refuses them, rather
// than ignored).
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeBody(w, r, v, true)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any, strict bool) bool {
	if e := readBody(w, r, v, strict); e != nil {
		writeError(w, e.status, "invalid_request_error", e.param, e.code, e.msg)
		return false
	}
	return true
}

// bodyError is why a request body could not be decoded: an HTTP status,
// the field at fault (an unknown one's path) and a message.
type bodyError struct {
	status           int
	param, code, msg string
}

func readBody(w http.ResponseWriter, r *http.Request, v any, strict bool) *bodyError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		if strict {
			dec.DisallowUnknownFields()
		}
		err = dec.Decode(v)
	}
	if err == nil {
		return nil
	}
	var tooBig *http.MaxBytesError
	field, unknown := strings.CutPrefix(err.Error(), "json: unknown field ")
	switch {
	case unknown:
		name, _ := strconv.Unquote(field)
		if path := unknownPath(body, reflect.TypeOf(v), name); path != "" {
			name = path
		}
		return &bodyError{http.StatusBadRequest, name, "unknown_parameter", fmt.Sprintf("unknown parameter: %s is not a field of this endpoint's request", strconv.Quote(name))}
	case errors.As(err, &tooBig):
		return &bodyError{http.StatusRequestEntityTooLarge, "", "", fmt.Sprintf("request body over %d bytes", maxBody)}
	case errors.Is(err, io.EOF):
		return &bodyError{http.StatusBadRequest, "", "", "request body is empty: expected a JSON object"}
	}
	return &bodyError{http.StatusBadRequest, "", "", "request body is not valid JSON: " + err.Error()}
}

// unknownPath is where in body (as OpenAI writes a param: text.format.x,
// input[0].y) the first field named name that type t does not have is
// ("" when it cannot tell, as inside values with their own decoding).
func unknownPath(body []byte, t reflect.Type, name string) string {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	return findUnknown(v, t, "", name)
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

func findUnknown(v any, t reflect.Type, path, name string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		return ""
	}
	join := func(key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	switch v := v.(type) {
	case map[string]any:
		switch t.Kind() {
		case reflect.Map:
			for _, key := range slices.Sorted(maps.Keys(v)) {
				if p := findUnknown(v[key], t.Elem(), join(key), name); p != "" {
					return p
				}
			}
		case reflect.Struct:
			for _, key := range slices.Sorted(maps.Keys(v)) {
				f, ok := jsonField(t, key)
				if !ok {
					if strings.EqualFold(key, name) {
						return join(key)
					}
					continue
				}
				if p := findUnknown(v[key], f.Type, join(key), name); p != "" {
					return p
				}
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, e := range v {
				if p := findUnknown(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), name); p != "" {
					return p
				}
			}
		}
	}
	return ""
}

// jsonField is struct t's field that encoding/json decodes key into
// (names match case-insensitively, as encoding/json matches them).
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous && f.Type.Kind() == reflect.Struct {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if strings.EqualFold(tag, key) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// stopList accepts OpenAI's "stop": a string or an array of strings.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New(`"stop" must be a string or an array of strings`)
	}
	*s = many
	return nil
}

// common holds the fields chat and completions share.
type common struct {
	Model            string             `json:"model"`
	Stream           bool               `json:"stream"`
	StreamOptions    *streamOptions     `json:"stream_options"`
	MaxTokens        *int32             `json:"max_tokens"`
	MaxCompletion    *int32             `json:"max_completion_tokens"`
	Temperature      *float32           `json:"temperature"`
	TopP             *float32           `json:"top_p"`
	Stop             stopList           `json:"stop"`
	Seed             *uint64            `json:"seed"`
	N                *int               `json:"n"`
	User             string             `json:"user"`
	FrequencyPenalty *float32           `json:"frequency_penalty"`
	PresencePenalty  *float32           `json:"presence_penalty"`
	LogitBias        map[string]float32 `json:"logit_bias"`
	// Extensions understood by this router (OpenAI clients pass them as
	// extra body fields).
	TopK          int32    `json:"top_k"`
	MinP          float32  `json:"min_p"`
	RepeatPenalty *float32 `json:"repeat_penalty"`
	Strategy      string   `json:"strategy"`
	Fallbacks     []string `json:"fallback_models"`
	SessionID     string   `json:"session_id"`
	// Cache: "off" (neither read nor store) or "refresh" (generate anew
	// and replace the stored answer), for deterministic requests.
	Cache string `json:"cache"`
	// Ensemble: several models answer and a combiner picks (an extension,
	// as routing.ensemble).
	Ensemble *ensembleField `json:"ensemble"`

	// blame is the request field a missing capability is reported on.
	blame fields
}

// choices is the number of choices asked for.
func (c *common) choices() int {
	if c.N == nil {
		return 1
	}
	return *c.N
}

// ensembleField is the ensemble extension: {"models": [...], "combiner":
// "first" | "vote" | "best-of" | "judge", "judge_model": ..., "quorum": n}.
type ensembleField struct {
	Models     []string `json:"models"`
	Combiner   string   `json:"combiner"`
	JudgeModel string   `json:"judge_model"`
	Quorum     int32    `json:"quorum"`
}

var combiners = map[string]routerv1.Combiner{
	"first": routerv1.Combiner_COMBINER_FIRST, "vote": routerv1.Combiner_COMBINER_VOTE,
	"best-of": routerv1.Combiner_COMBINER_BEST_OF, "best_of": routerv1.Combiner_COMBINER_BEST_OF, "judge": routerv1.Combiner_COMBINER_JUDGE,
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// toRouter checks the shared fields and builds the sampling and routing
// parts of a router request.
func (c *common) toRouter(w http.ResponseWriter) (*genv1.SamplingParams, *routerv1.RoutingOptions, bool) {
	if c.Model == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "model", "", "you must provide a model parameter")
		return nil, nil, false
	}
	if c.N != nil && (*c.N < 1 || *c.N > maxChoices) {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "n", "", fmt.Sprintf("n must be 1 to %d, got %d", maxChoices, *c.N))
		return nil, nil, false
	}
	if c.StreamOptions != nil && !c.Stream {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "stream_options", "", "stream_options is only allowed when stream is true")
		return nil, nil, false
	}
	s := &genv1.SamplingParams{Temperature: c.Temperature, TopP: c.TopP, Seed: c.Seed, Stop: c.Stop,
		TopK: c.TopK, MinP: c.MinP, RepeatPenalty: c.RepeatPenalty}
	for _, p := range []struct {
		name string
		v    *float32
		to   *float32
	}{{"frequency_penalty", c.FrequencyPenalty, &s.FrequencyPenalty}, {"presence_penalty", c.PresencePenalty, &s.PresencePenalty}} {
		if p.v == nil {
			continue
		}
		if math.IsNaN(float64(*p.v)) || *p.v < -2 || *p.v > 2 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", p.name, "", fmt.Sprintf("%s must be -2 to 2, got %v", p.name, *p.v))
			return nil, nil, false
		}
		*p.to = *p.v
	}
	if len(c.LogitBias) > enginehost.MaxLogitBias {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "logit_bias", "", fmt.Sprintf("logit_bias has %d entries, over the limit of %d", len(c.LogitBias), enginehost.MaxLogitBias))
		return nil, nil, false
	}
	for k, v := range c.LogitBias {
		id, err := strconv.ParseUint(k, 10, 32)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "logit_bias", "", fmt.Sprintf("logit_bias key %q is not a token id (a non-negative integer)", k))
			return nil, nil, false
		}
		if math.IsNaN(float64(v)) || v < -100 || v > 100 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "logit_bias", "", fmt.Sprintf("logit_bias[%q] = %v is out of range: want -100 to 100", k, v))
			return nil, nil, false
		}
		if s.LogitBias == nil {
			s.LogitBias = map[uint32]float32{}
		}
		s.LogitBias[uint32(id)] = v
	}
	if len(c.User) > enginehost.MaxUser {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "user", "", fmt.Sprintf("user is %d bytes, over the limit of %d", len(c.User), enginehost.MaxUser))
		return nil, nil, false
	}
	switch {
	case c.MaxCompletion != nil:
		s.MaxTokens = *c.MaxCompletion
	case c.MaxTokens != nil:
		s.MaxTokens = *c.MaxTokens
	}
	if s.MaxTokens < 0 || ((c.MaxCompletion != nil || c.MaxTokens != nil) && s.MaxTokens == 0) {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "max_tokens", "", fmt.Sprintf("max_tokens must be at least 1, got %d", s.MaxTokens))
		return nil, nil, false
	}
	ro := &routerv1.RoutingOptions{Strategy: c.Strategy, FallbackModels: c.Fallbacks, SessionId: c.SessionID}
	switch c.Cache {
	case "":
	case "off":
		ro.Cache = &routerv1.CacheOptions{Mode: routerv1.CacheMode_CACHE_MODE_OFF}
	case "refresh":
		ro.Cache = &routerv1.CacheOptions{Mode: routerv1.CacheMode_CACHE_MODE_REFRESH}
	default:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "cache", "", fmt.Sprintf("cache must be \"off\" or \"refresh\", got %q", c.Cache))
		return nil, nil, false
	}
	if e := c.Ensemble; e != nil {
		comb, ok := combiners[e.Combiner]
		switch {
		case !ok:
			writeError(w, http.StatusBadRequest, "invalid_request_error", "ensemble.combiner", "", fmt.Sprintf("ensemble.combiner must be \"first\", \"vote\", \"best-of\" or \"judge\", got %q", e.Combiner))
			return nil, nil, false
		case c.choices() > 1:
			writeError(w, http.StatusBadRequest, "invalid_request_error", "n", "", "n must be 1 with an ensemble: it sends one answer")
			return nil, nil, false
		}
		ro.Ensemble = &routerv1.Ensemble{Models: e.Models, Combiner: comb, JudgeModel: e.JudgeModel, Quorum: e.Quorum}
	}
	return s, ro, true
}

func finishReason(f genv1.FinishReason) string {
	switch f {
	case genv1.FinishReason_FINISH_REASON_LENGTH:
		return "length"
	case genv1.FinishReason_FINISH_REASON_CONTENT_FILTER:
		return "content_filter"
	case genv1.FinishReason_FINISH_REASON_TOOL_CALLS:
		return "tool_calls"
	default:
		return "stop"
	}
}

type usage struct {
	PromptTokens     int32 `json:"prompt_tokens"`
	CompletionTokens int32 `json:"completion_tokens"`
	TotalTokens      int32 `json:"total_tokens"`
}

// add counts one choice's usage: the prompt once (the choices share it),
// every choice's completion.
func (u *usage) add(g *genv1.Usage, first bool) {
	if first {
		u.PromptTokens = g.GetPromptTokens()
	}
	u.CompletionTokens += g.GetCompletionTokens()
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
}

// collector gathers a whole response.
type collector struct {
	id, model string
	text      strings.Builder
	logprobs  []*genv1.TokenLogprobs
	calls     []*genv1.ToolCall // assembled from the deltas, by index
	end       *genv1.EndEvent
}

func (c *collector) Send(m *routerv1.GenerateResponse) error {
	switch e := m.GetEvent().(type) {
	case *routerv1.GenerateResponse_Start:
		c.id, c.model = e.Start.GetRequestId(), e.Start.GetModel()
	case *routerv1.GenerateResponse_Delta:
		c.text.WriteString(e.Delta.GetText())
		c.logprobs = append(c.logprobs, e.Delta.GetLogprobs()...)
		for _, d := range e.Delta.GetToolCalls() {
			i := int(d.GetIndex())
			if i < 0 || i > len(c.calls) {
				return status.Errorf(codes.Internal, "tool call delta for call %d after %d calls", i, len(c.calls))
			}
			if i == len(c.calls) {
				c.calls = append(c.calls, &genv1.ToolCall{Id: d.GetId(), Name: d.GetName()})
			}
			c.calls[i].Arguments += d.GetArguments()
		}
	case *routerv1.GenerateResponse_End:
		c.end = e.End
	}
	return nil
}

// sse writes server-sent events, one JSON object per event, flushed. The
// handler's writer (deadlineWriter) bounds each write by the write timeout.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func newSSE(w http.ResponseWriter) *sse {
	return &sse{w: w, rc: http.NewResponseController(w)}
}

// flush sends what was written; an error means the client is gone or
// stopped reading (its write deadline passed).
func (s *sse) flush() error {
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func (s *sse) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	s.w.WriteHeader(http.StatusOK)
}

func (s *sse) event(v any) error {
	s.start()
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(s.w, "data: %s\n\n", b); err != nil {
		return err
	}
	return s.flush()
}

// named writes one event with an event: line (the Responses and Messages
// APIs' framing), flushed.
func (s *sse) named(typ string, v any) error {
	s.start()
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", typ, b); err != nil {
		return err
	}
	return s.flush()
}

// comment writes an SSE comment line, which clients ignore (an ensemble's
// progress).
func (s *sse) comment(text string) error {
	s.start()
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", strings.ReplaceAll(text, "\n", " ")); err != nil {
		return err
	}
	return s.flush()
}

// progressComment describes an ensemble's progress event.
func progressComment(p *routerv1.EnsembleProgress) string {
	return fmt.Sprintf("ensemble member %d (%s) %s; %d of %d finished", p.GetMember(), p.GetModel(), p.GetState(), p.GetFinished(), p.GetMembers())
}

func (s *sse) done() {
	s.start()
	_, _ = io.WriteString(s.w, "data: [DONE]\n\n")
	_ = s.flush()
}

// fail reports an error: as a JSON error response before the stream
// started, as an error event after.
func (s *sse) fail(err error, param string) {
	if !s.started {
		writeStatusParam(s.w, err, param)
		return
	}
	_, e := statusError(err)
	_ = s.event(map[string]apiError{"error": e})
}
