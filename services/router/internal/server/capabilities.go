package server

import (
	"strings"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
)

// needs is what a request asks of a model beyond plain text.
type needs struct {
	structured, tools, logprobs, prefill bool
	// generate: a generation (sentence encoders serve embeddings only).
	generate bool
	// anySchema: a response format's or a strict tool's schema is
	// outside the local grammar subset (why says how, schemaOf whose:
	// "response_format" or "tools"), so only a model that takes any JSON
	// Schema can serve it.
	anySchema bool
	why       error
	schemaOf  string
}

// needsOf reads a (validated) request's needs.
func needsOf(req *routerv1.GenerateRequest) needs {
	var n needs
	sp := req.GetSampling()
	n.logprobs = sp.GetLogprobs()
	n.prefill = req.GetPrefill() != ""
	switch sp.GetResponseFormat().GetType() {
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT:
		n.structured = true
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
		n.structured = true
		if _, err := enginehost.ValidateSampling(sp); enginehost.SchemaUnsupported(err) {
			n.anySchema, n.why, n.schemaOf = true, err, "response_format"
		}
	}
	chat := req.GetPrompt().GetChat()
	if !enginehost.UsesTools(chat) {
		return n
	}
	n.tools = true
	if !n.anySchema {
		if _, err := enginehost.ValidateTools(chat, sp.GetResponseFormat(), true); enginehost.SchemaUnsupported(err) {
			n.anySchema, n.why, n.schemaOf = true, err, "tools"
		}
	}
	return n
}

// legacy is what a model of a worker built before capabilities were
// advertised could do: engines that host models enforced response formats
// and computed logprobs; hosted providers passed response formats on.
func legacy(format string) *enginev1.Capabilities {
	switch format {
	case "gguf", "onnx":
		return &enginev1.Capabilities{StructuredOutput: true, Logprobs: true}
	case "api":
		return &enginev1.Capabilities{StructuredOutput: true}
	}
	return &enginev1.Capabilities{}
}

// missing names the needs model info m does not advertise ("" when it
// has them all), and the first of them as a capability key
// (rpcerr.MetaCapability).
func (n needs) missing(m *enginev1.ModelInfo) (what, first string) {
	c := m.GetCapabilities()
	if c == nil {
		c = legacy(m.GetFormat())
	}
	var out, keys []string
	lack := func(need, has bool, key, phrase string) {
		if need && !has {
			out, keys = append(out, phrase), append(keys, key)
		}
	}
	lack(n.generate, !c.GetEmbeddingsOnly(), "generation", "text generation (it is a sentence encoder: embeddings only)")
	lack(n.structured, c.GetStructuredOutput(), "structured_output", "structured output (response_format)")
	lack(n.anySchema, c.GetAnyJsonSchema(), "any_json_schema", "JSON Schemas beyond the structured-output subset")
	lack(n.tools, c.GetTools(), "tools", "tools")
	lack(n.logprobs, c.GetLogprobs(), "logprobs", "logprobs")
	lack(n.prefill, m.GetAcceptsPrefill(), "prefill", "continuing a prefill (accepts_prefill)")
	if len(keys) == 0 {
		return "", ""
	}
	return strings.Join(out, ", "), keys[0]
}
