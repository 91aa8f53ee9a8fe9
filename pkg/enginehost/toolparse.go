package enginehost

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	"github.com/llm-runner-router/llmrouter/pkg/structured"
)

// toolParser splits a model's answer into content and tool calls written
// in a ToolCallSyntax, as the answer streams: content passes through (less
// any tail that may begin a call), a call's name is sent as soon as it is
// known and its arguments as they are written. A call whose JSON has its
// keys in another order is sent whole at its end; one that is not a call
// object at all is content after all.
type toolParser struct {
	open, close string // the syntax's tags, without surrounding whitespace
	argsKey     string
	seed        string // of the call ids (callSeed)

	buf    string // unsent text: a possible start of open, or the call so far
	inCall bool
	// leadingOnly: calls only open the answer; once it has other text,
	// the rest is content (off).
	leadingOnly, off bool
	calls            int  // calls sent (whole or begun)
	after            bool // just after a call: whitespace is not content

	// The current call, when streamed.
	named    bool // its first delta (id, name) is sent
	argsAt   int  // offset of the arguments' value in buf; -1 until known
	argsSent int  // bytes of it sent
}

func newToolParser(syn structured.ToolCallSyntax, seed string) *toolParser {
	return &toolParser{open: strings.TrimSpace(syn.Open), close: strings.TrimSpace(syn.Close), argsKey: syn.ArgsKey, seed: seed, argsAt: -1}
}

// callSeed is what an answer's call ids derive from: the request id and
// the prompt, so that a failover's continuation (same id, same prompt)
// names calls alike while a client that reuses a request id for another
// conversation turn still gets new ids.
func callSeed(requestID string, prompt *generationv1.Prompt) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(prompt)
	h := sha256.Sum256(b)
	return requestID + "/" + hex.EncodeToString(h[:8])
}

// ToolCallID is the id of an answer's index-th call, derived from seed
// (callSeed).
func ToolCallID(seed string, index int) string {
	h := sha256.Sum256([]byte(seed + "/" + strconv.Itoa(index)))
	return "call_" + hex.EncodeToString(h[:12])
}

// push takes the next text of the answer and returns the content and call
// deltas it completes; final flushes everything held back.
func (p *toolParser) push(s string, final bool) (string, []*generationv1.ToolCallDelta) {
	p.buf += s
	var content strings.Builder
	var deltas []*generationv1.ToolCallDelta
	for {
		if p.off {
			content.WriteString(p.buf)
			p.buf = ""
			break
		}
		if !p.inCall {
			if p.leadingOnly && p.calls == 0 {
				lead := strings.TrimLeft(p.buf, " \t\r\n")
				if lead != "" && !strings.HasPrefix(p.open, lead[:min(len(lead), len(p.open))]) {
					p.off = true
					continue
				}
			}
			if p.after {
				p.buf = strings.TrimLeft(p.buf, " \t\r\n")
				p.after = p.buf == ""
			}
			if i := strings.Index(p.buf, p.open); i >= 0 {
				content.WriteString(p.buf[:i])
				p.buf = p.buf[i+len(p.open):]
				p.inCall, p.named, p.argsAt, p.argsSent = true, false, -1, 0
				continue
			}
			keep := 0
			if !final {
				keep = partialSuffix(p.buf, p.open)
			}
			content.WriteString(p.buf[:len(p.buf)-keep])
			p.buf = p.buf[len(p.buf)-keep:]
			break
		}
		end := strings.Index(p.buf, p.close)
		body := p.buf
		if end >= 0 {
			body = p.buf[:end]
		}
		deltas = p.stream(body, deltas)
		if end < 0 && !final {
			break
		}
		var text string
		deltas, text = p.finishCall(body, end >= 0, deltas)
		content.WriteString(text)
		p.after = text == ""
		if end < 0 {
			p.buf, p.inCall = "", false
			break
		}
		p.buf, p.inCall = p.buf[end+len(p.close):], false
	}
	return content.String(), deltas
}

// stream sends what the call's body so far allows: its name once the
// "name" key's value is read, then the arguments' JSON as it grows.
func (p *toolParser) stream(body string, deltas []*generationv1.ToolCallDelta) []*generationv1.ToolCallDelta {
	if p.argsAt < 0 {
		name, at, ok := callHead(body, p.argsKey)
		if !ok {
			return deltas
		}
		deltas = append(deltas, &generationv1.ToolCallDelta{Index: int32(p.calls), Id: ToolCallID(p.seed, p.calls), Name: name})
		p.named, p.argsAt = true, at
		p.calls++
	}
	args := body[p.argsAt:]
	if n := valueEnd(args); n >= 0 {
		args = args[:n]
	}
	if len(args) > p.argsSent {
		deltas = append(deltas, &generationv1.ToolCallDelta{Index: int32(p.calls - 1), Arguments: args[p.argsSent:]})
		p.argsSent = len(args)
	}
	return deltas
}

// finishCall ends a call at its close tag (closed) or the answer's end. A
// call that was not streamed is parsed whole: sent if it is a call object,
// else returned as content, with the tags the model wrote.
func (p *toolParser) finishCall(body string, closed bool, deltas []*generationv1.ToolCallDelta) ([]*generationv1.ToolCallDelta, string) {
	if p.named {
		return deltas, ""
	}
	var call map[string]json.RawMessage
	if json.Unmarshal([]byte(body), &call) == nil {
		var name string
		args, ok := call[p.argsKey]
		if !ok {
			args, ok = call["parameters"]
		}
		if json.Unmarshal(call["name"], &name) == nil && ToolNameRE.MatchString(name) && ok && bytes.HasPrefix(bytes.TrimSpace(args), []byte("{")) {
			deltas = append(deltas, &generationv1.ToolCallDelta{Index: int32(p.calls), Id: ToolCallID(p.seed, p.calls), Name: name, Arguments: string(bytes.TrimSpace(args))})
			p.calls++
			return deltas, ""
		}
	}
	if !closed {
		return deltas, p.open + body
	}
	return deltas, p.open + body + p.close
}

// partialSuffix is the length of the longest tail of s that is a proper
// prefix of tag.
func partialSuffix(s, tag string) int {
	for n := min(len(s), len(tag)-1); n > 0; n-- {
		if strings.HasSuffix(s, tag[:n]) {
			return n
		}
	}
	return 0
}

// callHead reads `{"name": "NAME", "ARGSKEY": ` at the start of body
// (whitespace allowed) and returns the name and the offset of the
// arguments' value, once that value has begun with '{'.
func callHead(body, argsKey string) (string, int, bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return "", 0, false
	}
	i = skipSpace(body, i+1)
	key, i, ok := jsonString(body, i)
	if !ok || key != "name" {
		return "", 0, false
	}
	if i = skipSpace(body, i); i >= len(body) || body[i] != ':' {
		return "", 0, false
	}
	name, i, ok := jsonString(body, skipSpace(body, i+1))
	if !ok || !ToolNameRE.MatchString(name) {
		return "", 0, false
	}
	if i = skipSpace(body, i); i >= len(body) || body[i] != ',' {
		return "", 0, false
	}
	key, i, ok = jsonString(body, skipSpace(body, i+1))
	if !ok || key != argsKey && key != "parameters" {
		return "", 0, false
	}
	if i = skipSpace(body, i); i >= len(body) || body[i] != ':' {
		return "", 0, false
	}
	if i = skipSpace(body, i+1); i >= len(body) || body[i] != '{' {
		return "", 0, false
	}
	return name, i, true
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// jsonString reads a complete JSON string at s[i:] and returns its value
// and the offset after it.
func jsonString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			var v string
			if json.Unmarshal([]byte(s[i:j+1]), &v) != nil {
				return "", 0, false
			}
			return v, j + 1, true
		}
	}
	return "", 0, false
}

// valueEnd is the length of the JSON object or array at the start of s,
// or -1 while it is unfinished.
func valueEnd(s string) int {
	depth, inStr := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}
