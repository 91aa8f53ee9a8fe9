#!/usr/bin/env bash
# Device check for engine-gguf with CUDA (issue 3): builds llama.cpp v0.5.0
# from its source bundle with CUDA for sm_90 (H100), runs an engine-gguf
# binary built elsewhere against it with every layer offloaded, then on the
# CPU, and prints tokens/s. Its directory must hold what
# tools/device/prepare.sh puts there (the bundle, vocabulary and xz binaries).
#   CUDA=OFF T=/tmp/ggdry bash gguf-cuda.sh   # the dry run on a machine without nvcc
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
T=${T:-/tmp/gg}
CUDA=${CUDA:-ON}
mkdir -p "$T"
began=$(date +%s)
if [[ ! -f $T/lib/libllama.v0.5.0.so ]]; then
	rm -rf "$T/src" "$T/build"
	git -c advice.detachedHead=false clone -q "$here/gitRelease.bundle" "$T/src"
	cmake -S "$T/src" -B "$T/build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=$CUDA -DCMAKE_CUDA_ARCHITECTURES=90 \
		-DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=ON -DGGML_BACKEND_DL=OFF -DBUILD_SHARED_LIBS=ON \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
		-DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF >"$T/cmake.log" 2>&1 || { tail -20 "$T/cmake.log"; exit 1; }
	targets=(llama ggml)
	cmake --build "$T/build" -j"$(nproc)" --target "${targets[@]}" >"$T/build.log" 2>&1 || { tail -30 "$T/build.log"; exit 1; }
	mkdir -p "$T/lib"
	find "$T/build" -name '*.so*' -exec cp -a {} "$T/lib/" \;
	# The engine was linked against the npm release's file names.
	ln -sf libllama.so "$T/lib/libllama.v0.5.0.so"
	ln -sf libggml.so "$T/lib/libggml.v0.5.0.so"
	echo "build: $(($(date +%s) - began)) s; $(ls "$T/lib" | tr '\n' ' ')"
fi
export LD_LIBRARY_PATH=$T/lib
for b in enginecheck engine-gguf testmodel; do
	[[ -x $T/$b ]] || xz -dc "$here/$b.xz" >"$T/$b" && chmod +x "$T/$b"
done
[[ -f $T/bench.gguf ]] || "$T/testmodel" -preset bench -type f16 -vocab "$here/ggml-vocab-gpt-2.gguf" -o "$T/bench.gguf"
run() { # label, engine flags...
	local label=$1
	shift
	"$T/engine-gguf" -listen 127.0.0.1:7777 -model m="$T/bench.gguf" -parallel 16 -ctx 1024 "$@" >"$T/eng.out" 2>"$T/eng.err" &
	local pid=$!
	for _ in $(seq 1 300); do grep -q listening "$T/eng.out" && break; sleep 0.1; done
	grep -q listening "$T/eng.out" || { tail -20 "$T/eng.err"; kill $pid; exit 1; }
	grep -E "devices=|model loaded" "$T/eng.err" | sed 's/^/  /'
	"$T/enginecheck" -addr 127.0.0.1:7777 -label "$label"
	kill $pid
	wait $pid 2>/dev/null || true
}
if [[ $CUDA == ON ]]; then
	nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
	run "cuda -ngl -1" -gpu-layers -1 -threads 4 -threads-batch 4
fi
run "cpu $(nproc)t" -gpu-layers 0 -threads "$(($(nproc) - 1))" -threads-batch "$(nproc)"
echo "total: $(($(date +%s) - began)) s"
