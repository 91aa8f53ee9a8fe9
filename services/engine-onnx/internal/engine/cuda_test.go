package engine

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/gguf"
	"github.com/llm-runner-router/llmrouter/pkg/testmodel"
)

// The CUDA execution provider gives the CPU's greedy tokens and logits, and
// its speed on the ~124M bench model is printed next to the CPU's. It runs
// only where LLMROUTER_CUDA_DEVICE names a GPU and LLMROUTER_ORT_LIB is a
// library with the CUDA provider beside it (docs/engine-onnx.md).
func TestCUDA(t *testing.T) {
	dev := os.Getenv("LLMROUTER_CUDA_DEVICE")
	if dev == "" {
		t.Skip("no GPU: set LLMROUTER_CUDA_DEVICE and a CUDA-capable LLMROUTER_ORT_LIB")
	}
	device, err := strconv.Atoi(dev)
	if err != nil {
		t.Fatal(err)
	}
	opts := func(cuda int, threads int) Options {
		o := DefaultOptions()
		o.CUDADevice, o.Threads, o.Parallel, o.PrefillChunk = cuda, threads, 16, 512
		return o
	}
	cpu, gpu := New(opts(-1, runtime.NumCPU()), quiet()), New(opts(device, 1), quiet())
	defer cpu.Close()
	defer gpu.Close()
	for _, m := range []*Manager{cpu, gpu} {
		if _, err := m.Register("tiny", tinyDir); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gpu.models.Acquire(context.Background(), "tiny"); err != nil {
		t.Fatalf("CUDA session: %v", err)
	}
	p := prompt(t, cpu, "The quick brown fox jumps over the lazy dog")
	a, b := generate(t, cpu, p, 24), generate(t, gpu, p, 24)
	if !slices.Equal(a, b) {
		t.Fatalf("greedy tokens: cpu %v, cuda %v", a, b)
	}
	worst := 0.0
	rc, rg := detached(t, cpu, "tiny"), detached(t, gpu, "tiny")
	la, lb := logitsOf(t, rc, p), logitsOf(t, rg, p)
	for i := range la {
		worst = max(worst, math.Abs(float64(la[i]-lb[i]))/max(1, math.Abs(float64(la[i]))))
	}
	t.Logf("tiny: 24 greedy tokens equal on CPU and CUDA; largest relative logit difference %.2e", worst)
	if worst > 1e-3 {
		t.Fatalf("CUDA logits differ from CPU by %.2e", worst)
	}

	// Speed on the bench model, CPU (all cores) and CUDA in the same run.
	c := testmodel.Bench
	c.Name, c.Type = "bench-124m-f32", gguf.F32
	dir := filepath.Join(t.TempDir(), c.Name)
	if err := testmodel.WriteONNXDir(dir, c, os.Getenv("LLMROUTER_GPT2")); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%-6s %10s %14s %14s %18s %18s\n", "device", "load ms", "prefill t/s", "decode t/s", "4 streams t/s", "16 streams t/s")
	for _, m := range []*Manager{cpu, gpu} {
		if _, err := m.Register("bench", dir); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if _, err := m.models.Acquire(context.Background(), "bench"); err != nil {
			t.Fatal(err)
		}
		load := time.Since(began)
		ids := make([]uint32, 512)
		for i := range ids {
			ids[i] = uint32(i*7919) % 50000
		}
		run := func(prompt []uint32, n int) (ttft, total time.Duration) {
			start := time.Now()
			seq, err := m.Start(context.Background(), "bench", prompt, enginehost.Sampling{})
			if err != nil {
				t.Fatal(err)
			}
			defer seq.Close()
			for i := range n {
				if _, err := seq.Next(context.Background()); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					ttft = time.Since(start)
				}
			}
			return ttft, time.Since(start)
		}
		run(ids[:8], 4) // warm up
		ttft, _ := run(ids, 1)
		first, total := run(ids[:1], 129)
		decode := 128 / (total - first).Seconds()
		conc := func(n int) float64 {
			var wg sync.WaitGroup
			start := time.Now()
			for i := range n {
				wg.Go(func() { run(ids[i:i+64], 64) })
			}
			wg.Wait()
			return float64(n*64) / time.Since(start).Seconds()
		}
		name := "cpu"
		if m == gpu {
			name = "cuda"
		}
		fmt.Printf("%-6s %10.0f %14.0f %14.1f %18.1f %18.1f\n", name, float64(load)/1e6, 512/ttft.Seconds(), decode, conc(4), conc(16))
	}
}

func logitsOf(t *testing.T, r *runner, p []uint32) []float32 {
	t.Helper()
	n := len(p)
	ids, pos, mask := make([]int64, n), make([]int64, n), make([]int64, n)
	for i := range n {
		ids[i], pos[i], mask[i] = int64(p[i]), int64(i), 1
	}
	past, err := r.emptyKV()
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(past)
	logits, present, err := r.run(1, n, ids, mask, pos, past)
	if err != nil {
		t.Fatal(err)
	}
	defer r.free(present)
	return slices.Clone(r.lastLogits(logits, 0, n))
}
