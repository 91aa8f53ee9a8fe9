package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// outage is how long Consul stays down in TestConsulOutageUnderLoad: short
// in make test, long in make faults (-args -outage 30s).
var outage = flag.Duration("outage", 3*time.Second, "how long Consul is down in TestConsulOutageUnderLoad")

func startSimWorker(t *testing.T, name, consul, models string) *testkit.Proc {
	t.Helper()
	return testkit.Start(t, name, bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
		"-consul", consul, "-check-interval", "1s", "-models", models, "-tps", "500", "-ttft", "5ms", "-grace", "2s")...)
}

// routerClient dials a router's gRPC API in plaintext (its default
// -client-tls none).
func routerClient(t *testing.T, addr string) routerv1.RouterServiceClient {
	t.Helper()
	return routerv1.NewRouterServiceClient(dialT(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials())))
}

// servedBy lists, per model, the endpoints the router would route it to.
func servedBy(c routerv1.RouterServiceClient) map[string][]string {
	l, err := c.ListModels(context.Background(), &routerv1.ListModelsRequest{})
	if err != nil {
		return nil
	}
	out := map[string][]string{}
	for _, m := range l.GetModels() {
		out[m.GetInfo().GetName()] = m.GetEndpoints()
	}
	return out
}

// LoadModel and UnloadModel change the worker's Consul registration, and the
// router follows: an unloaded model gets no more traffic, a loaded one does.
func TestDiscoveryFollowsLoadAndUnload(t *testing.T) {
	consul := testkit.StartConsul(t, 0)
	w1 := startSimWorker(t, "w1", consul.HTTPAddr, "m-a,m-b")
	w2 := startSimWorker(t, "w2", consul.HTTPAddr, "m-a")
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
		"-consul", consul.HTTPAddr, "-refresh", "300ms")...)
	client := routerClient(t, router.Addr)
	waitFor(t, 15*time.Second, "the router sees both workers", func() bool {
		s := servedBy(client)
		return len(s["m-a"]) == 2 && len(s["m-b"]) == 1
	})
	admin := engineClientAs(t, w1.Addr, mtls.RoleAdmin)
	if _, err := admin.UnloadModel(context.Background(), &enginev1.UnloadModelRequest{Model: "m-b"}); err != nil {
		t.Fatal(err)
	}
	// At once: a request for m-b is refused by the router, never sent to a
	// worker that would answer "not hosted".
	began := time.Now()
	waitFor(t, 5*time.Second, "the router drops m-b", func() bool { _, ok := servedBy(client)["m-b"]; return !ok })
	t.Logf("router dropped the unloaded model after %v", time.Since(began).Round(time.Millisecond))
	s, err := client.Generate(context.Background(), text("m-b", "hi", 2))
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unloaded model: %v, want NotFound from the router", err)
	}
	if !registeredModels(t, consul.HTTPAddr, "m-a") || registeredModels(t, consul.HTTPAddr, "m-b") {
		t.Fatal("consul's registration still lists m-b or lost m-a")
	}

	if _, err := engineClientAs(t, w2.Addr, mtls.RoleAdmin).LoadModel(context.Background(), &enginev1.LoadModelRequest{Model: "m-c"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the router routes m-c to w2", func() bool {
		e := servedBy(client)["m-c"]
		return len(e) == 1 && e[0] == w2.Addr
	})
	s, err = client.Generate(context.Background(), text("m-c", "hi", 3))
	if err != nil {
		t.Fatal(err)
	}
	if r := consume(s, nil); r.err != nil || r.endpoint != w2.Addr || r.tokens != 3 {
		t.Fatalf("m-c through the router: %+v", r)
	}
}

// registeredIDs lists the worker registrations in Consul's catalog.
func registeredIDs(t *testing.T, consul string) []string {
	t.Helper()
	resp, err := http.Get("http://" + consul + "/v1/catalog/service/llmrouter-engine")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var entries []struct{ ServiceID string }
	if json.NewDecoder(resp.Body).Decode(&entries) != nil {
		return nil
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ServiceID)
	}
	return ids
}

// registeredModels reports whether some registration in Consul's catalog
// advertises model.
func registeredModels(t *testing.T, consul, model string) bool {
	t.Helper()
	resp, err := http.Get("http://" + consul + "/v1/catalog/service/llmrouter-engine")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var entries []struct{ ServiceTags []string }
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		for _, tag := range e.ServiceTags {
			if tag == "model:"+model {
				return true
			}
		}
	}
	return false
}

// Consul goes down under steady load and comes back empty: no request
// fails, the workers register again, and a worker started during the
// outage serves once Consul is back.
func TestConsulOutageUnderLoad(t *testing.T) {
	consul := testkit.StartConsul(t, 0)
	port, _ := strconv.Atoi(consul.HTTPAddr[strings.LastIndexByte(consul.HTTPAddr, ':')+1:])
	startSimWorker(t, "w1", consul.HTTPAddr, "m")
	startSimWorker(t, "w2", consul.HTTPAddr, "m")
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
		"-consul", consul.HTTPAddr, "-strategy", "round-robin")...)
	client := routerClient(t, router.Addr)
	waitFor(t, 15*time.Second, "the router sees both workers", func() bool { return len(servedBy(client)["m"]) == 2 })

	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		firstErr   error
		byEndpoint = map[string]int{}
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	for c := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s, err := client.Generate(context.Background(), text("m", fmt.Sprintf("client %d request %d", c, i), 10))
				var r streamResult
				if err == nil {
					r = consume(s, nil)
					err = r.err
				}
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					ok.Add(1)
					byEndpoint[r.endpoint]++
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	consul.Kill()
	<-consul.Exited()
	okBefore := ok.Load()
	// A worker started while Consul is down serves anyway and keeps trying
	// to register.
	w3 := startSimWorker(t, "w3", consul.HTTPAddr, "m")
	time.Sleep(*outage)
	okDuringOutage := ok.Load()
	if ok.Load() == okBefore {
		t.Fatal("no request was served while Consul was down")
	}
	testkit.StartConsul(t, port)
	began := time.Now()
	// Within the watcher's grace (15 s): every worker registered itself again
	// in the empty agent.
	waitFor(t, 10*time.Second, "all three workers registered in the new agent", func() bool { return len(registeredIDs(t, consul.HTTPAddr)) == 3 })
	t.Logf("all three workers registered again %v after Consul came back", time.Since(began).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "the router routes to w3", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return byEndpoint[w3.Addr] > 0
	})
	t.Logf("after a %v Consul outage: w3 served %v after Consul came back", *outage, time.Since(began).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d requests served (%d before the outage, %d up to its end), %d failed; per endpoint %v", ok.Load(), okBefore, okDuringOutage, failed.Load(), byEndpoint)
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed during the Consul outage; first: %v", failed.Load(), firstErr)
	}
	if len(servedBy(client)["m"]) != 3 {
		t.Fatalf("the router serves m from %v, want 3 workers", servedBy(client)["m"])
	}
}

// consulServices reads Consul's health view of a service: ID, address and
// metadata of each instance whose checks pass.
func consulServices(t *testing.T, consul, service string) []consulService {
	t.Helper()
	resp, err := http.Get("http://" + consul + "/v1/health/service/" + service + "?passing=1")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var entries []struct {
		Service struct {
			ID, Address string
			Port        int
			Meta        map[string]string
		}
	}
	if json.NewDecoder(resp.Body).Decode(&entries) != nil {
		return nil
	}
	var out []consulService
	for _, e := range entries {
		out = append(out, consulService{ID: e.Service.ID, Addr: net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)), Meta: e.Service.Meta})
	}
	return out
}

// consulCatalog reads Consul's catalog of a service: every registration,
// passing or not.
func consulCatalog(t *testing.T, consul, service string) []consulService {
	t.Helper()
	resp, err := http.Get("http://" + consul + "/v1/catalog/service/" + service)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var entries []struct {
		ServiceID, ServiceAddress string
		ServicePort               int
		ServiceMeta               map[string]string
	}
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		t.Fatal(err)
	}
	var out []consulService
	for _, e := range entries {
		out = append(out, consulService{ID: e.ServiceID, Addr: net.JoinHostPort(e.ServiceAddress, strconv.Itoa(e.ServicePort)), Meta: e.ServiceMeta})
	}
	return out
}

// consulCheckTargets lists the host:port every gRPC health check of a
// service dials, from the agent's own view (its catalog copy keeps a
// passing check's first, empty output for minutes, and Consul 1.14 leaves
// the definition out): the output names the target ("gRPC check
// HOST:PORT/: ...") once the check has run.
func consulCheckTargets(t *testing.T, consul, service string) []string {
	t.Helper()
	resp, err := http.Get("http://" + consul + "/v1/agent/checks?filter=" + url.QueryEscape(`ServiceName == "`+service+`"`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var checks map[string]struct{ Output string }
	if err := json.NewDecoder(resp.Body).Decode(&checks); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range checks {
		if rest, ok := strings.CutPrefix(c.Output, "gRPC check "); ok {
			target, _, _ := strings.Cut(rest, ": ")
			target, _, _ = strings.Cut(target, "/")
			out = append(out, target)
		}
	}
	return out
}

type consulService struct {
	ID, Addr string
	Meta     map[string]string
}

// A router started with -register is found through Consul (gRPC address,
// HTTP address in the metadata, a passing check through its health
// listener) and leaves it when it stops; every binary's healthcheck
// subcommand reads the address a -health-addr-file names and says whether
// the process serves.
func TestRouterRegistersInConsulAndProbes(t *testing.T) {
	consul := testkit.StartConsul(t, 0)
	dir := t.TempDir()
	workerHealth, routerHealth := filepath.Join(dir, "worker"), filepath.Join(dir, "router")
	w := testkit.Start(t, "w", bins.EngineSim, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleEngine,
		"-consul", consul.HTTPAddr, "-check-interval", "1s", "-models", "m", "-health-addr-file", workerHealth)...)
	router := testkit.Start(t, "router", bins.Router, testkit.StartOptions{WaitListening: true}, certs.Args(mtls.RoleRouter,
		"-consul", consul.HTTPAddr, "-register", "-http-listen", "127.0.0.1:0", "-health-addr-file", routerHealth)...)
	var found []consulService
	waitFor(t, 15*time.Second, "the router's registration passes its check", func() bool {
		found = consulServices(t, consul.HTTPAddr, "llmrouter-router")
		return len(found) == 1
	})
	if found[0].Addr != router.Addr || found[0].Meta["http"] != router.Addrs["http"] || found[0].Meta["client_tls"] != "none" {
		t.Fatalf("registered %+v, want gRPC %s and http %s", found[0], router.Addr, router.Addrs["http"])
	}
	// The router found through Consul answers.
	waitFor(t, 15*time.Second, "the router sees the worker", func() bool { return len(servedBy(routerClient(t, found[0].Addr))["m"]) == 1 })

	for _, c := range []struct{ bin, file string }{{bins.Router, routerHealth}, {bins.EngineSim, workerHealth}} {
		out, err := exec.Command(c.bin, "healthcheck", "-addr-file", c.file).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SERVING") {
			t.Errorf("%s healthcheck: %v %s", filepath.Base(c.bin), err, out)
		}
	}
	// Registered as passing, the check names its target once it has run.
	var targets []string
	waitFor(t, 15*time.Second, "the router's health check ran", func() bool {
		targets = consulCheckTargets(t, consul.HTTPAddr, "llmrouter-router")
		return len(targets) == 1
	})
	if h, _ := os.ReadFile(routerHealth); targets[0] != strings.TrimSpace(string(h)) {
		t.Errorf("the router's health check dials %s, its health listener is %s", targets[0], h)
	}
	// At SIGTERM the registration goes (the catalog, not only the passing
	// view: a stopped router's failing check would hide it there too).
	router.Stop(10 * time.Second)
	if got := consulCatalog(t, consul.HTTPAddr, "llmrouter-router"); len(got) != 0 {
		t.Fatalf("after SIGTERM the router is still registered: %+v", got)
	}
	out, err := exec.Command(bins.Router, "healthcheck", "-addr-file", routerHealth, "-timeout", "1s").CombinedOutput()
	if err == nil {
		t.Fatalf("healthcheck of a stopped router passed: %s", out)
	}
	w.Stop(10 * time.Second)
	if got := consulCatalog(t, consul.HTTPAddr, "llmrouter-engine"); len(got) != 0 {
		t.Fatalf("after SIGTERM the worker is still registered: %+v", got)
	}
}
