package enginehost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// Host serves the Engine service over a Backend.
type Host struct {
	enginev1.UnimplementedEngineServiceServer
	cat     Catalog     // the models and load, whatever the backend kind
	backend Backend     // token backends; nil for text backends
	text    TextBackend // text backends; nil for token backends
	limits  Limits
	// Endpoint is this worker's advertised host:port, reported in StartEvents.
	Endpoint string
	now      func() time.Time
	// gen counts model changes (GetStatusResponse.models_generation);
	// changed, when set, hears of each (to update discovery).
	gen     atomic.Uint64
	changed func()
}

// OnModelsChanged sets a function called after every LoadModel and
// UnloadModel that changed the models; call before serving.
func (h *Host) OnModelsChanged(f func()) { h.changed = f }

func (h *Host) modelsChanged() {
	h.gen.Add(1)
	if h.changed != nil {
		h.changed()
	}
}

var _ enginev1.EngineServiceServer = (*Host)(nil)

// New returns a host over b with the given limits (zero fields take
// DefaultLimits).
func New(b Backend, endpoint string, l Limits) *Host {
	d := DefaultLimits
	if l.MaxPromptBytes == 0 {
		l.MaxPromptBytes = d.MaxPromptBytes
	}
	if l.MaxPromptTokens == 0 {
		l.MaxPromptTokens = d.MaxPromptTokens
	}
	if l.MaxChatMessages == 0 {
		l.MaxChatMessages = d.MaxChatMessages
	}
	if l.MaxEmbedInputs == 0 {
		l.MaxEmbedInputs = d.MaxEmbedInputs
	}
	h := &Host{backend: b, limits: l, Endpoint: endpoint, now: time.Now}
	if b != nil {
		h.cat = b
	}
	return h
}

// model finds a hosted model or returns NotFound naming what is hosted.
func (h *Host) model(name string) (*enginev1.ModelInfo, error) {
	if err := ValidateModelName(name); err != nil {
		return nil, err
	}
	models := h.cat.Models()
	for _, m := range models {
		if m.GetName() == name {
			return m, nil
		}
	}
	names := make([]string, len(models))
	for i, m := range models {
		names[i] = m.GetName()
	}
	return nil, rpcerr.WithReason(rpcerr.NotFound("model %q is not hosted here (hosted: %s)", name, strings.Join(names, ", ")), rpcerr.ReasonModelNotHosted)
}

// Generate validates the request, runs one sequence and streams its events.
// Its trailer reports the worker's load as the stream ends (LoadKey).
func (h *Host) Generate(req *enginev1.GenerateRequest, stream enginev1.EngineService_GenerateServer) error {
	var err error
	if h.text != nil {
		err = h.generateText(stream.Context(), req, stream.Send)
	} else {
		err = h.generate(stream.Context(), req, stream.Send)
	}
	if h.cat != nil {
		stream.SetTrailer(LoadTrailer(h.cat.Status(), req.GetModel()))
	}
	return rpcerr.ToStatus(err)
}

// tokenBackend returns the token backend or Unimplemented for text ones.
func (h *Host) tokenBackend(what string) (Backend, error) {
	if h.backend == nil {
		return nil, rpcerr.Unimplemented("%s is not supported by this worker (a hosted-API proxy)", what)
	}
	return h.backend, nil
}

// checked is a Generate request that passed the checks both backend kinds
// share.
type checked struct {
	model    *enginev1.ModelInfo
	sampling Sampling
	tools    *Tools // nil: no tools
	id       string
	received time.Time
	span     trace.Span
}

// check validates what every Generate request needs and tags the span.
func (h *Host) check(ctx context.Context, req *enginev1.GenerateRequest) (checked, error) {
	c := checked{received: h.now(), id: req.GetRequestId(), span: trace.SpanFromContext(ctx)}
	if err := ValidateUTF8(req); err != nil {
		return c, err
	}
	if err := ValidateRequestID(req.GetRequestId()); err != nil {
		return c, err
	}
	if err := ValidateUser(req.GetUser()); err != nil {
		return c, err
	}
	var err error
	if c.model, err = h.model(req.GetModel()); err != nil {
		return c, err
	}
	if err := ValidatePrompt(req.GetPrompt(), h.limits); err != nil {
		return c, err
	}
	// Hosted providers validate schemas themselves (beyond the grammar's
	// subset); engines that host models compile them.
	validate := ValidateSampling
	if h.text != nil {
		validate = ValidateSamplingShape
	}
	if c.sampling, err = validate(req.GetSampling()); err != nil {
		return c, err
	}
	// Token backends enforce calls with a grammar; hosted providers get
	// the tools as they are.
	if c.tools, err = ValidateTools(req.GetPrompt().GetChat(), req.GetSampling().GetResponseFormat(), h.text == nil); err != nil {
		return c, err
	}
	if c.tools.Parses() && c.tools.Grammar != nil {
		// Forced: calls only, the response format has no text to hold.
		// Auto: text (or the response format's JSON) or calls.
		c.sampling.Grammar = c.tools.Grammar
	}
	if t := req.GetContinuationText(); t != "" {
		switch {
		case !c.model.GetAcceptsPrefill():
			return c, rpcerr.InvalidArgument("model %q does not continue a partial answer (continuation_text); it does not advertise accepts_prefill", c.model.GetName())
		case len(req.GetContinuation()) > 0:
			return c, rpcerr.InvalidArgument("set continuation or continuation_text, not both")
		case !utf8.ValidString(t):
			return c, rpcerr.InvalidArgument("continuation_text is not valid UTF-8")
		case len(t) > h.limits.MaxPromptBytes:
			return c, rpcerr.InvalidArgument("continuation_text is %d bytes, over the limit of %d", len(t), h.limits.MaxPromptBytes)
		}
	}
	if c.id == "" {
		c.id = NewRequestID()
	}
	c.span.SetAttributes(attribute.String("llm.request_id", c.id), attribute.String("gen_ai.request.model", c.model.GetName()),
		attribute.String("gen_ai.response.model", c.model.GetName()), attribute.String("gen_ai.operation.name", OperationName(req.GetPrompt())),
		attribute.String("llm.endpoint", h.Endpoint))
	if u := req.GetUser(); u != "" {
		c.span.SetAttributes(attribute.String("user.id", u))
	}
	return c, nil
}

func (h *Host) generate(ctx context.Context, req *enginev1.GenerateRequest, send func(*enginev1.GenerateResponse) error) error {
	c, err := h.check(ctx, req)
	if err != nil {
		return err
	}
	m, sampling, id, received, span := c.model, c.sampling, c.id, c.received, c.span
	prompt, err := h.backend.Tokenize(ctx, m.GetName(), req.GetPrompt())
	if err != nil {
		return err
	}
	cont, text, replayed, err := h.continuation(ctx, m.GetName(), req)
	if err != nil {
		return err
	}
	var calls *toolParser
	if c.tools.Parses() {
		calls = newToolParser(c.tools.Syntax, callSeed(id, req.GetPrompt()))
		// With a response format an answer is calls or JSON, so a tag
		// inside the JSON's strings is text.
		calls.leadingOnly = answerFormat(req.GetSampling().GetResponseFormat()) != nil
		calls.push(replayed, false) // what the client has already
	}
	// split turns the answer's next text into content and tool calls.
	split := func(ev *generationv1.TokenDelta, s string, final bool) {
		if calls == nil {
			ev.Text = s
			return
		}
		ev.Text, ev.ToolCalls = calls.push(s, final)
	}
	maxTokens, err := ValidateLength(m, len(prompt)+len(cont), remaining(req.GetSampling().GetMaxTokens(), len(cont)))
	if err != nil {
		return err
	}
	if mt := req.GetSampling().GetMaxTokens(); mt > 0 {
		span.SetAttributes(attribute.Int("gen_ai.request.max_tokens", int(mt)))
	}

	sampling.Continued = len(cont)
	seq, err := h.backend.Start(ctx, m.GetName(), append(slices.Clone(prompt), cont...), sampling)
	if err != nil {
		return err
	}
	defer seq.Close()
	if sr, ok := seq.(StatsReporter); ok {
		// Also for an attempt that fails or is cancelled mid-stream: its
		// queue and prefill are what failover analysis looks at.
		defer func() {
			st := sr.Stats()
			span.SetAttributes(attribute.Float64("llm.queue_wait_ms", ms(st.QueueWait)), attribute.Float64("llm.prefill_ms", ms(st.Prefill)),
				attribute.Int("llm.prefill_tokens", st.PrefillTokens), attribute.Int("llm.batch_size_max", st.BatchMax))
		}()
	}
	started := h.now()

	if err := send(&enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_Start{Start: &generationv1.StartEvent{
		RequestId: id, Model: m.GetName(), Endpoint: h.Endpoint, PromptTokens: int32(len(prompt)),
	}}}); err != nil {
		return err
	}

	var (
		n           int
		first, last time.Time
		finish      = generationv1.FinishReason_FINISH_REASON_LENGTH
	)
	for n < maxTokens {
		tok, err := seq.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("generate token %d: %w", n, err)
		}
		last = h.now()
		if n == 0 {
			first = last
		}
		if tok.EOG {
			finish = generationv1.FinishReason_FINISH_REASON_STOP
			break
		}
		n++
		delta, stopped := text.push(tok.Piece)
		if n == maxTokens && !stopped {
			delta += text.flush()
		}
		ev := &generationv1.TokenDelta{TokenIds: []uint32{tok.ID}}
		split(ev, delta, n == maxTokens || stopped)
		if sampling.Logprobs {
			ev.Logprobs = []*generationv1.TokenLogprobs{logprobsOf(tok, sampling.TopLogprobs)}
		}
		if err := send(&enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_Delta{Delta: ev}}); err != nil {
			return err
		}
		if stopped {
			finish = generationv1.FinishReason_FINISH_REASON_STOP_SEQUENCE
			break
		}
	}
	if finish == generationv1.FinishReason_FINISH_REASON_STOP {
		ev := &generationv1.TokenDelta{}
		split(ev, text.flush(), true)
		if ev.Text != "" || len(ev.ToolCalls) > 0 {
			if err := send(&enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_Delta{Delta: ev}}); err != nil {
				return err
			}
		}
		if calls != nil && calls.calls > 0 {
			finish = generationv1.FinishReason_FINISH_REASON_TOOL_CALLS
		}
	}
	seq.Close()

	cached := 0
	if c, ok := seq.(interface{ CachedTokens() int }); ok {
		cached = c.CachedTokens()
	}
	end := &generationv1.EndEvent{
		FinishReason: finish,
		Usage: &generationv1.Usage{PromptTokens: int32(len(prompt)), CompletionTokens: int32(len(cont) + n),
			TotalTokens: int32(len(prompt) + len(cont) + n), CachedPromptTokens: int32(cached)},
		Timings: timings(received, started, first, last, n),
		CostUsd: float64(len(prompt))/1000*m.GetCostPer_1KInput() + float64(len(cont)+n)/1000*m.GetCostPer_1KOutput(),
	}
	if finish == generationv1.FinishReason_FINISH_REASON_STOP_SEQUENCE {
		end.StopSequence = text.matched
	}
	span.SetAttributes(generationAttrs(end, len(cont), n, first, last, received)...)
	return send(&enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_End{End: end}})
}

// continuation validates the request's continuation tokens and replays
// their bytes into a fresh text stream, so that held-back bytes and partial
// stop sequences carry over from the worker that produced them.
//
// It also returns the text the client has of the continuation, to bring a
// tool-call parser to where the answer stands.
func (h *Host) continuation(ctx context.Context, model string, req *enginev1.GenerateRequest) ([]uint32, *textStream, string, error) {
	text := newTextStream(req.GetSampling().GetStop())
	ids := req.GetContinuation()
	if len(ids) == 0 {
		return nil, text, "", nil
	}
	if max := req.GetSampling().GetMaxTokens(); max > 0 && len(ids) >= int(max) {
		return nil, nil, "", rpcerr.InvalidArgument("continuation has %d tokens; max_tokens (%d) leaves none to generate", len(ids), max)
	}
	// Tokenize checks the ids against the vocabulary.
	ids, err := h.backend.Tokenize(ctx, model, &generationv1.Prompt{Kind: &generationv1.Prompt_Tokens{Tokens: &generationv1.TokenIds{Ids: ids}}})
	if err != nil {
		return nil, nil, "", rpcerr.InvalidArgument("continuation: %v", err)
	}
	var replayed strings.Builder
	for _, id := range ids {
		delta, stopped := text.push(h.backend.Piece(model, id))
		if stopped {
			return nil, nil, "", rpcerr.InvalidArgument("continuation already contains a stop sequence")
		}
		replayed.WriteString(delta)
	}
	return ids, text, replayed.String(), nil
}

// remaining is max_tokens less the continuation (0 stays "to the context").
func remaining(maxTokens int32, cont int) int32 {
	if maxTokens == 0 {
		return 0
	}
	return maxTokens - int32(cont)
}

// generationAttrs are a finished generation's span attributes: OpenTelemetry's
// GenAI names where one exists, llm.* for the timings it has none for
// (time to first token and decode time, from the worker's clock).
//
// This worker's own work: input is the prompt plus the continuation it was
// handed (another worker's tokens it took in), output what it generated.
func generationAttrs(end *generationv1.EndEvent, continuation, generated int, first, last, received time.Time) []attribute.KeyValue {
	u := end.GetUsage()
	attrs := []attribute.KeyValue{
		attribute.Int("gen_ai.usage.input_tokens", int(u.GetPromptTokens())+continuation),
		attribute.Int("gen_ai.usage.output_tokens", generated),
		attribute.StringSlice("gen_ai.response.finish_reasons", []string{finishName(end.GetFinishReason())}),
		attribute.Int("gen_ai.usage.cache_read.input_tokens", int(u.GetCachedPromptTokens())),
		attribute.Int("llm.continuation_tokens", continuation),
	}
	if !first.IsZero() {
		attrs = append(attrs, attribute.Float64("llm.ttft_ms", ms(first.Sub(received))), attribute.Float64("llm.decode_ms", ms(last.Sub(first))))
	}
	return attrs
}

// OperationName is GenAI's gen_ai.operation.name of a generation: "chat"
// for a chat prompt, "text_completion" for text or tokens.
func OperationName(p *generationv1.Prompt) string {
	if p.GetChat() != nil {
		return "chat"
	}
	return "text_completion"
}

// finishName is a finish reason as GenAI's gen_ai.response.finish_reasons
// spells it (OpenAI's words).
func finishName(f generationv1.FinishReason) string {
	switch f {
	case generationv1.FinishReason_FINISH_REASON_STOP, generationv1.FinishReason_FINISH_REASON_STOP_SEQUENCE:
		return "stop"
	case generationv1.FinishReason_FINISH_REASON_LENGTH:
		return "length"
	case generationv1.FinishReason_FINISH_REASON_CONTENT_FILTER:
		return "content_filter"
	}
	return strings.ToLower(strings.TrimPrefix(f.String(), "FINISH_REASON_"))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func timings(received, started, first, last time.Time, n int) *generationv1.Timings {
	t := &generationv1.Timings{Queue: durationpb.New(started.Sub(received))}
	if first.IsZero() {
		return t
	}
	t.TimeToFirstToken = durationpb.New(first.Sub(received))
	t.Total = durationpb.New(last.Sub(received))
	if d := last.Sub(first).Seconds(); n > 1 && d > 0 {
		t.TokensPerSecond = float64(n-1) / d
	}
	return t
}

func logprobsOf(tok Token, top int) *generationv1.TokenLogprobs {
	lp := &generationv1.TokenLogprobs{Chosen: &generationv1.TokenLogprob{TokenId: tok.ID, Token: tok.Piece, Logprob: tok.Logprob}}
	for _, a := range tok.Top[:min(top, len(tok.Top))] {
		lp.Top = append(lp.Top, &generationv1.TokenLogprob{TokenId: a.ID, Token: a.Piece, Logprob: a.Logprob})
	}
	return lp
}

// SingleAttemptKey is the gRPC metadata key by which a caller that owns
// retries (the router) asks a worker to make a single upstream attempt, so
// that attempts do not multiply across hops.
const SingleAttemptKey = "llmrouter-single-attempt"

// SingleAttempt reports whether the incoming call asked for one attempt.
func SingleAttempt(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(SingleAttemptKey)) > 0
}

// NewRequestID returns a random request identifier.
func NewRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Embed validates and forwards to the backend.
func (h *Host) Embed(ctx context.Context, req *enginev1.EmbedRequest) (*enginev1.EmbedResponse, error) {
	resp, err := h.embed(ctx, req)
	return resp, rpcerr.ToStatus(err)
}

func (h *Host) embed(ctx context.Context, req *enginev1.EmbedRequest) (*enginev1.EmbedResponse, error) {
	if err := ValidateUTF8(req); err != nil {
		return nil, err
	}
	m, err := h.model(req.GetModel())
	if err != nil {
		return nil, err
	}
	in := req.GetInputs()
	if len(in) == 0 || len(in) > h.limits.MaxEmbedInputs {
		return nil, rpcerr.InvalidArgument("inputs must hold 1 to %d texts, got %d", h.limits.MaxEmbedInputs, len(in))
	}
	for i, s := range in {
		if s == "" || len(s) > h.limits.MaxPromptBytes {
			return nil, rpcerr.InvalidArgument("inputs[%d] must be 1 to %d bytes, got %d", i, h.limits.MaxPromptBytes, len(s))
		}
		if !utf8.ValidString(s) {
			return nil, rpcerr.InvalidArgument("inputs[%d] is not valid UTF-8", i)
		}
	}
	b, err := h.tokenBackend("Embed")
	if err != nil {
		return nil, err
	}
	vecs, tokens, err := b.Embed(ctx, m.GetName(), in)
	if err != nil {
		return nil, err
	}
	resp := &enginev1.EmbedResponse{Usage: &generationv1.Usage{PromptTokens: int32(tokens), TotalTokens: int32(tokens)}}
	for _, v := range vecs {
		resp.Embeddings = append(resp.Embeddings, &enginev1.Embedding{Values: v})
	}
	return resp, nil
}

// ListModels lists hosted models sorted by name.
func (h *Host) ListModels(context.Context, *enginev1.ListModelsRequest) (*enginev1.ListModelsResponse, error) {
	models := slices.Clone(h.cat.Models())
	slices.SortFunc(models, func(a, b *enginev1.ModelInfo) int { return strings.Compare(a.GetName(), b.GetName()) })
	return &enginev1.ListModelsResponse{Models: models}, nil
}

// GetStatus reports the backend's live load.
func (h *Host) GetStatus(context.Context, *enginev1.GetStatusRequest) (*enginev1.GetStatusResponse, error) {
	st := h.cat.Status()
	st.ModelsGeneration = h.gen.Load()
	return st, nil
}

// LoadModel asks the backend to load a model; a source path must lie inside
// the model directories (ResolveSource).
func (h *Host) LoadModel(ctx context.Context, req *enginev1.LoadModelRequest) (*enginev1.LoadModelResponse, error) {
	if err := ValidateModelName(req.GetModel()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	b, err := h.tokenBackend("LoadModel")
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	source := req.GetSource()
	if source != "" {
		if source, err = ResolveSource(h.limits.ModelDirs, source); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	m, err := b.Load(ctx, req.GetModel(), source)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	h.modelsChanged()
	return &enginev1.LoadModelResponse{Model: m}, nil
}

// UnloadModel asks the backend to unload a model.
func (h *Host) UnloadModel(ctx context.Context, req *enginev1.UnloadModelRequest) (*enginev1.UnloadModelResponse, error) {
	if _, err := h.model(req.GetModel()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	b, err := h.tokenBackend("UnloadModel")
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := b.Unload(ctx, req.GetModel()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	h.modelsChanged()
	return &enginev1.UnloadModelResponse{}, nil
}

// TokenCounter is a text backend that can count a prompt's tokens (a
// hosted API with a counting endpoint).
type TokenCounter interface {
	CountTokens(ctx context.Context, model string, p *generationv1.Prompt) (int, error)
}

// CountTokens counts a prompt's tokens as Generate would see them: the
// same checks, the same template and tokenizer, no generation.
func (h *Host) CountTokens(ctx context.Context, req *enginev1.CountTokensRequest) (*enginev1.CountTokensResponse, error) {
	n, err := h.countTokens(ctx, req)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &enginev1.CountTokensResponse{PromptTokens: int32(n)}, nil
}

func (h *Host) countTokens(ctx context.Context, req *enginev1.CountTokensRequest) (int, error) {
	if err := ValidateUTF8(req); err != nil {
		return 0, err
	}
	m, err := h.model(req.GetModel())
	if err != nil {
		return 0, err
	}
	if err := ValidatePrompt(req.GetPrompt(), h.limits); err != nil {
		return 0, err
	}
	if _, err := ValidateTools(req.GetPrompt().GetChat(), nil, false); err != nil {
		return 0, err
	}
	if h.text != nil {
		c, ok := h.text.(TokenCounter)
		if !ok {
			return 0, rpcerr.Unimplemented("model %q: this worker cannot count tokens (its hosted API has no token-counting endpoint)", m.GetName())
		}
		return c.CountTokens(ctx, m.GetName(), req.GetPrompt())
	}
	ids, err := h.backend.Tokenize(ctx, m.GetName(), req.GetPrompt())
	return len(ids), err
}
