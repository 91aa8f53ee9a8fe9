package images

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// writeArchiveFile writes im as an OCI image layout in one tar file (the
// layout `docker save` also writes since Docker 25: oci-layout, index.json,
// blobs/sha256/..., plus a manifest.json for older `docker load`). ctr
// images import, docker load, skopeo (oci-archive:) and crane push read it.
func writeArchiveFile(dest string, im v1.Image, ref string) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return 0, err
	}
	tmp := dest + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return 0, err
	}
	if err := WriteArchive(f, im, ref); err != nil {
		f.Close()
		os.Remove(tmp)
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	fi, err := os.Stat(tmp)
	if err != nil {
		return 0, err
	}
	return fi.Size(), os.Rename(tmp, dest)
}

// WriteArchive writes im, named ref (repository:tag), as an OCI layout tar.
func WriteArchive(w io.Writer, im v1.Image, ref string) error {
	manifest, err := im.RawManifest()
	if err != nil {
		return err
	}
	digest, err := im.Digest()
	if err != nil {
		return err
	}
	config, err := im.RawConfigFile()
	if err != nil {
		return err
	}
	configName, err := im.ConfigName()
	if err != nil {
		return err
	}
	layers, err := im.Layers()
	if err != nil {
		return err
	}
	tag := ref[strings.LastIndex(ref, ":")+1:]
	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIImageIndex,
		"manifests": []map[string]any{{
			"mediaType": types.OCIManifestSchema1,
			"digest":    digest.String(),
			"size":      len(manifest),
			"annotations": map[string]string{
				"io.containerd.image.name":          FullName(ref),
				"org.opencontainers.image.ref.name": tag,
			},
		}},
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	docker := []map[string]any{{"Config": blob(configName), "RepoTags": []string{ref}}}
	var layerNames []string

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	if err := put(blob(configName), config); err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: blob(h), Mode: 0o644, Size: size, ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			rc.Close()
			return err
		}
		n, err := io.Copy(tw, rc)
		rc.Close()
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("layer %s: %d bytes, want %d", h, n, size)
		}
		layerNames = append(layerNames, blob(h))
	}
	docker[0]["Layers"] = layerNames
	if err := put(blob(digest), manifest); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"index.json", index}, {"manifest.json", docker}, {"oci-layout", map[string]string{"imageLayoutVersion": "1.0.0"}}} {
		b, err := json.Marshal(f.v)
		if err != nil {
			return err
		}
		if err := put(f.name, b); err != nil {
			return err
		}
	}
	return tw.Close()
}

// FullName is ref as containerd and the kubelet name it: a reference
// without a registry host is docker.io's (llmrouter/router:dev ->
// docker.io/llmrouter/router:dev), one without a namespace docker.io/library's.
func FullName(ref string) string {
	first, _, hasSlash := strings.Cut(ref, "/")
	switch {
	case !hasSlash:
		return "docker.io/library/" + ref
	case strings.ContainsAny(first, ".:") || first == "localhost":
		return ref
	default:
		return "docker.io/" + ref
	}
}
