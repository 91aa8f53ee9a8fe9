package enginehost

import (
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/metadata"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

// LoadKey is the trailer in which a worker reports its load as each
// Generate stream ends: "ACTIVE QUEUED MODEL_ACTIVE MODEL_QUEUED", the
// sequences decoding and requests waiting over all its models and for the
// stream's own model, that stream no longer among them (the last two are
// absent when the worker keeps no per-model counts). A router learns from it
// what the other routers sent since its last status poll: with several
// routers, a poll every few seconds is stale within one request.
const LoadKey = "llmrouter-load"

// LoadReport is a load trailer's content.
type LoadReport struct {
	Active, Queued           int32
	ModelActive, ModelQueued int32
	HasModel                 bool
}

// LoadTrailer is the trailer that reports st, with model's own counts.
func LoadTrailer(st *enginev1.GetStatusResponse, model string) metadata.MD {
	v := strconv.Itoa(int(st.GetActiveSequences())) + " " + strconv.Itoa(int(st.GetQueueDepth()))
	for _, ml := range st.GetModels() {
		if ml.GetModel() == model {
			v += " " + strconv.Itoa(int(ml.GetActiveSequences())) + " " + strconv.Itoa(int(ml.GetQueueDepth()))
			break
		}
	}
	return metadata.Pairs(LoadKey, v)
}

// ParseLoad reads a load trailer; ok is false when md has none or it is
// malformed.
func ParseLoad(md metadata.MD) (l LoadReport, ok bool) {
	v := md.Get(LoadKey)
	if len(v) != 1 {
		return l, false
	}
	f := strings.Fields(v[0])
	if len(f) != 2 && len(f) != 4 {
		return l, false
	}
	n := make([]int32, len(f))
	for i, x := range f {
		y, err := strconv.ParseInt(x, 10, 32)
		if err != nil || y < 0 {
			return l, false
		}
		n[i] = int32(y)
	}
	l.Active, l.Queued = n[0], n[1]
	if len(n) == 4 {
		l.ModelActive, l.ModelQueued, l.HasModel = n[2], n[3], true
	}
	return l, true
}

// SlotState follows one request through a decode loop's slots, so that the
// load a worker reports leaves out sequences their consumer has closed but
// the loop has not yet freed (it frees them at its next step): a stream's
// load trailer is built right after its Close. The zero value is a waiting
// request. Safe for concurrent use.
type SlotState struct{ v atomic.Int32 }

const (
	slotWaiting int32 = iota
	slotActive
	slotClosing
	slotDone
)

// Admit marks the request as holding a slot.
func (s *SlotState) Admit() { s.v.CompareAndSwap(slotWaiting, slotActive) }

// Close marks a slot-holding request as let go, counting it in closing.
func (s *SlotState) Close(closing *atomic.Int32) {
	if s.v.CompareAndSwap(slotActive, slotClosing) {
		closing.Add(1)
	}
}

// Finish marks the slot freed, uncounting it from closing if it was there.
func (s *SlotState) Finish(closing *atomic.Int32) {
	if s.v.Swap(slotDone) == slotClosing {
		closing.Add(-1)
	}
}
