package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"
)

// console is where output goes and what it can show: a terminal gets
// colour (unless NO_COLOR or -color never) and lines fitted to its width.
type console struct {
	in     io.Reader
	out    io.Writer
	errOut io.Writer
	tty    bool // out is a terminal
	inTTY  bool // in is a terminal
	color  bool
	width  int
}

func newConsole(in io.Reader, out, errOut io.Writer, colorMode string, getenv func(string) string) (*console, error) {
	c := &console{in: in, out: out, errOut: errOut, width: 80}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		c.tty = true
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			c.width = w
		}
	} else if w, err := strconv.Atoi(getenv("COLUMNS")); err == nil && w > 0 {
		c.width = w
	}
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		c.inTTY = true
	}
	switch colorMode {
	case "auto":
		c.color = c.tty && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
	case "always":
		c.color = true
	case "never":
	default:
		return nil, fmt.Errorf("-color %q: want auto, always or never", colorMode)
	}
	return c, nil
}

// ANSI styles.
const (
	bold   = "1"
	dim    = "2"
	red    = "31"
	green  = "32"
	yellow = "33"
	blue   = "34"
	cyan   = "36"
)

// paint wraps s in a style when colour is on.
func (c *console) paint(style, s string) string {
	if !c.color || s == "" {
		return s
	}
	return "\x1b[" + style + "m" + s + "\x1b[0m"
}

// clip shortens s to width characters, ending in "…" when cut.
func clip(s string, width int) string {
	if width <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}

func pad(s string, width int) string {
	if n := utf8.RuneCountInString(s); n < width {
		return s + strings.Repeat(" ", width-n)
	}
	return s
}

// column is a table column: its header, whether it is right-aligned, and
// the style of its cells (a function of the cell, for health colours).
type column struct {
	header string
	right  bool
	style  func(cell string) string
}

// table writes rows under headers, every line at most the console's width:
// the widest columns give way first, their cells clipped with "…".
func (c *console) table(cols []column, rows [][]string) {
	widths := make([]int, len(cols))
	for i, col := range cols {
		widths[i] = utf8.RuneCountInString(col.header)
	}
	for _, r := range rows {
		for i, cell := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	total := func() int {
		n := 2 * (len(widths) - 1)
		for _, w := range widths {
			n += w
		}
		return n
	}
	for total() > c.width {
		widest := 0
		for i, w := range widths {
			if w > widths[widest] {
				widest = i
			}
		}
		if widths[widest] <= 4 {
			break // nothing sensible left to shrink
		}
		widths[widest]--
	}
	line := func(cells []string, header bool) {
		var b strings.Builder
		for i, cell := range cells {
			if i > 0 {
				b.WriteString("  ")
			}
			s := clip(cell, widths[i])
			if cols[i].right {
				s = strings.Repeat(" ", widths[i]-utf8.RuneCountInString(s)) + s
			} else if i < len(cells)-1 {
				s = pad(s, widths[i])
			}
			switch {
			case header:
				s = c.paint(bold, s)
			case cols[i].style != nil:
				if st := cols[i].style(cell); st != "" {
					s = c.paint(st, s)
				}
			}
			b.WriteString(s)
		}
		fmt.Fprintln(c.out, strings.TrimRight(b.String(), " "))
	}
	headers := make([]string, len(cols))
	for i, col := range cols {
		headers[i] = col.header
	}
	line(headers, true)
	for _, r := range rows {
		line(r, false)
	}
}

// wrapper writes streamed text word-wrapped at a width (on a terminal),
// holding back a word until it is complete.
type wrapper struct {
	out   io.Writer
	width int // 0: no wrapping
	col   int
	word  strings.Builder
}

func (w *wrapper) write(s string) {
	if w.width <= 0 {
		fmt.Fprint(w.out, s)
		return
	}
	for _, r := range s {
		switch r {
		case '\n':
			w.flushWord()
			fmt.Fprint(w.out, "\n")
			w.col = 0
		case ' ', '\t':
			w.flushWord()
			if w.col > 0 && w.col < w.width {
				fmt.Fprint(w.out, " ")
				w.col++
			}
		default:
			w.word.WriteRune(r)
		}
	}
}

func (w *wrapper) flushWord() {
	if w.word.Len() == 0 {
		return
	}
	n := utf8.RuneCountInString(w.word.String())
	if w.col > 0 && w.col+n > w.width {
		fmt.Fprint(w.out, "\n")
		w.col = 0
	}
	fmt.Fprint(w.out, w.word.String())
	w.col += n
	w.word.Reset()
}

// end flushes the last word and ends the line.
func (w *wrapper) end() {
	w.flushWord()
	if w.width <= 0 || w.col > 0 {
		fmt.Fprintln(w.out)
	}
	w.col = 0
}
