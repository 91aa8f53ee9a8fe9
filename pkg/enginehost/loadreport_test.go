package enginehost

import (
	"testing"

	"google.golang.org/grpc/metadata"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

func TestLoadTrailer(t *testing.T) {
	md := LoadTrailer(&enginev1.GetStatusResponse{ActiveSequences: 7, QueueDepth: 3})
	if a, q, ok := ParseLoad(md); !ok || a != 7 || q != 3 {
		t.Fatalf("round trip: %d %d %v", a, q, ok)
	}
	for _, bad := range []metadata.MD{nil, metadata.Pairs(LoadKey, "7"), metadata.Pairs(LoadKey, "x 1"), metadata.Pairs(LoadKey, "-1 0"),
		metadata.Pairs(LoadKey, "1 2", LoadKey, "3 4"), metadata.Pairs(LoadKey, "99999999999 0")} {
		if _, _, ok := ParseLoad(bad); ok {
			t.Errorf("ParseLoad(%v) accepted", bad)
		}
	}
}
