package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/pkg/telemetry"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/services/router/internal/pool"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling/plugins"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// router starts a sim worker serving "m" and a router over it, and
// returns the router's gRPC address.
func router(t *testing.T) string {
	t.Helper()
	w := testkit.ServeEngine(t, sim.New(sim.Config{Models: []sim.ModelConfig{{Name: "m", CostPer1KOutput: 1, Quality: 0.5}},
		TokensPerSecond: 2000, MaxConcurrency: 4, QueueSize: 4}), enginehost.Limits{})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := pool.New(telemetry.Noop(), quiet, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, discovery.NewStatic(w.Addr)) })
	sched, err := plugins.Builtin().Build(plugins.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	routerv1.RegisterRouterServiceServer(srv, server.New(p, sched, server.Config{}))
	go srv.Serve(lis)
	t.Cleanup(func() {
		srv.Stop()
		cancel()
		wg.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if eps := p.Endpoints(); len(eps) == 1 && eps[0].Healthy() && len(eps[0].Models()) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the router never learned the worker's model")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return lis.Addr().String()
}

func noEnv(string) string { return "" }

// llmr runs the command with buffers and returns its status and output.
func llmr(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut, noEnv)
	return code, out.String(), errOut.String()
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")

// For scripts: -json output parses, and says what the router knows.
func TestJSONOutput(t *testing.T) {
	addr := router(t)
	code, out, errOut := llmr(t, "", "models", "-addr", addr, "-json")
	var m struct {
		Models []struct {
			Name         string
			Format       string
			Endpoints    []string
			Quality      float64
			Capabilities []string
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || len(m.Models) != 1 || m.Models[0].Name != "m" || m.Models[0].Format != "sim" ||
		len(m.Models[0].Endpoints) != 1 || m.Models[0].Quality != 0.5 {
		t.Fatalf("models -json: %d %q %q", code, out, errOut)
	}
	code, out, errOut = llmr(t, "", "endpoints", "-addr", addr, "-json")
	var e struct {
		Endpoints []endpointRow
	}
	if code != 0 || json.Unmarshal([]byte(out), &e) != nil || len(e.Endpoints) != 1 || !e.Endpoints[0].Healthy || e.Endpoints[0].ModelList[0] != "m" {
		t.Fatalf("endpoints -json: %d %q %q", code, out, errOut)
	}
	code, out, errOut = llmr(t, "", "chat", "-addr", addr, "-model", "m", "-max-tokens", "5", "-json", "Say", "hi")
	var a answer
	if code != 0 || json.Unmarshal([]byte(out), &a) != nil || a.RequestID == "" || a.Model != "m" || a.Endpoint != e.Endpoints[0].Address ||
		a.OutputTokens != 5 || a.Text == "" || a.FinishReason != "length" || a.PromptTokens == 0 {
		t.Fatalf("chat -json: %d %q %q", code, out, errOut)
	}
	// After a request, the endpoint has a time to first token.
	_, out, _ = llmr(t, "", "endpoints", "-addr", addr, "-json")
	if json.Unmarshal([]byte(out), &e) != nil || e.Endpoints[0].TTFTMs == nil {
		t.Fatalf("endpoints after a request: %q", out)
	}
	// -watch with -json: one document per line, until interrupted.
	ctx, cancel := context.WithTimeout(context.Background(), 350*time.Millisecond)
	defer cancel()
	var buf bytes.Buffer
	if code := run(ctx, []string{"endpoints", "-addr", addr, "-json", "-watch", "-interval", "100ms"}, strings.NewReader(""), &buf, io.Discard, noEnv); code != 0 {
		t.Fatalf("endpoints -watch -json: %d", code)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for _, l := range lines {
		var v struct {
			Time      string
			Endpoints []endpointRow
		}
		if json.Unmarshal([]byte(l), &v) != nil || v.Time == "" || len(v.Endpoints) != 1 {
			t.Fatalf("watch line %q", l)
		}
	}
	if len(lines) < 2 {
		t.Fatalf("%d watch lines in 350ms at 100ms", len(lines))
	}
}

// Piped: the answer alone on standard output (no colour), the status line
// with the request id on standard error; the message may come on
// standard input.
func TestPipedChatAndTables(t *testing.T) {
	addr := router(t)
	code, out, errOut := llmr(t, "Say hi\n", "chat", "-addr", addr, "-model", "m", "-max-tokens", "6")
	if code != 0 || ansi.MatchString(out) || strings.TrimSpace(out) == "" || !regexp.MustCompile(`\[m on 127\.0\.0\.1:\d+ · length · \d+\+6 tokens · TTFT \d+ ms · [\d.]+ tok/s · request \S+\]`).MatchString(errOut) {
		t.Fatalf("piped chat: %d %q %q", code, out, errOut)
	}
	code, out, _ = llmr(t, "", "models", "-addr", addr)
	if code != 0 || ansi.MatchString(out) || !strings.HasPrefix(out, "MODEL  FORMAT  CONTEXT") || !strings.Contains(out, "\nm      sim") {
		t.Fatalf("models table: %d %q", code, out)
	}
	code, out, _ = llmr(t, "", "models", "-addr", addr, "-color", "always")
	if code != 0 || !strings.Contains(out, "\x1b[1mMODEL") {
		t.Fatalf("-color always: %q", out)
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"models"}, 2, "no router address: set -addr or LLMROUTER_ADDR"},
		{[]string{"chat", "-addr", addr, "hi"}, 2, "no model: set -model or LLMROUTER_MODEL"},
		{[]string{"chat", "-addr", addr, "-model", "nope", "hi"}, 1, "NotFound: "},
		{[]string{"trace"}, 2, "want one REQUEST_ID"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"models", "-color", "purple", "-addr", addr}, 2, `-color "purple"`},
		{[]string{}, 2, "usage: llmr <command>"},
	} {
		code, _, errOut := llmr(t, "", tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("llmr %q: %d %q, want %d %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
	// The API key is never printed, not even by -h.
	var out2 bytes.Buffer
	run(context.Background(), []string{"chat", "-h"}, strings.NewReader(""), &out2, &out2, func(k string) string {
		if k == "LLMROUTER_API_KEY" {
			return "sk-secret-key"
		}
		return ""
	})
	if strings.Contains(out2.String(), "sk-secret") {
		t.Fatalf("-h printed the API key: %q", out2.String())
	}
}

// terminal reads a pty's master side in the background (a pty's reads
// take no deadline), so that waits can time out.
type terminal struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func readTerminal(master *os.File) *terminal {
	tm := &terminal{done: make(chan struct{})}
	go func() {
		defer close(tm.done)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			tm.mu.Lock()
			tm.buf.Write(b[:n])
			tm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return tm
}

// text is what the terminal showed since the last reset, raw.
func (tm *terminal) text() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.String()
}

func (tm *terminal) reset() {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.buf.Reset()
}

// waitFor waits until want shows n times (colour codes aside).
func (tm *terminal) waitFor(t *testing.T, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(ansi.ReplaceAllString(tm.text(), ""), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %q ×%d; the terminal shows %q", want, n, tm.text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// On a terminal (a pseudo-terminal here): colour, tables clipped to the
// terminal's width, and an interactive chat whose second turn carries the
// first.
func TestTerminalOutput(t *testing.T) {
	addr := router(t)
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	if err := pty.Setsize(master, &pty.Winsize{Rows: 24, Cols: 40}); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "TERM" {
			return "xterm"
		}
		return ""
	}
	tm := readTerminal(master)
	if code := run(context.Background(), []string{"endpoints", "-addr", addr}, slave, slave, slave, env); code != 0 {
		t.Fatalf("endpoints on a terminal: %d", code)
	}
	tm.waitFor(t, "MODELS", 1)
	tm.waitFor(t, " m", 1)
	s := tm.text()
	if !strings.Contains(s, "\x1b[32mup") || !strings.Contains(s, "\x1b[1m") {
		t.Fatalf("no colour on a terminal: %q", s)
	}
	for _, line := range strings.Split(ansi.ReplaceAllString(s, ""), "\n") {
		if n := len([]rune(strings.TrimRight(line, "\r"))); n > 40 {
			t.Fatalf("line of %d columns on a 40-column terminal: %q", n, line)
		}
	}

	// Interactive: type two turns, then /exit.
	tm.reset()
	done := make(chan int)
	go func() {
		done <- run(context.Background(), []string{"chat", "-addr", addr, "-model", "m", "-max-tokens", "4"}, slave, slave, slave, env)
	}()
	tm.waitFor(t, "you> ", 1)
	if _, err := master.WriteString("first question\n"); err != nil {
		t.Fatal(err)
	}
	tm.waitFor(t, "you> ", 2) // after the first answer and its status
	if _, err := master.WriteString("second question\n"); err != nil {
		t.Fatal(err)
	}
	tm.waitFor(t, "you> ", 3)
	if _, err := master.WriteString("/exit\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("interactive chat exited %d: %q", code, tm.text())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("interactive chat did not end on /exit: %q", tm.text())
	}
	got := tm.text()
	plain := strings.ReplaceAll(ansi.ReplaceAllString(got, ""), "\r\n", "\n")
	if !strings.Contains(got, "\x1b[1;36myou> ") || !strings.Contains(got, "\x1b[2m[m on ") {
		t.Fatalf("interactive chat without its colours: %q", got)
	}
	for _, line := range strings.Split(plain, "\n") {
		if n := len([]rune(line)); n > 40 {
			t.Fatalf("chat line of %d columns on a 40-column terminal: %q", n, line)
		}
	}
	// The second turn's prompt holds the first exchange: more prompt
	// tokens than the first's.
	counts := regexp.MustCompile(`(\d+)\+4\s+tokens`).FindAllStringSubmatch(plain, -1)
	if len(counts) != 2 {
		t.Fatalf("two answers with 4 tokens each, got %v: %q", counts, plain)
	}
	a, _ := strconv.Atoi(counts[0][1])
	b, _ := strconv.Atoi(counts[1][1])
	if b <= a+len("first question") {
		t.Fatalf("prompt tokens %d then %d: the second turn does not carry the first: %q", a, b, plain)
	}
}
