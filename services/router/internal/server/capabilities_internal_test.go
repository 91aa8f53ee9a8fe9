package server

import (
	"testing"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

// A worker built before models advertised capabilities sends none: its
// models keep what their format could always do, instead of losing every
// capability (and every structured-output request) on a mixed rollout.
func TestMissingTreatsNoCapabilitiesAsLegacy(t *testing.T) {
	all := needs{structured: true, tools: true, logprobs: true}
	for _, tc := range []struct {
		name      string
		info      *enginev1.ModelInfo
		want, key string
	}{
		{"old gguf worker", &enginev1.ModelInfo{Format: "gguf"}, "tools", "tools"},
		{"old onnx worker", &enginev1.ModelInfo{Format: "onnx"}, "tools", "tools"},
		{"old proxy", &enginev1.ModelInfo{Format: "api"}, "tools, logprobs", "tools"},
		{"unknown format", &enginev1.ModelInfo{Format: "sim"}, "structured output (response_format), tools, logprobs", "structured_output"},
		{"advertises nothing", &enginev1.ModelInfo{Format: "gguf", Capabilities: &enginev1.Capabilities{}}, "structured output (response_format), tools, logprobs", "structured_output"},
		{"advertises all", &enginev1.ModelInfo{Format: "gguf", Capabilities: &enginev1.Capabilities{StructuredOutput: true, Tools: true, Logprobs: true}}, "", ""},
	} {
		what, key := all.missing(tc.info)
		if what != tc.want || key != tc.key {
			t.Errorf("%s: missing = %q, %q; want %q, %q", tc.name, what, key, tc.want, tc.key)
		}
	}
}
