package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/llm-runner-router/llmrouter/pkg/onnx"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/pkg/sentencepiece"
	"github.com/llm-runner-router/llmrouter/pkg/tfjs"
	"github.com/llm-runner-router/llmrouter/services/engine-onnx/internal/ort"
)

// A sentence encoder is the other kind of model engine-onnx serves: a graph
// that maps a sparse batch of SentencePiece ids (inputs indices [n, 2] =
// (row, position) and values [n], int32) to one L2-normalised vector per
// row (output embedding), with vocab.json (the [piece, score] list) beside
// it. The Universal Sentence Encoder's TF.js release is one: a directory
// with model.json and no model.onnx is converted to ONNX on registration
// (pkg/tfjs) and served from memory. Encoders answer Embed only.
type encoder struct {
	tok   *sentencepiece.Tokenizer
	graph []byte // the converted ONNX model; nil when model.onnx is on disk
}

// encoderMaxTokens is how many ids of an input the encoder reads: the
// Universal Sentence Encoder drops positions from 128 on (its
// ClipToMaxLength), so the engine does not send them.
const encoderMaxTokens = 128

var (
	encoderInputs  = []string{"indices", "values"}
	encoderOutputs = []string{"embedding"}
)

// isTFJS reports whether dir holds a TF.js graph model and no ONNX graph.
func isTFJS(dir string) bool {
	_, errJSON := os.Stat(filepath.Join(dir, "model.json"))
	_, errONNX := os.Stat(filepath.Join(dir, "model.onnx"))
	return errJSON == nil && os.IsNotExist(errONNX)
}

// isEncoderGraph reports whether a graph takes the encoder's inputs.
func isEncoderGraph(info *onnx.Info) bool {
	names := map[string]bool{}
	for _, v := range info.Inputs {
		names[v.Name] = true
	}
	return len(info.Inputs) == 2 && names["indices"] && names["values"]
}

// readEncoder finishes a sentence encoder's spec: the converted graph (for
// a TF.js directory) and the tokenizer.
func (s *spec) readEncoder(convert bool) error {
	e := &encoder{}
	if convert {
		m, err := tfjs.Convert(s.dir, tfjs.Options{Output: encoderOutputs[0]})
		if err != nil {
			return fmt.Errorf("TF.js graph: %w", err)
		}
		e.graph = m.Marshal()
		s.fileBytes = int64(len(e.graph))
	}
	tok, err := sentencepiece.Load(filepath.Join(s.dir, "vocab.json"))
	if err != nil {
		return fmt.Errorf("encoder vocabulary: %w", err)
	}
	e.tok = tok
	s.enc = e
	s.arch = "sentence-encoder"
	s.vocab = tok.Size()
	s.ctx = encoderMaxTokens
	return nil
}

// openEncoder creates an encoder's session.
func (s *spec) openEncoder(o ort.Options) (*ort.Session, error) {
	if s.enc.graph != nil {
		return ort.OpenBytes(s.enc.graph, encoderInputs, encoderOutputs, o)
	}
	return ort.Open(s.file, encoderInputs, encoderOutputs, o)
}

// embed encodes texts in one run and returns their vectors and the ids
// read. Each text's first encoderMaxTokens ids count; an empty text is
// refused (it has no ids to encode).
func (r *runner) embed(ctx context.Context, texts []string) ([][]float32, int, error) {
	ok, err := r.embeds.enter(ctx)
	if err != nil {
		return nil, 0, err
	}
	if !ok {
		return nil, 0, rpcerr.Unavailable("model %q was unloaded", r.name)
	}
	defer r.embeds.leave()
	var indices, values []int32
	for i, text := range texts {
		ids := r.spec.enc.tok.EncodePrefix(text, encoderMaxTokens)
		if len(ids) == 0 {
			return nil, 0, rpcerr.InvalidArgument("inputs[%d] is empty: an encoder needs at least one character", i)
		}
		for pos, id := range ids {
			indices = append(indices, int32(i), int32(pos))
			values = append(values, id)
		}
	}
	n := int64(len(values))
	idx, err := ort.NewInt32([]int64{n, 2}, indices)
	if err != nil {
		return nil, 0, err
	}
	defer idx.Close()
	val, err := ort.NewInt32([]int64{n}, values)
	if err != nil {
		return nil, 0, err
	}
	defer val.Close()
	out, err := r.sess.Run([]*ort.Value{idx, val})
	if err != nil {
		return nil, 0, rpcerr.Unavailable("model %q: %v", r.name, err)
	}
	defer out[0].Close()
	shape, data := out[0].Shape(), out[0].Floats()
	if len(shape) != 2 || shape[0] != int64(len(texts)) || int64(len(data)) != shape[0]*shape[1] {
		return nil, 0, fmt.Errorf("model %q: embedding output has shape %v for %d inputs", r.name, shape, len(texts))
	}
	dim := int(shape[1])
	vecs := make([][]float32, len(texts))
	for i := range vecs {
		vecs[i] = append([]float32(nil), data[i*dim:(i+1)*dim]...)
	}
	return vecs, int(n), nil
}

// embedGate lets at most cap(slots) embeddings run at once and lets close
// wait for them before the session is freed.
type embedGate struct {
	mu     sync.RWMutex // held for reading by each run, for writing by close
	closed bool
	slots  chan struct{}
	n      atomic.Int32
}

// enter waits for a slot (or ctx); false once the runner closed.
func (g *embedGate) enter(ctx context.Context) (bool, error) {
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		<-g.slots
		return false, nil
	}
	g.n.Add(1)
	return true, nil
}

func (g *embedGate) leave() {
	g.n.Add(-1)
	g.mu.RUnlock()
	<-g.slots
}

// running reports embeddings in progress (a runner busy with them is not
// unloaded to make room).
func (g *embedGate) running() bool { return g.n.Load() > 0 }

// close waits for the running embeddings and refuses new ones.
func (g *embedGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}
