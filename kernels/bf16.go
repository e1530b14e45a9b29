package kernels

import "math"

// BF16Backend is the optional capability of holding buffers in bfloat16:
// gradients, 2 bytes a parameter instead of 4, which is what lets the
// largest presets' gradients fit beside their weights on one GPU; and the
// activations only matrix products read (a backend whose products round
// their operands to bfloat16 anyway reads them as it would have rounded
// them: the same results, half the memory and traffic). A model asks for
// it with AsBF16. Values are rounded to bfloat16 when stored (nearest, ties
// to even: BF16Bits); every operation that accumulates into such a buffer
// adds in float32 and rounds once per stored value.
//
// A bfloat16 buffer may be passed as Matmul's operands A and B and its
// output C (accumulating or not), RMSNormForward's out, SwiGLUForward's h,
// SwiGLUBackward's dg and du,
// EmbeddingBackward's dtable, RMSNormBackward's dweight, the grads of
// SumSquares, AdamW and Adam8Backend's AdamW8, Copy's dst (which rounds
// a float32 src into it: a value two products read, rounded once), and to
// View, Zero, Upload and Download (which convert on the host). Any other
// operation given one panics with ErrShape.
type BF16Backend interface {
	// AllocBF16 returns a zeroed buffer of n bfloat16 values; Len counts
	// values, not float32s.
	AllocBF16(n int) Buffer
}

// AsBF16 returns be's bfloat16 buffers, if it has them (through Timed
// too). A backend that computes bit for bit as the CPU does (the
// CUDA fp32 path) has none.
func AsBF16(be Backend) (BF16Backend, bool) { return asBF16[BF16Backend](be) }

// asBF16 returns be's capability T (through Timed too) where be holds
// bfloat16 buffers: a backend that says it holds none (HoldsBF16) offers
// no bfloat16 capability, whatever methods it has.
func asBF16[T any](be Backend) (T, bool) {
	if t, ok := be.(*Timed); ok {
		return asBF16[T](t.Backend)
	}
	var none T
	if h, ok := be.(interface{ HoldsBF16() bool }); ok && !h.HoldsBF16() {
		return none, false
	}
	a, ok := be.(T)
	return a, ok
}

// BF16Bits rounds v to the nearest bfloat16, ties to even, and returns its
// bits; a NaN stays a (quiet) NaN. The GPU's conversion rounds the same way.
func BF16Bits(v float32) uint16 {
	u := math.Float32bits(v)
	if v != v {
		return uint16(u>>16) | 0x40
	}
	u += 0x7FFF + (u>>16)&1
	return uint16(u >> 16)
}

// BF16Float is the float32 value of bfloat16 bits h (exact).
func BF16Float(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
