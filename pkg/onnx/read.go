package onnx

import (
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// Info is what a model file declares about itself: its graph's inputs and
// outputs with their types and shapes, opsets and metadata. Reading it skips
// the weights, so it is cheap for large files.
type Info struct {
	IRVersion int64
	Producer  string
	Opsets    map[string]int64 // domain ("" for the default) → version
	Inputs    []ValueInfo
	Outputs   []ValueInfo
	Metadata  map[string]string
}

// ErrFormat marks a file that is not a well-formed ONNX model.
var ErrFormat = errors.New("not a valid ONNX model")

// ReadInfoFile reads a model's Info from path.
func ReadInfoFile(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	info, err := ReadInfo(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}

// ReadInfo reads a model's Info from r, which holds size bytes.
func ReadInfo(r io.ReaderAt, size int64) (*Info, error) {
	info := &Info{Opsets: map[string]int64{}, Metadata: map[string]string{}}
	sawGraph := false
	err := fields(r, 0, size, func(num protowire.Number, typ protowire.Type, v uint64, off, n int64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			info.IRVersion = int64(v)
		case num == 2 && typ == protowire.BytesType:
			b, err := read(r, off, n, 1<<20)
			info.Producer = string(b)
			return err
		case num == 7 && typ == protowire.BytesType:
			sawGraph = true
			return readGraph(r, off, off+n, info)
		case num == 8 && typ == protowire.BytesType:
			b, err := read(r, off, n, 1<<16)
			if err != nil {
				return err
			}
			var domain string
			var version int64
			if err := parse(b, func(num protowire.Number, typ protowire.Type, v uint64, s []byte) {
				switch num {
				case 1:
					domain = string(s)
				case 2:
					version = int64(v)
				}
			}); err != nil {
				return err
			}
			info.Opsets[domain] = version
		case num == 14 && typ == protowire.BytesType:
			b, err := read(r, off, n, 1<<24)
			if err != nil {
				return err
			}
			var k, val string
			if err := parse(b, func(num protowire.Number, _ protowire.Type, _ uint64, s []byte) {
				switch num {
				case 1:
					k = string(s)
				case 2:
					val = string(s)
				}
			}); err != nil {
				return err
			}
			info.Metadata[k] = val
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !sawGraph || info.IRVersion == 0 {
		return nil, fmt.Errorf("%w: no graph or IR version (is this an ONNX file?)", ErrFormat)
	}
	return info, nil
}

func readGraph(r io.ReaderAt, start, end int64, info *Info) error {
	return fields(r, start, end, func(num protowire.Number, typ protowire.Type, _ uint64, off, n int64) error {
		if typ != protowire.BytesType || (num != 11 && num != 12) {
			return nil // nodes and initializers are skipped
		}
		b, err := read(r, off, n, 1<<20)
		if err != nil {
			return err
		}
		vi, err := parseValueInfo(b)
		if err != nil {
			return err
		}
		if num == 11 {
			info.Inputs = append(info.Inputs, vi)
		} else {
			info.Outputs = append(info.Outputs, vi)
		}
		return nil
	})
}

// parseValueInfo decodes a ValueInfoProto holding a tensor type.
func parseValueInfo(b []byte) (ValueInfo, error) {
	var vi ValueInfo
	var typ []byte
	err := parse(b, func(num protowire.Number, _ protowire.Type, _ uint64, s []byte) {
		switch num {
		case 1:
			vi.Name = string(s)
		case 2:
			typ = s
		}
	})
	if err != nil {
		return vi, err
	}
	var tensor []byte
	if err := parse(typ, func(num protowire.Number, _ protowire.Type, _ uint64, s []byte) {
		if num == 1 {
			tensor = s
		}
	}); err != nil {
		return vi, err
	}
	var shape []byte
	if err := parse(tensor, func(num protowire.Number, _ protowire.Type, v uint64, s []byte) {
		switch num {
		case 1:
			vi.Elem = int(v)
		case 2:
			shape = s
		}
	}); err != nil {
		return vi, err
	}
	var errs []error
	if err := parse(shape, func(num protowire.Number, _ protowire.Type, _ uint64, s []byte) {
		if num != 1 {
			return
		}
		var d Dim
		errs = append(errs, parse(s, func(num protowire.Number, _ protowire.Type, v uint64, p []byte) {
			switch num {
			case 1:
				d.Value = int64(v)
			case 2:
				d.Param = string(p)
			}
		}))
		vi.Shape = append(vi.Shape, d)
	}); err != nil {
		return vi, err
	}
	return vi, errors.Join(errs...)
}

// fields walks the fields of the message in r[start:end] without reading
// length-delimited contents; f gets their offset and length.
func fields(r io.ReaderAt, start, end int64, f func(num protowire.Number, typ protowire.Type, v uint64, off, n int64) error) error {
	var buf [2 * binary64]byte
	for off := start; off < end; {
		k := min(int64(len(buf)), end-off)
		if _, err := r.ReadAt(buf[:k], off); err != nil && err != io.EOF {
			return err
		}
		num, typ, tn := protowire.ConsumeTag(buf[:k])
		if tn < 0 {
			return fmt.Errorf("%w: bad field tag at byte %d", ErrFormat, off)
		}
		off += int64(tn)
		rest := buf[tn:k]
		var v uint64
		var n int64
		switch typ {
		case protowire.VarintType:
			val, vn := protowire.ConsumeVarint(rest)
			if vn < 0 {
				return fmt.Errorf("%w: bad varint at byte %d", ErrFormat, off)
			}
			v, off = val, off+int64(vn)
		case protowire.Fixed32Type:
			off += 4
		case protowire.Fixed64Type:
			off += 8
		case protowire.BytesType:
			l, ln := protowire.ConsumeVarint(rest)
			if ln < 0 || l > uint64(end-off-int64(ln)) {
				return fmt.Errorf("%w: field %d at byte %d overruns its message", ErrFormat, num, off)
			}
			off += int64(ln)
			n = int64(l)
		default:
			return fmt.Errorf("%w: unsupported wire type %d at byte %d", ErrFormat, typ, off)
		}
		if off > end {
			return fmt.Errorf("%w: truncated at byte %d", ErrFormat, end)
		}
		if err := f(num, typ, v, off, n); err != nil {
			return err
		}
		off += n
	}
	return nil
}

const binary64 = 10 // bytes of the longest varint

// read returns r[off:off+n], refusing fields larger than limit.
func read(r io.ReaderAt, off, n, limit int64) ([]byte, error) {
	if n > limit {
		return nil, fmt.Errorf("%w: a %d-byte header field at byte %d", ErrFormat, n, off)
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil && !(err == io.EOF && n == 0) {
		return nil, err
	}
	return b, nil
}

// parse walks an in-memory message: s holds bytes fields' contents.
func parse(b []byte, f func(num protowire.Number, typ protowire.Type, v uint64, s []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: bad tag", ErrFormat)
		}
		b = b[n:]
		var v uint64
		var s []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			s, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: bad field %d", ErrFormat, num)
		}
		b = b[n:]
		f(num, typ, v, s)
	}
	return nil
}
