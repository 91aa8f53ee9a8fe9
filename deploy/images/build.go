package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is every timestamp in an image: the same files give the same digest.
var epoch = time.Unix(0, 0).UTC()

// Builder builds images from a checkout.
type Builder struct {
	// Root is the repository root (holding go.work).
	Root string
	// Repo prefixes image names, e.g. "llmrouter" -> llmrouter/router:TAG.
	Repo, Tag string
	// Env is the environment of go build (CGO_CFLAGS/LDFLAGS for the
	// engines come from the Makefile).
	Env []string
	// Log receives one line per step; nil: quiet.
	Log io.Writer
}

// Result is one built image.
type Result struct {
	Image  Image
	Ref    string
	Digest v1.Hash
	Path   string
	Size   int64
	Libs   []Lib
}

// Ref is an image's full reference.
func (b *Builder) Ref(name string) string { return b.Repo + "/" + name + ":" + b.Tag }

// Build builds img and writes its archive as out/NAME.tar.
func (b *Builder) Build(ctx context.Context, img Image, out string) (Result, error) {
	work, err := os.MkdirTemp("", "llmrouter-image-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)
	var executables []string
	var app []entry
	for _, bin := range img.Build {
		p := filepath.Join(work, filepath.Base(bin.Dest))
		if err := b.goBuild(ctx, bin, p); err != nil {
			return Result{}, fmt.Errorf("%s: %w", img.Name, err)
		}
		interp, err := Interp(p)
		if err != nil {
			return Result{}, err
		}
		if !bin.Cgo && interp != "" {
			return Result{}, fmt.Errorf("%s: %s: %w (interpreter %s)", img.Name, bin.Pkg, ErrNotStatic, interp)
		}
		if interp != "" {
			executables = append(executables, p)
		}
		app = append(app, fileEntry(bin.Dest, p, 0o755))
	}
	for _, f := range img.Files {
		mode := int64(0o644)
		if f.Exec {
			mode = 0o755
			interp, err := Interp(f.Src)
			if err != nil {
				return Result{}, fmt.Errorf("%s: %w", img.Name, err)
			}
			if interp != "" {
				return Result{}, fmt.Errorf("%s: %s: %w", img.Name, f.Src, ErrNotStatic)
			}
		}
		if !isFile(f.Src) {
			return Result{}, fmt.Errorf("%s: %s: no such file (tools/install.sh installs it)", img.Name, f.Src)
		}
		app = append(app, fileEntry(f.Dest, f.Src, mode))
	}
	base := baseEntries()
	var libs []Lib
	if len(executables) > 0 || len(img.Dlopen) > 0 {
		if libs, err = Libraries(executables, img.Dlopen, img.LibPath); err != nil {
			return Result{}, fmt.Errorf("%s: %w", img.Name, err)
		}
		for _, l := range libs {
			// 0755: the program interpreter must be executable.
			base = append(base, fileEntry(l.Dest(), l.Path, 0o755))
		}
		interps := map[string]bool{}
		for _, exe := range executables {
			interp, _ := Interp(exe)
			interps[interp] = true
		}
		for interp := range interps {
			name := path.Base(interp)
			target := "/lib/x86_64-linux-gnu/" + name
			if interp != target {
				base = append(base, entry{dest: interp, link: target})
			}
		}
	}
	layers := [][]entry{base, app}
	im, err := assemble(img, layers)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", img.Name, err)
	}
	ref := b.Ref(img.Name)
	dest := filepath.Join(out, img.Name+".tar")
	size, err := writeArchiveFile(dest, im, ref)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", img.Name, err)
	}
	digest, err := im.Digest()
	if err != nil {
		return Result{}, err
	}
	return Result{Image: img, Ref: ref, Digest: digest, Path: dest, Size: size, Libs: libs}, nil
}

func (b *Builder) goBuild(ctx context.Context, bin Binary, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, bin.Pkg)
	cmd.Dir = b.Root
	env := append(os.Environ(), b.Env...)
	if bin.Module != "" {
		cmd.Dir = filepath.Join(b.Root, bin.Module)
		env = append(env, "GOWORK=off")
	} else {
		env = append(env, "GOWORK="+filepath.Join(b.Root, "go.work"))
	}
	if !bin.Cgo {
		env = append(env, "CGO_ENABLED=0")
	} else {
		// No run path of this machine in an image's binary: the image sets
		// LD_LIBRARY_PATH, and the digest must not depend on where this
		// checkout's cache lives.
		env = append(env, "CGO_LDFLAGS="+withoutRunpath(os.Getenv("CGO_LDFLAGS")))
	}
	cmd.Env = env
	if b.Log != nil {
		fmt.Fprintf(b.Log, "  go build %s\n", bin.Pkg)
	}
	if outb, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", bin.Pkg, err, outb)
	}
	return nil
}

// entry is one file, directory or symlink of a layer.
type entry struct {
	dest string
	src  string // a file to copy; "" with data
	data []byte
	mode int64
	dir  bool
	link string
}

func fileEntry(dest, src string, mode int64) entry { return entry{dest: dest, src: src, mode: mode} }

// baseEntries are in every image: the non-root user and a /tmp (a
// read-only root filesystem mounts an emptyDir there).
func baseEntries() []entry {
	return []entry{
		{dest: "/etc/passwd", data: []byte("nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n"), mode: 0o644},
		{dest: "/etc/group", data: []byte("nonroot:x:65532:\n"), mode: 0o644},
		{dest: "/tmp", dir: true, mode: 0o1777},
	}
}

// assemble makes the image: one layer per non-empty entry list, a
// configuration with the non-root user, and no timestamps but the epoch.
func assemble(img Image, layers [][]entry) (v1.Image, error) {
	im := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	im = mutate.ConfigMediaType(im, types.OCIConfigJSON)
	env := append([]string{"PATH=/usr/local/bin"}, img.Env...)
	cfg := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:       User,
			Entrypoint: img.Entrypoint,
			Env:        env,
			WorkingDir: "/",
			Labels: map[string]string{
				"org.opencontainers.image.title":  img.Name,
				"org.opencontainers.image.source": "llmrouter",
			},
		},
	}
	im, err := mutate.ConfigFile(im, cfg)
	if err != nil {
		return nil, err
	}
	for i, entries := range layers {
		if len(entries) == 0 {
			continue
		}
		data, err := layerTar(entries)
		if err != nil {
			return nil, err
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.DefaultCompression), tarball.WithCompressedCaching)
		if err != nil {
			return nil, err
		}
		what := []string{"base: user, /tmp, shared libraries", "application"}[min(i, 1)]
		im, err = mutate.Append(im, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
			History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "llmrouter make images: " + what}})
		if err != nil {
			return nil, err
		}
	}
	return im, nil
}

// layerTar writes entries as an uncompressed tar, parents first, sorted,
// owned by root, every time the epoch.
func layerTar(entries []entry) ([]byte, error) {
	byPath := map[string]entry{}
	for _, e := range entries {
		p := strings.TrimPrefix(path.Clean(e.dest), "/")
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("layer: %s twice", e.dest)
		}
		byPath[p] = e
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = entry{dest: "/" + d, dir: true, mode: 0o755}
			}
		}
	}
	names := make([]string, 0, len(byPath))
	for p := range byPath {
		names = append(names, p)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		e := byPath[name]
		h := &tar.Header{Name: name, Mode: e.mode, ModTime: epoch, Uname: "root", Gname: "root"}
		switch {
		case e.dir:
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case e.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		default:
			h.Typeflag = tar.TypeReg
			data := e.data
			if e.src != "" {
				var err error
				if data, err = os.ReadFile(e.src); err != nil {
					return nil, err
				}
			}
			h.Size = int64(len(data))
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// withoutRunpath drops -Wl,-rpath options from linker flags.
func withoutRunpath(flags string) string {
	var out []string
	for _, f := range strings.Fields(flags) {
		if !strings.HasPrefix(f, "-Wl,-rpath,") && !strings.HasPrefix(f, "-Wl,-rpath=") {
			out = append(out, f)
		}
	}
	return strings.Join(out, " ")
}
