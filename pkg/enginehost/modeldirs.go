package enginehost

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// ResolveSource confines a LoadModel source to the model directories: a
// path relative to one of them, or an absolute path inside one. Each
// directory is opened as an os.Root, so ".." and symlinks that leave it are
// refused, as is everything outside them; a directory source (an ONNX model)
// has every entry, at any depth, checked the same way. It returns the path
// to hand the backend, which opens it by name: someone who can rewrite the
// model directory between the check and the load is out of its reach.
// Errors name the problem, never a file's contents.
func ResolveSource(dirs []string, source string) (string, error) {
	switch {
	case source == "":
		return "", rpcerr.InvalidArgument("source must name a model file or directory inside the worker's model directories")
	case len(source) > 4096 || !utf8.ValidString(source) || strings.ContainsRune(source, 0):
		return "", rpcerr.InvalidArgument("source is not a valid path (at most 4096 bytes of UTF-8, no NUL)")
	case len(dirs) == 0:
		return "", rpcerr.FailedPrecondition("this worker has no model directories (-models-dir, -load-dir): LoadModel cannot load files")
	}
	inside := false // some directory holds the path, existing or not
	for _, dir := range dirs {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", fmt.Errorf("model directory %s: %w", dir, err)
		}
		rel := source
		if filepath.IsAbs(source) {
			if rel, err = filepath.Rel(abs, filepath.Clean(source)); err != nil || !filepath.IsLocal(rel) {
				continue
			}
		} else if !filepath.IsLocal(source) {
			return "", rpcerr.InvalidArgument("source %q is not a path inside the model directories (no .., no absolute path elsewhere)", source)
		}
		inside = true
		path, err := inRoot(abs, rel)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		return path, nil
	}
	if !inside {
		return "", rpcerr.PermissionDenied("source %s is outside the model directories (%s)", source, strings.Join(dirs, ", "))
	}
	return "", rpcerr.NotFound("model source %s does not exist in the model directories (%s)", source, strings.Join(dirs, ", "))
}

// inRoot checks rel (and, for a directory, its entries) through an os.Root
// at dir and returns dir/rel.
func inRoot(dir, rel string) (string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", fmt.Errorf("model directory %s: %w", dir, err)
	}
	defer root.Close()
	fi, err := root.Stat(rel)
	if err != nil {
		return "", rootErr(rel, dir, err)
	}
	if fi.IsDir() {
		sub, err := root.OpenRoot(rel)
		if err != nil {
			return "", rootErr(rel, dir, err)
		}
		defer sub.Close()
		// Every entry, at any depth, must resolve inside the model
		// directory (links to siblings there, as in a Hugging Face cache's
		// snapshots, are fine).
		var bad string
		err = fs.WalkDir(sub.FS(), ".", func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := root.Stat(filepath.Join(rel, p)); err != nil {
				bad = filepath.Join(rel, p)
				return err
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			return "", rpcerr.InvalidArgument("source %s: %s is a dangling symlink", rel, bad)
		}
		if err != nil {
			return "", rootErr(bad, dir, err)
		}
	} else if !fi.Mode().IsRegular() {
		return "", rpcerr.InvalidArgument("source %s is not a regular file or a directory", rel)
	}
	return filepath.Join(dir, rel), nil
}

func rootErr(rel, dir string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if errors.Is(err, fs.ErrPermission) {
		return rpcerr.PermissionDenied("source %s in %s: permission denied", rel, dir)
	}
	// os.Root reports a path that escapes through ".." or a symlink.
	if strings.Contains(err.Error(), "escapes") {
		return rpcerr.PermissionDenied("source %s leaves the model directory %s (through a symlink or ..)", rel, dir)
	}
	return rpcerr.InvalidArgument("source %s in %s: %v", rel, dir, err)
}
