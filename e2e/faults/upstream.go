// Package faults is the fault matrix: a fault-injecting upstream that speaks
// OpenAI's Chat Completions wire format (JSON errors, server-sent event
// streams with usage chunks and [DONE]) and misbehaves as scripted per model
// name, and the rows that run real provider-proxy and router processes
// against it and check how each fault ends. The test suite runs it with
// short limits; make faults runs it with realistic ones and writes
// docs/reliability.md.
package faults

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Fault is one scripted misbehaviour (zero: a clean answer).
type Fault struct {
	// Status answers with this HTTP status and Body (JSON), plus Header.
	Status int
	Body   string
	Header map[string]string
	// Reset closes the connection before any response headers.
	Reset bool
	// Silent accepts the request and never answers.
	Silent bool
	// FirstDelay holds the first chunk back this long.
	FirstDelay time.Duration
	// CutAfter closes the connection after this many words.
	CutAfter int
	// StallAfter stops sending (connection open) after this many words.
	StallAfter int
	// TrickleAfter sends the words after this many at one per TrickleEvery.
	TrickleAfter int
	TrickleEvery time.Duration
	// Malformed sends this many malformed events among the words, and
	// MalformedFirst this many before the first word.
	Malformed      int
	MalformedFirst int
	// Oversized sends one event of this many bytes before the words.
	Oversized int
	// CutBeforeFirst closes the connection after the headers, before any
	// event.
	CutBeforeFirst bool
	// NoDone sends the usage chunk, then holds the connection open without
	// [DONE]; NoUsage ends the response after the finish chunk, with
	// neither usage nor [DONE].
	NoDone  bool
	NoUsage bool
	// ErrorAfter sends an OpenAI error event (a rate limit) after this many
	// words (0: never; -1: before the first) and ends the response.
	ErrorAfter int
	// ContentType answers 200 with this content type and Body.
	ContentType string
}

// Upstream is the fault-injecting server. Each model has a script: the n-th
// request for it gets Script[n], the last entry repeating.
type Upstream struct {
	URL, TLSURL string
	Words       []string
	// WordDelay paces clean streams.
	WordDelay time.Duration

	srv     *httptest.Server
	tls     *httptest.Server
	mu      sync.Mutex
	scripts map[string][]Fault
	seen    map[string]int
	gone    map[string]int // requests whose client went away
}

// NewUpstream starts the server on loopback, and the same behind TLS with
// a certificate nobody trusts (at TLSURL: every handshake fails).
func NewUpstream(words []string, wordDelay time.Duration) *Upstream {
	u := &Upstream{Words: words, WordDelay: wordDelay, scripts: map[string][]Fault{}, seen: map[string]int{}, gone: map[string]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	u.tls = httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	u.tls.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	u.tls.Config.ErrorLog = log.New(io.Discard, "", 0) // every handshake fails, by design
	u.tls.StartTLS()
	u.URL, u.TLSURL = u.srv.URL+"/v1/", u.tls.URL+"/v1/"
	return u
}

// Close stops the servers.
func (u *Upstream) Close() {
	for _, s := range []*httptest.Server{u.srv, u.tls} {
		s.CloseClientConnections()
		s.Close()
	}
}

// Script sets model's faults.
func (u *Upstream) Script(model string, f ...Fault) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.scripts[model] = f
	u.seen[model], u.gone[model] = 0, 0
}

// Seen is how many requests model received.
func (u *Upstream) Seen(model string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[model]
}

// Gone is how many of model's requests the client abandoned.
func (u *Upstream) Gone(model string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gone[model]
}

// Answer is the whole clean answer.
func (u *Upstream) Answer() string { return strings.Join(u.Words, "") }

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req chatRequest
	if err := json.Unmarshal(b, &req); err != nil || r.URL.Path != "/v1/chat/completions" {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}`)
		return
	}
	u.mu.Lock()
	n := u.seen[req.Model]
	u.seen[req.Model]++
	script := u.scripts[req.Model]
	u.mu.Unlock()
	var f Fault
	if len(script) > 0 {
		f = script[min(n, len(script)-1)]
	}
	// A trailing assistant message is a prefill: continue after it.
	start := 0
	if k := len(req.Messages); k > 0 && req.Messages[k-1].Role == "assistant" {
		start = u.wordsIn(req.Messages[k-1].Content)
	}
	defer func() {
		if r.Context().Err() != nil {
			u.mu.Lock()
			u.gone[req.Model]++
			u.mu.Unlock()
		}
	}()
	switch {
	case f.Reset:
		hijackClose(w)
		return
	case f.Status != 0:
		for k, v := range f.Header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		io.WriteString(w, f.Body)
		return
	case f.ContentType != "":
		w.Header().Set("Content-Type", f.ContentType)
		io.WriteString(w, f.Body)
		return
	case f.Silent:
		<-r.Context().Done()
		return
	}
	u.stream(w, r, req.Model, f, start)
}

// wordsIn counts the leading words of the answer that prefill holds.
func (u *Upstream) wordsIn(prefill string) int {
	n, acc := 0, ""
	for _, w := range u.Words {
		if !strings.HasPrefix(prefill, acc+w) {
			break
		}
		acc += w
		n++
	}
	return n
}

func (u *Upstream) stream(w http.ResponseWriter, r *http.Request, model string, f Fault, start int) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	send := func(s string) bool {
		if _, err := fmt.Fprintf(w, "data: %s\n\n", s); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	wait := func(d time.Duration) bool {
		select {
		case <-r.Context().Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	if f.FirstDelay > 0 && !wait(f.FirstDelay) {
		return
	}
	chunk := func(delta, finish string) string {
		fin := "null"
		if finish != "" {
			fin = `"` + finish + `"`
		}
		return fmt.Sprintf(`{"id":"chatcmpl-f","object":"chat.completion.chunk","created":1,"model":%q,"choices":[{"index":0,"delta":%s,"finish_reason":%s}]}`, model, delta, fin)
	}
	if f.CutBeforeFirst {
		hijackClose(w)
		return
	}
	for range f.MalformedFirst {
		if !send(`{"id":"chatcmpl-f","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":`) {
			return
		}
	}
	if f.Oversized > 0 && !send(`{"id":"chatcmpl-f","object":"chat.completion.chunk","pad":"`+strings.Repeat("x", f.Oversized)+`"}`) {
		return
	}
	errorEvent := `{"error":{"message":"Rate limit reached for tokens","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	if f.ErrorAfter < 0 {
		send(errorEvent)
		return
	}
	words := u.Words[start:]
	for i, word := range words {
		switch {
		case f.ErrorAfter > 0 && i == f.ErrorAfter:
			send(errorEvent)
			return
		case f.CutAfter > 0 && i == f.CutAfter:
			hijackClose(w)
			return
		case f.StallAfter > 0 && i == f.StallAfter:
			<-r.Context().Done()
			return
		}
		if i < f.Malformed {
			if !send(`{"id":"chatcmpl-f","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":`) {
				return
			}
		}
		d := u.WordDelay
		if f.TrickleAfter > 0 && i >= f.TrickleAfter {
			d = f.TrickleEvery
		}
		if i > 0 && d > 0 && !wait(d) {
			return
		}
		b, _ := json.Marshal(map[string]string{"content": word})
		if !send(chunk(string(b), "")) {
			return
		}
	}
	send(chunk("{}", "stop"))
	if f.NoUsage {
		return
	}
	send(fmt.Sprintf(`{"id":"chatcmpl-f","object":"chat.completion.chunk","created":1,"model":%q,"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":%d,"total_tokens":%d}}`, model, len(words), 7+len(words)))
	if f.NoDone {
		<-r.Context().Done()
		return
	}
	send("[DONE]")
}

// hijackClose drops the connection without a proper end (a reset).
func hijackClose(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("faults: response writer cannot hijack")
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // RST, not FIN
	}
	conn.Close()
}
