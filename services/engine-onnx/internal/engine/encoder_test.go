package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// useLite registers the Universal Sentence Encoder lite (its TF.js release,
// converted on registration) as "use-lite".
func useLite(t *testing.T) *Manager {
	t.Helper()
	dir := os.Getenv("LLMROUTER_USE_LITE")
	if dir == "" {
		t.Skip("LLMROUTER_USE_LITE is not set: run through make (tools/install.sh use-lite)")
	}
	opt := DefaultOptions()
	opt.Threads = 1
	m := New(opt, quiet())
	t.Cleanup(m.Close)
	info, err := m.Register("use-lite", dir)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.GetCapabilities(); !c.GetEmbeddings() || !c.GetEmbeddingsOnly() || info.GetArchitecture() != "sentence-encoder" {
		t.Fatalf("encoder registered as %v", info)
	}
	return m
}

// TestEncoderMatchesTFJS runs the converted graph in ONNX Runtime and
// compares every vector with the one TF.js computed from the same files
// (e2e/bench/testdata/semcache/use-lite-reference.json), one text per call
// and all texts in one batch.
func TestEncoderMatchesTFJS(t *testing.T) {
	m := useLite(t)
	raw, err := os.ReadFile("../../../../e2e/bench/testdata/semcache/use-lite-reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Items []struct {
			Text      string    `json:"text"`
			IDs       []int32   `json:"ids"`
			Embedding []float64 `json:"embedding"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, it := range ref.Items {
		texts = append(texts, it.Text)
	}
	batch, tokens, err := m.Embed(context.Background(), "use-lite", texts)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i, it := range ref.Items {
		want += min(len(it.IDs), encoderMaxTokens)
		one, _, err := m.Embed(context.Background(), "use-lite", []string{it.Text})
		if err != nil {
			t.Fatalf("%q: %v", it.Text, err)
		}
		for name, got := range map[string][]float32{"single": one[0], "batch": batch[i]} {
			if len(got) != len(it.Embedding) {
				t.Fatalf("%q (%s): %d values, TF.js has %d", it.Text, name, len(got), len(it.Embedding))
			}
			worst := 0.0
			for j, v := range got {
				worst = max(worst, math.Abs(float64(v)-it.Embedding[j]))
			}
			if worst > 1e-5 {
				t.Errorf("%q (%s): differs from TF.js by up to %.2g", it.Text, name, worst)
			}
		}
	}
	if tokens != want {
		t.Errorf("usage counts %d ids, the texts have %d", tokens, want)
	}
}

// TestEncoderRefusesGeneration: an encoder answers Embed only, with precise
// errors for everything else, and empty inputs are refused.
func TestEncoderRefusesGeneration(t *testing.T) {
	m := useLite(t)
	if _, err := m.Start(context.Background(), "use-lite", []uint32{1, 2}, enginehost.Sampling{}); rpcerr.Code(err) != codes.FailedPrecondition {
		t.Errorf("Start: %v, want FailedPrecondition", err)
	}
	if _, err := m.Tokenize(context.Background(), "use-lite", nil); rpcerr.Code(err) != codes.FailedPrecondition {
		t.Errorf("Tokenize: %v, want FailedPrecondition", err)
	}
	if _, _, err := m.Embed(context.Background(), "use-lite", []string{"fine", ""}); rpcerr.Code(err) != codes.InvalidArgument {
		t.Errorf("Embed with an empty input: %v, want InvalidArgument", err)
	}
	long := ""
	for range 400 {
		long += "word "
	}
	if _, n, err := m.Embed(context.Background(), "use-lite", []string{long}); err != nil || n != encoderMaxTokens {
		t.Errorf("a 400-word input: %d ids, %v; want the first %d", n, err, encoderMaxTokens)
	}
}

// Unloading an encoder while embeddings run waits for them: each call
// either answers or fails with a status, and none runs on a freed session.
func TestEncoderUnloadWhileEmbedding(t *testing.T) {
	m := useLite(t)
	if _, _, err := m.Embed(context.Background(), "use-lite", []string{"warm up"}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 16 {
				_, _, err := m.Embed(context.Background(), "use-lite", []string{fmt.Sprintf("question %d of %d", j, i)})
				errs <- err
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := m.Unload(context.Background(), "use-lite"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if c := rpcerr.Code(err); err != nil && c != codes.Unavailable && c != codes.NotFound {
			t.Errorf("an embedding during the unload: %v", err)
		}
	}
}
