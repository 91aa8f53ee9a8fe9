// Package ort is engine-onnx's one package over ONNX Runtime (through
// github.com/yalue/onnxruntime_go, which loads the shared library at run
// time): the process-wide environment, initialised once, and sessions that
// run float tensors by name. Sessions are safe for concurrent Run calls.
//
// The engine (KV cache, batching, streaming) is not built yet; see issue 6.
package ort

import (
	"errors"
	"fmt"
	"os"
	"sync"

	rt "github.com/yalue/onnxruntime_go"
)

var (
	initOnce sync.Once
	initErr  error
)

// Init loads the ONNX Runtime shared library at libPath and creates the
// environment. Later calls return the first call's result.
func Init(libPath string) error {
	initOnce.Do(func() {
		if _, err := os.Stat(libPath); err != nil {
			initErr = fmt.Errorf("onnxruntime library: %w (run make tools, or set ORT_LIBRARY)", err)
			return
		}
		rt.SetSharedLibraryPath(libPath)
		if err := rt.InitializeEnvironment(); err != nil {
			initErr = fmt.Errorf("initialise onnxruntime from %s: %w", libPath, err)
		}
	})
	return initErr
}

// Version is the loaded runtime's version.
func Version() string { return rt.GetVersion() }

// Tensor is a float32 tensor in row-major order.
type Tensor struct {
	Shape []int64
	Data  []float32
}

// Session is a loaded model.
type Session struct {
	s       *rt.DynamicAdvancedSession
	inputs  []string
	outputs []string
}

// NewSession loads an ONNX model from bytes with the named inputs and
// outputs, using threads intra-op threads (0: ONNX Runtime's default).
func NewSession(model []byte, inputs, outputs []string, threads int) (*Session, error) {
	if initErr != nil {
		return nil, initErr
	}
	opts, err := rt.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	if threads > 0 {
		if err := opts.SetIntraOpNumThreads(threads); err != nil {
			return nil, err
		}
	}
	s, err := rt.NewDynamicAdvancedSessionWithONNXData(model, inputs, outputs, opts)
	if err != nil {
		return nil, fmt.Errorf("load onnx model: %w", err)
	}
	return &Session{s: s, inputs: inputs, outputs: outputs}, nil
}

// Run evaluates the model on inputs (in NewSession's input order) and
// returns the outputs in its output order.
func (s *Session) Run(inputs ...Tensor) ([]Tensor, error) {
	if len(inputs) != len(s.inputs) {
		return nil, fmt.Errorf("%d inputs given, the session takes %d", len(inputs), len(s.inputs))
	}
	in := make([]rt.Value, len(inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, t := range inputs {
		v, err := rt.NewTensor(rt.NewShape(t.Shape...), t.Data)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", s.inputs[i], err)
		}
		in[i] = v
	}
	out := make([]rt.Value, len(s.outputs))
	if err := s.s.Run(in, out); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	res := make([]Tensor, len(out))
	var errs []error
	for i, v := range out {
		t, ok := v.(*rt.Tensor[float32])
		if !ok {
			errs = append(errs, fmt.Errorf("output %s is %T, not float32", s.outputs[i], v))
		} else {
			res[i] = Tensor{Shape: t.GetShape(), Data: append([]float32(nil), t.GetData()...)}
		}
		v.Destroy()
	}
	return res, errors.Join(errs...)
}

// Close frees the session.
func (s *Session) Close() error { return s.s.Destroy() }
