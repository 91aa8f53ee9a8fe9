package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// upstream is a local HTTP server speaking OpenAI's or Anthropic's streaming
// wire format (from their public API references), scripted per test.
type upstream struct {
	mu       sync.Mutex
	bodies   []map[string]any
	attempts atomic.Int32
	// failFirst answers the first N attempts with status and body.
	failFirst  int32
	failStatus int
	failBody   string
	failHeader map[string]string
	// cutAfter closes the connection after this many text chunks (0: never).
	cutAfter int
	// stall keeps the response open without data until the client leaves.
	stall     bool
	stallSeen chan struct{}
	canceled  chan struct{}
	// errorEvent sends Anthropic's mid-stream error event after the text.
	errorEvent bool
	words      []string
	// calls are tool calls streamed after the words, each its name and
	// the pieces of its arguments.
	calls []fakeCall
	// callsAtZero numbers every call 0 and repeats its id on each delta,
	// as some OpenAI-compatible servers do.
	callsAtZero bool
	// freshIDs sends a new id on every arguments delta (without a name),
	// as other compatible servers do.
	freshIDs bool
	// stopSequence ends the message as stopped at this stop sequence.
	stopSequence string
}

type fakeCall struct {
	name string
	args []string
}

func newUpstream(words ...string) *upstream {
	return &upstream{words: words, stallSeen: make(chan struct{}, 1), canceled: make(chan struct{}, 1)}
}

func (u *upstream) record(r *http.Request) map[string]any {
	var body map[string]any
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	u.mu.Lock()
	u.bodies = append(u.bodies, body)
	u.mu.Unlock()
	return body
}

func (u *upstream) lastBody() map[string]any {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bodies[len(u.bodies)-1]
}

// fail answers with the scripted error, or reports false.
func (u *upstream) fail(w http.ResponseWriter) bool {
	if n := u.attempts.Add(1); n > u.failFirst {
		return false
	}
	for k, v := range u.failHeader {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(u.failStatus)
	io.WriteString(w, u.failBody)
	return true
}

func (u *upstream) stallUntilGone(r *http.Request, w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	w.(http.Flusher).Flush()
	u.stallSeen <- struct{}{}
	select {
	case <-r.Context().Done():
		u.canceled <- struct{}{}
	case <-time.After(30 * time.Second):
	}
}

func sse(w http.ResponseWriter, event, data string) {
	if event != "" {
		fmt.Fprintf(w, "event: %s\n", event)
	}
	fmt.Fprintf(w, "data: %s\n\n", data)
	w.(http.Flusher).Flush()
}

// cut drops the connection without finishing the response.
func cut(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

// openAI serves POST /v1/chat/completions as Chat Completions streaming:
// a role chunk, content chunks, a finish chunk, the usage chunk (empty
// choices) and [DONE].
func (u *upstream) openAI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		body := u.record(r)
		if u.fail(w) {
			return
		}
		if u.stall {
			u.stallUntilGone(r, w)
			return
		}
		model, _ := body["model"].(string)
		chunk := func(delta string, finish any) string {
			return fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":%q,"system_fingerprint":"fp_1","choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}],"usage":null}`,
				model, delta, func() string { b, _ := json.Marshal(finish); return string(b) }())
		}
		w.Header().Set("Content-Type", "text/event-stream")
		sse(w, "", chunk(`{"role":"assistant","content":"","refusal":null}`, nil))
		for i, word := range u.words {
			if u.cutAfter > 0 && i == u.cutAfter {
				cut(w)
				return
			}
			b, _ := json.Marshal(map[string]string{"content": word})
			sse(w, "", chunk(string(b), nil))
		}
		finish := "stop"
		for i, c := range u.calls {
			index, again := i, ""
			if u.callsAtZero {
				index, again = 0, fmt.Sprintf(`"id":"call_%d",`, i)
			}
			sse(w, "", chunk(fmt.Sprintf(`{"tool_calls":[{"index":%d,"id":"call_%d","type":"function","function":{"name":%q,"arguments":""}}]}`, index, i, c.name), nil))
			for j, a := range c.args {
				if u.freshIDs {
					again = fmt.Sprintf(`"id":"delta_%d_%d",`, i, j)
				}
				b, _ := json.Marshal(a)
				sse(w, "", chunk(fmt.Sprintf(`{"tool_calls":[{"index":%d,%s"function":{"arguments":%s}}]}`, index, again, b), nil))
			}
			finish = "tool_calls"
		}
		sse(w, "", chunk(`{}`, finish))
		sse(w, "", fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":%q,"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":%d,"total_tokens":%d}}`, model, len(u.words), 11+len(u.words)))
		sse(w, "", "[DONE]")
	})
}

// anthropic serves POST /v1/messages as Messages streaming: message_start,
// content_block_start, ping, content_block_delta..., content_block_stop,
// message_delta, message_stop (or an error event).
func (u *upstream) anthropic() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/messages/count_tokens" {
			// Anthropic's count_tokens: 7 + 3 per message (a figure the
			// tests can check came from here).
			body := u.record(r)
			if u.fail(w) {
				return
			}
			msgs, _ := body["messages"].([]any)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"input_tokens":%d}`, 7+3*len(msgs))
			return
		}
		if r.URL.Path != "/v1/messages" {
			http.NotFound(w, r)
			return
		}
		body := u.record(r)
		if u.fail(w) {
			return
		}
		if u.stall {
			u.stallUntilGone(r, w)
			return
		}
		model, _ := body["model"].(string)
		w.Header().Set("Content-Type", "text/event-stream")
		sse(w, "message_start", fmt.Sprintf(`{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":%q,"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":13,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}`, model))
		sse(w, "content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
		sse(w, "ping", `{"type": "ping"}`)
		for i, word := range u.words {
			if u.cutAfter > 0 && i == u.cutAfter {
				cut(w)
				return
			}
			b, _ := json.Marshal(word)
			sse(w, "content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%s}}`, b))
		}
		if u.errorEvent {
			sse(w, "error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
			return
		}
		sse(w, "content_block_stop", `{"type":"content_block_stop","index":0}`)
		stop := "end_turn"
		for i, c := range u.calls {
			sse(w, "content_block_start", fmt.Sprintf(`{"type":"content_block_start","index":%d,"content_block":{"type":"tool_use","id":"toolu_%d","name":%q,"input":{}}}`, i+1, i, c.name))
			for _, a := range c.args {
				b, _ := json.Marshal(a)
				sse(w, "content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":%d,"delta":{"type":"input_json_delta","partial_json":%s}}`, i+1, b))
			}
			sse(w, "content_block_stop", fmt.Sprintf(`{"type":"content_block_stop","index":%d}`, i+1))
			stop = "tool_use"
		}
		seq := "null"
		if u.stopSequence != "" {
			stop, seq = "stop_sequence", strconv.Quote(u.stopSequence)
		}
		sse(w, "message_delta", fmt.Sprintf(`{"type":"message_delta","delta":{"stop_reason":%q,"stop_sequence":%s},"usage":{"output_tokens":%d}}`, stop, seq, len(u.words)))
		sse(w, "message_stop", `{"type":"message_stop"}`)
	})
}

func openAIError(typ, code, msg string) string {
	return fmt.Sprintf(`{"error":{"message":%q,"type":%q,"param":null,"code":%q}}`, msg, typ, code)
}

func anthropicError(typ, msg string) string {
	return fmt.Sprintf(`{"type":"error","error":{"type":%q,"message":%q}}`, typ, msg)
}
