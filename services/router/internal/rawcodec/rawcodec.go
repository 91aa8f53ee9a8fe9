// Package rawcodec is the router's gRPC codec: protobuf for every message,
// plus Frame, which carries an already-encoded message untouched. Worker
// events and Router events share their wire layout (start = 1, delta = 2,
// end = 3, with the same message types), so the relay forwards token deltas
// as bytes instead of decoding and re-encoding each one.
package rawcodec

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Frame is one encoded message.
type Frame struct{ B []byte }

// Codec is a CodecV2 named "proto" (the content type is unchanged).
type Codec struct{ base encoding.CodecV2 }

var _ encoding.CodecV2 = Codec{}

// New returns the codec.
func New() Codec { return Codec{base: encoding.GetCodecV2(proto.Name)} }

// Name implements encoding.CodecV2.
func (Codec) Name() string { return proto.Name }

// Marshal implements encoding.CodecV2.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.B)}, nil
	}
	return c.base.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		f.B = data.Materialize()
		return nil
	}
	return c.base.Unmarshal(data, v)
}

// Event returns the field number of the frame's oneof event (1 start,
// 2 delta, 3 end; 0 if unreadable) and the event's bytes.
func (f *Frame) Event() (protowire.Number, []byte) {
	num, typ, n := protowire.ConsumeTag(f.B)
	if n < 0 || typ != protowire.BytesType {
		return 0, nil
	}
	v, m := protowire.ConsumeBytes(f.B[n:])
	if m < 0 {
		return 0, nil
	}
	return num, v
}

// AppendDelta appends a TokenDelta's token ids (field 2, packed or not) to
// ids and its text (field 1) to text. As in protobuf, a text field that
// appears twice counts once, the last one.
func AppendDelta(ids []uint32, text []byte, delta []byte) ([]uint32, []byte, bool) {
	start := len(text)
	for len(delta) > 0 {
		num, typ, n := protowire.ConsumeTag(delta)
		if n < 0 {
			return ids, text, false
		}
		delta = delta[n:]
		switch {
		case num == 2 && typ == protowire.BytesType:
			packed, m := protowire.ConsumeBytes(delta)
			if m < 0 {
				return ids, text, false
			}
			for len(packed) > 0 {
				v, k := protowire.ConsumeVarint(packed)
				if k < 0 {
					return ids, text, false
				}
				ids = append(ids, uint32(v))
				packed = packed[k:]
			}
			delta = delta[m:]
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(delta)
			if m < 0 {
				return ids, text, false
			}
			text = append(text[:start], v...)
			delta = delta[m:]
		case num == 2 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(delta)
			if m < 0 {
				return ids, text, false
			}
			ids = append(ids, uint32(v))
			delta = delta[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, delta)
			if m < 0 {
				return ids, text, false
			}
			delta = delta[m:]
		}
	}
	return ids, text, true
}

// DeltaHasToolCalls reports whether an encoded TokenDelta carries tool-call
// deltas (field 4).
func DeltaHasToolCalls(delta []byte) bool {
	for len(delta) > 0 {
		num, typ, n := protowire.ConsumeTag(delta)
		if n < 0 {
			return false
		}
		if num == 4 {
			return true
		}
		delta = delta[n:]
		m := protowire.ConsumeFieldValue(num, typ, delta)
		if m < 0 {
			return false
		}
		delta = delta[m:]
	}
	return false
}
