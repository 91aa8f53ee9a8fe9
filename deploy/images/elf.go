package images

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// systemDirs are where the host's dynamic loader finds glibc and the C++
// runtime (Debian's multiarch layout first).
var systemDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// Lib is a shared library an image needs.
type Lib struct {
	// Name is the name it is asked for (DT_NEEDED or the dlopen'd file's
	// base name); Path is the file found on this machine.
	Name, Path string
	// System: found in a system directory (glibc, libstdc++), so it goes to
	// the same place in the image; otherwise to LibDir.
	System bool
}

// Dest is the library's path in the image.
func (l Lib) Dest() string {
	if l.System {
		return "/lib/x86_64-linux-gnu/" + l.Name
	}
	return LibDir + "/" + l.Name
}

// ErrNotStatic: a binary that must be static has a program interpreter.
var ErrNotStatic = errors.New("not a static executable")

// Interp returns the program interpreter of an ELF file ("" for a static
// one).
func Interp(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", fmt.Errorf("%s: interpreter: %w", path, err)
			}
			return strings.TrimRight(string(b), "\x00"), nil
		}
	}
	return "", nil
}

// Libraries resolves what the executables and the dlopen'd libraries link,
// transitively, the way the dynamic loader would with LD_LIBRARY_PATH set
// to libPath (RUNPATH with $ORIGIN, then libPath, then the system
// directories). The result is sorted by destination and holds every
// library once.
func Libraries(executables, dlopen, libPath []string) ([]Lib, error) {
	found := map[string]Lib{}
	var walk func(obj string) error
	walk = func(obj string) error {
		f, err := elf.Open(obj)
		if err != nil {
			return err
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", obj, err)
		}
		var runpath []string
		for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
			vals, _ := f.DynString(tag)
			for _, v := range vals {
				for _, d := range strings.Split(v, ":") {
					if d != "" {
						origin := filepath.Dir(obj)
						runpath = append(runpath, strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin))
					}
				}
			}
		}
		f.Close()
		for _, name := range needed {
			if _, ok := found[name]; ok {
				continue
			}
			lib, err := locate(name, append(runpath, libPath...))
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", obj, name, err)
			}
			found[name] = lib
			if err := walk(lib.Path); err != nil {
				return err
			}
		}
		return nil
	}
	for _, exe := range executables {
		if err := walk(exe); err != nil {
			return nil, err
		}
	}
	for _, pattern := range dlopen {
		paths, err := filepath.Glob(pattern)
		if err != nil || len(paths) == 0 {
			return nil, fmt.Errorf("run-time library %s: no such file", pattern)
		}
		for _, p := range paths {
			name := filepath.Base(p)
			if _, ok := found[name]; !ok {
				found[name] = Lib{Name: name, Path: p}
			}
			if err := walk(p); err != nil {
				return nil, err
			}
		}
	}
	libs := make([]Lib, 0, len(found))
	for _, l := range found {
		libs = append(libs, l)
	}
	sort.Slice(libs, func(i, j int) bool { return libs[i].Dest() < libs[j].Dest() })
	return libs, nil
}

// locate finds a DT_NEEDED name in the runpath, then the system directories.
func locate(name string, runpath []string) (Lib, error) {
	for _, d := range runpath {
		p := filepath.Join(d, name)
		if isFile(p) {
			return Lib{Name: name, Path: p, System: isSystem(p)}, nil
		}
	}
	for _, d := range systemDirs {
		p := filepath.Join(d, name)
		if isFile(p) {
			return Lib{Name: name, Path: p, System: true}, nil
		}
	}
	return Lib{}, fmt.Errorf("not found in %s or the system directories", strings.Join(runpath, ":"))
}

func isSystem(p string) bool {
	for _, d := range systemDirs {
		if filepath.Dir(p) == d {
			return true
		}
	}
	return false
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
