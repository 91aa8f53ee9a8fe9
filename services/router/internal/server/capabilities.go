package server

import (
	"strings"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
)

// needs is what a request asks of a model beyond plain text.
type needs struct {
	structured, tools, logprobs bool
	// anySchema: a response format's or a forced tool call's schema is
	// outside the local grammar subset (why says how), so only a model
	// that takes any JSON Schema can serve it.
	anySchema bool
	why       error
}

// needsOf reads a (validated) request's needs.
func needsOf(req *routerv1.GenerateRequest) needs {
	var n needs
	sp := req.GetSampling()
	n.logprobs = sp.GetLogprobs()
	switch f := sp.GetResponseFormat(); f.GetType() {
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_OBJECT:
		n.structured = true
	case generationv1.ResponseFormatType_RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
		n.structured = true
		if _, err := structured.CompileCached(f.GetJsonSchema()); err != nil {
			n.anySchema, n.why = true, err
		}
	}
	chat := req.GetPrompt().GetChat()
	if !enginehost.UsesTools(chat) {
		return n
	}
	n.tools = true
	if m := chat.GetToolChoice().GetMode(); !n.anySchema && (m == generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED || m == generationv1.ToolChoiceMode_TOOL_CHOICE_MODE_FUNCTION) {
		if _, err := enginehost.ValidateTools(chat, true); err != nil {
			n.anySchema, n.why = true, err
		}
	}
	return n
}

// missing names the needs model info m does not advertise ("" when it
// has them all).
func (n needs) missing(m *enginev1.ModelInfo) string {
	c := m.GetCapabilities()
	var out []string
	if n.structured && !c.GetStructuredOutput() {
		out = append(out, "structured output (response_format)")
	}
	if n.anySchema && !c.GetAnyJsonSchema() {
		out = append(out, "JSON Schemas beyond the structured-output subset")
	}
	if n.tools && !c.GetTools() {
		out = append(out, "tools")
	}
	if n.logprobs && !c.GetLogprobs() {
		out = append(out, "logprobs")
	}
	return strings.Join(out, ", ")
}
