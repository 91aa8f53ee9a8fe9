// Package images builds the project's OCI images without a Docker daemon
// and without pulling a base image: every file of an image is named here
// (the binaries built from the checkout, the shared libraries they link and
// load, data files), written into layers with fixed owners, modes and times,
// so the same checkout gives the same digests. The Dockerfiles next to the
// services describe the same images for users with Docker; a test holds them
// to this spec.
//
// Nothing here is safe for concurrent use by several builders on one
// output directory.
package images

import (
	"fmt"
	"path/filepath"
)

// User is the uid:gid every image runs as (no root, no shell).
const User = "65532:65532"

// LibDir is where an image keeps the non-system shared libraries
// (llama.cpp, ONNX Runtime); LD_LIBRARY_PATH points there.
const LibDir = "/usr/lib/llmrouter"

// DataDir holds data files (vocabularies) in the tools image.
const DataDir = "/usr/share/llmrouter"

// Image is one image: what goes in, how it starts.
type Image struct {
	// Name is the repository's last element, e.g. "router".
	Name string
	// Build lists the binaries built from the checkout.
	Build []Binary
	// Files are prebuilt files copied in as they are (Consul, Jaeger,
	// vocabularies); a file marked Exec must be a static executable.
	Files []File
	// Dlopen lists libraries the program loads at run time rather than
	// through DT_NEEDED (llama.cpp's CPU variants, ONNX Runtime); each is
	// copied into LibDir with what it links.
	Dlopen []string
	// LibPath is where the build finds the non-system libraries the
	// binaries link (the image's binaries carry no run path of this
	// machine: LD_LIBRARY_PATH points at LibDir).
	LibPath []string
	// Entrypoint and Env of the image configuration.
	Entrypoint []string
	Env        []string
	// Dockerfile, relative to the repository root, describes the same image
	// for Docker users ("" where none is written: Consul, Jaeger, pause).
	Dockerfile string
}

// Binary is a Go program built from the checkout.
type Binary struct {
	// Pkg is the package path relative to the repository root, e.g.
	// "./services/router/cmd/router".
	Pkg string
	// Dest is its path in the image.
	Dest string
	// Cgo: built with cgo (the engines); otherwise CGO_ENABLED=0 and the
	// result must be static.
	Cgo bool
	// Module, when set, is a module directory built with GOWORK=off
	// (programs outside go.work, such as the pause binary).
	Module string
}

// File is a prebuilt file copied into the image.
type File struct {
	Src, Dest string
	Exec      bool
}

// Sources says where the prebuilt parts live on this machine.
type Sources struct {
	// Llama is llama.cpp's directory (lib/, vocab/), tools/install.sh --llama.
	Llama string
	// ORT is ONNX Runtime's shared library, tools/install.sh --ort.
	ORT string
	// GPT2 holds GPT-2's encoder.json and vocab.bpe, tools/install.sh --gpt2.
	GPT2 string
	// Bin is the tool cache's bin directory (consul, jaeger).
	Bin string
	// CACerts is the CA bundle provider-proxy trusts for hosted APIs
	// (default: Debian's, /etc/ssl/certs/ca-certificates.crt).
	CACerts string
}

// CABundle is where Go's crypto/x509 looks for the system roots.
const CABundle = "/etc/ssl/certs/ca-certificates.crt"

// Validate says which source is missing.
func (s Sources) Validate() error {
	for _, f := range []struct{ name, v string }{{"llama", s.Llama}, {"ort", s.ORT}, {"gpt2", s.GPT2}, {"bin", s.Bin}} {
		if f.v == "" {
			return fmt.Errorf("images: the %s source is not set", f.name)
		}
	}
	return nil
}

// Vocab is the GGUF vocabulary the tools image carries for testmodel.
const Vocab = DataDir + "/ggml-vocab-gpt-2.gguf"

// Specs is every image the project ships, in build order.
func Specs(s Sources) []Image {
	bin := func(name string) string { return "/usr/local/bin/" + name }
	static := func(name, pkg string) Image {
		return Image{
			Name:       name,
			Build:      []Binary{{Pkg: pkg, Dest: bin(name)}},
			Entrypoint: []string{bin(name)},
			Dockerfile: filepath.Join(filepath.Dir(filepath.Dir(pkg)), "Dockerfile"),
		}
	}
	proxy := static("provider-proxy", "./services/provider-proxy/cmd/provider-proxy")
	// It calls OpenAI and Anthropic over HTTPS: an empty base has no roots.
	ca := s.CACerts
	if ca == "" {
		ca = CABundle
	}
	proxy.Files = []File{{Src: ca, Dest: CABundle}}
	return []Image{
		static("router", "./services/router/cmd/router"),
		static("engine-sim", "./services/engine-sim/cmd/engine-sim"),
		proxy,
		{
			Name: "engine-gguf",
			Build: []Binary{{Pkg: "./services/engine-gguf/cmd/engine-gguf", Dest: bin("engine-gguf"), Cgo: true},
				{Pkg: "./services/engine-gguf/cmd/gguf-quantize", Dest: bin("gguf-quantize"), Cgo: true}},
			// ggml_backend_load_all_from_path picks the best CPU variant at start.
			Dlopen:     []string{filepath.Join(s.Llama, "lib", "libggml-cpu-*.so")},
			LibPath:    []string{filepath.Join(s.Llama, "lib")},
			Entrypoint: []string{bin("engine-gguf")},
			Env:        []string{"LD_LIBRARY_PATH=" + LibDir},
			Dockerfile: "services/engine-gguf/Dockerfile",
		},
		{
			Name:       "engine-onnx",
			Build:      []Binary{{Pkg: "./services/engine-onnx/cmd/engine-onnx", Dest: bin("engine-onnx"), Cgo: true}},
			Dlopen:     []string{s.ORT},
			LibPath:    []string{filepath.Dir(s.ORT)},
			Entrypoint: []string{bin("engine-onnx")},
			Env: []string{"LD_LIBRARY_PATH=" + LibDir, "ORT_LIBRARY=" + LibDir + "/" + filepath.Base(s.ORT),
				// the engine turns it off too; here it holds for any program in the image
				"ORT_DISABLE_TELEMETRY=1"},
			Dockerfile: "services/engine-onnx/Dockerfile",
		},
		{
			Name: "tools",
			Build: []Binary{{Pkg: "./pkg/cmd/testmodel", Dest: bin("testmodel")},
				{Pkg: "./pkg/cmd/devcerts", Dest: bin("devcerts")}},
			Files: []File{{Src: filepath.Join(s.Llama, "vocab", "ggml-vocab-gpt-2.gguf"), Dest: Vocab},
				{Src: filepath.Join(s.GPT2, "encoder.json"), Dest: DataDir + "/gpt2/encoder.json"},
				{Src: filepath.Join(s.GPT2, "vocab.bpe"), Dest: DataDir + "/gpt2/vocab.bpe"}},
			Entrypoint: []string{bin("testmodel")},
			Dockerfile: "pkg/cmd/Dockerfile",
		},
		{
			Name:       "consul",
			Files:      []File{{Src: filepath.Join(s.Bin, "consul"), Dest: bin("consul"), Exec: true}},
			Entrypoint: []string{bin("consul")},
		},
		{
			Name:       "jaeger",
			Files:      []File{{Src: filepath.Join(s.Bin, "jaeger"), Dest: bin("jaeger"), Exec: true}},
			Entrypoint: []string{bin("jaeger")},
		},
		{
			Name:       "pause",
			Build:      []Binary{{Pkg: "./cmd/pause", Dest: "/pause", Module: "deploy"}},
			Entrypoint: []string{"/pause"},
		},
	}
}

// CUDA describes the GPU variant of engine-gguf, built only from its
// Dockerfile where CUDA exists (make images builds CPU images). Its
// libraries come from a CMake build of the same llama.cpp release, so they
// have CMake's names.
func CUDA() (Image, []string) {
	return Image{
		Name:       "engine-gguf",
		Build:      []Binary{{Pkg: "./services/engine-gguf/cmd/engine-gguf", Dest: "/usr/local/bin/engine-gguf", Cgo: true}},
		Entrypoint: []string{"/usr/local/bin/engine-gguf"},
		Env:        []string{"LD_LIBRARY_PATH=" + LibDir + ":/usr/local/cuda/lib64"},
		Dockerfile: "services/engine-gguf/Dockerfile.cuda",
	}, []string{"libllama.so", "libggml.so", "libggml-base.so", "libggml-cuda.so", "libggml-cpu-*.so"}
}

// DistrolessCC is the Dockerfiles' base for the engines: glibc and the C++
// runtime, nothing else (no shell); SystemLibs are what it provides.
const DistrolessCC = "gcr.io/distroless/cc-debian12"

// SystemLibs are the system libraries an engine image may need; the
// Dockerfiles' base images provide them.
var SystemLibs = []string{"ld-linux-x86-64.so.2", "libc.so.6", "libdl.so.2", "libgcc_s.so.1", "libm.so.6", "libpthread.so.0", "librt.so.1", "libstdc++.so.6"}
