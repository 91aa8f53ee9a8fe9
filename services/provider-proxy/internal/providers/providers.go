// Package providers is the small interface every hosted-API upstream
// implements (one package per provider), plus the shared mapping of HTTP
// failures to gRPC statuses and the redaction of secrets from messages.
package providers

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Message is one chat turn; Role is "system", "user" or "assistant".
type Message struct{ Role, Content string }

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
}

// Chunk is streamed text, or the end with usage.
type Chunk struct {
	Text                           string
	Done                           bool
	Finish                         generationv1.FinishReason
	PromptTokens, CompletionTokens int
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

// HTTPError maps an upstream HTTP failure to a gRPC status error.
func HTTPError(provider string, status int, header http.Header, msg string) error {
	msg = provider + ": " + msg
	switch {
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity || status == http.StatusRequestEntityTooLarge:
		return rpcerr.InvalidArgument("%s", msg)
	case status == http.StatusUnauthorized:
		return rpcerr.Unauthenticated("%s (check the proxy's upstream credentials)", msg)
	case status == http.StatusForbidden:
		return rpcerr.PermissionDenied("%s", msg)
	case status == http.StatusNotFound:
		return rpcerr.NotFound("%s", msg)
	case status == http.StatusTooManyRequests:
		return rpcerr.ResourceExhausted(RetryAfter(header), "%s", msg)
	case status == http.StatusRequestTimeout || status >= 500:
		return rpcerr.Unavailable("%s", msg)
	}
	return rpcerr.Unavailable("%s (HTTP %d)", msg, status)
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
