package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"

	"github.com/fomnet/fomnet/internal/le"
)

// safetensors: an 8-byte little-endian header length, a JSON header mapping
// tensor names to dtype, shape and [begin, end) byte offsets into the data
// that follows, and an optional "__metadata__" map of strings. We write the
// header padded with spaces to a multiple of 8 bytes so that data is aligned.

// ErrSafetensors reports a malformed safetensors file.
var ErrSafetensors = errors.New("safetensors")

// maxHeader bounds the JSON header we accept (the reference implementation
// uses 100 MB).
const maxHeader = 100 << 20

var dtypeSize = map[string]int{"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I32": 4, "I64": 8, "U8": 1, "I8": 1}

// STensor is one tensor of a safetensors file.
type STensor struct {
	Name  string
	DType string
	Shape []int
	Data  []byte // little-endian elements
	// F32, for writing an F32 tensor, holds its elements instead of Data:
	// they are converted as they are written, never held twice.
	F32 []float32
	// Fill, for writing an F32 tensor neither Data nor F32 holds, produces
	// its elements a chunk at a time, in order (dst: the elements from
	// off), as they are written.
	Fill func(off int, dst []float32) error
}

// size is how many bytes t's data takes.
func (t STensor) size() int64 {
	switch {
	case t.F32 != nil:
		return 4 * int64(len(t.F32))
	case t.Fill != nil:
		n := int64(4)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		return n
	}
	return int64(len(t.Data))
}

// writeData writes t's data: Data, or F32 converted a chunk at a time, or
// Fill's chunks.
func (t STensor) writeData(w io.Writer) error {
	switch {
	case t.F32 != nil:
		return le.WriteFloats(w, t.F32)
	case t.Fill != nil:
		return le.WriteFilled(w, int(t.size()/4), t.Fill)
	}
	_, err := w.Write(t.Data)
	return err
}

type stEntry struct {
	DType   string   `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// WriteSafetensors writes tensors in the given order with optional metadata.
func WriteSafetensors(w io.Writer, tensors []STensor, meta map[string]string) error {
	header := map[string]any{}
	if len(meta) > 0 {
		header["__metadata__"] = meta
	}
	var off int64
	for _, t := range tensors {
		sz, ok := dtypeSize[t.DType]
		if !ok {
			return fmt.Errorf("%w: tensor %s: unknown dtype %q", ErrSafetensors, t.Name, t.DType)
		}
		n := int64(1)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		if n*int64(sz) != t.size() || (t.F32 != nil || t.Fill != nil) && t.DType != "F32" {
			return fmt.Errorf("%w: tensor %s: %d bytes for shape %v of %s", ErrSafetensors, t.Name, t.size(), t.Shape, t.DType)
		}
		if _, dup := header[t.Name]; dup || t.Name == "__metadata__" {
			return fmt.Errorf("%w: duplicate or reserved tensor name %q", ErrSafetensors, t.Name)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = stEntry{t.DType, shape, [2]int64{off, off + t.size()}}
		off += t.size()
	}
	js, err := json.Marshal(header) // map keys come out sorted: deterministic bytes
	if err != nil {
		return err
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	if buf, ok := w.(*bytes.Buffer); ok {
		buf.Grow(8 + len(js) + int(off)) // checkpoints are written to memory: one allocation
	}
	var lenb [8]byte
	binary.LittleEndian.PutUint64(lenb[:], uint64(len(js)))
	if _, err := w.Write(lenb[:]); err != nil {
		return err
	}
	if _, err := w.Write(js); err != nil {
		return err
	}
	for _, t := range tensors {
		if err := t.writeData(w); err != nil {
			return err
		}
	}
	return nil
}

// ReadSafetensors parses a whole file held in memory. The returned tensors'
// Data alias buf. Every offset, size and shape is checked; the data must be
// covered exactly, without gaps or overlaps, as the format requires.
func ReadSafetensors(buf []byte) ([]STensor, map[string]string, error) {
	ts, data, meta, err := indexSafetensors(buf)
	if err != nil {
		return nil, nil, err
	}
	out := make([]STensor, len(ts))
	for i, t := range ts {
		out[i] = t.STensor
		out[i].Data = data[t.b:t.e:t.e]
	}
	return out, meta, nil
}

// indexSafetensors parses the header of a whole file held in memory: its
// tensors with their offsets into data, the section after the header.
func indexSafetensors(buf []byte) (ts []stEntryAt, data []byte, meta map[string]string, err error) {
	hl, err := safetensorsHeaderLen(buf, int64(len(buf)))
	if err != nil {
		return nil, nil, nil, err
	}
	data = buf[8+hl:]
	ts, meta, err = parseSafetensorsHeader(buf[8:8+hl], int64(len(data)))
	return ts, data, meta, err
}

// stEntryAt is a tensor of a safetensors header and its data's offsets
// [b, e) from the start of the file.
type stEntryAt struct {
	STensor
	b, e int64
}

// readSafetensorsIndex parses the header of the safetensors file r of size
// bytes, checked as ReadSafetensors checks it; each tensor's data stays in
// the file, at the offsets returned (Data is nil).
func readSafetensorsIndex(r io.ReaderAt, size int64) ([]stEntryAt, map[string]string, error) {
	var lb [8]byte
	if _, err := r.ReadAt(lb[:], 0); err != nil && size >= 8 {
		return nil, nil, fmt.Errorf("%w: %v", ErrSafetensors, err)
	}
	hl, err := safetensorsHeaderLen(lb[:], size)
	if err != nil {
		return nil, nil, err
	}
	h := make([]byte, hl)
	if _, err := r.ReadAt(h, 8); err != nil {
		return nil, nil, fmt.Errorf("%w: reading the header: %v", ErrSafetensors, err)
	}
	ts, meta, err := parseSafetensorsHeader(h, size-8-int64(hl))
	for i := range ts {
		ts[i].b += 8 + int64(hl)
		ts[i].e += 8 + int64(hl)
	}
	return ts, meta, err
}

// safetensorsHeaderLen checks the header length the file's first 8 bytes
// (of b) give against the file's size.
func safetensorsHeaderLen(b []byte, size int64) (uint64, error) {
	if size < 8 || len(b) < 8 {
		return 0, fmt.Errorf("%w: %d bytes is shorter than the 8-byte header length", ErrSafetensors, size)
	}
	hl := binary.LittleEndian.Uint64(b)
	if hl > maxHeader || hl > uint64(size-8) {
		return 0, fmt.Errorf("%w: header length %d exceeds the file (%d bytes) or the %d-byte limit", ErrSafetensors, hl, size, maxHeader)
	}
	return hl, nil
}

// parseSafetensorsHeader checks header h over dataLen bytes of data: every
// offset, size and shape, the data covered exactly. Tensors come sorted by
// name, their offsets relative to the data.
func parseSafetensorsHeader(h []byte, dataLen int64) ([]stEntryAt, map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(h, &raw); err != nil {
		return nil, nil, fmt.Errorf("%w: header is not a JSON object: %v", ErrSafetensors, err)
	}
	var meta map[string]string
	var out []stEntryAt
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, nil, fmt.Errorf("%w: __metadata__ must map strings to strings: %v", ErrSafetensors, err)
			}
			continue
		}
		var e stEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: %v", ErrSafetensors, name, err)
		}
		sz, ok := dtypeSize[e.DType]
		if !ok {
			return nil, nil, fmt.Errorf("%w: tensor %q: unknown dtype %q", ErrSafetensors, name, e.DType)
		}
		n := int64(1)
		for _, d := range e.Shape {
			if d < 0 || (d > 0 && n > math.MaxInt64/int64(d)/8) {
				return nil, nil, fmt.Errorf("%w: tensor %q: bad shape %v", ErrSafetensors, name, e.Shape)
			}
			n *= int64(d)
		}
		b, en := e.Offsets[0], e.Offsets[1]
		if b < 0 || en < b || en > dataLen {
			return nil, nil, fmt.Errorf("%w: tensor %q: offsets [%d, %d) outside the %d data bytes", ErrSafetensors, name, b, en, dataLen)
		}
		if en-b != n*int64(sz) {
			return nil, nil, fmt.Errorf("%w: tensor %q: %d bytes for shape %v of %s (want %d)", ErrSafetensors, name, en-b, e.Shape, e.DType, n*int64(sz))
		}
		out = append(out, stEntryAt{STensor{Name: name, DType: e.DType, Shape: e.Shape}, b, en})
	}
	spans := slices.Clone(out)
	sort.Slice(spans, func(i, j int) bool {
		return spans[i].b < spans[j].b || spans[i].b == spans[j].b && spans[i].e < spans[j].e
	})
	var at int64
	for _, s := range spans {
		if s.b != at {
			return nil, nil, fmt.Errorf("%w: tensor %q starts at byte %d, expected %d (gap or overlap)", ErrSafetensors, s.Name, s.b, at)
		}
		at = s.e
	}
	if at != dataLen {
		return nil, nil, fmt.Errorf("%w: tensors cover %d of %d data bytes", ErrSafetensors, at, dataLen)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, meta, nil
}

// bytesF32 decodes little-endian floats into dst (len(b) == 4·len(dst)).
func bytesF32(dst []float32, b []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}
