package enginehost_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

func TestResolveSourceStaysInsideModelDirs(t *testing.T) {
	base := t.TempDir()
	models := filepath.Join(base, "models")
	secret := filepath.Join(base, "secret")
	for _, d := range []string{models, secret, filepath.Join(models, "onnx-ok"), filepath.Join(models, "onnx-bad"), filepath.Join(models, "onnx-deep", "sub"),
		filepath.Join(models, "blobs"), filepath.Join(models, "snapshot"), filepath.Join(models, "dangling")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const contents = "root:$y$j9T$very-secret-hash:19000:0:99999:7:::"
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(secret, "shadow"), contents)
	write(filepath.Join(models, "a.gguf"), "GGUF")
	write(filepath.Join(models, "onnx-ok", "model.onnx"), "x")
	write(filepath.Join(models, "onnx-bad", "model.onnx"), "x")
	link := func(target, at string) {
		if err := os.Symlink(target, at); err != nil {
			t.Fatal(err)
		}
	}
	link(filepath.Join(secret, "shadow"), filepath.Join(models, "out.gguf"))
	link("../secret/shadow", filepath.Join(models, "rel-out.gguf"))
	link("a.gguf", filepath.Join(models, "alias.gguf"))
	link(filepath.Join(secret, "shadow"), filepath.Join(models, "onnx-bad", "tokenizer.json"))
	link(secret, filepath.Join(models, "secret-dir"))
	link(filepath.Join(secret, "shadow"), filepath.Join(models, "onnx-deep", "sub", "weights.bin"))
	write(filepath.Join(models, "blobs", "abc"), "x")
	link("../blobs/abc", filepath.Join(models, "snapshot", "model.onnx")) // a sibling inside the model directory
	link("nowhere", filepath.Join(models, "dangling", "model.onnx"))

	dirs := []string{models}
	tests := []struct {
		source string
		code   codes.Code
		want   string
	}{
		{"a.gguf", codes.OK, filepath.Join(models, "a.gguf")},
		{filepath.Join(models, "a.gguf"), codes.OK, filepath.Join(models, "a.gguf")},
		{"alias.gguf", codes.OK, filepath.Join(models, "alias.gguf")},
		{"onnx-ok", codes.OK, filepath.Join(models, "onnx-ok")},
		{"/etc/shadow", codes.PermissionDenied, "outside the model directories"},
		{filepath.Join(secret, "shadow"), codes.PermissionDenied, "outside the model directories"},
		{filepath.Join(models, "..", "secret", "shadow"), codes.PermissionDenied, "outside the model directories"},
		{"../secret/shadow", codes.InvalidArgument, "no .."},
		{"out.gguf", codes.PermissionDenied, "leaves the model directory"},
		{"rel-out.gguf", codes.PermissionDenied, "leaves the model directory"},
		{"secret-dir/shadow", codes.PermissionDenied, "leaves the model directory"},
		{"onnx-bad", codes.PermissionDenied, "leaves the model directory"},
		{"onnx-deep", codes.PermissionDenied, "leaves the model directory"},
		{"snapshot", codes.OK, filepath.Join(models, "snapshot")},
		{"dangling", codes.InvalidArgument, "dangling symlink"},
		{"missing.gguf", codes.NotFound, "does not exist"},
		{"", codes.InvalidArgument, "must name"},
		{"a\x00.gguf", codes.InvalidArgument, "not a valid path"},
		{"\xff.gguf", codes.InvalidArgument, "not a valid path"},
	}
	for _, tt := range tests {
		got, err := enginehost.ResolveSource(dirs, tt.source)
		if tt.code == codes.OK {
			if err != nil || got != tt.want {
				t.Errorf("%q: %q %v, want %q", tt.source, got, err, tt.want)
			}
			continue
		}
		st := status.Convert(rpcerr.ToStatus(err))
		if st.Code() != tt.code || !strings.Contains(st.Message(), tt.want) {
			t.Errorf("%q: %v %q, want %v containing %q", tt.source, st.Code(), st.Message(), tt.code, tt.want)
		}
		if strings.Contains(st.Message(), "very-secret") {
			t.Errorf("%q: the message echoes the file: %q", tt.source, st.Message())
		}
	}
	if _, err := enginehost.ResolveSource(nil, "a.gguf"); status.Code(rpcerr.ToStatus(err)) != codes.FailedPrecondition {
		t.Errorf("no model directories: %v", err)
	}
}
