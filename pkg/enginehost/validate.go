package enginehost

import (
	"encoding/json"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
)

// Limits bound what one request may ask for.
type Limits struct {
	// MaxPromptBytes bounds a text prompt, or the sum of a chat's contents.
	MaxPromptBytes int
	// MaxPromptTokens bounds a token-id prompt.
	MaxPromptTokens int
	// MaxChatMessages bounds a chat prompt's turns.
	MaxChatMessages int
	// MaxEmbedInputs bounds one Embed call.
	MaxEmbedInputs int
	// ModelDirs are the directories LoadModel may load from (see
	// ResolveSource); none: LoadModel loads nothing from disk.
	ModelDirs []string
}

// DefaultLimits are generous for real use and small enough to stop abuse.
var DefaultLimits = Limits{
	MaxPromptBytes:  1 << 20,
	MaxPromptTokens: 1 << 18,
	MaxChatMessages: 1024,
	MaxEmbedInputs:  256,
}

const (
	maxStops       = 8
	maxStopBytes   = 256
	maxRequestID   = 128
	maxTopLogprobs = 20
	maxTopK        = 1_000_000
	maxModelName   = 256
	maxFormatName  = 64
)

// MaxMessageName is the longest author name of a chat turn, in bytes.
const MaxMessageName = 64

// ValidateModelName checks a model name field.
func ValidateModelName(name string) error {
	switch {
	case name == "":
		return rpcerr.InvalidArgument("model is required")
	case len(name) > maxModelName:
		return rpcerr.InvalidArgument("model name is %d bytes, over the limit of %d", len(name), maxModelName)
	case !utf8.ValidString(name):
		return rpcerr.InvalidArgument("model name is not valid UTF-8")
	}
	return nil
}

// Limits of sampling and request fields that the HTTP API also checks
// itself (to name the field in OpenAI's error shape).
const (
	MaxUser      = 256
	MaxLogitBias = 1024
)

// ValidateRequestID checks a request id field.
func ValidateRequestID(id string) error { return shortString("request_id", id, maxRequestID) }

// ValidateUser checks the end-user field.
func ValidateUser(user string) error { return shortString("user", user, MaxUser) }

// shortString checks a bounded UTF-8 field.
func shortString(field, s string, limit int) error {
	if len(s) > limit {
		return rpcerr.InvalidArgument("%s is %d bytes, over the limit of %d", field, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return rpcerr.InvalidArgument("%s is not valid UTF-8", field)
	}
	return nil
}

// CheckLogitBias refuses logit_bias token ids outside a vocabulary of
// nVocab tokens.
func CheckLogitBias(bias map[uint32]float32, nVocab int) error {
	for id := range bias {
		if int64(id) >= int64(nVocab) {
			return rpcerr.InvalidArgument("sampling.logit_bias names token %d, outside the model's vocabulary of %d tokens", id, nVocab)
		}
	}
	return nil
}

// ValidatePrompt checks a prompt's shape, encoding and size; it does not
// tokenize.
func ValidatePrompt(p *generationv1.Prompt, l Limits) error {
	switch k := p.GetKind().(type) {
	case nil:
		return rpcerr.InvalidArgument("prompt is required: set text, chat or tokens")
	case *generationv1.Prompt_Text:
		if k.Text == "" {
			return rpcerr.InvalidArgument("prompt.text is empty")
		}
		if len(k.Text) > l.MaxPromptBytes {
			return rpcerr.InvalidArgument("prompt.text is %d bytes, over the limit of %d", len(k.Text), l.MaxPromptBytes)
		}
		if !utf8.ValidString(k.Text) {
			return rpcerr.InvalidArgument("prompt.text is not valid UTF-8 (first bad byte at offset %d)", firstInvalid(k.Text))
		}
	case *generationv1.Prompt_Chat:
		msgs := k.Chat.GetMessages()
		if len(msgs) == 0 {
			return rpcerr.InvalidArgument("prompt.chat has no messages")
		}
		if len(msgs) > l.MaxChatMessages {
			return rpcerr.InvalidArgument("prompt.chat has %d messages, over the limit of %d", len(msgs), l.MaxChatMessages)
		}
		total := 0
		for i, m := range msgs {
			if _, ok := generationv1.Role_name[int32(m.GetRole())]; !ok || m.GetRole() == generationv1.Role_ROLE_UNSPECIFIED {
				return rpcerr.InvalidArgument("prompt.chat.messages[%d].role must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL", i)
			}
			if !utf8.ValidString(m.GetContent()) {
				return rpcerr.InvalidArgument("prompt.chat.messages[%d].content is not valid UTF-8 (first bad byte at offset %d)", i, firstInvalid(m.GetContent()))
			}
			if n := m.GetName(); len(n) > MaxMessageName || !utf8.ValidString(n) {
				return rpcerr.InvalidArgument("prompt.chat.messages[%d].name must be valid UTF-8 of at most %d bytes, got %d bytes", i, MaxMessageName, len(n))
			}
			total += len(m.GetContent())
			for _, c := range m.GetToolCalls() {
				total += len(c.GetName()) + len(c.GetArguments())
			}
		}
		for _, t := range k.Chat.GetTools() {
			total += len(t.GetDescription()) + len(t.GetParameters())
		}
		if total == 0 {
			return rpcerr.InvalidArgument("prompt.chat has only empty messages")
		}
		if total > l.MaxPromptBytes {
			return rpcerr.InvalidArgument("prompt.chat totals %d bytes, over the limit of %d", total, l.MaxPromptBytes)
		}
	case *generationv1.Prompt_Tokens:
		n := len(k.Tokens.GetIds())
		if n == 0 {
			return rpcerr.InvalidArgument("prompt.tokens is empty")
		}
		if n > l.MaxPromptTokens {
			return rpcerr.InvalidArgument("prompt.tokens has %d ids, over the limit of %d", n, l.MaxPromptTokens)
		}
	}
	return nil
}

// ValidateSampling checks ranges and returns the sampling with defaults
// and the response format's grammar.
func ValidateSampling(s *generationv1.SamplingParams) (Sampling, error) {
	return validateSampling(s, true)
}

// ValidateSamplingShape is ValidateSampling without compiling a JSON
// Schema's grammar (it checks that the schema is JSON): for hosts of
// hosted providers, which validate schemas themselves, beyond the
// grammar's subset.
func ValidateSamplingShape(s *generationv1.SamplingParams) (Sampling, error) {
	return validateSampling(s, false)
}

func validateSampling(s *generationv1.SamplingParams, compile bool) (Sampling, error) {
	out := Sampling{Temperature: 0.8, TopP: 1, RepeatPenalty: 1}
	if s == nil {
		return out, nil
	}
	bad := func(field string, v any, want string) (Sampling, error) {
		return Sampling{}, rpcerr.InvalidArgument("sampling.%s = %v is out of range: want %s", field, v, want)
	}
	if s.Temperature != nil {
		t := s.GetTemperature()
		if !finite(t) || t < 0 || t > 2 {
			return bad("temperature", t, "0 to 2 (0 is greedy)")
		}
		out.Temperature = t
	}
	if s.GetTopK() < 0 || s.GetTopK() > maxTopK {
		return bad("top_k", s.GetTopK(), fmt.Sprintf("0 to %d (0 disables)", maxTopK))
	}
	out.TopK = int(s.GetTopK())
	if s.TopP != nil {
		p := s.GetTopP()
		if !finite(p) || p <= 0 || p > 1 {
			return bad("top_p", p, "(0, 1]")
		}
		out.TopP = p
	}
	if m := s.GetMinP(); !finite(m) || m < 0 || m >= 1 {
		return bad("min_p", m, "[0, 1)")
	}
	out.MinP = s.GetMinP()
	if s.RepeatPenalty != nil {
		r := s.GetRepeatPenalty()
		if !finite(r) || r <= 0 || r > 10 {
			return bad("repeat_penalty", r, "(0, 10]")
		}
		out.RepeatPenalty = r
	}
	out.Seed, out.SeedSet = s.GetSeed(), s.Seed != nil
	if s.GetMaxTokens() < 0 {
		return bad("max_tokens", s.GetMaxTokens(), "a positive count (0 means up to the context end)")
	}
	if len(s.GetStop()) > maxStops {
		return Sampling{}, rpcerr.InvalidArgument("sampling.stop has %d sequences, over the limit of %d", len(s.GetStop()), maxStops)
	}
	for i, st := range s.GetStop() {
		if st == "" || len(st) > maxStopBytes {
			return Sampling{}, rpcerr.InvalidArgument("sampling.stop[%d] must be 1 to %d bytes, got %d", i, maxStopBytes, len(st))
		}
		if !utf8.ValidString(st) {
			return Sampling{}, rpcerr.InvalidArgument("sampling.stop[%d] is not valid UTF-8", i)
		}
	}
	if s.GetTopLogprobs() < 0 || s.GetTopLogprobs() > maxTopLogprobs {
		return bad("top_logprobs", s.GetTopLogprobs(), fmt.Sprintf("0 to %d", maxTopLogprobs))
	}
	if s.GetTopLogprobs() > 0 && !s.GetLogprobs() {
		return Sampling{}, rpcerr.InvalidArgument("sampling.top_logprobs needs sampling.logprobs = true")
	}
	out.Logprobs, out.TopLogprobs = s.GetLogprobs(), int(s.GetTopLogprobs())
	if f := s.GetFrequencyPenalty(); !finite(f) || f < -2 || f > 2 {
		return bad("frequency_penalty", f, "-2 to 2")
	}
	if p := s.GetPresencePenalty(); !finite(p) || p < -2 || p > 2 {
		return bad("presence_penalty", p, "-2 to 2")
	}
	out.FrequencyPenalty, out.PresencePenalty = s.GetFrequencyPenalty(), s.GetPresencePenalty()
	if len(s.GetLogitBias()) > MaxLogitBias {
		return Sampling{}, rpcerr.InvalidArgument("sampling.logit_bias has %d entries, over the limit of %d", len(s.GetLogitBias()), MaxLogitBias)
	}
	for id, b := range s.GetLogitBias() {
		if !finite(b) || b < -100 || b > 100 {
			return Sampling{}, rpcerr.InvalidArgument("sampling.logit_bias[%d] = %v is out of range: want -100 to 100", id, b)
		}
	}
	if len(s.GetLogitBias()) > 0 {
		out.LogitBias = s.GetLogitBias()
	}
	if err := validateFormat(s.GetResponseFormat(), &out, compile); err != nil {
		return Sampling{}, err
	}
	return out, nil
}

// validateFormat compiles a response format's grammar into out.
func validateFormat(f *generationv1.ResponseFormat, out *Sampling, compile bool) error {
	switch f.GetType() {
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_UNSPECIFIED, generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_TEXT:
		if f.GetJsonSchema() != "" {
			return rpcerr.InvalidArgument("sampling.response_format.json_schema needs type RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
		}
		return nil
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT:
		out.Format, out.Grammar = f, jsonObject
		return nil
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
		if f.GetJsonSchema() == "" {
			return rpcerr.InvalidArgument("sampling.response_format.json_schema is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
		}
		if len(f.GetName()) > maxFormatName {
			return rpcerr.InvalidArgument("sampling.response_format.name is %d bytes, over the limit of %d", len(f.GetName()), maxFormatName)
		}
		if !compile {
			if len(f.GetJsonSchema()) > structured.MaxSchemaBytes || !json.Valid([]byte(f.GetJsonSchema())) {
				_, err := structured.CompileCached(f.GetJsonSchema()) // its message says why
				return rpcerr.InvalidArgument("sampling.response_format.json_schema: %v", err)
			}
			out.Format = f
			return nil
		}
		g, err := structured.CompileCached(f.GetJsonSchema())
		if err != nil {
			return schemaError(err, "sampling.response_format.json_schema: %v")
		}
		out.Format, out.Grammar = f, g
		return nil
	}
	return rpcerr.InvalidArgument("sampling.response_format.type %d is unknown", f.GetType())
}

var jsonObject = structured.JSONObject()

// ValidateLength checks prompt and max_tokens against the model's context
// and returns the effective max_tokens.
func ValidateLength(m *enginev1.ModelInfo, promptTokens int, maxTokens int32) (int, error) {
	ctx := int(m.GetContextLength())
	if promptTokens >= ctx {
		return 0, rpcerr.WithReason(rpcerr.InvalidArgument("prompt is %d tokens; model %q has a context of %d, which leaves no room to generate", promptTokens, m.GetName(), ctx), rpcerr.ReasonContextLength)
	}
	room := ctx - promptTokens
	if maxTokens == 0 {
		return room, nil
	}
	if int(maxTokens) > room {
		return 0, rpcerr.WithReason(rpcerr.InvalidArgument("prompt (%d tokens) + max_tokens (%d) exceeds model %q's context of %d tokens", promptTokens, maxTokens, m.GetName(), ctx), rpcerr.ReasonContextLength)
	}
	return int(maxTokens), nil
}

func finite(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }

func firstInvalid(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return i
			}
		}
	}
	return -1
}

// ValidateUTF8 checks every string field of m, nested messages, lists and
// maps included: the protos turn off the decoder's UTF-8 validation (for
// speed), so this is where a request with invalid UTF-8 is refused, with
// InvalidArgument naming the field.
func ValidateUTF8(m proto.Message) error {
	if msg := invalidUTF8(m.ProtoReflect(), ""); msg != "" {
		return rpcerr.InvalidArgument("%s", msg)
	}
	return nil
}

func invalidUTF8(m protoreflect.Message, prefix string) (bad string) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + string(fd.Name())
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
					bad = name + " has a key that is not valid UTF-8"
					return false
				}
				bad = checkValue(fd.MapValue(), mv, name+"[…]")
				return bad == ""
			})
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if bad = checkValue(fd, l.Get(i), fmt.Sprintf("%s[%d]", name, i)); bad != "" {
					break
				}
			}
		default:
			bad = checkValue(fd, v, name)
		}
		return bad == ""
	})
	return bad
}

func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, name string) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if s := v.String(); !utf8.ValidString(s) {
			return fmt.Sprintf("%s is not valid UTF-8 (first bad byte at offset %d)", name, firstInvalid(s))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return invalidUTF8(v.Message(), name+".")
	}
	return ""
}
