package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// sources are the prebuilt parts from the Makefile's environment.
func sources(t *testing.T) Sources {
	t.Helper()
	s := Sources{Llama: os.Getenv("LLMROUTER_LLAMA"), ORT: os.Getenv("LLMROUTER_ORT_LIB"), GPT2: os.Getenv("LLMROUTER_GPT2"), Bin: os.Getenv("LLMROUTER_BIN")}
	if s.Llama == "" && s.Bin == "" {
		t.Skip("run through make (it sets LLMROUTER_LLAMA, LLMROUTER_ORT_LIB, LLMROUTER_GPT2, LLMROUTER_BIN)")
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

func repoRoot(t *testing.T) string {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	builtOnce sync.Once
	built     map[string]Result
	builtErr  error
	builtDir  string
)

// buildAll builds every image once per test binary.
func buildAll(t *testing.T) map[string]Result {
	t.Helper()
	src := sources(t)
	builtOnce.Do(func() {
		builtDir, builtErr = os.MkdirTemp("", "llmrouter-images-test-")
		if builtErr != nil {
			return
		}
		b := &Builder{Root: repoRoot(t), Repo: "llmrouter", Tag: "test"}
		built = map[string]Result{}
		for _, img := range Specs(src) {
			r, err := b.Build(context.Background(), img, builtDir)
			if err != nil {
				builtErr = err
				return
			}
			built[img.Name] = r
		}
	})
	if builtErr != nil {
		t.Fatal(builtErr)
	}
	return built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// TestDockerfilesMatchSpec holds every Dockerfile to the image make images
// builds: base, user, entrypoint, environment, binaries and libraries.
func TestDockerfilesMatchSpec(t *testing.T) {
	results := buildAll(t)
	root := repoRoot(t)
	check := func(t *testing.T, img Image, libs []string) {
		f, err := os.Open(filepath.Join(root, img.Dockerfile))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		d, err := ParseDockerfile(f)
		if err != nil {
			t.Fatalf("%s: %v", img.Dockerfile, err)
		}
		final := d.Final()
		if final.User != User {
			t.Errorf("USER %q, want %q", final.User, User)
		}
		if !slices.Equal(final.Entrypoint, img.Entrypoint) {
			t.Errorf("ENTRYPOINT %q, want %q", final.Entrypoint, img.Entrypoint)
		}
		for _, kv := range append([]string{"PATH=/usr/local/bin"}, img.Env...) {
			k, v, _ := strings.Cut(kv, "=")
			if final.Env[k] != v {
				t.Errorf("ENV %s=%q, want %q", k, final.Env[k], v)
			}
		}
		installed := final.Installed()
		for _, bin := range img.Build {
			out := "/out/" + path.Base(bin.Dest)
			if !slices.ContainsFunc(d.Stages[:len(d.Stages)-1], func(s Stage) bool {
				return slices.ContainsFunc(s.Runs, func(r string) bool {
					return strings.Contains(r, "go build") && strings.Contains(r, "-o "+out+" "+bin.Pkg)
				})
			}) {
				t.Errorf("no build stage runs go build -o %s %s", out, bin.Pkg)
			}
			if bin.Cgo == (final.From == "scratch") {
				t.Errorf("%s (cgo %v) on base %s", bin.Pkg, bin.Cgo, final.From)
			}
			if src, ok := installed[bin.Dest]; !ok || src != out {
				t.Errorf("%s: copied from %q, want %s", bin.Dest, src, out)
			}
		}
		for _, f := range img.Files {
			if src, ok := installed[f.Dest]; !ok || path.Base(src) != path.Base(f.Src) {
				t.Errorf("data file %s: copied from %q, want a %s", f.Dest, src, path.Base(f.Src))
			}
		}
		// Libraries: every one the image needs is copied, and nothing else.
		var patterns []string
		for dest := range installed {
			if path.Dir(dest) == LibDir {
				patterns = append(patterns, path.Base(dest))
			}
		}
		for _, lib := range libs {
			if !slices.ContainsFunc(patterns, func(p string) bool { m, _ := path.Match(p, lib); return m || p == lib }) {
				t.Errorf("library %s is not copied into %s", lib, LibDir)
			}
		}
		for _, p := range patterns {
			if !slices.ContainsFunc(libs, func(lib string) bool { m, _ := path.Match(p, lib); return m || p == lib }) {
				t.Errorf("%s/%s is copied but the image does not load it", LibDir, p)
			}
		}
		if len(libs) == 0 && final.From != "scratch" {
			t.Errorf("a static image on base %s, want scratch", final.From)
		}
	}
	for _, img := range Specs(sources(t)) {
		if img.Dockerfile == "" {
			continue
		}
		t.Run(img.Name, func(t *testing.T) {
			r := results[img.Name]
			var libs []string
			for _, l := range r.Libs {
				if l.System {
					if !slices.Contains(SystemLibs, l.Name) {
						t.Errorf("%s needs %s, which %s does not provide", img.Name, l.Name, DistrolessCC)
					}
					continue
				}
				libs = append(libs, l.Name)
			}
			if len(r.Libs) > 0 {
				f, _ := os.ReadFile(filepath.Join(root, img.Dockerfile))
				if d, err := ParseDockerfile(bytes.NewReader(f)); err == nil && d.Final().From != DistrolessCC {
					t.Errorf("base %s, want %s", d.Final().From, DistrolessCC)
				}
			}
			check(t, img, libs)
		})
	}
	t.Run("engine-gguf-cuda", func(t *testing.T) {
		img, libs := CUDA()
		check(t, img, libs)
		f, _ := os.ReadFile(filepath.Join(root, img.Dockerfile))
		d, err := ParseDockerfile(bytes.NewReader(f))
		if err != nil {
			t.Fatal(err)
		}
		if from := d.Final().From; !strings.HasPrefix(from, "nvidia/cuda:") || !strings.HasSuffix(from, "-runtime-ubuntu24.04") {
			t.Errorf("base %s, want a CUDA runtime image", from)
		}
	})
}

// TestArchivesLoad reads each archive back as docker load would
// (manifest.json) and as an OCI layout (index.json): the same image, the
// spec's configuration, the libraries where the loader looks.
func TestArchivesLoad(t *testing.T) {
	for name, r := range buildAll(t) {
		t.Run(name, func(t *testing.T) {
			img, err := tarball.ImageFromPath(r.Path, nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Config.User != User || !slices.Equal(cfg.Config.Entrypoint, r.Image.Entrypoint) {
				t.Errorf("user %q entrypoint %q, want %q %q", cfg.Config.User, cfg.Config.Entrypoint, User, r.Image.Entrypoint)
			}
			if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.RootFS.Type != "layers" {
				t.Errorf("os %s arch %s rootfs %q", cfg.OS, cfg.Architecture, cfg.RootFS.Type)
			}
			var index struct {
				Manifests []struct {
					Digest      string
					Annotations map[string]string
				}
			}
			if err := json.Unmarshal(archiveFile(t, r.Path, "index.json"), &index); err != nil {
				t.Fatal(err)
			}
			if len(index.Manifests) != 1 || index.Manifests[0].Digest != r.Digest.String() || index.Manifests[0].Annotations["io.containerd.image.name"] != FullName(r.Ref) {
				t.Errorf("index.json %+v, want one manifest %s named %s", index.Manifests, r.Digest, r.Ref)
			}
			files := rootfs(t, r.Path)
			for _, bin := range r.Image.Build {
				if files[bin.Dest]&0o111 == 0 {
					t.Errorf("%s missing or not executable", bin.Dest)
				}
			}
			for _, l := range r.Libs {
				if _, ok := files[l.Dest()]; !ok {
					t.Errorf("%s missing", l.Dest())
				}
			}
			if r.Image.Name == "provider-proxy" {
				if _, ok := files[CABundle]; !ok {
					t.Errorf("no CA roots at %s: HTTPS to hosted APIs would fail", CABundle)
				}
			}
			if files["/tmp"]&0o1777 != 0o1777 {
				t.Errorf("/tmp mode %o", files["/tmp"])
			}
			for f := range files {
				if strings.HasSuffix(f, "/sh") || strings.HasSuffix(f, "/bash") {
					t.Errorf("the image has a shell: %s", f)
				}
			}
		})
	}
}

// TestImagesReproducible: the same checkout gives the same archive, byte
// for byte.
func TestImagesReproducible(t *testing.T) {
	first := buildAll(t)
	b := &Builder{Root: repoRoot(t), Repo: "llmrouter", Tag: "test"}
	dir := t.TempDir()
	for _, img := range Specs(sources(t)) {
		if img.Name != "router" && img.Name != "engine-gguf" {
			continue
		}
		again, err := b.Build(context.Background(), img, dir)
		if err != nil {
			t.Fatal(err)
		}
		if again.Digest != first[img.Name].Digest {
			t.Errorf("%s: digest %s, then %s", img.Name, first[img.Name].Digest, again.Digest)
		}
		if a, b := fileHash(t, first[img.Name].Path), fileHash(t, again.Path); a != b {
			t.Errorf("%s: archives differ", img.Name)
		}
	}
}

// TestEngineImagesRunAsNonRoot starts each engine from its image's root
// filesystem alone (chroot, uid 65532, the image's environment): the
// libraries it links and loads at run time are all there.
func TestEngineImagesRunAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	results := buildAll(t)
	for _, c := range []struct{ image, want string }{
		// The CPU backend variant is loaded before the model is looked for.
		{"engine-gguf", "lib_dir=" + LibDir + " devices=CPU"},
		{"engine-onnx", "msg=onnxruntime service=engine-onnx version="},
	} {
		t.Run(c.image, func(t *testing.T) {
			r := results[c.image]
			dir := t.TempDir()
			// The image's root: uid 65532 must be able to enter it.
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			extract(t, r.Path, dir)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "chroot", "--userspec="+User, dir, r.Image.Entrypoint[0], "-insecure", "-model", "m=/models/absent")
			cmd.Env = append([]string{"PATH=/usr/local/bin"}, r.Image.Env...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(string(out), c.want) || !strings.Contains(string(out), "/models/absent") {
				t.Errorf("output lacks %q and the missing model:\n%s", c.want, out)
			}
		})
	}
}

func TestFullName(t *testing.T) {
	for in, want := range map[string]string{
		"llmrouter/router:dev":          "docker.io/llmrouter/router:dev",
		"pause:1":                       "docker.io/library/pause:1",
		"127.0.0.1:5000/llmrouter/x:v1": "127.0.0.1:5000/llmrouter/x:v1",
		"registry.example/a/b:c":        "registry.example/a/b:c",
		"localhost/a:b":                 "localhost/a:b",
	} {
		if got := FullName(in); got != want {
			t.Errorf("FullName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEngineBinariesCarryNoRunPath: an engine image's binaries name no
// directory of the building machine, so the digest does not depend on it.
func TestEngineBinariesCarryNoRunPath(t *testing.T) {
	for _, name := range []string{"engine-gguf", "engine-onnx"} {
		r := buildAll(t)[name]
		dir := t.TempDir()
		extract(t, r.Path, dir)
		for _, bin := range r.Image.Build {
			f, err := elf.Open(filepath.Join(dir, bin.Dest))
			if err != nil {
				t.Fatal(err)
			}
			for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
				if v, _ := f.DynString(tag); len(v) > 0 {
					t.Errorf("%s %s: %v %v", name, bin.Dest, tag, v)
				}
			}
			f.Close()
		}
	}
}

func TestStaticFilesMustBeStatic(t *testing.T) {
	dynamic := "/bin/true"
	if interp, err := Interp(dynamic); err != nil || interp == "" {
		t.Skipf("%s is not dynamic here", dynamic)
	}
	b := &Builder{Root: repoRoot(t), Repo: "llmrouter", Tag: "test"}
	_, err := b.Build(context.Background(), Image{Name: "x", Files: []File{{Src: dynamic, Dest: "/x", Exec: true}}}, t.TempDir())
	if !errors.Is(err, ErrNotStatic) {
		t.Fatalf("err %v, want ErrNotStatic", err)
	}
}

func TestParseDockerfileRefusesUnknownInstructions(t *testing.T) {
	_, err := ParseDockerfile(strings.NewReader("FROM scratch\nHEALTHCHECK CMD x\n"))
	if err == nil || !strings.Contains(err.Error(), "HEALTHCHECK") {
		t.Fatalf("err %v", err)
	}
	d, err := ParseDockerfile(strings.NewReader("FROM a AS b\nRUN x \\\n  y\nFROM scratch\nENV A=1 B=\"x y\"\nCOPY --from=b /o/x /o/y /bin/\nUSER 1:1\nENTRYPOINT [\"/bin/x\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := d.Final()
	if d.Stages[0].Name != "b" || d.Stages[0].Runs[0] != "x  y" || f.Env["B"] != "x y" || f.Installed()["/bin/y"] != "/o/y" || f.Entrypoint[0] != "/bin/x" {
		t.Errorf("%+v", d)
	}
}

func fileHash(t *testing.T, p string) [32]byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func archiveFile(t *testing.T, archive, name string) []byte {
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no %s: %v", archive, name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// layers returns the archive's layers, in order, uncompressed.
func layers(t *testing.T, archive string) [][]byte {
	var m []struct{ Layers []string }
	if err := json.Unmarshal(archiveFile(t, archive, "manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, l := range m[0].Layers {
		zr, err := gzip.NewReader(bytes.NewReader(archiveFile(t, archive, l)))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// entries calls f for every entry of the image's layers, in order, with
// the reader positioned at its content.
func entries(t *testing.T, archive string, f func(h *tar.Header, r io.Reader)) {
	for _, l := range layers(t, archive) {
		tr := tar.NewReader(bytes.NewReader(l))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			f(h, tr)
		}
	}
}

// rootfs lists the image's paths with their modes.
func rootfs(t *testing.T, archive string) map[string]int64 {
	files := map[string]int64{}
	entries(t, archive, func(h *tar.Header, _ io.Reader) { files["/"+strings.TrimSuffix(h.Name, "/")] = h.Mode })
	return files
}

// extract unpacks the image's layers into dir.
func extract(t *testing.T, archive, dir string) {
	entries(t, archive, func(h *tar.Header, r io.Reader) {
		p := filepath.Join(dir, h.Name)
		var err error
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode)&os.ModePerm|os.ModeSticky*os.FileMode(h.Mode>>9&1))
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(r); err == nil {
				err = os.WriteFile(p, b, os.FileMode(h.Mode))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	})
}
