package enginehost

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTextStream(t *testing.T) {
	tests := []struct {
		name    string
		stop    []string
		pieces  []string
		want    []string // delta per piece
		stopped bool
		rest    string
	}{
		{"plain", nil, []string{"ab", "c"}, []string{"ab", "c"}, false, ""},
		{"split two-byte char", nil, []string{"caf", "\xc3", "\xa9!"}, []string{"caf", "", "é!"}, false, ""},
		{"split four-byte char", nil, []string{"\xf0\x9f", "\x98", "\x80"}, []string{"", "", "😀"}, false, ""},
		{"invalid byte replaced", nil, []string{"a\xffb"}, []string{"a\uFFFDb"}, false, ""},
		{"incomplete at end flushes as replacement", nil, []string{"x\xe2\x82"}, []string{"x"}, false, "\uFFFD"},
		{"stop inside one piece", []string{"END"}, []string{"helloENDmore"}, []string{"hello"}, true, ""},
		{"stop across pieces held back", []string{"END"}, []string{"he", "lloE", "N", "D tail"}, []string{"he", "llo", "", ""}, true, ""},
		{"false stop prefix released", []string{"END"}, []string{"aE", "Nx"}, []string{"a", "ENx"}, false, ""},
		{"prefix held to the end is flushed", []string{"END"}, []string{"aEN"}, []string{"a"}, false, "EN"},
		{"earliest of several stops", []string{"zz", "b"}, []string{"abzz"}, []string{"a"}, true, ""},
		{"stop made of multibyte chars", []string{"é."}, []string{"caf\xc3", "\xa9", "."}, []string{"caf", "", ""}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTextStream(tt.stop)
			var stopped bool
			for i, p := range tt.pieces {
				var d string
				d, stopped = ts.push([]byte(p))
				if d != tt.want[i] {
					t.Fatalf("piece %d %q: delta %q, want %q", i, p, d, tt.want[i])
				}
				if !utf8.ValidString(d) {
					t.Fatalf("delta %q is not valid UTF-8", d)
				}
			}
			if stopped != tt.stopped {
				t.Fatalf("stopped = %v, want %v", stopped, tt.stopped)
			}
			if rest := ts.flush(); rest != tt.rest {
				t.Fatalf("flush = %q, want %q", rest, tt.rest)
			}
		})
	}
}

// Whatever the split of a valid text into pieces, the deltas concatenate to
// the text up to the first stop sequence.
func TestTextStreamAnySplit(t *testing.T) {
	text := "naïve café — 😀 stop here STOP after"
	for step := 1; step <= 5; step++ {
		ts := newTextStream([]string{"STOP"})
		var sb strings.Builder
		for i := 0; i < len(text); i += step {
			d, stopped := ts.push([]byte(text[i:min(i+step, len(text))]))
			sb.WriteString(d)
			if stopped {
				break
			}
		}
		sb.WriteString(ts.flush())
		if want := "naïve café — 😀 stop here "; sb.String() != want {
			t.Fatalf("step %d: got %q, want %q", step, sb.String(), want)
		}
	}
}
