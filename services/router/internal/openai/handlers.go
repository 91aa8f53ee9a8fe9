package openai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"

	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
)

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	common
	Messages []chatMessage `json:"messages"`
}

var roles = map[string]genv1.Role{
	"system": genv1.Role_ROLE_SYSTEM, "developer": genv1.Role_ROLE_SYSTEM,
	"user": genv1.Role_ROLE_USER, "assistant": genv1.Role_ROLE_ASSISTANT,
}

func (h *Handler) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decode(w, r, &req) {
		return
	}
	sampling, routing, ok := req.toRouter(w)
	if !ok {
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "messages", "", "messages must hold at least one message")
		return
	}
	msgs := make([]*genv1.ChatMessage, len(req.Messages))
	for i, m := range req.Messages {
		role, ok := roles[m.Role]
		if !ok {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "messages", "",
				"messages["+itoa(i)+"].role must be system, developer, user or assistant, got \""+m.Role+"\"")
			return
		}
		msgs[i] = &genv1.ChatMessage{Role: role, Content: m.Content}
	}
	rr := &routerv1.GenerateRequest{Model: req.Model, Sampling: sampling, Routing: routing,
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: msgs}}}}
	h.respond(w, r, rr, &req.common, true)
}

// respond routes rr and writes a whole response, or streams chunks.
func (h *Handler) respond(w http.ResponseWriter, r *http.Request, rr *routerv1.GenerateRequest, c *common, chat bool) {
	object, prefix := "text_completion", "cmpl-"
	if chat {
		object, prefix = "chat.completion", "chatcmpl-"
	}
	if c.Stream {
		if chat {
			object += ".chunk"
		}
		h.stream(w, r, rr, object, c.StreamOptions != nil && c.StreamOptions.IncludeUsage, chat)
		return
	}
	col := &collector{}
	if err := h.router.Route(r.Context(), rr, col); err != nil {
		writeStatus(w, err)
		return
	}
	choice := map[string]any{"index": 0, "finish_reason": finishReason(col.end.GetFinishReason()), "logprobs": nil}
	if chat {
		choice["message"] = map[string]any{"role": "assistant", "content": col.text.String()}
	} else {
		choice["text"] = col.text.String()
	}
	writeJSON(w, map[string]any{
		"id": prefix + col.id, "object": object, "created": h.now().Unix(), "model": answeredBy(col.model, col.end),
		"choices": []map[string]any{choice}, "usage": usageOf(col.end.GetUsage()), "llmrouter": routingReport(col.end),
	})
}

type completionRequest struct {
	common
	Prompt any `json:"prompt"`
}

func (h *Handler) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if !decode(w, r, &req) {
		return
	}
	sampling, routing, ok := req.toRouter(w)
	if !ok {
		return
	}
	prompt, ok := req.Prompt.(string)
	if list, isList := req.Prompt.([]any); isList && len(list) == 1 {
		prompt, ok = list[0].(string)
	}
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "prompt", "", "prompt must be a string (or an array of one string)")
		return
	}
	if sampling.MaxTokens == 0 && req.MaxTokens == nil {
		sampling.MaxTokens = 16 // OpenAI's default for completions
	}
	rr := &routerv1.GenerateRequest{Model: req.Model, Sampling: sampling, Routing: routing,
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Text{Text: prompt}}}
	h.respond(w, r, rr, &req.common, false)
}

// streamSink turns router events into OpenAI chunks.
type streamSink struct {
	out          *sse
	object, id   string
	model        string
	created      int64
	chat         bool
	includeUsage bool
	sentRole     bool
}

func (s *streamSink) chunk(choice map[string]any, u *usage) map[string]any {
	c := map[string]any{"id": s.id, "object": s.object, "created": s.created, "model": s.model}
	if choice != nil {
		c["choices"] = []map[string]any{choice}
	} else {
		c["choices"] = []map[string]any{}
	}
	if s.includeUsage {
		c["usage"] = nil
		if u != nil {
			c["usage"] = u
		}
	}
	return c
}

func (s *streamSink) Send(m *routerv1.GenerateResponse) error {
	switch e := m.GetEvent().(type) {
	case *routerv1.GenerateResponse_Start:
		s.model = e.Start.GetModel()
		s.id = e.Start.GetRequestId()
		if s.chat {
			s.id = "chatcmpl-" + s.id
			s.sentRole = true
			return s.out.event(s.chunk(map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "finish_reason": nil, "logprobs": nil}, nil))
		}
		s.id = "cmpl-" + s.id
	case *routerv1.GenerateResponse_Delta:
		if e.Delta.GetText() == "" {
			return nil // held-back bytes: nothing to show yet
		}
		if s.chat {
			return s.out.event(s.chunk(map[string]any{"index": 0, "delta": map[string]any{"content": e.Delta.GetText()}, "finish_reason": nil, "logprobs": nil}, nil))
		}
		return s.out.event(s.chunk(map[string]any{"index": 0, "text": e.Delta.GetText(), "finish_reason": nil, "logprobs": nil}, nil))
	case *routerv1.GenerateResponse_End:
		fr := finishReason(e.End.GetFinishReason())
		var last map[string]any
		if s.chat {
			last = map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": fr, "logprobs": nil}
		} else {
			last = map[string]any{"index": 0, "text": "", "finish_reason": fr, "logprobs": nil}
		}
		c := s.chunk(last, nil)
		c["model"] = answeredBy(s.model, e.End)
		c["llmrouter"] = routingReport(e.End)
		if err := s.out.event(c); err != nil {
			return err
		}
		if s.includeUsage {
			return s.out.event(s.chunk(nil, usageOf(e.End.GetUsage())))
		}
	}
	return nil
}

func (h *Handler) stream(w http.ResponseWriter, r *http.Request, rr *routerv1.GenerateRequest, object string, includeUsage, chat bool) {
	out := newSSE(w)
	sink := &streamSink{out: out, object: object, created: h.now().Unix(), chat: chat, includeUsage: includeUsage}
	if err := h.router.Route(r.Context(), rr, sink); err != nil {
		if r.Context().Err() != nil {
			return // the client hung up
		}
		// Before the first chunk: an HTTP error. After it: an error event
		// and no [DONE], so that no client takes a cut stream for a
		// complete one.
		out.fail(err)
		return
	}
	out.done()
}

func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	resp, err := h.router.ListModels(r.Context(), &routerv1.ListModelsRequest{})
	if err != nil {
		writeStatus(w, err)
		return
	}
	data := []map[string]any{}
	for _, m := range resp.GetModels() {
		data = append(data, map[string]any{
			"id": m.GetInfo().GetName(), "object": "model", "created": 0, "owned_by": "llmrouter",
			"format": m.GetInfo().GetFormat(), "context_length": m.GetInfo().GetContextLength(), "endpoints": len(m.GetEndpoints()),
		})
	}
	writeJSON(w, map[string]any{"object": "list", "data": data})
}

type embeddingsRequest struct {
	Model          string `json:"model"`
	Input          any    `json:"input"`
	EncodingFormat string `json:"encoding_format"`
}

func (h *Handler) embeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingsRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "model", "", "you must provide a model parameter")
		return
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "encoding_format", "", "encoding_format must be \"float\" or \"base64\"")
		return
	}
	var inputs []string
	switch v := req.Input.(type) {
	case string:
		inputs = []string{v}
	case []any:
		for i, x := range v {
			s, ok := x.(string)
			if !ok {
				writeError(w, http.StatusBadRequest, "invalid_request_error", "input", "", "input["+itoa(i)+"] must be a string")
				return
			}
			inputs = append(inputs, s)
		}
	default:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "input", "", "input must be a string or an array of strings")
		return
	}
	resp, err := h.router.Embed(r.Context(), req.Model, inputs)
	if err != nil {
		writeStatus(w, err)
		return
	}
	data := make([]map[string]any, len(resp.GetEmbeddings()))
	for i, e := range resp.GetEmbeddings() {
		var v any = e.GetValues()
		if req.EncodingFormat == "base64" { // little-endian float32s, as OpenAI sends them
			b := make([]byte, 0, 4*len(e.GetValues()))
			for _, f := range e.GetValues() {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
			}
			v = base64.StdEncoding.EncodeToString(b)
		}
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": v}
	}
	u := resp.GetUsage()
	writeJSON(w, map[string]any{"object": "list", "data": data, "model": req.Model,
		"usage": map[string]any{"prompt_tokens": u.GetPromptTokens(), "total_tokens": u.GetTotalTokens()}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func itoa(i int) string { return strconv.Itoa(i) }

// answeredBy is the response's model: the one that finished the answer
// (after a fallback, not the one asked for).
func answeredBy(started string, end *genv1.EndEvent) string {
	if m := end.GetModels(); len(m) > 0 {
		return m[len(m)-1]
	}
	return started
}

// routingReport is the router's account of a request, as an extension
// field OpenAI clients ignore: the models that answered, failovers, and
// every attempt with its outcome and cost.
func routingReport(end *genv1.EndEvent) map[string]any {
	attempts := make([]map[string]any, 0, len(end.GetAttempts()))
	for _, a := range end.GetAttempts() {
		m := map[string]any{
			"endpoint": a.GetEndpoint(), "model": a.GetModel(),
			"reason":            strings.ToLower(strings.TrimPrefix(a.GetReason().String(), "ATTEMPT_REASON_")),
			"outcome":           strings.ToLower(strings.TrimPrefix(a.GetOutcome().String(), "ATTEMPT_OUTCOME_")),
			"completion_tokens": a.GetCompletionTokens(), "cost_usd": a.GetCostUsd(),
			"duration_ms": a.GetDuration().AsDuration().Milliseconds(),
		}
		if a.GetError() != "" {
			m["error"] = a.GetError()
		}
		attempts = append(attempts, m)
	}
	return map[string]any{"models": end.GetModels(), "failovers": end.GetFailovers(), "cost_usd": end.GetCostUsd(), "attempts": attempts}
}
