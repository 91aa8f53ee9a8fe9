package enginehost

import (
	"strconv"
	"strings"

	"google.golang.org/grpc/metadata"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

// LoadKey is the trailer in which a worker reports its load as each
// Generate stream ends ("ACTIVE QUEUED": sequences decoding and requests
// waiting, over all models, this request no longer among them). A router
// learns from it what the other routers sent since its last status poll:
// with several routers, a poll every few seconds is stale within one
// request.
const LoadKey = "llmrouter-load"

// LoadTrailer is the trailer that reports st.
func LoadTrailer(st *enginev1.GetStatusResponse) metadata.MD {
	return metadata.Pairs(LoadKey, strconv.Itoa(int(st.GetActiveSequences()))+" "+strconv.Itoa(int(st.GetQueueDepth())))
}

// ParseLoad reads a load trailer; ok is false when md has none or it is
// malformed.
func ParseLoad(md metadata.MD) (active, queued int32, ok bool) {
	v := md.Get(LoadKey)
	if len(v) != 1 {
		return 0, 0, false
	}
	a, q, found := strings.Cut(v[0], " ")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseInt(a, 10, 32)
	y, err2 := strconv.ParseInt(q, 10, 32)
	if err1 != nil || err2 != nil || x < 0 || y < 0 {
		return 0, 0, false
	}
	return int32(x), int32(y), true
}
