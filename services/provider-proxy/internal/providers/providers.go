// Package providers is the small interface every hosted-API upstream
// implements (one package per provider), plus the shared mapping of HTTP
// failures to gRPC statuses and the redaction of secrets from messages.
package providers

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Message is one chat turn; Role is "system", "user", "assistant" or
// "tool".
type Message struct {
	Role, Content string
	// ToolCalls are an assistant turn's calls.
	ToolCalls []*generationv1.ToolCall
	// ToolCallID, for a tool turn, names the call whose result Content is.
	ToolCallID string
	// Name is the turn's author (OpenAI's message name); Anthropic's API
	// has no such field, so it drops it.
	Name string
}

// Request is a provider-neutral generation request.
type Request struct {
	Model       string // the upstream's model name
	Messages    []Message
	MaxTokens   int // 0: the provider's default
	Temperature *float64
	TopP        *float64
	TopK        int
	Seed        *int64
	Stop        []string
	// FrequencyPenalty and PresencePenalty: 0 leaves them unset.
	FrequencyPenalty, PresencePenalty float64
	// LogitBias maps the upstream's token ids to a bias (-100 to 100).
	LogitBias map[uint32]float32
	// User is the end user the request is made for (abuse tracking).
	User string
	// Format is a structured-output request (nil: free text), passed to
	// providers that support it.
	Format *generationv1.ResponseFormat
	// Prefill is a partial answer the model continues (sent as a trailing
	// assistant message); only for models configured to accept it.
	Prefill string
	// Tools the model may call, the tool choice (nil: the provider's
	// default, auto) and whether it may call several at once (nil: the
	// provider's default).
	Tools             []*generationv1.Tool
	ToolChoice        *generationv1.ToolChoice
	ParallelToolCalls *bool
}

// Chunk is streamed text and tool-call pieces (a call's first piece has
// its id and name), or the end with usage.
type Chunk struct {
	Text                           string
	ToolCalls                      []*generationv1.ToolCallDelta
	Done                           bool
	Finish                         generationv1.FinishReason
	PromptTokens, CompletionTokens int
	// StopSequence is the stop sequence the upstream stopped at, when it
	// says which (Anthropic does).
	StopSequence string
}

// Stream yields chunks; Close cancels the upstream call.
type Stream interface {
	Next() (Chunk, error)
	Close()
}

// Provider starts streams. Implementations do not retry: the proxy owns the
// retry policy.
type Provider interface {
	Stream(ctx context.Context, r Request) (Stream, error)
}

// Counter is a provider with a token-counting endpoint: it counts what
// Stream would send for r.
type Counter interface {
	CountTokens(ctx context.Context, r Request) (int, error)
}

// Spec is what a provider is made from.
type Spec struct {
	Name, BaseURL, APIKey string
	HTTP                  *http.Client
}

// Factory makes a provider of one kind.
type Factory func(Spec) (Provider, error)

// Registry maps provider kinds ("openai", "anthropic", ...) to factories.
// Fill it at start-up; it is read-only afterwards.
type Registry struct{ kinds map[string]Factory }

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{kinds: map[string]Factory{}} }

// Add registers a kind; registering one twice is a programming error.
func (r *Registry) Add(kind string, f Factory) {
	if _, dup := r.kinds[kind]; dup {
		panic("provider kind " + kind + " registered twice")
	}
	r.kinds[kind] = f
}

// New makes a provider of kind.
func (r *Registry) New(kind string, s Spec) (Provider, error) {
	f, ok := r.kinds[kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q (known: %s)", kind, strings.Join(r.Kinds(), ", "))
	}
	return f(s)
}

// Kinds lists the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	out := make([]string, 0, len(r.kinds))
	for k := range r.kinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var keyLike = regexp.MustCompile(`(sk|key|token)-[A-Za-z0-9_\-*.]{4,}`)

// Redact removes the given secrets and anything shaped like an API key
// from a message that may have come from an upstream (OpenAI, for one,
// echoes a masked key in its 401 message).
func Redact(msg string, secrets ...string) string {
	for _, s := range secrets {
		if len(s) >= 4 {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return keyLike.ReplaceAllString(msg, "[redacted]")
}

// HTTPError maps an upstream HTTP failure to a gRPC status error. code is
// the upstream's error code where its body has one ("context_length_exceeded").
// Failures that concern the model carry an rpcerr reason, so the router can
// tell them from a failure of the proxy itself.
func HTTPError(provider string, status int, header http.Header, code, msg string) error {
	msg = provider + ": " + msg
	switch {
	case isContextLength(code, msg):
		return rpcerr.WithReason(rpcerr.InvalidArgument("%s", msg), rpcerr.ReasonContextLength)
	case isContentFilter(code):
		return rpcerr.WithReason(rpcerr.InvalidArgument("%s (the provider's content policy)", msg), rpcerr.ReasonContentFiltered)
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity || status == http.StatusRequestEntityTooLarge:
		return rpcerr.InvalidArgument("%s", msg)
	case status == http.StatusUnauthorized:
		return rpcerr.Unauthenticated("%s (check the proxy's upstream credentials)", msg)
	case status == http.StatusForbidden:
		return rpcerr.PermissionDenied("%s", msg)
	case status == http.StatusNotFound:
		return rpcerr.NotFound("%s", msg)
	case status == http.StatusTooManyRequests:
		return rpcerr.WithReason(rpcerr.ResourceExhausted(RetryAfter(header), "%s", msg), rpcerr.ReasonRateLimited)
	case status == http.StatusRequestTimeout || status >= 500:
		return Unavailable("%s (HTTP %d)", msg, status)
	}
	return Unavailable("%s (HTTP %d)", msg, status)
}

// Unavailable reports a failure of the model's upstream that may pass (a
// 5xx, a reset connection, a malformed answer).
func Unavailable(format string, args ...any) error {
	return rpcerr.WithReason(rpcerr.Unavailable(format, args...), rpcerr.ReasonUpstreamUnavailable)
}

func isContextLength(code, msg string) bool {
	if code == "context_length_exceeded" || code == "string_above_max_length" {
		return true
	}
	m := strings.ToLower(msg)
	return strings.Contains(m, "maximum context length") || strings.Contains(m, "prompt is too long") || strings.Contains(m, "context window")
}

func isContentFilter(code string) bool {
	return code == "content_policy_violation" || code == "content_filter"
}

// RetryAfter reads Retry-After (seconds or an HTTP date) or
// retry-after-ms; 0 when absent.
func RetryAfter(h http.Header) time.Duration {
	if h == nil {
		return 0
	}
	if ms, err := strconv.ParseFloat(h.Get("Retry-After-Ms"), 64); err == nil && ms > 0 {
		return time.Duration(ms * float64(time.Millisecond))
	}
	v := h.Get("Retry-After")
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
