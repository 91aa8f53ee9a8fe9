// Package k8s holds the checks of the Kubernetes manifests beside it: every
// overlay builds with kustomize (the engine of `kubectl kustomize`), every
// object decodes strictly into the k8s.io/api types (an unknown or
// misplaced field fails), and the properties the deployment promises hold
// for every pod: non-root, read-only root, no capabilities, probes,
// requests and limits, images this project builds.
package k8s

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/llm-runner-router/llmrouter/deploy/images"
)

var overlays = []string{"base", "overlays/local", "overlays/local-hpa", "overlays/cpu", "overlays/gpu"}

func scheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// build runs kustomize on dir and decodes every object strictly.
func build(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	s := scheme(t)
	var objs []runtime.Object
	for _, r := range rm.Resources() {
		raw, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		gvk := schema.FromAPIVersionAndKind(r.GetApiVersion(), r.GetKind())
		obj, err := s.New(gvk)
		if err != nil {
			t.Errorf("%s %s: a kind these checks do not know: %v", dir, r.CurId(), err)
			continue
		}
		// The API server's own strict decoding: field names match exactly
		// (case included), unknown and duplicate fields are errors.
		strict, err := kjson.UnmarshalStrict(raw, obj)
		if err == nil && len(strict) > 0 {
			err = errors.Join(strict...)
		}
		if err != nil {
			t.Errorf("%s %s: %v", dir, r.CurId(), err)
			continue
		}
		objs = append(objs, obj)
	}
	return objs
}

// pod is a workload's pod template, named.
type pod struct {
	name     string
	spec     corev1.PodSpec
	labels   map[string]string
	replicas int32
}

func pods(objs []runtime.Object) []pod {
	var out []pod
	for _, o := range objs {
		switch w := o.(type) {
		case *appsv1.Deployment:
			out = append(out, pod{w.Name, w.Spec.Template.Spec, w.Spec.Template.Labels, *w.Spec.Replicas})
		case *appsv1.StatefulSet:
			out = append(out, pod{w.Name, w.Spec.Template.Spec, w.Spec.Template.Labels, *w.Spec.Replicas})
		}
	}
	return out
}

func find[T runtime.Object](objs []runtime.Object, name string) T {
	var zero T
	for _, o := range objs {
		if v, ok := o.(T); ok && o.(interface{ GetName() string }).GetName() == name {
			return v
		}
	}
	return zero
}

// imageNames are the repositories make images builds.
func imageNames() []string {
	var out []string
	for _, img := range images.Specs(images.Sources{}) {
		out = append(out, "llmrouter/"+img.Name)
	}
	return out
}

func TestOverlaysBuildAndDecodeStrictly(t *testing.T) {
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs := build(t, dir)
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[fmt.Sprintf("%T", o)]++
			}
			for _, want := range []string{"*v1.Deployment", "*v1.StatefulSet", "*v1.Service", "*v1.NetworkPolicy", "*v1.ServiceAccount", "*v1.PodDisruptionBudget"} {
				if kinds[want] == 0 {
					t.Errorf("no %s in %v", want, kinds)
				}
			}
		})
	}
}

// TestPodsAreLockedDown: every pod of every overlay runs as non-root with
// a read-only root, no capabilities, RuntimeDefault seccomp, no API token,
// its own service account, requests and limits, and probes.
func TestPodsAreLockedDown(t *testing.T) {
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			for _, p := range pods(build(t, dir)) {
				s := p.spec
				sc := s.SecurityContext
				if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
					sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: pod security context %+v", p.name, sc)
				}
				if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken || s.ServiceAccountName == "" || s.ServiceAccountName == "default" {
					t.Errorf("%s: service account %q, token mounted %v", p.name, s.ServiceAccountName, s.AutomountServiceAccountToken)
				}
				for _, c := range append(slices.Clone(s.InitContainers), s.Containers...) {
					csc := c.SecurityContext
					if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
						csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
						csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
						t.Errorf("%s/%s: container security context %+v", p.name, c.Name, csc)
					}
					for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
						if _, ok := c.Resources.Requests[r]; !ok {
							t.Errorf("%s/%s: no %s request", p.name, c.Name, r)
						}
						if _, ok := c.Resources.Limits[r]; !ok {
							t.Errorf("%s/%s: no %s limit", p.name, c.Name, r)
						}
					}
					repo, tag, _ := strings.Cut(c.Image, ":")
					if !slices.Contains(imageNames(), repo) || tag == "" {
						t.Errorf("%s/%s: image %q is not one make images builds, with a tag", p.name, c.Name, c.Image)
					}
				}
				for _, c := range s.Containers {
					if c.ReadinessProbe == nil || c.LivenessProbe == nil {
						t.Errorf("%s/%s: readiness %v liveness %v", p.name, c.Name, c.ReadinessProbe != nil, c.LivenessProbe != nil)
					}
				}
			}
		})
	}
}

// TestShutdownFitsTheGracePeriod: a router's preStop plus its shutdown, and
// a worker's shutdown, fit in terminationGracePeriodSeconds.
func TestShutdownFitsTheGracePeriod(t *testing.T) {
	for _, dir := range overlays {
		for _, p := range pods(build(t, dir)) {
			for _, c := range p.spec.Containers {
				grace := 0
				for _, a := range c.Args {
					if v, ok := strings.CutPrefix(a, "-grace="); ok {
						d, err := time.ParseDuration(v)
						if err != nil {
							t.Errorf("%s %s: %s: %v", dir, p.name, a, err)
						}
						grace = int(d.Seconds())
					}
				}
				if grace == 0 {
					continue
				}
				pre := 0
				if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
					pre = int(c.Lifecycle.PreStop.Sleep.Seconds)
				}
				// A shutdown: deregistration (at most grpcserver.StepTimeout,
				// 3 s), the drain (-grace), the trace flush (at most
				// grpcserver.FlushTimeout, 3 s).
				const steps, flush = 3, 3
				if tg := p.spec.TerminationGracePeriodSeconds; tg == nil || int(*tg) <= pre+steps+grace+flush {
					t.Errorf("%s %s: terminationGracePeriodSeconds %v <= preStop %ds + deregistration %ds + grace %ds + flush %ds", dir, p.name, tg, pre, steps, grace, flush)
				}
				if p.labels["llmrouter/role"] == "router" && pre == 0 {
					t.Errorf("%s %s: a router behind a Service needs a preStop delay", dir, p.name)
				}
			}
		}
	}
}

// TestLocalOverlayStaysOnLoopback: in the one-node cluster every pod is on
// the host network, every address a process listens on, advertises or dials
// is in 127.0.0.0/8, probes are exec probes or go to 127.0.0.1, no pod
// declares a (host) port, images are never pulled.
func TestLocalOverlayStaysOnLoopback(t *testing.T) {
	objs := build(t, "overlays/local")
	for _, p := range pods(objs) {
		if !p.spec.HostNetwork {
			t.Errorf("%s: not on the host network", p.name)
		}
		for _, c := range append(slices.Clone(p.spec.InitContainers), p.spec.Containers...) {
			if c.ImagePullPolicy != corev1.PullNever {
				t.Errorf("%s/%s: imagePullPolicy %q", p.name, c.Name, c.ImagePullPolicy)
			}
			if len(c.Ports) > 0 {
				t.Errorf("%s/%s: declares ports %v (host ports on the host network)", p.name, c.Name, c.Ports)
			}
			for _, a := range c.Args {
				_, v, ok := strings.Cut(a, "=")
				if !ok {
					continue
				}
				if host, _, err := net.SplitHostPort(v); err == nil {
					if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
						t.Errorf("%s/%s: %s is not a loopback address", p.name, c.Name, a)
					}
				}
				if name, _, _ := strings.Cut(a, "="); name == "-advertise" && !net.ParseIP(v).IsLoopback() {
					t.Errorf("%s/%s: advertises %s", p.name, c.Name, v)
				}
			}
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "OTEL_EXPORTER_OTLP") && !strings.HasPrefix(e.Value, "http://127.0.0.1:") {
					t.Errorf("%s/%s: %s=%s", p.name, c.Name, e.Name, e.Value)
				}
			}
			for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				switch {
				case pr == nil:
				case pr.GRPC != nil || pr.TCPSocket != nil:
					t.Errorf("%s/%s: a probe to the pod IP (which nothing listens on): %+v", p.name, c.Name, pr.ProbeHandler)
				case pr.HTTPGet != nil && pr.HTTPGet.Host != "127.0.0.1":
					t.Errorf("%s/%s: HTTP probe to host %q", p.name, c.Name, pr.HTTPGet.Host)
				}
			}
		}
	}
	if find[*corev1.PersistentVolumeClaim](objs, "llmrouter-models") != nil {
		t.Error("the local overlay still claims a models volume")
	}
}

func TestGPUOverlay(t *testing.T) {
	d := find[*appsv1.Deployment](build(t, "overlays/gpu"), "engine-gguf")
	if d == nil {
		t.Fatal("no engine-gguf")
	}
	s := d.Spec.Template.Spec
	c := s.Containers[0]
	if q := c.Resources.Limits["nvidia.com/gpu"]; q.Value() != 1 {
		t.Errorf("nvidia.com/gpu limit %v", q.String())
	}
	if !strings.HasSuffix(c.Image, "-cuda") || !slices.Contains(c.Args, "-gpu-layers=-1") {
		t.Errorf("image %s args %v", c.Image, c.Args)
	}
	if s.NodeSelector["nvidia.com/gpu.present"] != "true" || len(s.Tolerations) == 0 || s.Tolerations[0].Key != "nvidia.com/gpu" {
		t.Errorf("node selector %v tolerations %v", s.NodeSelector, s.Tolerations)
	}
}

// TestServicesAndPoliciesSelectPods: every Service, PDB, HPA and
// NetworkPolicy points at pods (or a Deployment) that exist; every
// ConfigMap a pod mounts is in the overlay.
func TestServicesAndPoliciesSelectPods(t *testing.T) {
	for _, dir := range overlays {
		objs := build(t, dir)
		ps := pods(objs)
		matches := func(sel map[string]string) bool {
			return slices.ContainsFunc(ps, func(p pod) bool {
				for k, v := range sel {
					if p.labels[k] != v {
						return false
					}
				}
				return true
			})
		}
		for _, o := range objs {
			switch v := o.(type) {
			case *corev1.Service:
				if !matches(v.Spec.Selector) {
					t.Errorf("%s: service %s selects no pod (%v)", dir, v.Name, v.Spec.Selector)
				}
			case *policyv1.PodDisruptionBudget:
				if !matches(v.Spec.Selector.MatchLabels) {
					t.Errorf("%s: PDB %s selects no pod", dir, v.Name)
				}
			case *autoscalingv2.HorizontalPodAutoscaler:
				if find[*appsv1.Deployment](objs, v.Spec.ScaleTargetRef.Name) == nil {
					t.Errorf("%s: HPA %s scales no Deployment", dir, v.Name)
				}
			case *networkingv1.NetworkPolicy:
				if len(v.Spec.PodSelector.MatchLabels) > 0 && !matches(v.Spec.PodSelector.MatchLabels) {
					t.Errorf("%s: network policy %s selects no pod", dir, v.Name)
				}
			}
		}
		for _, p := range ps {
			for _, vol := range p.spec.Volumes {
				if cm := vol.ConfigMap; cm != nil && find[*corev1.ConfigMap](objs, cm.Name) == nil {
					t.Errorf("%s: %s mounts ConfigMap %s, which is not there", dir, p.name, cm.Name)
				}
			}
		}
	}
}
