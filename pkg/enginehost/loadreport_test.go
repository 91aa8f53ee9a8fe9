package enginehost

import (
	"testing"

	"google.golang.org/grpc/metadata"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
)

func TestLoadTrailer(t *testing.T) {
	st := &enginev1.GetStatusResponse{ActiveSequences: 7, QueueDepth: 3, Models: []*enginev1.ModelLoad{
		{Model: "a", ActiveSequences: 5, QueueDepth: 1}, {Model: "b", ActiveSequences: 2, QueueDepth: 2}}}
	if l, ok := ParseLoad(LoadTrailer(st, "b")); !ok || l != (LoadReport{Active: 7, Queued: 3, ModelActive: 2, ModelQueued: 2, HasModel: true}) {
		t.Fatalf("round trip: %+v %v", l, ok)
	}
	if l, ok := ParseLoad(LoadTrailer(st, "c")); !ok || l != (LoadReport{Active: 7, Queued: 3}) {
		t.Fatalf("a model without counts: %+v %v", l, ok)
	}
	for _, bad := range []metadata.MD{nil, metadata.Pairs(LoadKey, "7"), metadata.Pairs(LoadKey, "x 1"), metadata.Pairs(LoadKey, "-1 0"),
		metadata.Pairs(LoadKey, "1 2 3"), metadata.Pairs(LoadKey, "1 2", LoadKey, "3 4"), metadata.Pairs(LoadKey, "99999999999 0")} {
		if _, ok := ParseLoad(bad); ok {
			t.Errorf("ParseLoad(%v) accepted", bad)
		}
	}
}
