package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/fomnet/fomnet/kernels"
)

// Version is the GGUF version written.
const Version = 3

// DefaultAlignment is the tensor data alignment when general.alignment is
// absent.
const DefaultAlignment = 32

// ErrFormat reports a malformed GGUF file.
var ErrFormat = errors.New("gguf")

// Type is a ggml tensor element type.
type Type uint32

// The element types this package writes.
const (
	F32  Type = 0
	F16  Type = 1
	Q8_0 Type = 8
	BF16 Type = 30
)

func (t Type) String() string {
	switch t {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case Q8_0:
		return "Q8_0"
	case BF16:
		return "BF16"
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// ParseType maps "f32", "f16", "bf16", "q8_0" to a Type.
func ParseType(s string) (Type, error) {
	switch s {
	case "f32", "F32":
		return F32, nil
	case "f16", "F16":
		return F16, nil
	case "bf16", "BF16":
		return BF16, nil
	case "q8_0", "Q8_0":
		return Q8_0, nil
	}
	return 0, fmt.Errorf("unknown tensor type %q (f32, f16, bf16, q8_0)", s)
}

// Q8Block is the number of values in one Q8_0 block: an f16 scale and 32
// signed bytes (34 bytes).
const Q8Block = 32

// rowBytes is the size of n values of type t (n a multiple of the block).
func rowBytes(t Type, n uint64) (uint64, error) {
	switch t {
	case F32:
		return 4 * n, nil
	case F16, BF16:
		return 2 * n, nil
	case Q8_0:
		if n%Q8Block != 0 {
			return 0, fmt.Errorf("Q8_0 needs rows of a multiple of %d values, not %d", Q8Block, n)
		}
		return n / Q8Block * (2 + Q8Block), nil
	}
	return 0, fmt.Errorf("unsupported tensor type %d", uint32(t))
}

// Metadata value types.
const (
	tUint8   uint32 = 0
	tInt8    uint32 = 1
	tUint16  uint32 = 2
	tInt16   uint32 = 3
	tUint32  uint32 = 4
	tInt32   uint32 = 5
	tFloat32 uint32 = 6
	tBool    uint32 = 7
	tString  uint32 = 8
	tArray   uint32 = 9
	tUint64  uint32 = 10
	tInt64   uint32 = 11
	tFloat64 uint32 = 12
)

// KV is one metadata entry. Value is one of uint8, int8, uint16, int16,
// uint32, int32, uint64, int64, float32, float64, bool, string, or a slice
// of those ([]string, []int32, []float32, …; no nested arrays).
type KV struct {
	Key   string
	Value any
}

// Tensor is one tensor: Dims fastest-varying first, Data already encoded
// as Type (see Encode).
type Tensor struct {
	Name string
	Dims []uint64
	Type Type
	Data []byte
}

// Elements is the product of the dims.
func (t Tensor) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

type writer struct {
	w   io.Writer
	n   int64
	err error
}

func (w *writer) bytes(b []byte) {
	if w.err != nil {
		return
	}
	n, err := w.w.Write(b)
	w.n += int64(n)
	w.err = err
}

func (w *writer) u32(v uint32) { w.bytes(binary.LittleEndian.AppendUint32(nil, v)) }
func (w *writer) u64(v uint64) { w.bytes(binary.LittleEndian.AppendUint64(nil, v)) }
func (w *writer) str(s string) { w.u64(uint64(len(s))); w.bytes([]byte(s)) }

// scalar returns the type code and encoding of a scalar value.
func scalar(v any) (uint32, []byte, bool) {
	le := binary.LittleEndian
	switch x := v.(type) {
	case uint8:
		return tUint8, []byte{x}, true
	case int8:
		return tInt8, []byte{byte(x)}, true
	case uint16:
		return tUint16, le.AppendUint16(nil, x), true
	case int16:
		return tInt16, le.AppendUint16(nil, uint16(x)), true
	case uint32:
		return tUint32, le.AppendUint32(nil, x), true
	case int32:
		return tInt32, le.AppendUint32(nil, uint32(x)), true
	case uint64:
		return tUint64, le.AppendUint64(nil, x), true
	case int64:
		return tInt64, le.AppendUint64(nil, uint64(x)), true
	case float32:
		return tFloat32, le.AppendUint32(nil, math.Float32bits(x)), true
	case float64:
		return tFloat64, le.AppendUint64(nil, math.Float64bits(x)), true
	case bool:
		if x {
			return tBool, []byte{1}, true
		}
		return tBool, []byte{0}, true
	case string:
		return tString, append(le.AppendUint64(nil, uint64(len(x))), x...), true
	}
	return 0, nil, false
}

func (w *writer) value(key string, v any) error {
	if t, b, ok := scalar(v); ok {
		w.u32(t)
		w.bytes(b)
		return nil
	}
	var et uint32
	var elems []any
	switch x := v.(type) {
	case []string:
		et, elems = array(x)
	case []int32:
		et, elems = array(x)
	case []uint32:
		et, elems = array(x)
	case []float32:
		et, elems = array(x)
	case []bool:
		et, elems = array(x)
	default:
		return fmt.Errorf("%w: metadata %q: unsupported value type %T", ErrFormat, key, v)
	}
	w.u32(tArray)
	w.u32(et)
	w.u64(uint64(len(elems)))
	for _, e := range elems {
		_, b, _ := scalar(e)
		w.bytes(b)
	}
	return nil
}

// array returns the element type code of x and its elements as values
// scalar encodes.
func array[T any](x []T) (uint32, []any) {
	var zero T
	et, _, _ := scalar(zero)
	out := make([]any, len(x))
	for i, e := range x {
		out[i] = e
	}
	return et, out
}

// Write writes a GGUF v3 file: the metadata in the order given, then the
// tensors in the order given, each aligned to alignment (0: the default,
// 32; any other value is recorded as general.alignment). Keys must be
// unique, tensor names unique, and each tensor's data the size its dims
// and type imply.
func Write(w io.Writer, kvs []KV, tensors []Tensor, alignment int) error {
	if alignment == 0 {
		alignment = DefaultAlignment
	}
	if alignment < 1 || alignment%8 != 0 {
		return fmt.Errorf("%w: alignment %d is not a positive multiple of 8", ErrFormat, alignment)
	}
	seen := map[string]bool{}
	for _, kv := range kvs {
		if seen[kv.Key] || kv.Key == "" {
			return fmt.Errorf("%w: metadata key %q empty or repeated", ErrFormat, kv.Key)
		}
		seen[kv.Key] = true
	}
	if alignment != DefaultAlignment && !seen["general.alignment"] {
		kvs = append(kvs, KV{"general.alignment", uint32(alignment)})
	}
	offsets := make([]uint64, len(tensors))
	var off uint64
	names := map[string]bool{}
	for i, t := range tensors {
		if names[t.Name] || t.Name == "" {
			return fmt.Errorf("%w: tensor name %q empty or repeated", ErrFormat, t.Name)
		}
		names[t.Name] = true
		if len(t.Dims) == 0 || len(t.Dims) > 4 {
			return fmt.Errorf("%w: tensor %s: %d dims (1 to 4)", ErrFormat, t.Name, len(t.Dims))
		}
		per, err := rowBytes(t.Type, t.Dims[0])
		if err != nil {
			return fmt.Errorf("%w: tensor %s: %v", ErrFormat, t.Name, err)
		}
		if want := per * (t.Elements() / t.Dims[0]); uint64(len(t.Data)) != want {
			return fmt.Errorf("%w: tensor %s: %d bytes of data, %v %s needs %d", ErrFormat, t.Name, len(t.Data), t.Dims, t.Type, want)
		}
		offsets[i] = off
		off = align(off+uint64(len(t.Data)), uint64(alignment))
	}
	bw := &writer{w: w}
	bw.bytes([]byte("GGUF"))
	bw.u32(Version)
	bw.u64(uint64(len(tensors)))
	bw.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		bw.str(kv.Key)
		if err := bw.value(kv.Key, kv.Value); err != nil {
			return err
		}
	}
	for i, t := range tensors {
		bw.str(t.Name)
		bw.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			bw.u64(d)
		}
		bw.u32(uint32(t.Type))
		bw.u64(offsets[i])
	}
	pad := func(to uint64) {
		if n := int64(to) - bw.n; n > 0 {
			bw.bytes(make([]byte, n))
		}
	}
	base := align(uint64(bw.n), uint64(alignment))
	pad(base)
	for i, t := range tensors {
		pad(base + offsets[i])
		bw.bytes(t.Data)
	}
	return bw.err
}

func align(n, a uint64) uint64 { return (n + a - 1) / a * a }

// File is a parsed GGUF file.
type File struct {
	Version   uint32
	KV        map[string]any // scalars as their Go types; arrays as []any
	Keys      []string       // in file order
	Tensors   []Tensor       // Data slices the input
	Alignment int
}

// reader walks a byte slice; every read is bounds-checked.
type reader struct {
	b   []byte
	off uint64
	err error
}

func (r *reader) take(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b))-r.off {
		r.err = fmt.Errorf("%w: truncated at byte %d (need %d more, %d left)", ErrFormat, r.off, n, uint64(len(r.b))-r.off)
		return nil
	}
	out := r.b[r.off : r.off+n]
	r.off += n
	return out
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// maxString bounds a key or string value (tokens are short; a longer
// string is a corrupt length).
const maxString = 1 << 20

func (r *reader) str() string {
	n := r.u64()
	if r.err == nil && n > maxString {
		r.err = fmt.Errorf("%w: string of %d bytes at byte %d", ErrFormat, n, r.off-8)
		return ""
	}
	return string(r.take(n))
}

func (r *reader) scalar(t uint32) any {
	switch t {
	case tUint8:
		if b := r.take(1); b != nil {
			return b[0]
		}
	case tInt8:
		if b := r.take(1); b != nil {
			return int8(b[0])
		}
	case tUint16:
		if b := r.take(2); b != nil {
			return binary.LittleEndian.Uint16(b)
		}
	case tInt16:
		if b := r.take(2); b != nil {
			return int16(binary.LittleEndian.Uint16(b))
		}
	case tUint32:
		return r.u32()
	case tInt32:
		return int32(r.u32())
	case tUint64:
		return r.u64()
	case tInt64:
		return int64(r.u64())
	case tFloat32:
		return math.Float32frombits(r.u32())
	case tFloat64:
		return math.Float64frombits(r.u64())
	case tBool:
		if b := r.take(1); b != nil {
			if b[0] > 1 {
				r.err = fmt.Errorf("%w: bool value %d at byte %d", ErrFormat, b[0], r.off-1)
			}
			return b[0] == 1
		}
	case tString:
		return r.str()
	default:
		r.err = fmt.Errorf("%w: unknown value type %d at byte %d", ErrFormat, t, r.off-4)
	}
	return nil
}

// Read parses a GGUF v3 file held in b. Tensor data is not copied.
func Read(b []byte) (*File, error) {
	r := &reader{b: b}
	if m := r.take(4); r.err != nil || string(m) != "GGUF" {
		return nil, fmt.Errorf("%w: not a GGUF file (magic %q)", ErrFormat, m)
	}
	f := &File{Version: r.u32(), KV: map[string]any{}, Alignment: DefaultAlignment}
	if r.err == nil && f.Version != Version {
		return nil, fmt.Errorf("%w: version %d, this reader knows %d", ErrFormat, f.Version, Version)
	}
	nt, nkv := r.u64(), r.u64()
	// Every entry takes at least 8 bytes (a key length or a name length).
	if r.err == nil && (nt > uint64(len(b))/8 || nkv > uint64(len(b))/8) {
		return nil, fmt.Errorf("%w: %d tensors and %d metadata entries cannot fit in %d bytes", ErrFormat, nt, nkv, len(b))
	}
	for i := uint64(0); i < nkv && r.err == nil; i++ {
		k := r.str()
		t := r.u32()
		var v any
		if t == tArray {
			et, n := r.u32(), r.u64()
			if r.err == nil && (et == tArray || n > uint64(len(b))) {
				return nil, fmt.Errorf("%w: metadata %q: array of type %d, %d elements", ErrFormat, k, et, n)
			}
			arr := make([]any, 0, min(n, 1<<16))
			for j := uint64(0); j < n && r.err == nil; j++ {
				arr = append(arr, r.scalar(et))
			}
			v = arr
		} else {
			v = r.scalar(t)
		}
		if r.err != nil {
			break
		}
		if _, dup := f.KV[k]; dup {
			return nil, fmt.Errorf("%w: metadata key %q repeated", ErrFormat, k)
		}
		f.KV[k] = v
		f.Keys = append(f.Keys, k)
	}
	if r.err != nil {
		return nil, r.err
	}
	if a, ok := f.KV["general.alignment"]; ok {
		av, ok := a.(uint32)
		if !ok || av == 0 || av%8 != 0 || av > 1<<20 {
			return nil, fmt.Errorf("%w: general.alignment %v", ErrFormat, a)
		}
		f.Alignment = int(av)
	}
	type info struct {
		t   Tensor
		off uint64
	}
	infos := make([]info, 0, min(nt, 1<<16))
	names := map[string]bool{}
	for i := uint64(0); i < nt && r.err == nil; i++ {
		t := Tensor{Name: r.str()}
		nd := r.u32()
		if r.err == nil && (nd == 0 || nd > 4) {
			return nil, fmt.Errorf("%w: tensor %q: %d dims", ErrFormat, t.Name, nd)
		}
		for j := uint32(0); j < nd; j++ {
			t.Dims = append(t.Dims, r.u64())
		}
		t.Type = Type(r.u32())
		off := r.u64()
		if r.err != nil {
			break
		}
		if names[t.Name] {
			return nil, fmt.Errorf("%w: tensor %q repeated", ErrFormat, t.Name)
		}
		names[t.Name] = true
		infos = append(infos, info{t, off})
	}
	if r.err != nil {
		return nil, r.err
	}
	base := align(r.off, uint64(f.Alignment))
	// Check offsets, sizes and overlaps.
	type span struct{ lo, hi uint64 }
	spans := make([]span, 0, len(infos))
	for _, in := range infos {
		t := in.t
		n := uint64(1)
		for _, d := range t.Dims {
			if d == 0 || n > math.MaxUint64/d || n*d > uint64(len(b)) {
				return nil, fmt.Errorf("%w: tensor %s: dims %v", ErrFormat, t.Name, t.Dims)
			}
			n *= d
		}
		per, err := rowBytes(t.Type, t.Dims[0])
		if err != nil {
			return nil, fmt.Errorf("%w: tensor %s: %v", ErrFormat, t.Name, err)
		}
		size := per * (n / t.Dims[0])
		if in.off%uint64(f.Alignment) != 0 || in.off > uint64(len(b)) || base+in.off > uint64(len(b)) || size > uint64(len(b))-base-in.off {
			return nil, fmt.Errorf("%w: tensor %s: %d bytes at offset %d do not fit the file (%d bytes, data from %d) or are misaligned",
				ErrFormat, t.Name, size, in.off, len(b), base)
		}
		t.Data = b[base+in.off : base+in.off+size]
		f.Tensors = append(f.Tensors, t)
		spans = append(spans, span{in.off, in.off + size})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	for i := 1; i < len(spans); i++ {
		if spans[i].lo < spans[i-1].hi {
			return nil, fmt.Errorf("%w: tensor data overlaps at offset %d", ErrFormat, spans[i].lo)
		}
	}
	return f, nil
}

// Tensor finds a tensor by name.
func (f *File) Tensor(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// Encode converts float32 values to t's encoding. For Q8_0 the number of
// values must be a multiple of Q8Block.
func Encode(t Type, x []float32) ([]byte, error) {
	switch t {
	case F32:
		out := make([]byte, 4*len(x))
		for i, v := range x {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out, nil
	case F16:
		out := make([]byte, 2*len(x))
		for i, v := range x {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToF16(v))
		}
		return out, nil
	case BF16:
		out := make([]byte, 2*len(x))
		for i, v := range x {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToBF16(v))
		}
		return out, nil
	case Q8_0:
		if len(x)%Q8Block != 0 {
			return nil, fmt.Errorf("Q8_0: %d values is not a multiple of %d", len(x), Q8Block)
		}
		out := make([]byte, 0, len(x)/Q8Block*(2+Q8Block))
		for b := 0; b < len(x); b += Q8Block {
			blk := x[b : b+Q8Block]
			var amax float32
			for _, v := range blk {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			d := amax / 127
			out = binary.LittleEndian.AppendUint16(out, F32ToF16(d))
			inv := float32(0)
			if d != 0 {
				inv = 1 / d
			}
			for _, v := range blk {
				out = append(out, byte(int8(math.Round(float64(v*inv)))))
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported tensor type %d", uint32(t))
}

// Decode converts n values of type t back to float32.
func Decode(t Type, b []byte, n int) ([]float32, error) {
	per, err := rowBytes(t, uint64(n))
	if err != nil {
		return nil, err
	}
	if uint64(len(b)) != per {
		return nil, fmt.Errorf("%d bytes for %d %s values, want %d", len(b), n, t, per)
	}
	out := make([]float32, n)
	switch t {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = F16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case Q8_0:
		for blk := 0; blk < n/Q8Block; blk++ {
			p := b[blk*(2+Q8Block):]
			d := F16ToF32(binary.LittleEndian.Uint16(p))
			for j := 0; j < Q8Block; j++ {
				out[blk*Q8Block+j] = d * float32(int8(p[2+j]))
			}
		}
	}
	return out, nil
}

// F32ToBF16 rounds to the nearest bfloat16, ties to even (NaN stays NaN):
// kernels.BF16Bits, the rounding every bf16 path uses.
func F32ToBF16(v float32) uint16 { return kernels.BF16Bits(v) }

// F32ToF16 rounds to the nearest IEEE half, ties to even; overflow gives
// ±Inf, NaN stays NaN.
func F32ToF16(v float32) uint16 {
	u := math.Float32bits(v)
	sign := uint16(u>>16) & 0x8000
	exp := int32(u>>23&0xFF) - 127 + 15
	mant := u & 0x7FFFFF
	switch {
	case u&0x7FFFFFFF > 0x7F800000: // NaN
		return sign | 0x7E00
	case u&0x7FFFFFFF == 0x7F800000: // Inf
		return sign | 0x7C00
	case exp >= 0x1F: // overflow
		return sign | 0x7C00
	case exp <= 0: // subnormal half (or zero)
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		h := mant >> shift
		rem := mant & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && h&1 == 1 {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1FFF
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++ // may carry into the exponent, up to Inf: correct
	}
	return sign | uint16(h)
}

// F16ToF32 widens an IEEE half.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h >> 10 & 0x1F)
	mant := uint32(h & 0x3FF)
	switch {
	case exp == 0x1F:
		return math.Float32frombits(sign | 0x7F800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: value = mant × 2^-24.
		v := float32(mant) * float32(math.Ldexp(1, -24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// String renders a small summary (for errors and logs).
func (f *File) String() string {
	return fmt.Sprintf("GGUF v%d: %d metadata, %d tensors", f.Version, len(f.KV), len(f.Tensors))
}
