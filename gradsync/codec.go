package gradsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A Codec turns a pseudo-gradient (or any float32 vector) into bytes for
// the network and back. Encoding may lose information; ErrorFeedback keeps
// what was lost so that it is sent in a later round.
//
// Every encoding starts with a 4-byte magic that names the codec and its
// version, then the element count as uint32; Decode checks both and every
// size, and rejects anything malformed with ErrDecode (its decoders are
// fuzzed).
type Codec interface {
	// Name is the codec's name in configs and reports.
	Name() string
	// Encode appends the encoding of x to dst.
	Encode(dst []byte, x []float32) []byte
	// Decode fills dst (whose length must match the encoded count) from b.
	Decode(dst []float32, b []byte) error
	// EncodedLen is the exact encoded size of an n-element vector.
	EncodedLen(n int) int
}

// ErrDecode reports malformed encoded data.
var ErrDecode = errors.New("gradsync: malformed encoding")

// BytesPerParam is a codec's encoded size per element for n elements.
func BytesPerParam(c Codec, n int) float64 { return float64(c.EncodedLen(n)) / float64(n) }

// NewCodec builds a codec by name: "fp32", "int8" or "int4" (blockwise
// absmax, block elements per scale), "int2" (blockwise ternary, block
// elements per scale) or "topk" (top frac of each chunk of chunk elements,
// 2-bit values).
func NewCodec(name string, block, chunk int, frac float64) (Codec, error) {
	switch name {
	case "fp32":
		return FP32{}, nil
	case "int8", "int4", "int2":
		if block < 1 || block > 1<<20 {
			return nil, fmt.Errorf("gradsync: %s block %d out of range [1, 2^20]", name, block)
		}
		switch name {
		case "int4":
			return Int4{Block: block}, nil
		case "int2":
			return Int2{Block: block}, nil
		}
		return Int8{Block: block}, nil
	case "topk":
		if chunk < 2 || chunk > 1<<16 {
			return nil, fmt.Errorf("gradsync: topk chunk %d out of range [2, 65536]", chunk)
		}
		if !(frac > 0 && frac <= 1) {
			return nil, fmt.Errorf("gradsync: topk fraction %v must lie in (0, 1]", frac)
		}
		return TopK{Chunk: chunk, Frac: frac}, nil
	}
	return nil, fmt.Errorf("gradsync: unknown codec %q (want fp32, int8, int4, int2 or topk)", name)
}

func header(dst []byte, magic string, n int) []byte {
	dst = append(dst, magic...)
	return binary.LittleEndian.AppendUint32(dst, uint32(n))
}

// blockPayload checks a blockwise codec's encoding of n elements: header,
// block size in range, and a payload of one 4-byte scale per block plus
// values bytes of packed values. It returns the block size and the payload.
func blockPayload(b []byte, magic, name string, n, values int) (int, []byte, error) {
	p, err := checkHeader(b, magic, n)
	if err != nil {
		return 0, nil, err
	}
	if len(p) < 4 {
		return 0, nil, fmt.Errorf("%w: %s block size missing", ErrDecode, name)
	}
	block := int(binary.LittleEndian.Uint32(p))
	if block < 1 || block > 1<<20 {
		return 0, nil, fmt.Errorf("%w: %s block %d out of range", ErrDecode, name, block)
	}
	p = p[4:]
	if want := 4*((n+block-1)/block) + values; len(p) != want {
		return 0, nil, fmt.Errorf("%w: %s payload of %d bytes; %d elements in blocks of %d need %d", ErrDecode, name, len(p), n, block, want)
	}
	return block, p, nil
}

func checkHeader(b []byte, magic string, n int) ([]byte, error) {
	if len(b) < 8 || string(b[:4]) != magic {
		return nil, fmt.Errorf("%w: want magic %q", ErrDecode, magic)
	}
	if got := int(binary.LittleEndian.Uint32(b[4:])); got != n {
		return nil, fmt.Errorf("%w: encodes %d elements, destination has %d", ErrDecode, got, n)
	}
	return b[8:], nil
}

// FP32 sends values as they are: the lossless reference, 4 bytes each.
type FP32 struct{}

const magicFP32 = "GF1\x01"

func (FP32) Name() string         { return "fp32" }
func (FP32) EncodedLen(n int) int { return 8 + 4*n }
func (FP32) Encode(dst []byte, x []float32) []byte {
	dst = header(dst, magicFP32, len(x))
	for _, v := range x {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

func (FP32) Decode(dst []float32, b []byte) error {
	p, err := checkHeader(b, magicFP32, len(dst))
	if err != nil {
		return err
	}
	if len(p) != 4*len(dst) {
		return fmt.Errorf("%w: fp32 payload of %d bytes for %d elements", ErrDecode, len(p), len(dst))
	}
	for i := range dst {
		v := math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: non-finite value at %d", ErrDecode, i)
		}
		dst[i] = v
	}
	return nil
}

// Int8 quantises each block of Block elements to int8 with one float32
// scale (the block's largest magnitude / 127): error at most scale/2 per
// element, about 1 + 4/Block bytes an element.
type Int8 struct{ Block int }

const magicInt8 = "GI8\x01"

func (c Int8) Name() string { return "int8" }
func (c Int8) EncodedLen(n int) int {
	return 12 + n + 4*((n+c.Block-1)/c.Block)
}

func (c Int8) Encode(dst []byte, x []float32) []byte {
	dst = header(dst, magicInt8, len(x))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(c.Block))
	for b0 := 0; b0 < len(x); b0 += c.Block {
		blk := x[b0:min(b0+c.Block, len(x))]
		var amax float32
		for _, v := range blk {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		scale := amax / 127
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(scale))
		inv := float32(0)
		if scale > 0 {
			inv = 1 / scale
		}
		for _, v := range blk {
			q := math.Round(float64(v * inv))
			q = max(-127, min(127, q))
			dst = append(dst, byte(int8(q)))
		}
	}
	return dst
}

func (c Int8) Decode(dst []float32, b []byte) error {
	block, p, err := blockPayload(b, magicInt8, "int8", len(dst), len(dst))
	if err != nil {
		return err
	}
	for b0, k := 0, 0; b0 < len(dst); b0 += block {
		scale := math.Float32frombits(binary.LittleEndian.Uint32(p[k:]))
		if !(scale >= 0) || math.IsInf(float64(scale*127), 0) {
			return fmt.Errorf("%w: int8 block at %d has scale %v", ErrDecode, b0, scale)
		}
		k += 4
		for i := b0; i < min(b0+block, len(dst)); i++ {
			q := int8(p[k])
			if q == -128 {
				return fmt.Errorf("%w: int8 value -128 at %d (the encoder never writes it)", ErrDecode, i)
			}
			dst[i] = float32(q) * scale
			k++
		}
	}
	return nil
}

// Int4 is Int8 with 4-bit values: each block of Block elements shares one
// float32 scale (largest magnitude / 7) and each value is a signed nibble in
// [−7, 7]; error at most scale/2, about 0.5 + 4/Block bytes an element.
type Int4 struct{ Block int }

const magicInt4 = "GI4\x01"

func (c Int4) Name() string { return "int4" }
func (c Int4) EncodedLen(n int) int {
	return 12 + (n+1)/2 + 4*((n+c.Block-1)/c.Block)
}

func (c Int4) Encode(dst []byte, x []float32) []byte {
	dst = header(dst, magicInt4, len(x))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(c.Block))
	// All block scales first, then the nibbles, two a byte (low first),
	// written block by block into the zeroed payload.
	nb := (len(x) + c.Block - 1) / c.Block
	at := len(dst)
	dst = append(dst, make([]byte, 4*nb+(len(x)+1)/2)...)
	scales, vals := dst[at:at+4*nb], dst[at+4*nb:]
	for b := range nb {
		b0 := b * c.Block
		blk := x[b0:min(b0+c.Block, len(x))]
		scale := int4Scale(blk)
		binary.LittleEndian.PutUint32(scales[4*b:], math.Float32bits(scale))
		if !(scale > 0) { // every nibble 0 (a NaN in the block included)
			continue
		}
		inv := 1 / scale
		if math.IsInf(float64(scale*7), 0) || math.IsInf(float64(inv), 0) {
			for k, v := range blk {
				q := int8(max(-7, min(7, math.Round(float64(v*inv)))))
				vals[(b0+k)>>1] |= byte(q) & 0x0f << (4 * ((b0 + k) & 1))
			}
			continue
		}
		// Finite scale and inverse: every v·inv is finite and within
		// [−7, 7] give or take a rounding, so rounding it half away from
		// zero is the truncation of |v·inv| + 0.5 (exact in float64) with
		// v's sign — without a branch on the sign, which mispredicts.
		for k, v := range blk {
			n := min(7, int(math.Abs(float64(v*inv))+0.5))
			s := int(int32(math.Float32bits(v)) >> 31) // 0, or −1 if negative
			q := (n ^ s) - s
			vals[(b0+k)>>1] |= byte(q) & 0x0f << (4 * ((b0 + k) & 1))
		}
	}
	return dst
}

// int4Scale is a block's scale, its largest magnitude / 7: the largest
// magnitude found as the largest of the magnitudes' bits (they order as the
// values do; branch-free), NaN as the float max gives it where one is there.
func int4Scale(blk []float32) float32 {
	var mb uint32
	for _, v := range blk {
		mb = max(mb, math.Float32bits(v)&^(1<<31))
	}
	amax := math.Float32frombits(mb)
	if mb > 0x7f800000 { // a NaN
		amax = 0
		for _, v := range blk {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
	}
	return amax / 7
}

func (c Int4) Decode(dst []float32, b []byte) error {
	block, p, err := blockPayload(b, magicInt4, "int4", len(dst), (len(dst)+1)/2)
	if err != nil {
		return err
	}
	nb := (len(dst) + block - 1) / block
	scales, vals := p[:4*nb], p[4*nb:]
	for b := range nb {
		b0 := b * block
		scale := math.Float32frombits(binary.LittleEndian.Uint32(scales[4*b:]))
		if !(scale >= 0) || math.IsInf(float64(scale*7), 0) {
			return fmt.Errorf("%w: int4 block of element %d has scale %v", ErrDecode, b0, scale)
		}
		for i := b0; i < min(b0+block, len(dst)); i++ {
			q := int8(vals[i>>1]<<(4-4*(i&1))) >> 4 // the nibble, sign-extended
			if q == -8 {
				return fmt.Errorf("%w: int4 value -8 at %d (the encoder never writes it)", ErrDecode, i)
			}
			dst[i] = float32(q) * scale
		}
	}
	if len(dst)%2 == 1 && vals[len(vals)-1]>>4 != 0 {
		return fmt.Errorf("%w: int4 padding nibble is not zero", ErrDecode)
	}
	return nil
}

// Int2 is a ternary codec: each block of Block elements shares one float32
// scale, the mean magnitude of the block, and each element is sent as −1, 0
// or +1 times it in 2 bits (0 → 0, 1 → +1, 3 → −1; 2 is never written), four
// a byte, low bits first: about 0.25 + 4/Block bytes an element. The error
// per element is large (an element below half the scale is sent as 0, one
// far above it as the scale) and is meant to be carried by error feedback,
// which sends what was lost in later rounds.
type Int2 struct{ Block int }

const magicInt2 = "GI2\x01"

func (c Int2) Name() string { return "int2" }
func (c Int2) EncodedLen(n int) int {
	return 12 + (n+3)/4 + 4*((n+c.Block-1)/c.Block)
}

func (c Int2) Encode(dst []byte, x []float32) []byte {
	dst = header(dst, magicInt2, len(x))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(c.Block))
	scales := make([]float32, 0, (len(x)+c.Block-1)/c.Block)
	for b0 := 0; b0 < len(x); b0 += c.Block {
		blk := x[b0:min(b0+c.Block, len(x))]
		var sum float64
		for _, v := range blk {
			sum += math.Abs(float64(v))
		}
		scale := float32(sum / float64(len(blk)))
		if math.IsInf(float64(scale), 0) || scale != scale {
			scale = 0 // a non-finite block is sent as zeros
		}
		scales = append(scales, scale)
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(scale))
	}
	var cur byte
	for i, v := range x {
		var code byte
		if scale := scales[i/c.Block]; scale > 0 {
			switch q := v / scale; {
			case q >= 0.5:
				code = 1
			case q <= -0.5:
				code = 3
			}
		}
		cur |= code << (2 * (i % 4))
		if i%4 == 3 {
			dst = append(dst, cur)
			cur = 0
		}
	}
	if len(x)%4 != 0 {
		dst = append(dst, cur)
	}
	return dst
}

func (c Int2) Decode(dst []float32, b []byte) error {
	block, p, err := blockPayload(b, magicInt2, "int2", len(dst), (len(dst)+3)/4)
	if err != nil {
		return err
	}
	nb := (len(dst) + block - 1) / block
	scales, vals := p[:4*nb], p[4*nb:]
	for i := range dst {
		scale := math.Float32frombits(binary.LittleEndian.Uint32(scales[4*(i/block):]))
		if !(scale >= 0) || math.IsInf(float64(scale), 0) {
			return fmt.Errorf("%w: int2 block of element %d has scale %v", ErrDecode, i, scale)
		}
		switch (vals[i/4] >> (2 * (i % 4))) & 3 {
		case 0:
			dst[i] = 0
		case 1:
			dst[i] = scale
		case 3:
			dst[i] = -scale
		default:
			return fmt.Errorf("%w: int2 code 2 at %d (the encoder never writes it)", ErrDecode, i)
		}
	}
	if r := len(dst) % 4; r != 0 && vals[len(vals)-1]>>(2*r) != 0 {
		return fmt.Errorf("%w: int2 padding bits are not zero", ErrDecode)
	}
	return nil
}
