// Package tfjs converts a TensorFlow.js graph model (model.json and its
// weight shards) into an ONNX model that ONNX Runtime runs, node by node:
// each TensorFlow op becomes the ONNX ops with its semantics. It covers the
// ops of the encoders the router embeds with (Universal Sentence Encoder
// lite), not every TensorFlow op; an op it does not know is an error that
// names it.
package tfjs

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/llm-runner-router/llmrouter/pkg/onnx"
)

// TensorFlow's DataType numbers.
const (
	dtFloat = 1
	dtInt32 = 3
	dtInt64 = 9
	dtBool  = 10
)

// modelJSON is the part of a TF.js model.json the converter reads.
type modelJSON struct {
	Format   string `json:"format"`
	Topology struct {
		Node []node `json:"node"`
	} `json:"modelTopology"`
	Manifest []struct {
		Paths   []string `json:"paths"`
		Weights []struct {
			Name         string          `json:"name"`
			Shape        []int64         `json:"shape"`
			Dtype        string          `json:"dtype"`
			Quantization json.RawMessage `json:"quantization"`
		} `json:"weights"`
	} `json:"weightsManifest"`
}

// node is a GraphDef node as TF.js stores it (protobuf JSON).
type node struct {
	Name  string          `json:"name"`
	Op    string          `json:"op"`
	Input []string        `json:"input"`
	Attr  map[string]attr `json:"attr"`
}

type attr struct {
	I    json.RawMessage `json:"i"` // int64 as a JSON string
	B    bool            `json:"b"`
	S    json.RawMessage `json:"s"` // bytes: base64, or a list of byte values
	Type json.RawMessage `json:"type"`
	List struct {
		I []json.Number `json:"i"`
	} `json:"list"`
	Shape struct {
		Dim []struct {
			Size json.Number `json:"size"`
		} `json:"dim"`
	} `json:"shape"`
}

func (a attr) int() int64 {
	s := strings.Trim(string(a.I), `"`)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func (a attr) str() string {
	var list []byte
	var text string
	if json.Unmarshal(a.S, &text) == nil {
		b, _ := base64.StdEncoding.DecodeString(text)
		return string(b)
	}
	var values []int
	if json.Unmarshal(a.S, &values) == nil {
		for _, v := range values {
			list = append(list, byte(v))
		}
	}
	return string(list)
}

func (a attr) dtype() int {
	n, _ := strconv.Atoi(strings.Trim(string(a.Type), `"`))
	if n != 0 {
		return n
	}
	switch strings.Trim(string(a.Type), `"`) {
	case "DT_FLOAT":
		return dtFloat
	case "DT_INT32":
		return dtInt32
	case "DT_INT64":
		return dtInt64
	case "DT_BOOL":
		return dtBool
	}
	return 0
}

// Options name the converted graph's output.
type Options struct {
	// Output is the ONNX name given to the graph's single output.
	Output string
}

// Convert reads the TF.js graph model in dir and returns it as ONNX, with
// the graph's placeholders as inputs (same names) and its one unconsumed
// node as the output named opt.Output.
func Convert(dir string, opt Options) (*onnx.Model, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		return nil, err
	}
	var m modelJSON
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("model.json: %w", err)
	}
	if len(m.Topology.Node) == 0 {
		return nil, fmt.Errorf("model.json: not a graph model (no modelTopology.node)")
	}
	c := &converter{
		nodes:  map[string]*node{},
		consts: map[string]*constant{},
		dtype:  map[string]int{},
	}
	for i := range m.Topology.Node {
		n := &m.Topology.Node[i]
		c.nodes[n.Name] = n
	}
	if err := c.readWeights(dir, &m); err != nil {
		return nil, err
	}
	consumed := map[string]bool{}
	for _, n := range m.Topology.Node {
		for _, in := range n.Input {
			consumed[baseName(in)] = true
		}
	}
	order, err := topoSort(m.Topology.Node)
	if err != nil {
		return nil, err
	}
	var outputs []string
	for _, n := range order {
		if err := c.convert(n); err != nil {
			return nil, fmt.Errorf("node %s (%s): %w", n.Name, n.Op, err)
		}
		if !consumed[n.Name] && n.Op != "Const" {
			outputs = append(outputs, n.Name)
		}
	}
	if len(outputs) != 1 {
		return nil, fmt.Errorf("the graph has %d outputs (%v); one is supported", len(outputs), outputs)
	}
	c.add("Identity", []string{outputs[0]}, []string{opt.Output})
	c.g.Outputs = []onnx.ValueInfo{{Name: opt.Output, Elem: onnxElem(c.dtype[outputs[0]]), Shape: []onnx.Dim{{Param: "batch"}, {Param: "dim"}}}}
	return &onnx.Model{IRVersion: 8, Opset: 14, Producer: "llmrouter-tfjs", Graph: c.g}, nil
}

// arity is how many inputs each op reads (at least).
var arity = map[string]int{
	"Sin": 1, "Cos": 1, "Tanh": 1, "Relu": 1, "LogicalNot": 1, "Identity": 1, "Cast": 1, "Square": 1, "Rsqrt": 1,
	"Softmax": 1, "Shape": 1, "Where": 1, "Squeeze": 1,
	"Add": 2, "AddV2": 2, "BiasAdd": 2, "Sub": 2, "Mul": 2, "RealDiv": 2, "Maximum": 2, "Minimum": 2, "Less": 2,
	"Greater": 2, "Reshape": 2, "GatherNd": 2, "Max": 2, "Sum": 2, "Mean": 2, "Prod": 2, "Min": 2, "ConcatV2": 2,
	"Pack": 1, "ExpandDims": 2, "Transpose": 2, "MatMul": 2, "BatchMatMul": 2, "BatchMatMulV2": 2, "Conv2D": 2,
	"GatherV2": 3, "ScatterNd": 3, "Range": 3, "Slice": 3, "SplitV": 3, "StridedSlice": 4, "SparseToDense": 4,
}

// constant is a Const node's value, kept for ops whose ONNX form needs it at
// conversion time (axes, permutations, slice bounds).
type constant struct {
	dtype int
	shape []int64
	f     []float32
	i     []int64 // int32 and int64 values
}

type converter struct {
	g      onnx.Graph
	nodes  map[string]*node
	consts map[string]*constant
	dtype  map[string]int // every tensor's TensorFlow dtype
	n      int            // for unique helper names
}

// readWeights loads every manifest weight: they are the Const nodes' values,
// stored back to back across the shards.
func (c *converter) readWeights(dir string, m *modelJSON) error {
	for _, group := range m.Manifest {
		var data []byte
		for _, p := range group.Paths {
			if strings.Contains(p, "/") || strings.Contains(p, "..") {
				return fmt.Errorf("weights path %q leaves the model directory", p)
			}
			b, err := os.ReadFile(filepath.Join(dir, p))
			if err != nil {
				return err
			}
			data = append(data, b...)
		}
		for _, w := range group.Weights {
			if len(w.Quantization) > 0 && string(w.Quantization) != "null" {
				return fmt.Errorf("weight %s is quantized; only float32 and int32 weights are supported", w.Name)
			}
			count := int64(1)
			for _, d := range w.Shape {
				if d < 0 || d > 1<<31 {
					return fmt.Errorf("weight %s has dimension %d", w.Name, d)
				}
				count *= d
				if count > 1<<31 {
					return fmt.Errorf("weight %s is too large (%v)", w.Name, w.Shape)
				}
			}
			size := 4 * count
			if int64(len(data)) < size {
				return fmt.Errorf("weight %s: the shards end %d bytes early", w.Name, size-int64(len(data)))
			}
			k := &constant{shape: w.Shape}
			switch w.Dtype {
			case "float32":
				k.dtype = dtFloat
				k.f = make([]float32, count)
				for i := range k.f {
					k.f[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
				}
			case "int32":
				k.dtype = dtInt32
				k.i = make([]int64, count)
				for i := range k.i {
					k.i[i] = int64(int32(binary.LittleEndian.Uint32(data[4*i:])))
				}
			default:
				return fmt.Errorf("weight %s has dtype %s; only float32 and int32 are supported", w.Name, w.Dtype)
			}
			data = data[size:]
			c.consts[w.Name] = k
		}
	}
	return nil
}

// topoSort orders nodes so that each comes after its inputs, as ONNX
// requires (GraphDef lists them in any order).
func topoSort(nodes []node) ([]*node, error) {
	byName := make(map[string]*node, len(nodes))
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	state := map[string]int{} // 1 visiting, 2 done
	order := make([]*node, 0, len(nodes))
	var visit func(n *node) error
	visit = func(n *node) error {
		switch state[n.Name] {
		case 1:
			return fmt.Errorf("node %s is in a cycle", n.Name)
		case 2:
			return nil
		}
		state[n.Name] = 1
		for _, in := range n.Input {
			dep, ok := byName[baseName(in)]
			if !ok {
				return fmt.Errorf("node %s reads %s, which no node makes", n.Name, in)
			}
			if err := visit(dep); err != nil {
				return err
			}
		}
		state[n.Name] = 2
		order = append(order, n)
		return nil
	}
	for i := range nodes {
		if err := visit(&nodes[i]); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func baseName(in string) string {
	in = strings.TrimPrefix(in, "^")
	if i := strings.LastIndexByte(in, ':'); i >= 0 {
		return in[:i]
	}
	return in
}

// tensorName is an input reference as the ONNX tensor it names: "x" and
// "x:0" are the same output.
func tensorName(in string) string { return strings.TrimSuffix(in, ":0") }

func onnxElem(dt int) int {
	switch dt {
	case dtFloat:
		return onnx.Float
	case dtInt32:
		return onnx.Int32
	case dtInt64:
		return onnx.Int64
	case dtBool:
		return onnx.Bool
	}
	return 0
}

func (c *converter) add(op string, in, out []string, attrs ...onnx.Attr) {
	c.g.Nodes = append(c.g.Nodes, onnx.Node{Op: op, Name: out[0], Inputs: in, Outputs: out, Attrs: attrs})
}

// temp returns a fresh tensor name derived from base.
func (c *converter) temp(base, what string) string {
	c.n++
	return fmt.Sprintf("%s/%s_%d", base, what, c.n)
}

// ints adds an int64 initializer and returns its name.
func (c *converter) ints(base string, v ...int64) string {
	name := c.temp(base, "const")
	c.g.Initializers = append(c.g.Initializers, onnx.Tensor{Name: name, Dims: []int64{int64(len(v))}, Elem: onnx.Int64, Int64: v})
	return name
}

// int64s casts a tensor to int64 (the index type ONNX ops require).
func (c *converter) int64s(base, in string) string {
	if c.dtype[in] == dtInt64 {
		return in
	}
	out := c.temp(base, "i64")
	c.add("Cast", []string{in}, []string{out}, onnx.Attr{Name: "to", Kind: 2, I: onnx.Int64})
	return out
}

// constOf returns the value of a Const input, which the op needs at
// conversion time.
func (c *converter) constOf(in string) (*constant, error) {
	k, ok := c.consts[baseName(in)]
	if !ok {
		return nil, fmt.Errorf("input %s must be a constant", in)
	}
	return k, nil
}

func (c *converter) convert(n *node) error {
	in := make([]string, 0, len(n.Input))
	for _, s := range n.Input {
		if !strings.HasPrefix(s, "^") { // control dependencies order nothing here
			in = append(in, tensorName(s))
		}
	}
	if need := arity[n.Op]; len(in) < need {
		return fmt.Errorf("%d inputs, the op takes %d", len(in), need)
	}
	out := n.Name
	// The output's dtype: an explicit attribute, else the first input's.
	dt := 0
	for _, key := range []string{"DstT", "out_type", "dtype", "T"} {
		if a, ok := n.Attr[key]; ok && a.dtype() != 0 {
			dt = a.dtype()
			break
		}
	}
	if dt == 0 && len(in) > 0 {
		dt = c.dtype[in[0]]
	}
	switch n.Op {
	case "Less", "Greater", "LogicalNot":
		dt = dtBool
	}
	if dt == dtInt64 {
		// TF.js has no int64: it runs every int64 tensor as int32 (and stores
		// int64 constants so), and so does the converted graph.
		dt = dtInt32
	}
	c.dtype[out] = dt
	unary := map[string]string{"Sin": "Sin", "Cos": "Cos", "Tanh": "Tanh", "Relu": "Relu", "LogicalNot": "Not", "Identity": "Identity"}
	binary := map[string]string{"Add": "Add", "AddV2": "Add", "BiasAdd": "Add", "Sub": "Sub", "Mul": "Mul", "RealDiv": "Div",
		"Maximum": "Max", "Minimum": "Min", "Less": "Less", "Greater": "Greater"}
	if op, ok := unary[n.Op]; ok {
		c.add(op, in[:1], []string{out})
		return nil
	}
	if op, ok := binary[n.Op]; ok {
		if n.Op == "BiasAdd" && n.Attr["data_format"].str() == "NCHW" {
			return fmt.Errorf("data_format NCHW is not supported")
		}
		c.add(op, in[:2], []string{out})
		return nil
	}
	switch n.Op {
	case "Const":
		k, ok := c.consts[n.Name]
		if !ok {
			return fmt.Errorf("no weight holds its value")
		}
		c.dtype[out] = k.dtype
		t := onnx.Tensor{Name: out, Dims: k.shape, Elem: onnxElem(k.dtype)}
		if k.dtype == dtFloat {
			t.Float = k.f
		} else {
			t.Int32 = make([]int32, len(k.i))
			for i, v := range k.i {
				t.Int32[i] = int32(v)
			}
		}
		c.g.Initializers = append(c.g.Initializers, t)
	case "Placeholder":
		shape := []onnx.Dim{}
		for i, d := range n.Attr["shape"].Shape.Dim {
			v, _ := d.Size.Int64()
			if v < 0 {
				shape = append(shape, onnx.Dim{Param: fmt.Sprintf("%s_%d", n.Name, i)})
			} else {
				shape = append(shape, onnx.Dim{Value: v})
			}
		}
		c.g.Inputs = append(c.g.Inputs, onnx.ValueInfo{Name: out, Elem: onnxElem(dt), Shape: shape})
	case "Cast":
		c.add("Cast", in[:1], []string{out}, onnx.Attr{Name: "to", Kind: 2, I: int64(onnxElem(dt))})
	case "Square":
		c.add("Mul", []string{in[0], in[0]}, []string{out})
	case "Rsqrt":
		root := c.temp(out, "sqrt")
		c.add("Sqrt", in[:1], []string{root})
		c.add("Reciprocal", []string{root}, []string{out})
	case "Softmax":
		c.add("Softmax", in[:1], []string{out}, onnx.Attr{Name: "axis", Kind: 2, I: -1})
	case "Shape":
		s := c.temp(out, "shape")
		c.add("Shape", in[:1], []string{s})
		c.dtype[s] = dtInt64
		c.add("Cast", []string{s}, []string{out}, onnx.Attr{Name: "to", Kind: 2, I: int64(onnxElem(dt))})
	case "Where":
		if len(in) != 1 {
			return fmt.Errorf("the three-input Where (select) is not supported")
		}
		nz, rows := c.temp(out, "nonzero"), c.temp(out, "rows")
		c.add("NonZero", in, []string{nz})
		c.add("Transpose", []string{nz}, []string{rows}, onnx.Attr{Name: "perm", Kind: 7, Ints: []int64{1, 0}})
		c.add("Cast", []string{rows}, []string{out}, onnx.Attr{Name: "to", Kind: 2, I: onnx.Int32})
	case "Reshape":
		c.add("Reshape", []string{in[0], c.int64s(out, in[1])}, []string{out})
	case "GatherV2":
		axis, err := c.scalar(in[2])
		if err != nil {
			return err
		}
		if bd := n.Attr["batch_dims"].int(); bd != 0 {
			return fmt.Errorf("batch_dims %d is not supported", bd)
		}
		c.add("Gather", in[:2], []string{out}, onnx.Attr{Name: "axis", Kind: 2, I: axis})
	case "GatherNd":
		c.add("GatherND", []string{in[0], c.int64s(out, in[1])}, []string{out})
	case "ScatterNd":
		// Zeros of the output's shape, then the updates at their indices
		// (the indices here are unique: TensorFlow would sum duplicates).
		zero := c.scalarConst(out, c.dtype[in[1]], 0)
		base := c.temp(out, "zeros")
		c.add("Expand", []string{zero, c.int64s(out, in[2])}, []string{base})
		c.add("ScatterND", []string{base, c.int64s(out, in[0]), in[1]}, []string{out})
		c.dtype[out] = c.dtype[in[1]]
	case "SparseToDense":
		// (indices, output_shape, values, default): the default everywhere,
		// then the values at their indices.
		base := c.temp(out, "dense")
		c.add("Expand", []string{in[3], c.int64s(out, in[1])}, []string{base})
		c.add("ScatterND", []string{base, c.int64s(out, in[0]), in[2]}, []string{out})
		c.dtype[out] = c.dtype[in[2]]
	case "Max", "Sum", "Mean", "Prod", "Min":
		k, err := c.constOf(in[1])
		if err != nil {
			return err
		}
		if len(k.i) == 0 {
			return fmt.Errorf("a reduction over no axes is not supported")
		}
		keep := int64(0)
		if n.Attr["keep_dims"].B {
			keep = 1
		}
		op := map[string]string{"Max": "ReduceMax", "Min": "ReduceMin", "Sum": "ReduceSum", "Mean": "ReduceMean", "Prod": "ReduceProd"}[n.Op]
		attrs := []onnx.Attr{{Name: "keepdims", Kind: 2, I: keep}}
		if op == "ReduceSum" { // an input since opset 13; the others' attribute until 18
			c.add(op, []string{in[0], c.ints(out, k.i...)}, []string{out}, attrs...)
		} else {
			c.add(op, in[:1], []string{out}, append(attrs, onnx.Attr{Name: "axes", Kind: 7, Ints: k.i})...)
		}
	case "ConcatV2":
		axis, err := c.scalar(in[len(in)-1])
		if err != nil {
			return err
		}
		c.add("Concat", in[:len(in)-1], []string{out}, onnx.Attr{Name: "axis", Kind: 2, I: axis})
	case "Pack":
		axis := n.Attr["axis"].int()
		parts := make([]string, len(in))
		for i, x := range in {
			parts[i] = c.temp(out, "unsqueeze")
			c.add("Unsqueeze", []string{x, c.ints(out, axis)}, []string{parts[i]})
		}
		c.add("Concat", parts, []string{out}, onnx.Attr{Name: "axis", Kind: 2, I: axis})
	case "ExpandDims":
		axis, err := c.scalar(in[1])
		if err != nil {
			return err
		}
		c.add("Unsqueeze", []string{in[0], c.ints(out, axis)}, []string{out})
	case "Squeeze":
		var axes []int64
		for _, s := range n.Attr["squeeze_dims"].List.I {
			v, _ := s.Int64()
			axes = append(axes, v)
		}
		if len(axes) == 0 {
			return fmt.Errorf("a squeeze of every unit axis is not supported")
		}
		c.add("Squeeze", []string{in[0], c.ints(out, axes...)}, []string{out})
	case "Transpose":
		k, err := c.constOf(in[1])
		if err != nil {
			return err
		}
		c.add("Transpose", in[:1], []string{out}, onnx.Attr{Name: "perm", Kind: 7, Ints: k.i})
	case "Range":
		c.add("Range", in[:3], []string{out})
	case "Slice":
		begin, err := c.constOf(in[1])
		if err != nil {
			return err
		}
		size, err := c.constOf(in[2])
		if err != nil {
			return err
		}
		if len(size.i) != len(begin.i) {
			return fmt.Errorf("begin and size have %d and %d values", len(begin.i), len(size.i))
		}
		ends := make([]int64, len(begin.i))
		axes := make([]int64, len(begin.i))
		for i := range ends {
			axes[i] = int64(i)
			ends[i] = begin.i[i] + size.i[i]
			if size.i[i] < 0 {
				ends[i] = math.MaxInt64
			}
		}
		c.add("Slice", []string{in[0], c.ints(out, begin.i...), c.ints(out, ends...), c.ints(out, axes...)}, []string{out})
	case "StridedSlice":
		return c.stridedSlice(n, in, out)
	case "SplitV":
		sizes, err := c.constOf(in[1])
		if err != nil {
			return err
		}
		axis, err := c.scalar(in[2])
		if err != nil {
			return err
		}
		outs := []string{out}
		for i := 1; i < len(sizes.i); i++ {
			o := fmt.Sprintf("%s:%d", out, i)
			outs = append(outs, o)
			c.dtype[o] = dt
		}
		for _, s := range sizes.i {
			if s < 0 {
				return fmt.Errorf("a split size of -1 is not supported")
			}
		}
		c.add("Split", []string{in[0], c.ints(out, sizes.i...)}, outs, onnx.Attr{Name: "axis", Kind: 2, I: axis})
	case "MatMul":
		a, b := in[0], in[1]
		if n.Attr["transpose_a"].B {
			a = c.transpose2(out, a)
		}
		if n.Attr["transpose_b"].B {
			b = c.transpose2(out, b)
		}
		c.add("MatMul", []string{a, b}, []string{out})
	case "BatchMatMul", "BatchMatMulV2":
		// Einsum transposes the last two axes whatever the rank.
		x, y := "...ij", "...jk"
		if n.Attr["adj_x"].B {
			x = "...ji"
		}
		if n.Attr["adj_y"].B {
			y = "...kj"
		}
		c.add("Einsum", in[:2], []string{out}, onnx.Attr{Name: "equation", Kind: 3, S: x + "," + y + "->...ik"})
	case "Conv2D":
		return c.conv1x1(n, in, out)
	default:
		return fmt.Errorf("op %s is not supported", n.Op)
	}
	return nil
}

func (c *converter) scalar(in string) (int64, error) {
	k, err := c.constOf(in)
	if err != nil {
		return 0, err
	}
	if len(k.i) != 1 {
		return 0, fmt.Errorf("input %s must be one integer", in)
	}
	return k.i[0], nil
}

// scalarConst adds a scalar initializer of a TensorFlow dtype.
func (c *converter) scalarConst(base string, dt int, v float64) string {
	name := c.temp(base, "scalar")
	t := onnx.Tensor{Name: name, Elem: onnxElem(dt)}
	switch dt {
	case dtFloat:
		t.Float = []float32{float32(v)}
	case dtInt64:
		t.Int64 = []int64{int64(v)}
	default:
		t.Int32 = []int32{int32(v)}
	}
	c.g.Initializers = append(c.g.Initializers, t)
	c.dtype[name] = dt
	return name
}

// transpose2 swaps a matrix's two axes.
func (c *converter) transpose2(base, in string) string {
	out := c.temp(base, "transpose")
	c.add("Transpose", []string{in}, []string{out}, onnx.Attr{Name: "perm", Kind: 7, Ints: []int64{1, 0}})
	return out
}

// stridedSlice maps TensorFlow's masks onto ONNX Slice bounds, then drops
// the shrunk axes.
func (c *converter) stridedSlice(n *node, in []string, out string) error {
	if n.Attr["ellipsis_mask"].int() != 0 || n.Attr["new_axis_mask"].int() != 0 {
		return fmt.Errorf("ellipsis and new-axis masks are not supported")
	}
	begin, err := c.constOf(in[1])
	if err != nil {
		return err
	}
	end, err := c.constOf(in[2])
	if err != nil {
		return err
	}
	strides, err := c.constOf(in[3])
	if err != nil {
		return err
	}
	bm, em, sm := n.Attr["begin_mask"].int(), n.Attr["end_mask"].int(), n.Attr["shrink_axis_mask"].int()
	k := len(begin.i)
	if len(end.i) != k || len(strides.i) != k {
		return fmt.Errorf("begin, end and strides have %d, %d and %d values", k, len(end.i), len(strides.i))
	}
	starts, ends, axes, steps := make([]int64, k), make([]int64, k), make([]int64, k), make([]int64, k)
	var shrink []int64
	for i := range k {
		b, e, s := begin.i[i], end.i[i], strides.i[i]
		if s == 0 {
			return fmt.Errorf("stride 0")
		}
		if bm&(1<<i) != 0 {
			b = 0
			if s < 0 {
				b = math.MaxInt64
			}
		}
		if em&(1<<i) != 0 {
			e = math.MaxInt64
			if s < 0 {
				e = math.MinInt64
			}
		}
		if sm&(1<<i) != 0 {
			e, s = b+1, 1
			if b == -1 {
				e = math.MaxInt64
			}
			shrink = append(shrink, int64(i))
		}
		starts[i], ends[i], axes[i], steps[i] = b, e, int64(i), s
	}
	sliced := out
	if len(shrink) > 0 {
		sliced = c.temp(out, "slice")
	}
	c.add("Slice", []string{in[0], c.ints(out, starts...), c.ints(out, ends...), c.ints(out, axes...), c.ints(out, steps...)}, []string{sliced})
	if len(shrink) > 0 {
		c.add("Squeeze", []string{sliced, c.ints(out, shrink...)}, []string{out})
	}
	return nil
}

// conv1x1 is a Conv2D whose kernel is 1×1 with unit strides and dilations
// (how Tensor2Tensor writes a dense layer over NHWC): a MatMul over the
// last axis with the kernel as an [in, out] matrix.
func (c *converter) conv1x1(n *node, in []string, out string) error {
	k, err := c.constOf(in[1])
	if err != nil {
		return err
	}
	if len(k.shape) != 4 || k.shape[0] != 1 || k.shape[1] != 1 {
		return fmt.Errorf("only 1x1 kernels are supported, got %v", k.shape)
	}
	for _, key := range []string{"strides", "dilations"} {
		for _, s := range n.Attr[key].List.I {
			if v, _ := s.Int64(); v != 1 {
				return fmt.Errorf("%s other than 1 are not supported", key)
			}
		}
	}
	if f := n.Attr["data_format"].str(); f != "" && f != "NHWC" {
		return fmt.Errorf("data_format %s is not supported", f)
	}
	w := c.temp(out, "kernel")
	c.g.Initializers = append(c.g.Initializers, onnx.Tensor{Name: w, Dims: k.shape[2:], Elem: onnx.Float, Float: k.f})
	c.add("MatMul", []string{in[0], w}, []string{out})
	return nil
}
