# LLM Runner Router — build, test and benchmark entry points.
#
#   make run         local mesh on loopback, streams a sample answer
#   make run-consul  the same with a Consul agent and Jaeger
#   make test        everything CI checks (installs its tools first)
#   make bench       benchmarks that print tables (results in bench/out/)
#   make scaling     the horizontal-scaling sweep (E(N), plots in bench/out/)
#   make bench-report  docs/BENCHMARKS.md: the benchmark document's tables beside ours
#   make faults      the fault matrix with realistic limits -> docs/reliability.md
#   make certs       a development CA and mTLS certificates per role -> certs/
#   make fuzz        every fuzz target for FUZZTIME (default 30s), corpora kept
#   make soak        10 minutes of mixed load with faults; RSS and goroutines
#   make images      OCI image tarballs of every service -> images/ (no Docker)
#   make test-k8s    the manifests on a real one-node cluster (tools/k8s.sh)
#   make k8s-up      that cluster with the mesh deployed (make k8s-down stops it)
#   make k8s-hpa     an HPA scaling engine-gguf under load (metrics-server)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c

CACHE := $(shell tools/install.sh --cache)
BIN := $(CACHE)/bin
export PATH := $(BIN):$(PATH)
export LLMROUTER_BIN := $(BIN)

# llama.cpp for engine-gguf: the pinned prebuilt release from the cache, or
# your own build (e.g. CUDA) with LLAMA_CPP_DIR=/path holding include/ and lib/
# (and LLAMA_LIBS naming its libraries, e.g. -lllama -lggml -lggml-base).
LLAMA_CPP_DIR ?= $(shell tools/install.sh --llama)
LLAMA_LIBS ?= -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so
export CGO_CFLAGS := -I$(LLAMA_CPP_DIR)/include
export CGO_LDFLAGS := -L$(LLAMA_CPP_DIR)/lib -Wl,-rpath,$(LLAMA_CPP_DIR)/lib $(LLAMA_LIBS)
# Tests generate their models from GPT-2's vocabulary in the bundle.
export LLMROUTER_VOCAB := $(shell tools/install.sh --llama)/vocab/ggml-vocab-gpt-2.gguf
export LLMROUTER_GPT2 := $(shell tools/install.sh --gpt2)
# The demo model (make run) is a counted bigram model of this text.
export LLMROUTER_KJV := $(shell tools/install.sh --kjv)
export LLMROUTER_LLAMA := $(LLAMA_CPP_DIR)
# ONNX Runtime for engine-onnx: the pinned library, or your own (e.g. with the
# CUDA execution provider) with ORT_LIBRARY=/path/libonnxruntime.so.
ORT_LIBRARY ?= $(shell tools/install.sh --ort)
export LLMROUTER_ORT_LIB := $(ORT_LIBRARY)
# The semantic cache's embedding model (Universal Sentence Encoder lite, TF.js).
export LLMROUTER_USE_LITE := $(shell tools/install.sh --use-lite)

# go.work's root is not a module: name each module's packages.
PKGS := ./pkg/... ./services/router/... ./services/engine-sim/... ./services/engine-gguf/... ./services/provider-proxy/... ./services/engine-onnx/... ./e2e/...
NOCGO_PKGS := ./pkg/... ./services/router/... ./services/engine-sim/... ./services/provider-proxy/...
RELEASED_API := api/release.binpb

.PHONY: bench-report k8s-scaling scaling images test-k8s k8s-up k8s-down k8s-hpa soak fuzz certs faults all tools generate check-generate lint fmt-check vet buf-lint breaking nocgo test unit bench run run-consul build release-api

all: build

tools:
	tools/install.sh

build: tools
	go build -o bin/ ./services/router/cmd/router ./services/router/cmd/llmr ./services/engine-sim/cmd/engine-sim ./services/engine-gguf/cmd/... ./services/engine-onnx/cmd/engine-onnx ./services/provider-proxy/cmd/provider-proxy ./pkg/cmd/testmodel ./pkg/cmd/devcerts

generate: tools
	rm -rf pkg/api
	buf generate

# Generated code must match the protos.
check-generate: tools
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	buf generate --output "$$tmp"; \
	diff -r "$$tmp/pkg/api" pkg/api || { echo "pkg/api is stale: run make generate"; exit 1; }

fmt-check:
	out=$$(gofmt -l pkg services e2e deploy); [[ -z $$out ]] || { echo "not gofmt-formatted:"; echo "$$out"; exit 1; }

# deploy/ is its own module outside go.work (Kubernetes and image libraries).
DEPLOY_GO := cd deploy && GOWORK=off go

vet:
	go vet $(PKGS)
	$(DEPLOY_GO) vet ./...

buf-lint: tools
	buf lint

# The API must stay compatible with the last released image.
breaking: tools
	buf breaking --against $(RELEASED_API)

lint: fmt-check vet buf-lint breaking

# Router, pkg/ and the sim worker build without cgo.
nocgo:
	CGO_ENABLED=0 go build $(NOCGO_PKGS)

unit:
	go test -race -count=1 $(NOCGO_PKGS)

test: tools check-generate lint nocgo
	go test -race -count=1 -timeout 20m $(PKGS)
	$(DEPLOY_GO) test -count=1 -timeout 10m ./...

bench: tools
	tools/install.sh llama-bench
	mkdir -p bench/out
	go test -run '^$$' -bench Schedule -benchtime 20000x ./services/router/internal/scheduling/plugins | tee bench/out/schedule.txt
	go run ./e2e/cmd/meshbench
	go run ./e2e/cmd/proxybench
	go run ./e2e/cmd/ggufbench -llama $(LLAMA_CPP_DIR)
	go run ./e2e/cmd/onnxbench

# Horizontal scaling: 1/2/4/8 sim workers behind the router (and two
# routers at 8), E(N), plots -> bench/out/ (SCALING_FLAGS, e.g.
# -strategy round-robin).
scaling: tools
	go run ./e2e/cmd/scaling $(SCALING_FLAGS)

# The benchmark document's 20 tables beside ours: docs/BENCHMARKS.md and
# docs/bench/*.png (BENCH_FLAGS, e.g. -quick or -only 13).
bench-report: tools
	tools/install.sh llama-bench
	go run ./e2e/cmd/benchreport $(BENCH_FLAGS)

# The mesh needs llama.cpp's libraries and GPT-2's vocabulary, nothing else
# (no Consul or Jaeger): installed here, once per cache, with progress.
# FAULTS_FLAGS=-fast runs it with the test suite's short limits; OUTAGE is
# how long Consul stays down under load (3s in make test).
OUTAGE ?= 30s
faults:
	tools/install.sh llama consul
	go run ./e2e/cmd/faults $(FAULTS_FLAGS)
	go test -count=1 -run 'TestConsulOutageUnderLoad' ./e2e/ -args -outage $(OUTAGE)

run:
	tools/install.sh llama gpt2 kjv
	go run ./e2e/cmd/mesh

run-consul:
	tools/install.sh llama gpt2 kjv consul jaeger
	go run ./e2e/cmd/mesh -consul

# Mixed load with faults for SOAK_FLAGS' duration (default 10 minutes):
# the router's RSS and goroutines at the end within 5 % of the 2-minute
# mark -> docs/soak.md. Not part of make test.
soak:
	tools/install.sh llama
	go run ./e2e/cmd/soak $(SOAK_FLAGS)

# Every fuzz target for FUZZTIME each (make test replays the committed
# corpora as plain tests).
FUZZTIME ?= 30s
fuzz: tools
	FUZZTIME=$(FUZZTIME) tools/fuzz.sh

# A development CA and one certificate per mesh role (router, engine,
# provider-proxy, admin, client); CERTS_HOSTS adds DNS names or IPs.
CERTS_DIR ?= certs
certs:
	go run ./pkg/cmd/devcerts -out $(CERTS_DIR) -hosts "$(CERTS_HOSTS)"

# OCI image archives (one NAME.tar per service, OCI layout + docker
# manifest.json) built without a Docker daemon or base image; IMAGES names a
# subset, IMAGE_TAG the tag.
IMAGES_DIR ?= images
IMAGE_TAG ?= dev
images:
	tools/install.sh llama ort gpt2 consul jaeger
	cd deploy && GOWORK=off go run ./cmd/images -root .. -out $(abspath $(IMAGES_DIR)) -tag $(IMAGE_TAG) \
		-llama $(LLAMA_CPP_DIR) -ort $(ORT_LIBRARY) -gpt2 $(LLMROUTER_GPT2) -bin $(BIN) $(IMAGES)

# The one-node cluster (tools/k8s.sh: containerd, etcd and Kubernetes
# v1.37.2 on 127.0.0.1; needs root), the images imported, the mesh applied
# from deploy/k8s/overlays/local. test-k8s starts a fresh cluster, runs
# TestKubernetes (apply, scale, rollout, forced delete) and stops it.
test-k8s: images
	tools/k8s.sh run bash -c 'tools/k8s.sh import $(IMAGES_DIR)/*.tar && \
		LLMROUTER_K8S=1 go test -count=1 -v -timeout 30m -run "^TestKubernetes$$" ./e2e/'

# The scaling sweep on the one-node cluster: engine-sim pods scaled with
# kubectl scale 1 -> 8 behind the router pod -> docs/bench/k8s-scaling.md,
# which make bench-report includes (K8S_SCALING_FLAGS, e.g. -duration 5s).
k8s-scaling: images certs
	tools/k8s.sh run bash -c 'tools/k8s.sh import $(IMAGES_DIR)/*.tar && tools/k8s.sh deploy $(abspath $(CERTS_DIR)) && \
		go run ./e2e/cmd/k8sscaling $(K8S_SCALING_FLAGS)'

k8s-up: images certs
	tools/k8s.sh up $(IMAGES_DIR)/*.tar
	tools/k8s.sh deploy $(abspath $(CERTS_DIR))
	@echo 'kubectl: eval "$$(tools/k8s.sh env)"; routers: curl -s 127.0.0.1:28500/v1/catalog/service/llmrouter-router'

k8s-down:
	tools/k8s.sh down

# An HPA scaling engine-gguf under load, with metrics-server (built from the
# module proxy) serving the metrics API of the one-node cluster.
k8s-hpa: images
	tools/k8s.sh run bash -c 'tools/k8s.sh import $(IMAGES_DIR)/*.tar && tools/k8s.sh metrics-server && \
		LLMROUTER_K8S_HPA=1 go test -count=1 -v -timeout 20m -run "^TestKubernetesHPA$$" ./e2e/'

# Freeze the current API as the released one (after a release).
release-api: tools
	buf build -o $(RELEASED_API)
