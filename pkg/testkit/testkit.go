// Package testkit starts the real components tests run against (Consul,
// Jaeger, service processes) on free loopback ports, and stops them at test
// cleanup. The tools come from the project's cache (tools/install.sh, or
// LLMROUTER_BIN); a missing tool fails the test with the command to fix it.
package testkit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// T is the part of testing.TB the kit uses, so that commands (the local mesh,
// benchmarks) can start the same components with their own implementation.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

// handedOut are the ports FreePort returned in this process: the kernel may
// offer a just-closed port again, and a process given two equal ports (such
// as Consul's HTTP and Serf ports) fails to start.
var handedOut sync.Map

// FreePort returns a loopback TCP port that was free a moment ago and that
// no earlier call in this process returned.
func FreePort(t T) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, dup := handedOut.LoadOrStore(port, true); !dup {
			return port
		}
	}
	t.Fatal("no fresh loopback port in 100 tries")
	return 0
}

// ToolBin returns the path of a tool installed by tools/install.sh.
func ToolBin(t T, name string) string {
	t.Helper()
	dir := os.Getenv("LLMROUTER_BIN")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		if c := os.Getenv("LLMROUTER_CACHE"); c != "" {
			dir = filepath.Join(c, "bin")
		} else {
			dir = filepath.Join(cache, "llmrouter", "bin")
		}
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not installed at %s: run `make tools` (or tools/install.sh %s)", name, p, strings.TrimSuffix(name, "-server"))
	}
	return p
}

// Proc is a started process.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	// Addr is what the process printed after "listening on ", if asked.
	Addr string
	// Addrs holds other "NAME listening on ADDR" lines printed before it,
	// by NAME (e.g. "http").
	Addrs map[string]string
	Log   string

	mu     sync.Mutex
	exited chan struct{}
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM, waits up to grace, then kills.
func (p *Proc) Stop(grace time.Duration) {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.Kill()
	}
}

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// StartOptions configure Start.
type StartOptions struct {
	Env []string
	// WaitListening waits for a "listening on ADDR" line on stdout.
	WaitListening bool
	// WaitHTTP waits until GET on this URL answers 2xx.
	WaitHTTP string
	Timeout  time.Duration
}

// Start runs bin with args, logging to a file in the test's temp dir, and
// kills it at cleanup. The log is printed when the test fails.
func Start(t T, name, bin string, o StartOptions, args ...string) *Proc {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, exited: make(chan struct{}), Addrs: map[string]string{}}
	addrCh := make(chan string, 1)
	var named sync.Map
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				select {
				case addrCh <- strings.TrimSpace(a):
				default:
				}
			} else if n, a, ok := strings.Cut(line, " listening on "); ok && !strings.Contains(n, " ") {
				named.Store(n, strings.TrimSpace(a))
			}
		}
		_, _ = io.Copy(logf, stdout)
		_ = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log ---\n%s", name, tail(string(b), 4000))
		}
	})
	deadline := time.After(o.Timeout)
	if o.WaitListening {
		select {
		case p.Addr = <-addrCh:
			named.Range(func(k, v any) bool {
				p.Addrs[k.(string)] = v.(string)
				return true
			})
		case <-p.exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited before listening:\n%s", name, tail(string(b), 4000))
		case <-deadline:
			t.Fatalf("%s did not report listening within %v", name, o.Timeout)
		}
	}
	if o.WaitHTTP != "" {
		for {
			resp, err := http.Get(o.WaitHTTP)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					break
				}
			}
			select {
			case <-p.exited:
				b, _ := os.ReadFile(logPath)
				t.Fatalf("%s exited before ready:\n%s", name, tail(string(b), 4000))
			case <-deadline:
				t.Fatalf("%s not ready at %s within %v", name, o.WaitHTTP, o.Timeout)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Consul is a running Consul dev agent.
type Consul struct {
	*Proc
	// HTTPAddr is host:port of its HTTP API.
	HTTPAddr string
}

// StartConsul starts a Consul dev agent on free loopback ports (never the
// defaults). With httpPort 0 a free port is chosen.
func StartConsul(t T, httpPort int) *Consul {
	t.Helper()
	bin := ToolBin(t, "consul")
	if httpPort == 0 {
		httpPort = FreePort(t)
	}
	addr := "127.0.0.1:" + strconv.Itoa(httpPort)
	p := Start(t, "consul", bin, StartOptions{WaitHTTP: "http://" + addr + "/v1/status/leader"},
		"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-node", fmt.Sprintf("test-%d", httpPort),
		"-http-port", strconv.Itoa(httpPort), "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-serf-lan-port", strconv.Itoa(FreePort(t)), "-serf-wan-port", strconv.Itoa(FreePort(t)),
		"-server-port", strconv.Itoa(FreePort(t)), "-log-level", "warn")
	// The HTTP API answers before a leader exists; wait for one.
	waitLeader(t, addr)
	return &Consul{Proc: p, HTTPAddr: addr}
}

func waitLeader(t T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		resp, err := http.Get("http://" + addr + "/v1/status/leader")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if s := strings.Trim(strings.TrimSpace(string(b)), `"`); s != "" {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("consul at %s elected no leader", addr)
}

// Redis is a running redis-server.
type Redis struct {
	*Proc
	// Addr is its host:port.
	Addr string
}

// StartRedis starts Debian's redis-server (tools/install.sh redis) on a free
// loopback port, without persistence.
func StartRedis(t T) *Redis {
	t.Helper()
	bin := ToolBin(t, "redis-server")
	port := FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := Start(t, "redis", bin, StartOptions{}, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--protected-mode", "no", "--loglevel", "warning")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := io.ReadFull(c, buf)
			c.Close()
			if n == 7 && string(buf) == "+PONG\r\n" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server at %s did not answer PING", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &Redis{Proc: p, Addr: addr}
}
