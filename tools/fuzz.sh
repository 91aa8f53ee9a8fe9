#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME (default 30s), one after another, and
# keeps what it learned as committed corpora:
#
#   tools/fuzz.sh            # all targets
#   FUZZTIME=5m tools/fuzz.sh FuzzRelayCodec
#
# A crash stops the run; go test has written the input under the package's
# testdata/fuzz/TARGET/, where `make test` replays it as a plain test from
# then on. New interesting inputs are copied from the fuzz cache into
# testdata/fuzz as well (at most 40 per target, smallest first).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
fuzztime=${FUZZTIME:-30s}
targets=(
	"FuzzValidateRequest ./pkg/enginehost"
	"FuzzToolParser ./pkg/enginehost"
	"FuzzReadHeader ./pkg/gguf"
	"FuzzReadInfo ./pkg/onnx"
	"FuzzRelayCodec ./services/router/internal/rawcodec"
	"FuzzRequestBodies ./services/router/internal/openai"
	"FuzzOpenAIStream ./services/provider-proxy/internal/providers"
	"FuzzAnthropicStream ./services/provider-proxy/internal/providers"
)
cache=$(go env GOCACHE)/fuzz
for t in "${targets[@]}"; do
	read -r name pkg <<<"$t"
	if [[ $# -gt 0 && ! " $* " == *" $name "* ]]; then
		continue
	fi
	echo "fuzz: $name in $pkg for $fuzztime"
	go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" "$pkg"
	mod=$(cd "$pkg" && go list -f '{{.ImportPath}}' .)
	src=$cache/$mod/$name
	dst=$pkg/testdata/fuzz/$name
	if [[ -d $src ]]; then
		mkdir -p "$dst"
		# shellcheck disable=SC2012
		ls -S -r "$src" | head -40 | while read -r f; do cp -n "$src/$f" "$dst/$f"; done
	fi
done
