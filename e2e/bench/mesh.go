package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
	"github.com/llm-runner-router/llmrouter/pkg/traces"
)

// Mesh is the processes of one measurement: a Consul agent, optionally
// Jaeger, and the routers and workers started on it. Everything stops with
// its Runner.
type Mesh struct {
	R      *harness.Runner
	Bins   harness.Binaries
	Certs  *testkit.Certs
	Consul *testkit.Consul
	Jaeger *harness.Jaeger
	seq    int
	procs  []*testkit.Proc
}

// Stop stops every router and worker the mesh started (last first), for a
// measurement whose processes must not load the machine under the next.
func (m *Mesh) Stop() { m.StopSince(0) }

// Mark is a point in the mesh's start order, for StopSince.
func (m *Mesh) Mark() int { return len(m.procs) }

// StopSince stops what the mesh started after mark (last first): what one
// table started, whether it returned normally or not.
func (m *Mesh) StopSince(mark int) {
	for i := len(m.procs) - 1; i >= mark; i-- {
		m.procs[i].Stop(5 * time.Second)
	}
	m.procs = m.procs[:mark]
}

// Sub is a mesh with its own Consul agent (only its own workers are
// discovered), sharing binaries, certificates and Jaeger; Stop stops its
// agent too.
func (m *Mesh) Sub() *Mesh {
	s := &Mesh{R: m.R, Bins: m.Bins, Certs: m.Certs, Consul: testkit.StartConsul(m.R, 0), Jaeger: m.Jaeger}
	s.procs = append(s.procs, s.Consul.Proc)
	return s
}

func (m *Mesh) start(name, bin string, o testkit.StartOptions, args ...string) *testkit.Proc {
	p := testkit.Start(m.R, name, bin, o, args...)
	m.procs = append(m.procs, p)
	return p
}

// NewMesh builds the binaries (into the runner's temp dir) and starts
// Consul, and Jaeger when traced.
func NewMesh(r *harness.Runner, bins harness.Binaries, traced bool) *Mesh {
	m := &Mesh{R: r, Bins: bins, Certs: testkit.DevCerts(r), Consul: testkit.StartConsul(r, 0)}
	if traced {
		m.Jaeger = harness.StartJaeger(r)
	}
	return m
}

// TraceClient reads the mesh's traces (nil when it has no Jaeger).
func (m *Mesh) TraceClient() *traces.Client {
	if m.Jaeger == nil {
		return nil
	}
	return &traces.Client{Base: m.Jaeger.Query}
}

func (m *Mesh) env(service string) []string {
	if m.Jaeger == nil {
		return nil
	}
	return append(m.Jaeger.OTELEnv(), "OTEL_SERVICE_NAME="+service)
}

func (m *Mesh) name(kind string) string {
	m.seq++
	return fmt.Sprintf("%s%d", kind, m.seq)
}

// Router starts a router on Consul with admission control off (the load
// drivers measure the mesh, not the admission limit) unless extra sets it.
func (m *Mesh) Router(extra ...string) *Router {
	args := m.Certs.Args(mtls.RoleRouter, "-consul", m.Consul.HTTPAddr, "-grace", "1s")
	if !hasFlag(extra, "-max-concurrent") {
		args = append(args, "-max-concurrent", "0")
	}
	p := m.start(m.name("router"), m.Bins.Router, testkit.StartOptions{WaitListening: true, Env: m.env("router")}, append(args, extra...)...)
	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		m.R.Fatal(err)
	}
	m.R.Cleanup(func() { conn.Close() })
	return &Router{Proc: p, Name: p.Name, Pid: p.Cmd.Process.Pid, Client: routerv1.NewRouterServiceClient(conn)}
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// Router is a router process and a client of it. Proc is nil for a router
// this program did not start (a pod's), known by its pid.
type Router struct {
	Proc   *testkit.Proc
	Name   string
	Pid    int
	Client routerv1.RouterServiceClient
}

// WaitHealthy waits until the router sees n healthy endpoints.
func (r *Router) WaitHealthy(n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		l, err := r.Client.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{})
		healthy := 0
		for _, e := range l.GetEndpoints() {
			if e.GetHealthy() {
				healthy++
			}
		}
		if err == nil && healthy == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router %s sees %d of %d healthy endpoints: %v", r.Name, healthy, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CPU is the router's CPU time so far.
func (r *Router) CPU() time.Duration {
	d, _ := harness.ProcCPU(r.Pid)
	return d
}

// RSS is the router's resident and peak memory in MiB.
func (r *Router) RSS() (rss, peak float64) { return harness.ProcRSS(r.Pid) }

// Pids of processes.
func Pids(ps []*testkit.Proc) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p.Cmd.Process.Pid
	}
	return out
}

// Sim starts an engine-sim worker registered in Consul; args are its flags
// (-models, -tps, -ttft, -max-concurrency, -queue, ...).
func (m *Mesh) Sim(args ...string) *testkit.Proc {
	return m.start(m.name("sim"), m.Bins.EngineSim, testkit.StartOptions{WaitListening: true, Env: m.env("engine-sim")},
		m.Certs.Args(mtls.RoleEngine, append([]string{"-consul", m.Consul.HTTPAddr, "-check-interval", "1s", "-grace", "1s"}, args...)...)...)
}

// GGUF starts an engine-gguf worker registered in Consul.
func (m *Mesh) GGUF(args ...string) *testkit.Proc {
	return m.start(m.name("gguf"), m.Bins.EngineGGUF, testkit.StartOptions{WaitListening: true, Timeout: 2 * time.Minute, Env: m.env("engine-gguf")},
		m.Certs.Args(mtls.RoleEngine, append([]string{"-consul", m.Consul.HTTPAddr, "-check-interval", "1s", "-grace", "1s"}, args...)...)...)
}

// ONNX starts an engine-onnx worker registered in Consul.
func (m *Mesh) ONNX(args ...string) *testkit.Proc {
	lib, err := harness.ORTLibrary()
	if err != nil {
		m.R.Fatal(err)
	}
	return m.start(m.name("onnx"), m.Bins.EngineONNX, testkit.StartOptions{WaitListening: true, Timeout: 2 * time.Minute, Env: m.env("engine-onnx")},
		m.Certs.Args(mtls.RoleEngine, append([]string{"-consul", m.Consul.HTTPAddr, "-check-interval", "1s", "-grace", "1s", "-ort-lib", lib}, args...)...)...)
}

// LoadAvg is /proc/loadavg's three averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
