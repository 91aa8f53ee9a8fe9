package openai_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

// Any JSON body on any of the API's POST endpoints gets a 200 or a precise
// 4xx with OpenAI's error shape, never a 5xx, a panic or a hang, through a
// real router and a sim worker.
func FuzzRequestBodies(f *testing.F) {
	url := api(f, server.Config{})
	paths := []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
	for _, seed := range []struct {
		path uint8
		body string
	}{
		{0, `{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}`},
		{0, `{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stop": null, "max_tokens": 2}`},
		{0, `{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}`},
		{1, `{"model": "m", "prompt": "hi", "max_tokens": 2, "stop": ["\n", "x"], "temperature": 0.5}`},
		{1, `{"model": "m", "prompt": "hi", "max_tokens": -1, "temperature": 1e309}`},
		{2, `{"model": "m", "input": ["a", "b"]}`},
		{0, `{"model": "\u00ff", "messages": []}`},
		{1, `[1, 2, 3]`},
		{1, `{"model": "m", "prompt": "hi", "n": 1000000}`},
	} {
		f.Add(seed.path, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, path uint8, body []byte) {
		p := paths[int(path)%len(paths)]
		resp, err := http.Post(url+p, "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			return
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %q: HTTP %d %s", p, body, resp.StatusCode, b)
		}
		var e struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
			t.Fatalf("%s %q: HTTP %d without an OpenAI error body: %s", p, body, resp.StatusCode, b)
		}
	})
}
