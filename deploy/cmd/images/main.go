// Command images builds the project's OCI image tarballs (make images):
// one per service, with no Docker daemon and no base image.
//
//	go run ./cmd/images -root .. -out ../images -llama DIR -ort FILE -gpt2 DIR -bin DIR [name ...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"time"

	"github.com/llm-runner-router/llmrouter/deploy/images"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	root := fs.String("root", "..", "repository root")
	out := fs.String("out", "images", "directory for the NAME.tar archives")
	repo := fs.String("repo", "llmrouter", "repository prefix of the image names")
	tag := fs.String("tag", "dev", "tag of every image")
	var src images.Sources
	fs.StringVar(&src.Llama, "llama", "", "llama.cpp directory (tools/install.sh --llama)")
	fs.StringVar(&src.ORT, "ort", "", "ONNX Runtime library (tools/install.sh --ort)")
	fs.StringVar(&src.GPT2, "gpt2", "", "GPT-2 BPE files (tools/install.sh --gpt2)")
	fs.StringVar(&src.Bin, "bin", "", "the tool cache's bin directory (consul, jaeger)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := src.Validate(); err != nil {
		return err
	}
	absRoot, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	b := &images.Builder{Root: absRoot, Repo: *repo, Tag: *tag, Log: os.Stdout}
	want := fs.Args()
	specs := images.Specs(src)
	for _, name := range want {
		if !slices.ContainsFunc(specs, func(i images.Image) bool { return i.Name == name }) {
			return fmt.Errorf("no image %q", name)
		}
	}
	fmt.Printf("%-16s %-12s %8s  %s\n", "image", "digest", "MiB", "archive")
	for _, img := range specs {
		if len(want) > 0 && !slices.Contains(want, img.Name) {
			continue
		}
		began := time.Now()
		r, err := b.Build(ctx, img, *out)
		if err != nil {
			return err
		}
		fmt.Printf("%-16s %-12s %8.1f  %s (%d libraries, %.1fs)\n", img.Name, r.Digest.Hex[:12], float64(r.Size)/(1<<20), r.Path, len(r.Libs), time.Since(began).Seconds())
	}
	return nil
}
