package enginehost

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

// resident is a fake loaded model.
type resident struct {
	name   string
	busy   atomic.Bool
	closes atomic.Int32
}

func (r *resident) Busy() bool { return r.busy.Load() }
func (r *resident) Load() *enginev1.ModelLoad {
	return &enginev1.ModelLoad{ActiveSequences: 2, QueueDepth: 1, KvCacheUsage: 0.5, TokensPerSecond: 10}
}
func (r *resident) Close() { r.closes.Add(1) }

// closed reports whether the table closed r, and exactly once.
func (r *resident) closed() bool { return r.closes.Load() == 1 }

// loader counts loads and keeps what it loaded; names starting with "bad"
// fail to load.
type loader struct {
	mu     sync.Mutex
	loaded []*resident
}

func (l *loader) load(_ context.Context, m *TableModel[string, *resident]) (*resident, error) {
	if strings.HasPrefix(m.Name, "bad") {
		return nil, errors.New("corrupt weights")
	}
	info := proto.CloneOf(m.Info())
	info.ContextLength = 64 // known once loaded
	m.SetInfo(info)
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &resident{name: m.Name}
	l.loaded = append(l.loaded, r)
	return r, nil
}

func (l *loader) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.loaded)
}

var discard = slog.New(slog.DiscardHandler)

func newTable(t *testing.T, opt TableOptions) (*ModelTable[string, *resident], *loader) {
	t.Helper()
	l := &loader{}
	tbl := NewModelTable(opt, discard, l.load)
	t.Cleanup(tbl.Close)
	return tbl, l
}

func info(name string) *enginev1.ModelInfo {
	return &enginev1.ModelInfo{Name: name, ContextLength: 128, MaxConcurrency: 4}
}

func TestModelTableRegistersLoadsOnDemandAndRemoves(t *testing.T) {
	tbl, l := newTable(t, TableOptions{})
	for _, n := range []string{"b", "a"} {
		if err := tbl.Add(n, "spec-"+n, info(n), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := tbl.Add("a", "", info("a"), 0); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("duplicate name: %v", err)
	}
	if err := tbl.Add("", "", info("x"), 0); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad name: %v", err)
	}
	var names []string
	for _, mi := range tbl.Models() {
		names = append(names, mi.GetName())
	}
	if !slices.Equal(names, []string{"a", "b"}) || tbl.Loaded("a") || l.count() != 0 {
		t.Fatalf("registered %v, loaded a %v, loads %d", names, tbl.Loaded("a"), l.count())
	}
	// Many callers at once load a model once.
	var wg sync.WaitGroup
	got := make([]*resident, 8)
	for i := range got {
		wg.Go(func() {
			r, err := tbl.Acquire(context.Background(), "a")
			if err != nil {
				t.Error(err)
			}
			got[i] = r
		})
	}
	wg.Wait()
	if l.count() != 1 || got[0] == nil || slices.ContainsFunc(got, func(r *resident) bool { return r != got[0] }) {
		t.Fatalf("%d loads for 8 concurrent acquires", l.count())
	}
	if m, _ := tbl.Model("a"); m.Spec != "spec-a" || m.Info().GetContextLength() != 64 || !tbl.Loaded("a") {
		t.Fatalf("model a: spec %q, info %v", m.Spec, m.Info())
	}
	st := tbl.Status()
	if len(st.GetModels()) != 2 || st.GetActiveSequences() != 2 || st.GetQueueDepth() != 1 || st.GetModels()[0].GetModel() != "a" ||
		st.GetModels()[1].GetModel() != "b" || st.GetModels()[1].GetActiveSequences() != 0 {
		t.Fatalf("status %v", st)
	}
	var peeked *resident
	if !tbl.Peek("a", func(r *resident) { peeked = r }) || peeked != got[0] || tbl.Peek("b", func(*resident) { t.Error("b is not loaded") }) {
		t.Fatal("peek")
	}
	if err := tbl.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if !got[0].closed() || tbl.Loaded("a") {
		t.Fatal("removed model not closed")
	}
	if _, err := tbl.Acquire(context.Background(), "a"); status.Code(err) != codes.NotFound {
		t.Fatalf("acquire removed: %v", err)
	}
	if err := tbl.Remove("a"); status.Code(err) != codes.NotFound {
		t.Fatalf("remove twice: %v", err)
	}
}

func TestModelTableAddAndLoadRollsBackAFailedLoad(t *testing.T) {
	tbl, _ := newTable(t, TableOptions{})
	if _, err := tbl.AddAndLoad(context.Background(), "bad", "", info("bad"), 0); err == nil || !strings.Contains(err.Error(), "corrupt weights") {
		t.Fatalf("failed load: %v", err)
	}
	if _, err := tbl.Model("bad"); status.Code(err) != codes.NotFound {
		t.Fatalf("a model that failed to load stayed registered: %v", err)
	}
	mi, err := tbl.AddAndLoad(context.Background(), "good", "", info("good"), 0)
	if err != nil || mi.GetContextLength() != 64 || !tbl.Loaded("good") {
		t.Fatalf("load: %v %v", mi, err)
	}
}

func TestModelTableMemoryBudgetEvictsLeastRecentlyUsedIdle(t *testing.T) {
	tbl, l := newTable(t, TableOptions{MemoryBudget: 250})
	clock := time.Unix(1000, 0)
	tbl.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	for _, n := range []string{"a", "b", "c"} {
		if err := tbl.Add(n, "", info(n), 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := tbl.Add("huge", "", info("huge"), 300); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []string{"a", "b", "a", "c"} { // b is least recently used when c loads
		if _, err := tbl.Acquire(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if !tbl.Loaded("a") || tbl.Loaded("b") || !tbl.Loaded("c") || l.count() != 3 || !l.loaded[1].closed() {
		t.Fatalf("after c: a %v b %v c %v", tbl.Loaded("a"), tbl.Loaded("b"), tbl.Loaded("c"))
	}
	// Busy models are not evicted: with both busy, b is refused.
	a, _ := tbl.Acquire(ctx, "a")
	c, _ := tbl.Acquire(ctx, "c")
	a.busy.Store(true)
	c.busy.Store(true)
	if _, err := tbl.Acquire(ctx, "b"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "held by busy models") {
		t.Fatalf("load with every other model busy: %v", err)
	}
	c.busy.Store(false)
	if _, err := tbl.Acquire(ctx, "b"); err != nil || tbl.Loaded("c") || !tbl.Loaded("a") {
		t.Fatalf("load once c is idle: %v (c loaded %v)", err, tbl.Loaded("c"))
	}
	if _, err := tbl.Acquire(ctx, "huge"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "more than the memory budget") {
		t.Fatalf("model over the budget: %v", err)
	}
}

func TestModelTableKeepAliveUnloadsIdleModels(t *testing.T) {
	tbl, _ := newTable(t, TableOptions{KeepAlive: 150 * time.Millisecond})
	for _, n := range []string{"busy", "idle"} {
		if err := tbl.Add(n, "", info(n), 0); err != nil {
			t.Fatal(err)
		}
	}
	busy, _ := tbl.Acquire(context.Background(), "busy")
	busy.busy.Store(true)
	idle, _ := tbl.Acquire(context.Background(), "idle")
	Eventually(t, func() bool { return !tbl.Loaded("idle") })
	if !idle.closed() || !tbl.Loaded("busy") {
		t.Fatal("keep-alive unloaded the busy model or did not close the idle one")
	}
	busy.busy.Store(false)
	Eventually(t, func() bool { return !tbl.Loaded("busy") })
	// An unloaded model loads again on the next request.
	if _, err := tbl.Acquire(context.Background(), "idle"); err != nil || !tbl.Loaded("idle") {
		t.Fatalf("reload: %v", err)
	}
}
