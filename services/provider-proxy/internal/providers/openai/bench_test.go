package openai

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/llm-runner-router/llmrouter/services/provider-proxy/internal/providers"
)

// BenchmarkStreamChunks measures the provider's cost per streamed chunk
// (SDK SSE and JSON decoding) against a local upstream sending 256 chunks.
func BenchmarkStreamChunks(b *testing.B) {
	const chunks = 256
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range chunks {
			fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok%d\"},\"finish_reason\":null}]}\n\n", i)
		}
		fmt.Fprint(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":256,\"total_tokens\":257}}\n\ndata: [DONE]\n\n")
	}))
	defer srv.Close()
	p := New("up", srv.URL+"/v1/", "k", false, http.DefaultClient)
	for b.Loop() {
		s, err := p.Stream(context.Background(), providers.Request{Model: "up", Messages: []providers.Message{{Role: "user", Content: "hi"}}})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			c, err := s.Next()
			if err != nil {
				b.Fatal(err)
			}
			if c.Done {
				break
			}
			n++
		}
		s.Close()
		if n != chunks {
			b.Fatalf("%d chunks", n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*chunks), "µs/chunk")
}
