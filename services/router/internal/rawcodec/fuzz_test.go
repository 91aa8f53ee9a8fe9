package rawcodec

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
)

// The relay's own decoding of event frames agrees with protobuf's on every
// input protobuf accepts, and never panics on the rest.
func FuzzRelayCodec(f *testing.F) {
	for _, ev := range []*enginev1.GenerateResponse{
		{Event: &enginev1.GenerateResponse_Delta{Delta: &genv1.TokenDelta{Text: "héllo", TokenIds: []uint32{1, 300, 70000}}}},
		{Event: &enginev1.GenerateResponse_Start{Start: &genv1.StartEvent{Model: "m", Endpoint: "127.0.0.1:1"}}},
		{Event: &enginev1.GenerateResponse_End{End: &genv1.EndEvent{FinishReason: genv1.FinishReason_FINISH_REASON_LENGTH}}},
	} {
		b, _ := proto.Marshal(ev)
		f.Add(b)
	}
	f.Add([]byte{0x12, 0x03, 0x10, 0x01, 0x10})                 // a delta with a truncated id
	f.Add([]byte{0x12, 0x06, 0x0a, 0x01, 'a', 0x0a, 0x01, 'b'}) // text twice: the last wins
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := Frame{B: b}
		num, ev := fr.Event()
		if num != 2 {
			return
		}
		ids, text, ok := AppendDelta(nil, nil, ev)
		var d genv1.TokenDelta
		if err := proto.Unmarshal(ev, &d); err != nil {
			return // protobuf refuses it; the relay may too
		}
		if !ok {
			t.Fatalf("relay refused a delta protobuf accepts: %x", ev)
		}
		if !slices.Equal(ids, d.GetTokenIds()) || string(text) != d.GetText() {
			t.Fatalf("relay read ids %v text %q, protobuf %v %q (input %x)", ids, text, d.GetTokenIds(), d.GetText(), ev)
		}
	})
}
