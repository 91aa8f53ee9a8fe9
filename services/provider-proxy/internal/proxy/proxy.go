// Package proxy is provider-proxy's backend: a table of exposed models, each
// served by an upstream provider, behind the Engine service. It owns the
// retry policy (exponential backoff with jitter, only before the first
// chunk, honouring Retry-After) and the load accounting. Safe for concurrent
// use.
package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers/anthropic"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers/openai"
	"google.golang.org/grpc/codes"
)

// ProviderConfig names an upstream. The key comes from exactly one of
// APIKeyEnv or APIKeyFile (a mounted Kubernetes secret); none is allowed for
// local OpenAI-compatible servers.
type ProviderConfig struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"` // openai, anthropic, openai-compatible
	BaseURL    string `json:"base_url"`
	APIKeyEnv  string `json:"api_key_env"`
	APIKeyFile string `json:"api_key_file"`
}

// ModelConfig exposes an upstream model.
type ModelConfig struct {
	Name          string  `json:"name"`
	Provider      string  `json:"provider"`
	UpstreamModel string  `json:"upstream_model"`
	PriceInPer1M  float64 `json:"price_in_per_1m"`
	PriceOutPer1M float64 `json:"price_out_per_1m"`
	Quality       float64 `json:"quality"`
	ContextLength int     `json:"context_length"`
	// AcceptsPrefill declares that the upstream continues a trailing
	// assistant message (Anthropic does; OpenAI's own API does not), so the
	// router may continue a cut stream here.
	AcceptsPrefill bool `json:"accepts_prefill"`
	// Capabilities overrides what the provider's kind offers (unset keeps
	// it): for a compatible server without tools or response formats, or
	// a model that lacks them.
	Capabilities *CapabilityConfig `json:"capabilities"`
}

// CapabilityConfig sets a hosted model's capabilities (see
// enginev1.Capabilities); each field left out keeps the kind's default.
// Logprobs are not relayed, so they cannot be claimed.
type CapabilityConfig struct {
	StructuredOutput *bool `json:"structured_output"`
	AnyJSONSchema    *bool `json:"any_json_schema"`
	Tools            *bool `json:"tools"`
}

// Config is the proxy's JSON configuration.
type Config struct {
	Providers []ProviderConfig `json:"providers"`
	Models    []ModelConfig    `json:"models"`
	// Retries before the first chunk (default 2) and the first backoff.
	Retries     int           `json:"retries"`
	BackoffBase time.Duration `json:"-"`
	// MaxRetryAfter caps how long a Retry-After is honoured before giving up.
	MaxRetryAfter time.Duration `json:"-"`
}

// LoadConfig reads the configuration file strictly.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

type model struct {
	cfg      ModelConfig
	info     *enginev1.ModelInfo
	provider providers.Provider
}

// Backend is the proxy.
type Backend struct {
	models    map[string]*model
	cfg       Config
	badEvents counter
	upstream  atomic.Int64 // upstream requests sent
	active    atomic.Int32
	rate      enginehost.RateMeter
	secrets   []string
}

var _ enginehost.TextBackend = (*Backend)(nil)

// Providers returns the registry of provider kinds; obs counts the events
// OpenAI-format streams skip. A new provider is a package plus one line here.
func Providers(obs openai.Observer) *providers.Registry {
	r := providers.NewRegistry()
	r.Add("openai", openai.Factory(false, obs))
	r.Add("openai-compatible", openai.Factory(true, obs))
	r.Add("anthropic", anthropic.Factory)
	return r
}

// New builds the providers and model table; getenv reads key variables.
func New(c Config, getenv func(string) string, hc *http.Client) (*Backend, error) {
	if c.Retries == 0 {
		c.Retries = 2
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = 200 * time.Millisecond
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = 10 * time.Second
	}
	b := &Backend{models: map[string]*model{}, cfg: c}
	reg := Providers(&b.badEvents)
	provs := map[string]providers.Provider{}
	kinds := map[string]string{}
	for _, p := range c.Providers {
		key, err := readKey(p, getenv)
		if err != nil {
			return nil, fmt.Errorf("provider %q: %w", p.Name, err)
		}
		if key != "" {
			b.secrets = append(b.secrets, key)
		}
		prov, err := reg.New(p.Kind, providers.Spec{Name: p.Name, BaseURL: p.BaseURL, APIKey: key, HTTP: hc})
		if err != nil {
			return nil, fmt.Errorf("provider %q: %w", p.Name, err)
		}
		provs[p.Name] = prov
		kinds[p.Name] = p.Kind
	}
	for _, m := range c.Models {
		prov, ok := provs[m.Provider]
		if !ok {
			return nil, fmt.Errorf("model %q: unknown provider %q", m.Name, m.Provider)
		}
		if m.Name == "" || m.UpstreamModel == "" {
			return nil, fmt.Errorf("models need name and upstream_model")
		}
		if m.PriceInPer1M < 0 || m.PriceOutPer1M < 0 || m.Quality < 0 || m.Quality > 1 || m.ContextLength < 0 {
			return nil, fmt.Errorf("model %q: prices and context must not be negative, quality in [0, 1]", m.Name)
		}
		if _, dup := b.models[m.Name]; dup {
			return nil, fmt.Errorf("model %q configured twice", m.Name)
		}
		if set := m.Capabilities; kinds[m.Provider] == "anthropic" && set != nil && (isTrue(set.StructuredOutput) || isTrue(set.AnyJSONSchema)) {
			return nil, fmt.Errorf("model %q: Anthropic's API as relayed here enforces neither response formats nor strict tool schemas, so structured_output and any_json_schema cannot be claimed", m.Name)
		}
		b.models[m.Name] = &model{cfg: m, provider: prov, info: &enginev1.ModelInfo{
			Name: m.Name, Format: "api", ContextLength: int32(m.ContextLength), Quality: m.Quality,
			CostPer_1KInput: m.PriceInPer1M / 1000, CostPer_1KOutput: m.PriceOutPer1M / 1000,
			Device: "remote", Architecture: m.Provider + "/" + m.UpstreamModel, AcceptsPrefill: m.AcceptsPrefill,
			Capabilities: capabilities(kinds[m.Provider], m.Capabilities),
		}}
	}
	if len(b.models) == 0 {
		return nil, fmt.Errorf("no models configured")
	}
	return b, nil
}

func readKey(p ProviderConfig, getenv func(string) string) (string, error) {
	switch {
	case p.APIKeyEnv != "" && p.APIKeyFile != "":
		return "", fmt.Errorf("set api_key_env or api_key_file, not both")
	case p.APIKeyEnv != "":
		k := getenv(p.APIKeyEnv)
		if k == "" {
			return "", fmt.Errorf("environment variable %s is empty", p.APIKeyEnv)
		}
		return k, nil
	case p.APIKeyFile != "":
		b, err := os.ReadFile(p.APIKeyFile)
		if err != nil {
			return "", fmt.Errorf("read api_key_file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// counter counts events; safe for concurrent use.
type counter struct{ n atomic.Int64 }

func (c *counter) BadEvent() { c.n.Add(1) }

// BadEvents is the count of malformed or oversized upstream events skipped.
func (b *Backend) BadEvents() int64 { return b.badEvents.n.Load() }

// UpstreamRequests is the count of requests sent upstream.
func (b *Backend) UpstreamRequests() int64 { return b.upstream.Load() }

// Secrets are the upstream keys, for redaction tests and logging filters.
func (b *Backend) Secrets() []string { return slices.Clone(b.secrets) }

// Models lists exposed models.
func (b *Backend) Models() []*enginev1.ModelInfo {
	out := make([]*enginev1.ModelInfo, 0, len(b.models))
	for _, m := range b.models {
		out = append(out, m.info)
	}
	slices.SortFunc(out, func(a, c *enginev1.ModelInfo) int { return strings.Compare(a.GetName(), c.GetName()) })
	return out
}

// capabilities are what a provider kind's API offers through this proxy,
// with a model's overrides: OpenAI's (and compatible servers') response
// formats and tools, with any JSON Schema enforced (strict); Anthropic's
// tools, whose schemas it takes but does not enforce as relayed here (no
// strict), so not any JSON Schema, and no response_format. No logprobs:
// they are not relayed.
func capabilities(kind string, set *CapabilityConfig) *enginev1.Capabilities {
	c := &enginev1.Capabilities{Tools: true}
	if kind == "openai" || kind == "openai-compatible" {
		c.StructuredOutput, c.AnyJsonSchema = true, true
	}
	if set != nil {
		override(&c.StructuredOutput, set.StructuredOutput)
		override(&c.AnyJsonSchema, set.AnyJSONSchema)
		override(&c.Tools, set.Tools)
	}
	return c
}

func isTrue(v *bool) bool { return v != nil && *v }

func override(v *bool, set *bool) {
	if set != nil {
		*v = *set
	}
}

// Status reports requests in flight and the token rate.
func (b *Backend) Status() *enginev1.GetStatusResponse {
	return &enginev1.GetStatusResponse{ActiveSequences: b.active.Load(), TokensPerSecond: b.rate.PerSecond()}
}

// StreamText starts an upstream stream, retrying retriable failures before
// the first chunk.
func (b *Backend) StreamText(ctx context.Context, name string, r enginehost.TextRequest) (enginehost.TextStream, error) {
	m, ok := b.models[name]
	if !ok {
		return nil, rpcerr.NotFound("model %q is not configured", name)
	}
	req := providers.Request{Model: m.cfg.UpstreamModel, MaxTokens: r.MaxTokens, Stop: r.Stop, TopK: r.Sampling.TopK, Prefill: r.Prefill,
		FrequencyPenalty: float64(r.Sampling.FrequencyPenalty), PresencePenalty: float64(r.Sampling.PresencePenalty),
		LogitBias: r.Sampling.LogitBias, User: r.User, Format: r.Sampling.Format}
	t := float64(r.Sampling.Temperature)
	req.Temperature = &t
	if r.Sampling.TopP < 1 {
		p := float64(r.Sampling.TopP)
		req.TopP = &p
	}
	if r.Sampling.SeedSet {
		s := int64(r.Sampling.Seed)
		req.Seed = &s
	}
	setPrompt(&req, r.Prompt)
	retries := b.cfg.Retries
	if r.SingleAttempt {
		retries = 0 // the caller (the router) owns retries
	}
	b.active.Add(1)
	for attempt := 0; ; attempt++ {
		s, first, err := b.open(ctx, m, req)
		if err == nil {
			return &textStream{b: b, s: s, first: first}, nil
		}
		if attempt >= retries || !retriable(err) || ctx.Err() != nil {
			b.active.Add(-1)
			return nil, err
		}
		wait := b.backoff(attempt, rpcerr.RetryAfter(err))
		if wait < 0 {
			b.active.Add(-1)
			return nil, err
		}
		select {
		case <-ctx.Done():
			b.active.Add(-1)
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// setPrompt sets req's turns and tools from p.
func setPrompt(req *providers.Request, p *generationv1.Prompt) {
	switch k := p.GetKind().(type) {
	case *generationv1.Prompt_Text:
		req.Messages = []providers.Message{{Role: "user", Content: k.Text}}
	case *generationv1.Prompt_Chat:
		for _, msg := range k.Chat.GetMessages() {
			req.Messages = append(req.Messages, providers.Message{
				Role: strings.ToLower(strings.TrimPrefix(msg.GetRole().String(), "ROLE_")), Content: msg.GetContent(),
				ToolCalls: msg.GetToolCalls(), ToolCallID: msg.GetToolCallId(), Name: msg.GetName()})
		}
		req.Tools, req.ToolChoice, req.ParallelToolCalls = k.Chat.GetTools(), k.Chat.GetToolChoice(), k.Chat.ParallelToolCalls
	}
}

// CountTokens counts a prompt with the provider's counting endpoint
// (Anthropic's count_tokens); providers without one are Unimplemented.
func (b *Backend) CountTokens(ctx context.Context, name string, p *generationv1.Prompt) (int, error) {
	m, ok := b.models[name]
	if !ok {
		return 0, rpcerr.NotFound("model %q is not configured", name)
	}
	c, ok := m.provider.(providers.Counter)
	if !ok {
		return 0, rpcerr.Unimplemented("model %q: the %s API has no token-counting endpoint, so its prompts cannot be counted exactly", name, m.cfg.Provider)
	}
	req := providers.Request{Model: m.cfg.UpstreamModel}
	setPrompt(&req, p)
	b.upstream.Add(1)
	return c.CountTokens(ctx, req)
}

// open starts a stream and reads its first chunk, so that failures before
// the first token surface here, where retrying is safe.
func (b *Backend) open(ctx context.Context, m *model, req providers.Request) (providers.Stream, *providers.Chunk, error) {
	b.upstream.Add(1)
	s, err := m.provider.Stream(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	c, err := s.Next()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, &c, nil
}

func retriable(err error) bool {
	c := rpcerr.Code(err)
	return c == codes.Unavailable || c == codes.ResourceExhausted
}

// backoff is exponential with full jitter, or the upstream's Retry-After
// when given (negative: longer than we are willing to wait).
func (b *Backend) backoff(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		if retryAfter > b.cfg.MaxRetryAfter {
			return -1
		}
		return retryAfter
	}
	d := b.cfg.BackoffBase << attempt
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

type textStream struct {
	b     *Backend
	s     providers.Stream
	first *providers.Chunk
	done  atomic.Bool
}

func (t *textStream) Next(ctx context.Context) (enginehost.TextChunk, error) {
	var c providers.Chunk
	if t.first != nil {
		c, t.first = *t.first, nil
	} else {
		var err error
		if c, err = t.s.Next(); err != nil {
			return enginehost.TextChunk{}, err
		}
	}
	if c.Text != "" || len(c.ToolCalls) > 0 {
		t.b.rate.Add(1)
	}
	return enginehost.TextChunk{Text: c.Text, ToolCalls: c.ToolCalls, Done: c.Done, Finish: c.Finish, StopSequence: c.StopSequence, PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens}, nil
}

func (t *textStream) Close() {
	if t.done.CompareAndSwap(false, true) {
		t.s.Close()
		t.b.active.Add(-1)
	}
}
