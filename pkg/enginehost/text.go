package enginehost

import (
	"strings"
	"unicode/utf8"
)

// textStream turns token pieces (arbitrary bytes) into text deltas that hold
// only complete UTF-8 characters and never show a stop sequence or a prefix
// of one that might still complete. It is not safe for concurrent use.
type textStream struct {
	stop    []string
	maxStop int
	raw     []byte // bytes that do not yet form complete characters
	held    string // complete text held back as a possible stop prefix
	stopped bool
	matched string // the stop sequence found, once stopped
}

func newTextStream(stop []string) *textStream {
	t := &textStream{stop: stop}
	for _, s := range stop {
		t.maxStop = max(t.maxStop, len(s))
	}
	return t
}

// push adds a token's bytes and returns the text that may be shown now, and
// whether a stop sequence was found (after which nothing more is shown).
func (t *textStream) push(piece []byte) (string, bool) {
	if t.stopped {
		return "", true
	}
	t.raw = append(t.raw, piece...)
	cut := completePrefix(t.raw)
	if cut == 0 {
		return "", false
	}
	// Bytes that can never form a character become U+FFFD, so text stays valid.
	text := t.held + strings.ToValidUTF8(string(t.raw[:cut]), "\uFFFD")
	t.raw = append(t.raw[:0], t.raw[cut:]...)
	return t.release(text)
}

func (t *textStream) release(text string) (string, bool) {
	if len(t.stop) == 0 {
		t.held = ""
		return text, false
	}
	// Only a stop sequence that ends in the new bytes can be new, but text is
	// short (held prefix plus one token), so searching all of it is cheap.
	first := -1
	for _, s := range t.stop {
		if i := strings.Index(text, s); i >= 0 && (first < 0 || i < first) {
			first, t.matched = i, s
		}
	}
	if first >= 0 {
		t.stopped = true
		t.held = ""
		return text[:first], true
	}
	hold := 0
	for _, s := range t.stop {
		for n := min(len(s)-1, len(text)); n > hold; n-- {
			if strings.HasSuffix(text, s[:n]) {
				hold = n
				break
			}
		}
	}
	t.held = text[len(text)-hold:]
	return text[:len(text)-hold], false
}

// flush returns whatever is held at the end of generation; incomplete bytes
// become U+FFFD.
func (t *textStream) flush() string {
	if t.stopped {
		return ""
	}
	s := t.held + strings.ToValidUTF8(string(t.raw), "\uFFFD")
	t.held, t.raw = "", nil
	return s
}

// completePrefix returns the length of b without a trailing incomplete (but
// still completable) UTF-8 sequence.
func completePrefix(b []byte) int {
	// A character is at most 4 bytes: look at the last 3 for a start byte.
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		if !utf8.RuneStart(b[i]) {
			continue
		}
		if !utf8.FullRune(b[i:]) {
			return i
		}
		return len(b)
	}
	return len(b)
}
