package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// llmr chat's request id, read back with llmr trace from Jaeger: the
// router's span with the worker's under it, as JSON, as a piped waterfall
// (ASCII bars, no colour, within $COLUMNS) and on a terminal (colour,
// block bars, within the terminal's width).
func TestLLMRTraceWaterfall(t *testing.T) {
	m := startMesh(t)
	llmr := func(env []string, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(bins.LLMR, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("llmr %q: %v\n%s%s", args, err, out.String(), errOut.String())
		}
		return out.String(), errOut.String()
	}
	addr := []string{"LLMROUTER_ADDR=" + m.router.Addr, "LLMROUTER_JAEGER=" + m.jaeger.Query}
	out, _ := llmr(addr, "chat", "-model", "sim-small", "-max-tokens", "20", "-json", "hello there")
	var a struct {
		RequestID string `json:"request_id"`
		Endpoint  string
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.RequestID == "" {
		t.Fatalf("chat -json: %q %v", out, err)
	}
	out, _ = llmr(addr, "trace", "-json", "-wait", "30s", a.RequestID)
	var tr struct {
		TraceID   string  `json:"trace_id"`
		RequestID string  `json:"request_id"`
		TotalMs   float64 `json:"total_ms"`
		Spans     []struct {
			Service, Operation, Kind string
			Depth                    int
			StartMs                  float64 `json:"start_ms"`
			DurationMs               float64 `json:"duration_ms"`
			Tags                     map[string]any
		}
	}
	if err := json.Unmarshal([]byte(out), &tr); err != nil || tr.RequestID != a.RequestID || tr.TotalMs <= 0 || len(tr.Spans) < 2 {
		t.Fatalf("trace -json: %q %v", out, err)
	}
	root, worker := tr.Spans[0], -1
	for i, s := range tr.Spans {
		if s.Service == "engine-sim" && s.Kind == "server" && s.Depth > 0 {
			worker = i
		}
	}
	if root.Service != "router" || root.Depth != 0 || !strings.HasSuffix(root.Operation, "RouterService/Generate") || worker < 0 ||
		tr.Spans[worker].StartMs < root.StartMs || tr.Spans[worker].DurationMs > root.DurationMs {
		t.Fatalf("trace spans: %+v", tr.Spans)
	}

	out, _ = llmr(append(addr, "COLUMNS=72"), "trace", a.RequestID)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "trace "+tr.TraceID) || strings.Contains(out, "\x1b[") || !strings.Contains(out, "#") ||
		!regexp.MustCompile(`(?m)^router RouterService/Generate +#`).MatchString(out) || !regexp.MustCompile(`(?m)^ +engine-sim `).MatchString(out) {
		t.Fatalf("piped waterfall:\n%s", out)
	}
	for _, l := range lines {
		if n := len([]rune(l)); n > 72 {
			t.Fatalf("a %d-column line with COLUMNS=72: %q", n, l)
		}
	}
	out, _ = llmr(append(addr, "COLUMNS=30"), "trace", a.RequestID)
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if n := len([]rune(l)); n > 30 {
			t.Fatalf("a %d-column line with COLUMNS=30: %q\n%s", n, l, out)
		}
	}

	// On a terminal 60 columns wide.
	cmd := exec.Command(bins.LLMR, "trace", a.RequestID)
	cmd.Env = append(append(os.Environ(), addr...), "TERM=xterm")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 60})
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer f.Close()
	var tty bytes.Buffer
	done := make(chan struct{})
	go func() { _, _ = io.Copy(&tty, f); close(done) }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("llmr trace on a terminal: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	got := tty.String()
	plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(got, "")
	if !strings.Contains(got, "\x1b[34m█") || !strings.Contains(got, "\x1b[1mtrace ") {
		t.Fatalf("terminal waterfall without colour:\n%q", got)
	}
	for _, l := range strings.Split(plain, "\n") {
		if n := len([]rune(strings.TrimRight(l, "\r"))); n > 60 {
			t.Fatalf("a %d-column line on a 60-column terminal: %q", n, l)
		}
	}
	t.Logf("llmr trace %s on a terminal:\n%s", a.RequestID, plain)
}

// llmr with the services' TLS flags: all three against a router that
// requires client certificates (-client-tls mtls), -tls-ca alone against
// one that only serves TLS, and neither refused or misdialled: a client
// without a certificate cannot reach the mTLS router.
func TestLLMRTLSFlags(t *testing.T) {
	worker := testkit.Start(t, "worker", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine, "-models", "sim-small")...)
	cl := mtls.DevPaths(certs.Dir, mtls.RoleClient)
	for _, tc := range []struct {
		mode string
		args []string
	}{
		{"mtls", []string{"-tls-cert", cl.Cert, "-tls-key", cl.Key, "-tls-ca", cl.CA}},
		{"tls", []string{"-tls-ca", cl.CA}},
	} {
		router := testkit.Start(t, "router-"+tc.mode, bins.Router, testkit.StartOptions{WaitListening: true},
			certs.Args(mtls.RoleRouter, "-static", worker.Addr, "-client-tls", tc.mode)...)
		var out []byte
		var err error
		deadline := time.Now().Add(15 * time.Second)
		for {
			cmd := exec.Command(bins.LLMR, append([]string{"models", "-addr", router.Addr, "-json"}, tc.args...)...)
			if out, err = cmd.CombinedOutput(); err == nil && strings.Contains(string(out), `"sim-small"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("-client-tls %s: llmr models %q: %v\n%s", tc.mode, tc.args, err, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if tc.mode == "mtls" {
			cmd := exec.Command(bins.LLMR, "models", "-addr", router.Addr, "-tls-ca", cl.CA)
			if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "Unavailable") {
				t.Fatalf("no client certificate against -client-tls mtls: %v\n%s", err, out)
			}
		}
		cmd := exec.Command(bins.LLMR, "models", "-addr", router.Addr)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("plaintext against -client-tls %s succeeded:\n%s", tc.mode, out)
		}
	}
}
