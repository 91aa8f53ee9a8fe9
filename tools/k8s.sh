#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, for trying and testing
# the manifests in deploy/k8s: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kubelet v1.37.2 (built by tools/install.sh kube, with a
# matching kubectl), containerd + runc from Debian, every listener on
# 127.0.0.1 on ports chosen at start, no pod network (hostNetwork pods only),
# images imported from tarballs (make images), never pulled.
#
#   tools/k8s.sh up [IMAGE.tar ...]   install what is missing, start, import images, wait for the node
#   tools/k8s.sh down                 stop everything it started, restore the host
#   tools/k8s.sh import IMAGE.tar...  import image archives into the cluster's containerd
#   tools/k8s.sh env                  print the environment for kubectl (eval "$(tools/k8s.sh env)")
#   tools/k8s.sh status               what runs
#   tools/k8s.sh deploy [CERTS_DIR]  the mesh (deploy/k8s/overlays/local) with mTLS Secrets from CERTS_DIR (make certs)
#   tools/k8s.sh metrics-server       start metrics-server (the metrics API, for HPAs and kubectl top)
#   tools/k8s.sh run CMD...           up, run CMD with that environment, down (the lock held throughout)
#
# One cluster per machine: up, down and run take a lock; `up` first stops a
# cluster left by a killed run (found by its pid files). State lives under
# $LLMROUTER_CACHE/k8s (default ~/.cache/llmrouter/k8s), never in the checkout.
# Needs root (containerd, runc, kubelet) and the host name resolving to
# 127.x in /etc/hosts (the API server reaches the kubelet by host name).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=$("$root/tools/install.sh" --cache)
bin=$cache/bin
R=$cache/k8s
P=$R/pki
KCFG=$R/etc/admin.kubeconfig
SOCK=$R/run/containerd/containerd.sock
NODE=$(hostname)
# The pause image every pod sandbox runs (make images builds it).
PAUSE_IMAGE=${PAUSE_IMAGE:-llmrouter/pause:dev}
export KUBECONFIG=$KCFG KUBECACHEDIR=$R/run/kubectl-cache
export PATH=$bin:$PATH
ETCD=$R/debs/root/usr/bin/etcd
CNIBIN=$R/debs/root/usr/lib/cni

log() { echo "k8s: [$(date +%T)] $*"; }
die() {
	echo "k8s: $*" >&2
	exit 1
}
now() { date +%s%N; }
since() { echo "$((($(now) - $1) / 1000000))" | awk '{printf "%.1fs", $1/1000}'; }
ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }

lock() {
	mkdir -p "$R"
	exec 9>"$R/lock"
	if ! flock -n 9; then
		log "another cluster command holds $R/lock; waiting"
		flock 9
	fi
}

# ---------------------------------------------------------------- install
deps() {
	[[ $(id -u) == 0 ]] || die "needs root (containerd, runc and kubelet)"
	getent hosts "$NODE" | grep -q '^127\.' ||
		die "$NODE does not resolve to 127.x in /etc/hosts (the API server reaches the kubelet by host name); add '127.0.0.1 $NODE'"
	local pkgs=()
	command -v containerd >/dev/null || pkgs+=(containerd)
	command -v runc >/dev/null || pkgs+=(runc)
	command -v curl >/dev/null || pkgs+=(curl)
	command -v openssl >/dev/null || pkgs+=(openssl)
	if ((${#pkgs[@]})); then
		log "installing ${pkgs[*]} (Debian packages)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null ||
			{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null; }
	fi
	if [[ ! -x $ETCD || ! -x $CNIBIN/loopback ]]; then
		log "unpacking etcd and the CNI plugins (Debian packages, not installed)"
		local tmp
		tmp=$(mktemp -d)
		chmod 755 "$tmp" # readable by apt's sandbox user (it then downloads as root, quietly)
		(cd "$tmp" && apt-get download -q etcd-server containernetworking-plugins >/dev/null 2>&1) ||
			(cd "$tmp" && apt-get update -q >/dev/null && apt-get download -q etcd-server containernetworking-plugins >/dev/null)
		rm -rf "$R/debs" && mkdir -p "$R/debs"
		for d in "$tmp"/*.deb; do dpkg -x "$d" "$R/debs/root"; done
		rm -rf "$tmp"
	fi
	"$root/tools/install.sh" kube
}

certs() {
	[[ -f $P/admin.crt && -f $P/front-proxy-client.crt ]] && return 0
	log "cluster CA and certificates"
	rm -rf "$P" && mkdir -p "$P"
	(
		cd "$P"
		sign() { # sign NAME SUBJECT EXT
			openssl genrsa -out "$1.key" 2048 2>/dev/null
			openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
			printf '%b' "$3" >"$1.ext"
			openssl x509 -req -in "$1.csr" -CA "${CA:-ca}.crt" -CAkey "${CA:-ca}.key" -CAcreateserial -days 3650 -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
		}
		for ca in ca front-proxy-ca; do
			openssl genrsa -out $ca.key 2048 2>/dev/null
			openssl req -x509 -new -key $ca.key -sha256 -days 3650 -subj "/CN=llmrouter-$ca" -out $ca.crt
		done
		sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:$NODE,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.100.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
		sign admin "/O=system:masters/CN=llmrouter-admin" "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
		CA=front-proxy-ca sign front-proxy-client "/CN=front-proxy-client" "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		rm -f ./*.csr ./*.ext
	)
}

# freeport VAR: a port on 127.0.0.1 that nothing listens on and no earlier
# call gave, into VAR (not echoed: a $(...) subshell would lose what was
# given). 20000-23999: below the local overlay's fixed ports (24317 and up).
declare -A given=()
freeport() {
	local p
	while :; do
		p=$((20000 + RANDOM % 4000))
		[[ -z ${given[$p]:-} ]] || continue
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
		given[$p]=1
		printf -v "$1" '%s' "$p"
		return
	done
}

config() {
	mkdir -p "$R/etc/cni/net.d" "$R/run"
	local etcd_client etcd_peer apiserver kubelet kubelet_health cm sched v
	for v in etcd_client etcd_peer apiserver kubelet kubelet_health cm sched; do freeport $v; done
	cat >"$R/run/ports.env" <<EOF
ETCD_CLIENT=$etcd_client
ETCD_PEER=$etcd_peer
APISERVER=$apiserver
KUBELET=$kubelet
KUBELET_HEALTHZ=$kubelet_health
CONTROLLER_MANAGER=$cm
SCHEDULER=$sched
EOF
	cat >"$KCFG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: llmrouter-local
  cluster: {server: "https://127.0.0.1:$apiserver", certificate-authority: "$P/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$P/admin.crt", client-key: "$P/admin.key"}
contexts:
- name: llmrouter-local
  context: {cluster: llmrouter-local, user: admin}
current-context: llmrouter-local
EOF
	cat >"$R/etc/containerd.toml" <<EOF
# containerd 1.6 (Debian): everything under $R, cgroupfs, no registry.
version = 2
root = "$R/data/containerd"
state = "$R/run/containerd"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$R/data/containerd-opt"
  [plugins."io.containerd.grpc.v1.cri"]
    # imported before any pod starts; never pulled
    sandbox_image = "docker.io/$PAUSE_IMAGE"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    # No CAP_SYS_RESOURCE on these machines: runc cannot lower
    # oom_score_adj below containerd's own, and every sandbox would fail
    # with "can't get final child's PID from pipe".
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "$(command -v runc)"
          Root = "$R/run/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNIBIN"
      conf_dir = "$R/etc/cni/net.d"
EOF
	# Present only so the runtime reports NetworkReady: loopback, nothing
	# routed; pods without hostNetwork cannot start.
	echo '{"cniVersion": "0.4.0", "name": "llmrouter-loopback-only", "plugins": [{"type": "loopback"}]}' \
		>"$R/etc/cni/net.d/10-loopback.conflist"
	echo 'nameserver 127.0.0.1' >"$R/etc/resolv.conf"
	cat >"$R/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
address: 127.0.0.1
port: $kubelet
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_health
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
resolvConf: $R/etc/resolv.conf
podLogsDir: $R/data/pod-logs
volumePluginDir: $R/data/flexvolume
staticPodPath: ""
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 60
EOF
}

# ---------------------------------------------------------------- start / stop
bg() { # bg NAME CMD... : run in the background, pid in run/NAME.pid, output in logs/NAME.log
	local n=$1
	shift
	nohup nice -n 5 "$@" >"$R/logs/$n.log" 2>&1 9>&- &
	# the pid and its start time: a pid reused by another process after a
	# reboot is never signalled
	echo "$! $(starttime $!)" >"$R/run/$n.pid"
	disown $!
}

starttime() { # starttime PID: its start time in clock ticks since boot ("" if gone)
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	stat=${stat##*) }
	echo "$stat" | awk '{print $20}'
}

# alive NAME: the recorded process still runs (same pid, same start time).
alive() {
	local f=$R/run/$1.pid p t
	[[ -f $f ]] || return 1
	read -r p t <"$f"
	[[ -n $p && -n $t && $(starttime "$p") == "$t" ]]
}

waitfor() { # waitfor SECONDS WHAT CMD...
	local t=$1 what=$2 i
	shift 2
	for ((i = 0; i < t * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		alive "$last" || die "$last exited while waiting for $what; see $R/logs/$last.log: $(tail -3 "$R/logs/$last.log")"
		sleep 0.2
	done
	die "timed out waiting for $what (logs in $R/logs)"
}

sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

start() {
	# shellcheck disable=SC1091
	source "$R/run/ports.env"
	mkdir -p "$R/logs" "$R/run/containerd" "$R/data/etcd" "$R/data/kubelet" "$R/data/pod-logs" "$R/data/container-logs" "$R/data/flexvolume" "$cache/k8s/container-logs"
	local t0
	t0=$(now)
	[[ -d /var/lib/kubelet ]] && touch "$R/run/var-lib-kubelet.preexisting"
	[[ -d /run/containerd ]] && touch "$R/run/run-containerd.preexisting"
	last=containerd
	bg containerd containerd --config "$R/etc/containerd.toml"
	waitfor 30 containerd ctr_ version
	log "containerd up: $(since "$t0")"
	last=etcd
	bg etcd "$ETCD" --name llmrouter --data-dir "$R/data/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-cluster "llmrouter=http://127.0.0.1:$ETCD_PEER" --initial-cluster-state new --snapshot-count 10000
	waitfor 30 etcd curl -sf "http://127.0.0.1:$ETCD_CLIENT/health"
	last=kube-apiserver
	bg kube-apiserver kube-apiserver \
		--etcd-servers="http://127.0.0.1:$ETCD_CLIENT" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER" \
		--tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
		--requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
		--requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- \
		--proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key" \
		--service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-cluster-ip-range=127.100.0.0/24 --endpoint-reconciler-type=none \
		--authorization-mode=Node,RBAC --allow-privileged=true \
		--kubelet-client-certificate="$P/admin.crt" --kubelet-client-key="$P/admin.key" \
		--kubelet-preferred-address-types=Hostname --profiling=false
	waitfor 120 "the API server" kubectl get --raw /readyz
	log "API server ready: $(since "$t0")"
	local common=(--kubeconfig="$KCFG" --authentication-kubeconfig="$KCFG" --authorization-kubeconfig="$KCFG" --bind-address=127.0.0.1 --leader-elect=false --profiling=false)
	last=kube-controller-manager
	bg kube-controller-manager kube-controller-manager "${common[@]}" --secure-port="$CONTROLLER_MANAGER" \
		--service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
		--cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
		--use-service-account-credentials=false --flex-volume-plugin-dir="$R/data/flexvolume" \
		--horizontal-pod-autoscaler-sync-period=5s
	last=kube-scheduler
	bg kube-scheduler kube-scheduler "${common[@]}" --secure-port="$SCHEDULER"
	# kubelet sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops
	# at start (no flag stops it): saved here, restored once the node is up.
	[[ -f $R/run/sysctl.orig ]] || for s in "${sysctls[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$R/run/sysctl.orig"
	last=kubelet
	bg kubelet kubelet --config="$R/etc/kubelet.yaml" --kubeconfig="$KCFG" --root-dir="$R/data/kubelet" --cert-dir="$R/data/kubelet/pki"
	waitfor 180 "node $NODE Ready" sh -c "kubectl get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
	restore_sysctls
	waitfor 60 "the default service account" kubectl -n default get sa default
	log "cluster up: node $NODE Ready, $(since "$t0") from a cold start (API server on 127.0.0.1:$APISERVER)"
}

restore_sysctls() {
	[[ -f $R/run/sysctl.orig ]] || return 0
	local k v
	while IFS== read -r k v; do sysctl -q -w "$k=$v" || true; done <"$R/run/sysctl.orig"
}

stopname() { # SIGTERM the recorded process, SIGKILL after 10 s
	local f=$R/run/$1.pid p i
	[[ -f $f ]] || return 0
	read -r p _ <"$f"
	if alive "$1"; then
		kill "$p" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			alive "$1" || break
			sleep 0.2
		done
		if alive "$1"; then
			log "$1 still running 10 s after SIGTERM: SIGKILL"
			kill -9 "$p" 2>/dev/null || true
		fi
	fi
	rm -f "$f"
}

stop() {
	ls "$R"/run/*.pid >/dev/null 2>&1 || return 0
	local t0
	t0=$(now)
	# Workloads first, while the control plane runs, so the kubelet stops
	# their containers itself (and they deregister from Consul).
	if [[ -f $R/run/kube-apiserver.pid ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
		local ns
		ns=$(kubectl get ns -o name 2>/dev/null | sed 's|namespace/||' | grep -v -E '^(kube-system|kube-public|kube-node-lease)$' || true)
		for n in $ns; do
			[[ $n == default ]] || kubectl delete ns "$n" --wait=false >/dev/null 2>&1 || true
			# a short grace: the test is over, nothing needs draining
			kubectl -n "$n" delete pods --all --grace-period=2 --wait=true --timeout=60s >/dev/null 2>&1 || true
		done
	fi
	stopname kubelet
	if alive containerd; then
		local id
		for id in $(ctr_ task ls -q 2>/dev/null); do ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
		sleep 1
		for id in $(ctr_ task ls -q 2>/dev/null); do ctr_ task delete -f "$id" >/dev/null 2>&1 || true; done
		for id in $(ctr_ container ls -q 2>/dev/null); do ctr_ container rm "$id" >/dev/null 2>&1 || true; done
	fi
	stopname metrics-server
	stopname kube-scheduler
	stopname kube-controller-manager
	stopname kube-apiserver
	stopname etcd
	stopname containerd
	# kubelet bind-mounts its root onto itself and mounts pod volumes;
	# containerd leaves sandbox shm mounts.
	local m c
	for m in $(awk -v r="$R/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
	for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
	# Paths the kubelet and containerd create whatever their flags say.
	[[ -f $R/run/var-lib-kubelet.preexisting ]] || rm -rf /var/lib/kubelet
	[[ -f $R/run/run-containerd.preexisting ]] || rm -rf /run/containerd
	restore_sysctls
	rm -f "$R/run/sysctl.orig" "$R/run/var-lib-kubelet.preexisting" "$R/run/run-containerd.preexisting"
	# A fresh cluster each time: etcd's data and the pods' state go.
	rm -rf "$R/data" "$R/run/kubectl-cache"
	log "stopped in $(since "$t0")"
}

import_images() {
	local t0 f
	t0=$(now)
	for f in "$@"; do
		ctr_ images import "$f" >/dev/null || die "import $f failed"
	done
	[[ $# == 0 ]] || log "imported $# images in $(since "$t0")"
}

# deploy: the namespace, the mTLS Secrets (from devcerts' files: ROLE.pem,
# ROLE-key.pem, ca.pem) and the local overlay; waits for every rollout.
deploy() {
	local certs=${1:-$root/certs} t0 role
	t0=$(now)
	[[ -f $certs/ca.pem ]] || die "no certificates in $certs (make certs writes them)"
	kubectl apply -f "$root/deploy/k8s/overlays/local/namespace.yaml" >/dev/null
	for role in router engine provider-proxy; do
		kubectl -n llmrouter create secret generic "llmrouter-tls-$role" --from-file=tls.crt="$certs/$role.pem" \
			--from-file=tls.key="$certs/$role-key.pem" --from-file=ca.crt="$certs/ca.pem" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	done
	kubectl apply -k "$root/deploy/k8s/overlays/local" >/dev/null
	local w
	for w in statefulset/consul deploy/jaeger deploy/router deploy/engine-gguf deploy/engine-onnx deploy/engine-sim deploy/provider-proxy; do
		kubectl -n llmrouter rollout status "$w" --timeout=300s >/dev/null || die "$w did not roll out: $(kubectl -n llmrouter get pods -o wide)"
	done
	log "mesh deployed (apply -> every rollout complete): $(since "$t0")"
}

# metrics_server: the resource metrics API behind the API server's
# aggregation layer. No kube-proxy routes a ClusterIP and Endpoints may not
# hold loopback addresses, so metrics-server runs on the host, bound to a
# loopback address of the service range (127.100.0.100), behind an
# ExternalName Service naming that address; the API server dials it there.
metrics_server() {
	local port t0
	t0=$(now)
	"$root/tools/install.sh" metrics-server
	freeport port
	mkdir -p "$R/run/metrics-server"
	last=metrics-server
	bg metrics-server metrics-server --kubeconfig="$KCFG" --authentication-kubeconfig="$KCFG" --authorization-kubeconfig="$KCFG" \
		--bind-address=127.100.0.100 --secure-port="$port" --cert-dir="$R/run/metrics-server" \
		--kubelet-insecure-tls --kubelet-preferred-address-types=Hostname --kubelet-use-node-status-port \
		--metric-resolution=10s --kubelet-request-timeout=5s
	kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec:
  type: ExternalName
  externalName: 127.100.0.100
  ports: [{port: $port, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  service: {name: metrics-server, namespace: kube-system, port: $port}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
	waitfor 120 "the metrics API" sh -c "kubectl top node $NODE"
	log "metrics-server serving the metrics API: $(since "$t0")"
}

up() {
	deps
	if ls "$R"/run/*.pid >/dev/null 2>&1; then
		log "stopping a cluster left by an earlier run or by make k8s-up (pids $(cut -d' ' -f1 "$R"/run/*.pid | tr '\n' ' '))"
		stop
	fi
	certs
	config
	start
	import_images "$@"
}

case ${1:-} in
up)
	shift
	lock
	up "$@"
	;;
down)
	lock
	stop
	;;
import)
	shift
	import_images "$@"
	;;
deploy)
	shift
	deploy "$@"
	;;
metrics-server)
	metrics_server
	;;
env)
	echo "export KUBECONFIG=$KCFG KUBECACHEDIR=$R/run/kubectl-cache PATH=$bin:\$PATH"
	;;
status)
	for f in "$R"/run/*.pid; do
		[[ -f $f ]] || continue
		n=$(basename "$f" .pid)
		if alive "$n"; then echo "$n: running (pid $(cut -d' ' -f1 "$f"))"; else echo "$n: not running"; fi
	done
	;;
run)
	shift
	lock
	trap stop EXIT
	up
	"$@"
	;;
*)
	sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
