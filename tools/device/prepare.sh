#!/usr/bin/env bash
# Prepares .device/gg/ for tools/device/gguf-cuda.sh: the llama.cpp v0.5.0
# source bundle (npm node-llama-cpp, 35 MB), GPT-2's vocabulary, and xz-packed
# engine-gguf (built against the pinned libraries; it runs against the ones
# the script builds), testmodel and enginecheck: about 55 MB, one device
# call's carry. Run from the repository root after make tools:
#   tools/device/prepare.sh && run: bash .device/gg/gguf-cuda.sh (carry .device/gg)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
out=.device/gg
rm -rf "$out"
mkdir -p "$out"
llama=$(tools/install.sh --llama)
export CGO_CFLAGS="-I$llama/include"
export CGO_LDFLAGS="-L$llama/lib -Wl,-rpath,$llama/lib -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so"
go build -o "$out/engine-gguf" ./services/engine-gguf/cmd/engine-gguf
CGO_ENABLED=0 go build -o "$out/testmodel" ./pkg/cmd/testmodel
CGO_ENABLED=0 go build -o "$out/enginecheck" ./e2e/cmd/enginecheck
xz -T0 -6 "$out/engine-gguf" "$out/testmodel" "$out/enginecheck"
cp "$llama/vocab/ggml-vocab-gpt-2.gguf" "$out/"
tmp=$(mktemp -d)
(cd "$tmp" && npm pack --silent node-llama-cpp@3.22.1 >/dev/null && tar xzf ./*.tgz package/llama/gitRelease.bundle)
mv "$tmp/package/llama/gitRelease.bundle" "$out/"
rm -rf "$tmp"
cp tools/device/gguf-cuda.sh "$out/"
du -sh "$out"
