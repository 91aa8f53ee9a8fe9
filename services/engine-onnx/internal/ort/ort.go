// Package ort is engine-onnx's one package over ONNX Runtime (through
// github.com/yalue/onnxruntime_go, which loads the shared library at run
// time): the process-wide environment, initialised once, sessions, and
// tensors over Go memory. RunInto writes outputs into buffers the caller
// owns, so that a KV cache is written once per step and fed back as the next
// step's input without a copy.
//
// Sessions are safe for concurrent Run calls; a Value is owned by one
// goroutine and must be closed.
package ort

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	rt "github.com/yalue/onnxruntime_go"
)

var (
	initOnce sync.Once
	initErr  error
)

// Init loads the ONNX Runtime shared library at libPath and creates the
// environment. Later calls return the first call's result.
//
// ONNX Runtime's own telemetry is turned off unless ORT_DISABLE_TELEMETRY is
// set: the npm release's library otherwise starts a 1DS telemetry client
// while creating the environment, which uploads over HTTPS where it can,
// writes /tmp/mat-debug-PID.log, and runs `sh -c "echo \`blkid; hostname\`"`
// for a device id; in an image without a shell that crashes the process
// (SIGSEGV in CreateOrtEnv).
func Init(libPath string) error {
	initOnce.Do(func() {
		if _, set := os.LookupEnv("ORT_DISABLE_TELEMETRY"); !set {
			// With cgo, os.Setenv also sets the C environment ORT reads.
			os.Setenv("ORT_DISABLE_TELEMETRY", "1")
		}
		if _, err := os.Stat(libPath); err != nil {
			initErr = fmt.Errorf("onnxruntime library: %w (run make tools, or set ORT_LIBRARY)", err)
			return
		}
		rt.SetSharedLibraryPath(libPath)
		if err := rt.InitializeEnvironment(rt.WithLogLevelError()); err != nil {
			initErr = fmt.Errorf("initialise onnxruntime from %s: %w", libPath, err)
		}
	})
	return initErr
}

// Shutdown destroys the environment; call it once at process exit, after
// every session is closed.
func Shutdown() error {
	if initErr != nil || !rt.IsInitialized() {
		return nil
	}
	return rt.DestroyEnvironment()
}

// Version is the loaded runtime's version.
func Version() string { return rt.GetVersion() }

// Options configure a session.
type Options struct {
	// Threads is the number of intra-op threads (0: ONNX Runtime's default).
	Threads int
	// CUDA appends the CUDA execution provider on this device (-1: CPU
	// only). The runtime library must be a GPU build with its provider
	// libraries beside it.
	CUDADevice int
}

// Value is a tensor over Go memory.
type Value struct {
	v rt.Value
}

// NewFloat wraps data (not copied; keep it unchanged while the Value lives).
func NewFloat(shape []int64, data []float32) (*Value, error) {
	t, err := rt.NewTensor(rt.NewShape(shape...), data)
	if err != nil {
		return nil, err
	}
	return &Value{t}, nil
}

// NewInt64 wraps data (not copied).
func NewInt64(shape []int64, data []int64) (*Value, error) {
	t, err := rt.NewTensor(rt.NewShape(shape...), data)
	if err != nil {
		return nil, err
	}
	return &Value{t}, nil
}

// NewInt32 wraps data (not copied).
func NewInt32(shape []int64, data []int32) (*Value, error) {
	t, err := rt.NewTensor(rt.NewShape(shape...), data)
	if err != nil {
		return nil, err
	}
	return &Value{t}, nil
}

// NewBool wraps data (not copied).
func NewBool(shape []int64, data []bool) (*Value, error) {
	t, err := rt.NewTensor(rt.NewShape(shape...), data)
	if err != nil {
		return nil, err
	}
	return &Value{t}, nil
}

// Shape is the tensor's shape.
func (v *Value) Shape() []int64 { return v.v.GetShape() }

// Floats returns a float tensor's data in place (nil for other types); it is
// valid until Close.
func (v *Value) Floats() []float32 {
	if t, ok := v.v.(*rt.Tensor[float32]); ok {
		return t.GetData()
	}
	return nil
}

// Close frees the tensor. It accepts a nil Value.
func (v *Value) Close() {
	if v != nil && v.v != nil {
		v.v.Destroy()
		v.v = nil
	}
}

// Session is a loaded model.
type Session struct {
	s       *rt.DynamicAdvancedSession
	inputs  []string
	outputs []string
}

// Open loads the ONNX model file at path with the named inputs and outputs.
func Open(path string, inputs, outputs []string, o Options) (*Session, error) {
	return open(path, nil, inputs, outputs, o)
}

// OpenBytes loads an ONNX model held in memory (a converted graph).
func OpenBytes(model []byte, inputs, outputs []string, o Options) (*Session, error) {
	return open("memory", model, inputs, outputs, o)
}

func open(path string, model []byte, inputs, outputs []string, o Options) (*Session, error) {
	if initErr != nil {
		return nil, initErr
	}
	if !rt.IsInitialized() {
		return nil, errors.New("onnxruntime is not initialised: call ort.Init first")
	}
	opts, err := rt.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	if o.Threads > 0 {
		if err := opts.SetIntraOpNumThreads(o.Threads); err != nil {
			return nil, err
		}
		if err := opts.SetInterOpNumThreads(1); err != nil {
			return nil, err
		}
	}
	if o.CUDADevice >= 0 {
		cuda, err := rt.NewCUDAProviderOptions()
		if err != nil {
			return nil, fmt.Errorf("CUDA provider: %w", err)
		}
		defer cuda.Destroy()
		if err := cuda.Update(map[string]string{"device_id": fmt.Sprint(o.CUDADevice)}); err != nil {
			return nil, fmt.Errorf("CUDA provider: %w", err)
		}
		if err := opts.AppendExecutionProviderCUDA(cuda); err != nil {
			return nil, fmt.Errorf("CUDA provider (needs a GPU build of onnxruntime and CUDA on the host): %w", err)
		}
	}
	var s *rt.DynamicAdvancedSession
	if model != nil {
		s, err = rt.NewDynamicAdvancedSessionWithONNXData(model, inputs, outputs, opts)
	} else {
		s, err = rt.NewDynamicAdvancedSession(path, inputs, outputs, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %s", path, strings.TrimSpace(err.Error()))
	}
	return &Session{s: s, inputs: inputs, outputs: outputs}, nil
}

// RunInto evaluates the model on inputs, writing into outputs, which the
// caller made with the exact shapes the model produces (NewFloat over its
// own buffers), so no output memory is allocated or copied. (The binding's
// own Run with nil outputs copies every output into fresh Go memory.)
func (s *Session) RunInto(inputs, outputs []*Value) error {
	if len(inputs) != len(s.inputs) || len(outputs) != len(s.outputs) {
		return fmt.Errorf("%d inputs and %d outputs given, the session takes %d and %d", len(inputs), len(outputs), len(s.inputs), len(s.outputs))
	}
	in := make([]rt.Value, len(inputs))
	for i, v := range inputs {
		in[i] = v.v
	}
	out := make([]rt.Value, len(outputs))
	for i, v := range outputs {
		out[i] = v.v
	}
	if err := s.s.Run(in, out); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// Run evaluates the model on inputs and returns its outputs in fresh Go
// memory (for outputs whose shapes the caller cannot know ahead); close
// them after use.
func (s *Session) Run(inputs []*Value) ([]*Value, error) {
	if len(inputs) != len(s.inputs) {
		return nil, fmt.Errorf("%d inputs given, the session takes %d", len(inputs), len(s.inputs))
	}
	in := make([]rt.Value, len(inputs))
	for i, v := range inputs {
		in[i] = v.v
	}
	out := make([]rt.Value, len(s.outputs))
	if err := s.s.Run(in, out); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	values := make([]*Value, len(out))
	for i, v := range out {
		values[i] = &Value{v}
	}
	return values, nil
}

// Close frees the session.
func (s *Session) Close() error { return s.s.Destroy() }
