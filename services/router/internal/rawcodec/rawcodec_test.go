package rawcodec

import (
	"slices"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
)

// An engine event's bytes decode as the same router event.
func TestFramesRelayUnchanged(t *testing.T) {
	c := New()
	ev := &enginev1.GenerateResponse{Event: &enginev1.GenerateResponse_Delta{Delta: &genv1.TokenDelta{Text: "héllo", TokenIds: []uint32{1, 300, 70000}}}}
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var f Frame
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &f); err != nil {
		t.Fatal(err)
	}
	num, body := f.Event()
	ids, text, ok := AppendDelta([]uint32{7}, []byte("a"), body)
	if num != 2 || !ok || !slices.Equal(ids, []uint32{7, 1, 300, 70000}) || string(text) != "ahéllo" {
		t.Fatalf("event %d ids %v text %q ok %v", num, ids, text, ok)
	}
	out, err := c.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	var rev routerv1.GenerateResponse
	if err := proto.Unmarshal(out.Materialize(), &rev); err != nil {
		t.Fatal(err)
	}
	if rev.GetDelta().GetText() != "héllo" || !slices.Equal(rev.GetDelta().GetTokenIds(), []uint32{1, 300, 70000}) {
		t.Fatalf("router event %v", &rev)
	}
	// Other messages go through protobuf.
	m, err := c.Marshal(&genv1.Usage{PromptTokens: 3})
	if err != nil || len(m.Materialize()) == 0 {
		t.Fatalf("proto message: %v", err)
	}
	if n, _ := (&Frame{B: []byte{0xff}}).Event(); n != 0 {
		t.Fatal("garbage frame parsed")
	}
}

func TestDeltaHasToolCalls(t *testing.T) {
	for _, tc := range []struct {
		d    *genv1.TokenDelta
		want bool
	}{
		{&genv1.TokenDelta{Text: "a", TokenIds: []uint32{1, 2}}, false},
		{&genv1.TokenDelta{ToolCalls: []*genv1.ToolCallDelta{{Index: 0, Arguments: "{"}}}, true},
		{&genv1.TokenDelta{Text: "x", TokenIds: []uint32{3}, Logprobs: []*genv1.TokenLogprobs{{}}, ToolCalls: []*genv1.ToolCallDelta{{Id: "c"}}}, true},
		{&genv1.TokenDelta{}, false},
	} {
		b, err := proto.Marshal(tc.d)
		if err != nil {
			t.Fatal(err)
		}
		if got := DeltaHasToolCalls(b); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.d, got, tc.want)
		}
	}
	if DeltaHasToolCalls([]byte{0xff}) {
		t.Error("a malformed delta has tool calls")
	}
}
