package openai_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

func TestEnsembleOverHTTP(t *testing.T) {
	url := apiModels(t, server.Config{},
		sim.ModelConfig{Name: "a", CostPer1KOutput: 1, OutputTokens: 6}, sim.ModelConfig{Name: "b", CostPer1KOutput: 1, OutputTokens: 6},
		sim.ModelConfig{Name: "c", CostPer1KOutput: 1, OutputTokens: 3})
	body := `{"model":"ensemble","stream":true,"max_tokens":10,"temperature":0,"messages":[{"role":"user","content":"hi"}],
		"ensemble":{"models":["c","a","b"],"combiner":"vote"}}`
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var comments int
	var text strings.Builder
	var report map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, ": ensemble member ") {
			if text.Len() > 0 {
				t.Fatalf("progress after the answer began: %q", line)
			}
			comments++
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
			LLMRouter map[string]any `json:"llmrouter"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
		if c.LLMRouter != nil {
			report = c.LLMRouter
		}
	}
	ens, _ := report["ensemble"].(map[string]any)
	if comments < 2 || ens["combiner"] != "vote" || len(ens["members"].([]any)) != 3 || text.Len() == 0 {
		t.Fatalf("%d progress comments, text %q, report %v", comments, text.String(), report)
	}
	if w := ens["members"].([]any)[int(ens["winner"].(float64))].(map[string]any); w["model"] == "c" || w["votes"] != 2.0 {
		t.Fatalf("winner %v", w)
	}

	for _, c := range []struct{ body, param string }{
		{`"ensemble":{"models":["a","b"],"combiner":"mean"}`, "ensemble.combiner"},
		{`"n":2,"ensemble":{"models":["a","b"],"combiner":"vote"}`, "n"},
	} {
		r, v := post(t, url+"/v1/chat/completions", `{"model":"x","messages":[{"role":"user","content":"hi"}],`+c.body+`}`)
		if e, _ := v["error"].(map[string]any); r.StatusCode != 400 || e["param"] != c.param {
			t.Errorf("%s: %d %v", c.body, r.StatusCode, v)
		}
	}
	// The router's own checks come back as 400s too.
	r, v := post(t, url+"/v1/chat/completions", `{"model":"x","messages":[{"role":"user","content":"hi"}],"ensemble":{"models":["a","b","a","b","a","b","a","b","a"],"combiner":"first"}}`)
	if e, _ := v["error"].(map[string]any); r.StatusCode != 400 || !strings.Contains(e["message"].(string), "2 to 8") {
		t.Errorf("nine members: %d %v", r.StatusCode, v)
	}
}
