// Command k8sscaling runs the horizontal-scaling sweep on the one-node
// Kubernetes cluster (tools/k8s.sh, overlays/local applied): the
// engine-sim Deployment set to the sweep's sim settings and scaled with
// `kubectl scale` to 1, 2, 4 and 8 pods, the router pod (found through
// Consul) driven in a closed loop of slots × N clients, as make scaling
// does with processes. It writes -out/k8s-scaling.md (which make
// bench-report includes in its horizontal-scaling table) and
// k8s-scaling.json. Run it as make k8s-scaling (a fresh cluster, torn down
// after).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llm-runner-router/llmrouter/e2e/bench"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/traces"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "k8sscaling:", err)
		os.Exit(1)
	}
}

const namespace = "llmrouter"

func run(args []string) error {
	fs := flag.NewFlagSet("k8sscaling", flag.ContinueOnError)
	var cfg bench.ScalingConfig
	cfg.AddFlags(fs) // -workers are engine-sim replica counts
	consul := fs.String("consul", "127.0.0.1:28500", "the cluster's Consul HTTP address (overlays/local's)")
	jaeger := fs.String("jaeger", "http://127.0.0.1:26686", "the cluster's Jaeger query API (overlays/local's; empty: no traces)")
	out := fs.String("out", "docs/bench", "directory for k8s-scaling.md and .json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	began := time.Now()
	// Only the sims serve: the other workers' pods would share the cores.
	for _, d := range []string{"engine-gguf", "engine-onnx", "provider-proxy"} {
		if _, err := kubectl("scale", "deploy/"+d, "--replicas=0"); err != nil {
			return err
		}
	}
	// The sweep's sim settings, appended to the pod's args (a later flag
	// wins).
	if _, err := kubectl("patch", "deploy/engine-sim", "--type=json", "-p", string(simPatch(cfg))); err != nil {
		return err
	}
	var tr *traces.Client
	if *jaeger != "" {
		tr = &traces.Client{Base: *jaeger}
	}
	rs, err := routers(*consul, 1)
	if err != nil {
		return err
	}
	maxN := cfg.Workers[len(cfg.Workers)-1]
	var rows []bench.ScalingRow
	scaleTimes := map[int]time.Duration{}
	for _, n := range cfg.Workers {
		t0 := time.Now()
		if _, err := kubectl("scale", "deploy/engine-sim", "--replicas="+strconv.Itoa(n)); err != nil {
			return err
		}
		if _, err := kubectl("rollout", "status", "deploy/engine-sim", "--timeout=180s"); err != nil {
			return err
		}
		if err := waitSims(rs[0].Client, n, 2*time.Minute); err != nil {
			return err
		}
		scaleTimes[n] = time.Since(t0)
		sims := pids("engine-sim", *consul)
		if len(sims) != n {
			return fmt.Errorf("%d engine-sim processes for %d pods", len(sims), n)
		}
		sets := [][]*bench.Router{rs}
		if n == maxN {
			// Again with two router pods.
			if _, err := kubectl("scale", "deploy/router", "--replicas=2"); err != nil {
				return err
			}
			two, err := routers(*consul, 2)
			if err != nil {
				return err
			}
			for _, r := range two {
				if err := waitSims(r.Client, n, time.Minute); err != nil {
					return err
				}
			}
			sets = append(sets, two)
		}
		for _, set := range sets {
			row, err := cfg.Measure(set, sims, tr)
			if err != nil {
				return fmt.Errorf("%d pods, %d routers: %w", n, len(set), err)
			}
			rows = append(rows, row)
			fmt.Fprintf(os.Stderr, "k8sscaling: %d pods, %d router(s): %.1f req/s, router %.2f cores\n", n, len(set), row.ReqPerSec, row.RouterCores)
		}
	}
	bench.Efficiency(rows)
	var b strings.Builder
	fmt.Fprintf(&b, "On the one-node Kubernetes cluster (`make k8s-scaling`, %s, commit %s): the engine-sim Deployment of overlays/local with the "+
		"sweep's settings, scaled with `kubectl scale`; one router pod, and two at the largest count; hostNetwork pods on 127.0.0.1, discovered through the Consul pod. %s\n\n",
		began.UTC().Format("2006-01-02 15:04 UTC"), bench.Commit(), cfg.Describe())
	b.WriteString(bench.ScalingTable(rows))
	b.WriteString("\n`kubectl scale` to the router routing to every pod: ")
	var parts []string
	for _, n := range cfg.Workers {
		parts = append(parts, fmt.Sprintf("%d pods %v", n, scaleTimes[n].Round(100*time.Millisecond)))
	}
	b.WriteString(strings.Join(parts, ", ") + ".\n")
	fmt.Print(b.String())
	return bench.WriteSweep(*out, "k8s-scaling", b.String(), cfg, rows)
}

// simPatch is a JSON patch appending the sweep's sim flags to the
// engine-sim container's args, as -flag=value (SimArgs gives flag/value
// pairs).
func simPatch(cfg bench.ScalingConfig) []byte {
	a := cfg.SimArgs(cfg.TPS)
	var patch []map[string]string
	for i := 0; i+1 < len(a); i += 2 {
		patch = append(patch, map[string]string{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": a[i] + "=" + a[i+1]})
	}
	b, _ := json.Marshal(patch)
	return b
}

func kubectl(args ...string) (string, error) {
	out, err := exec.Command("kubectl", append([]string{"-n", namespace}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// routers finds n router pods through Consul and dials them; each one's
// pid is the router process that serves its port.
func routers(consul string, n int) ([]*bench.Router, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var entries []struct {
			Service struct {
				ID, Address string
				Port        int
			}
		}
		resp, err := http.Get("http://" + consul + "/v1/health/service/llmrouter-router?passing=1")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&entries)
			resp.Body.Close()
		}
		if ps := pids("router", consul); err == nil && len(entries) == n && len(ps) == n {
			var out []*bench.Router
			for _, e := range entries {
				pid := listener(ps, e.Service.Port)
				if pid == 0 {
					return nil, fmt.Errorf("no router process listens on port %d", e.Service.Port)
				}
				conn, err := grpc.NewClient(fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					return nil, err
				}
				out = append(out, &bench.Router{Name: e.Service.ID, Pid: pid, Client: routerv1.NewRouterServiceClient(conn)})
			}
			return out, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("want %d routers registered in Consul at %s and running here, have %d: %v", n, consul, len(entries), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// listener is the pid among ps holding a socket that listens on port
// (from /proc/net/tcp and the processes' file descriptors).
func listener(ps []int, port int) int {
	b, _ := os.ReadFile("/proc/net/tcp")
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
			continue
		}
		if _, p, ok := strings.Cut(f[1], ":"); ok {
			if v, err := strconv.ParseInt(p, 16, 32); err == nil && int(v) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	for _, pid := range ps {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && inodes[l] {
				return pid
			}
		}
	}
	return 0
}

// pids are the processes running the named binary against this Consul
// (the pods' containers are processes of this machine).
func pids(binary, consul string) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil || len(b) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(argv[0]) != binary || !strings.Contains(string(b), "-consul="+consul) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		out = append(out, pid)
	}
	return out
}

// waitSims waits until the router routes "sim" to exactly n healthy
// endpoints and nothing else is healthy (old pods gone).
func waitSims(c routerv1.RouterServiceClient, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		l, err := c.ListEndpoints(context.Background(), &routerv1.ListEndpointsRequest{})
		sims, healthy := 0, 0
		for _, e := range l.GetEndpoints() {
			if !e.GetHealthy() {
				continue
			}
			healthy++
			for _, m := range e.GetModels() {
				if m.GetName() == "sim" {
					sims++
				}
			}
		}
		if err == nil && sims == n && healthy == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the router routes sim to %d of %d pods (%d healthy endpoints): %v", sims, n, healthy, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
