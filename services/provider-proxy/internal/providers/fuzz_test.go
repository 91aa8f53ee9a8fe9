package providers_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers/anthropic"
	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers/openai"
)

const secret = "sk-fuzz-secret-0123456789"

// upstream answers every request with the current fuzz input as an event
// stream.
func upstream(f *testing.F) (string, *atomic.Pointer[[]byte]) {
	var body atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.Write(*body.Load())
	}))
	f.Cleanup(srv.Close)
	return srv.URL, &body
}

// drain reads a stream to its end: every answer ends in Done or an error,
// within a bound, and no error leaks the API key.
func drain(t *testing.T, p providers.Provider, input []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.Stream(ctx, providers.Request{Model: "up", Messages: []providers.Message{{Role: "user", Content: "hi"}}, MaxTokens: 16})
	if err != nil {
		checkErr(t, err, input)
		return
	}
	defer s.Close()
	for i := 0; ; i++ {
		if i > len(input)+16 {
			t.Fatalf("stream of %d bytes yielded more than %d chunks", len(input), i)
		}
		c, err := s.Next()
		if err != nil {
			checkErr(t, err, input)
			return
		}
		if c.Done {
			return
		}
	}
}

func checkErr(t *testing.T, err error, input []byte) {
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("error leaks the API key: %v", err)
	}
	if c := rpcerr.Code(err).String(); c == "Internal" || c == "Unknown" {
		t.Fatalf("stream %q: imprecise error %v", input, err)
	}
}

// The OpenAI Chat Completions event-stream reader.
func FuzzOpenAIStream(f *testing.F) {
	url, body := upstream(f)
	p := openai.New("openai", url+"/v1/", secret, false, http.DefaultClient)
	for _, s := range []string{
		"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n",
		"data: {\"error\":{\"message\":\"overloaded " + secret + "\",\"type\":\"server_error\",\"code\":\"overloaded\"}}\n\n",
		": comment\nevent: x\ndata: not json\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
		"data: [DONE]\n\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		body.Store(&in)
		drain(t, p, in)
	})
}

// Anthropic's Messages event stream, through the official SDK's decoder.
func FuzzAnthropicStream(f *testing.F) {
	url, body := upstream(f)
	p := anthropic.New("anthropic", url, secret, http.DefaultClient)
	for _, s := range []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n" +
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n" +
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
		"event: content_block_delta\ndata: {broken\n\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		body.Store(&in)
		drain(t, p, in)
	})
}
