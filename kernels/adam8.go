package kernels

import (
	"math"
	"time"
)

// Adam8Block is how many parameters share one scale in 8-bit AdamW: a
// tensor's moments are cut into blocks of Adam8Block values from its first
// element (the last block may be shorter), and each block keeps its own
// largest magnitude as the scale of its codes.
const Adam8Block = 256

// Adam8Blocks is the number of scales n moments of one tensor need.
func Adam8Blocks(n int) int { return (n + Adam8Block - 1) / Adam8Block }

// ByteBuffer is an opaque handle to byte storage owned by one Backend.
type ByteBuffer interface {
	// Len is the number of bytes.
	Len() int
}

// Adam8Backend is the optional capability of keeping AdamW's moments in 8
// bits a value with a float32 scale per block (2.03 bytes a parameter for
// both moments instead of 8). A model asks for it with AsAdam8.
type Adam8Backend interface {
	// AllocBytes returns n zeroed bytes.
	AllocBytes(n int) ByteBuffer
	// ViewBytes returns a buffer aliasing b[off : off+n].
	ViewBytes(b ByteBuffer, off, n int) ByteBuffer
	// UploadBytes copies src into dst (equal lengths).
	UploadBytes(dst ByteBuffer, src []byte)
	// DownloadBytes copies src into dst (equal lengths).
	DownloadBytes(dst []byte, src ByteBuffer)
	// AdamW8 is AdamW with the moments of one tensor held as codes m and v
	// (one byte a parameter) and block scales ms and vs (Adam8Blocks of
	// the tensor's length): AdamW8Block on every block.
	AdamW8(params, grads Buffer, m, v ByteBuffer, ms, vs Buffer, h AdamWStep)
}

// AsAdam8 returns be's 8-bit AdamW, if it has one (through Timed too).
func AsAdam8(be Backend) (Adam8Backend, bool) {
	if t, ok := be.(*Timed); ok {
		if _, ok := AsAdam8(t.Backend); !ok {
			return nil, false
		}
		return timedAdam8{t}, true
	}
	a, ok := be.(Adam8Backend)
	return a, ok
}

type timedAdam8 struct{ t *Timed }

func (x timedAdam8) inner() Adam8Backend                         { a, _ := AsAdam8(x.t.Backend); return a }
func (x timedAdam8) AllocBytes(n int) ByteBuffer                 { return x.inner().AllocBytes(n) }
func (x timedAdam8) ViewBytes(b ByteBuffer, o, n int) ByteBuffer { return x.inner().ViewBytes(b, o, n) }
func (x timedAdam8) UploadBytes(dst ByteBuffer, src []byte)      { x.inner().UploadBytes(dst, src) }
func (x timedAdam8) DownloadBytes(dst []byte, src ByteBuffer)    { x.inner().DownloadBytes(dst, src) }
func (x timedAdam8) AdamW8(p, g Buffer, m, v ByteBuffer, ms, vs Buffer, h AdamWStep) {
	defer x.t.done(opAdamW, time.Now())
	x.inner().AdamW8(p, g, m, v, ms, vs, h)
}

// AdamConst is one AdamW step's constants, derived once per step from
// AdamWStep: the factors every backend multiplies by, so that they agree
// bit for bit.
type AdamConst struct {
	GS, B1, OmB1, B2, OmB2, IBC1, IBC2, Eps, WD, LR float32
	Step                                            uint32 // (8-bit AdamW's rounding)
}

// Consts derives the step's constants (bias corrections in float64, then
// rounded). Step must count from 1.
func (h AdamWStep) Consts() AdamConst {
	gs := h.GradScale
	if gs == 0 {
		gs = 1
	}
	return AdamConst{GS: gs, B1: h.Beta1, OmB1: 1 - h.Beta1, B2: h.Beta2, OmB2: 1 - h.Beta2,
		IBC1: float32(1 / (1 - math.Pow(float64(h.Beta1), float64(h.Step)))),
		IBC2: float32(1 / (1 - math.Pow(float64(h.Beta2), float64(h.Step)))),
		Eps:  h.Eps, WD: h.WeightDecay, LR: h.LR, Step: uint32(h.Step)}
}

// The codes. Both are small floating-point formats relative to a block's
// scale s (its largest magnitude), so that the error is relative — what
// AdamW's quotient m/√v needs — and values far below the block's largest
// keep their digits:
//
//   - v is held as w = √v, an unsigned E4M4 float of r = w/s ∈ [0, 1]: code
//     e<<4|f stands for 2^(e−15)·(1+f/16) when e ≥ 1 and f·2^−18 when e = 0
//     (codes 3–6% apart, r down to 2^−18, so v spans 2^36 in a block). A
//     positive w never becomes 0: below the smallest code it is held as that
//     code, over-estimating v (the update shrinks; dividing by a v rounded to
//     0 would blow it up).
//   - m is held as m/w (w as decoded), a sign and an E3M4 float of
//     |m/w|/s: sign<<7 | e<<4 | f stands for ±2^(e−7)·(1+f/16), or ±f·2^−10
//     when e = 0 (codes 3–6% apart). Relative to w, m's range in a block is
//     that of AdamW's normalised update — small: 2^−10 of the block's
//     largest update is as good as none, so three exponent bits do, and the
//     fourth mantissa bit halves the rounding noise (with E4M3 the demo fell
//     3% behind fp32 AdamW late in training) — and a parameter whose
//     gradients are far below its block's largest keeps its momentum where
//     m relative to the block would underflow to 0.
//
// Rounding is stochastic: a value between two codes takes the upper one
// with the probability of its distance from the lower, so a moment is
// held without bias. Rounded to the nearest code, a moment that moves by
// less than half the codes' spacing a step — v decaying by 1−β2 = 0.5% a
// step as gradients quieten, or 5% against codes 6% apart — stays where it
// was for ever: the first version did that, and its v, stuck high, took
// 2.5–4% lower losses than fp32 AdamW on tiny and demo by taking smaller
// steps (docs/BENCHMARKS.md). The random bits are a hash of the step and
// the parameter's index in its tensor (adamBits), so every machine and
// device rounds alike; the rounding itself is integer arithmetic on the
// float32's bits. Decoding multiplies the scale by an exact table value:
// one rounding.
var vTable, mTable [256]float32

func init() {
	for c := range 256 {
		e, f := c>>4, c&15
		if e == 0 {
			vTable[c] = float32(math.Ldexp(float64(f), -18))
		} else {
			vTable[c] = float32(math.Ldexp(1+float64(f)/16, e-15))
		}
		e, f = (c>>4)&7, c&15
		x := math.Ldexp(1+float64(f)/16, e-7)
		if e == 0 {
			x = math.Ldexp(float64(f), -10)
		}
		if c&128 != 0 {
			x = -x
		}
		mTable[c] = float32(x)
	}
}

// adamBits are the random bits that round parameter i's moments at a
// step: an integer hash (multiply, xor-shift) of both, different for m
// (odd) and v (even).
func adamBits(i, step uint32, odd uint32) uint32 {
	x := (2*i+odd)*0x9e3779b1 ^ step*0x85ebca77
	x ^= x >> 16
	x *= 0x7feb352d
	x ^= x >> 15
	x *= 0x846ca68b
	return x ^ x>>16
}

// floatCode rounds r ∈ [0, 1] stochastically with the random bits rnd to a
// code of 4 mantissa bits and an exponent of the given bias (15: 4 bits,
// 7: 3 bits). Above the smallest normal, 2^(1−bias), it rebiases the
// exponent and adds 19 random bits below the mantissa kept; below,
// r·2^(bias+3) (exact) in fixed point with 23 fractional bits gets 23
// random bits. Small enough to be inlined.
func floatCode(r float32, bias uint32, rnd uint32) uint8 {
	b := math.Float32bits(r)
	if b < (128-bias)<<23 {
		fx := uint32(r * math.Float32frombits((127+bias+3+23)<<23))
		return uint8((fx + rnd&(1<<23-1)) >> 23)
	}
	return uint8((b - (127-bias)<<23 + rnd&(1<<19-1)) >> 19)
}

// EncodeV is the code of w ≥ 0 (√v) in a block of scale s ≥ w (0 when s
// is 0), rounded with the random bits rnd.
func EncodeV(w, s float32, rnd uint32) uint8 {
	if w <= 0 || s <= 0 {
		return 0
	}
	return max(floatCode(min(w/s, 1), 15, rnd), 1)
}

// EncodeM is the code of x (m/w) in a block of scale s ≥ |x|, rounded with
// the random bits rnd.
func EncodeM(x, s float32, rnd uint32) uint8 {
	b := math.Float32bits(x)
	if s <= 0 || b<<1 == 0 {
		return 0
	}
	c := floatCode(min(math.Float32frombits(b&^(1<<31))/s, 1), 7, rnd)
	if c != 0 {
		c |= uint8(b>>24) & 128 // the sign
	}
	return c
}

// DecodeV and DecodeM are the values codes stand for in a block of scale s
// (w = √v and m/w).
func DecodeV(c uint8, s float32) float32 { return s * vTable[c] }
func DecodeM(c uint8, s float32) float32 { return s * mTable[c] }

// AdamWFloat32 is the definition of the fp32 AdamW update every backend
// computes:
//
//	g' = g·gs;  m = β1·m + (1−β1)·g';  v = β2·v + (1−β2)·g'·g'
//	p -= lr·( (m/bc1) / (√(v/bc2) + ε) + wd·p )
//
// with 1/bc precomputed, each product rounded to float32 on its own.
func AdamWFloat32(p, g, m, v []float32, c *AdamConst) {
	for i := range p {
		gi := g[i] * c.GS
		mi := float32(c.B1*m[i]) + float32(c.OmB1*gi)
		vi := float32(c.B2*v[i]) + float32(float32(c.OmB2*gi)*gi)
		m[i], v[i] = mi, vi
		den := float32(math.Sqrt(float64(vi*c.IBC2))) + c.Eps
		upd := float32(float32(mi*c.IBC1)/den) + float32(c.WD*p[i])
		p[i] -= float32(c.LR * upd)
	}
}

// Adam8Ops are the phases of one block's 8-bit AdamW update
// (AdamW8Block). A backend may replace any phase with a faster version of
// the same arithmetic; a nil phase is the definition. Every phase is
// elementwise except for the largest values it returns, so a backend may
// run a vector version on a prefix of the block and the definition on the
// rest.
type Adam8Ops struct {
	// Update is fp32 AdamW's step (AdamWFloat32's bits).
	Update func(p, g, m, v []float32, c *AdamConst)
	// Decode writes the moments the codes stand for (Adam8Decode).
	Decode func(m, v []float32, mq, vq []uint8, ms, vs float32)
	// Roots replaces v by w = √v and returns the largest w (Adam8Roots).
	Roots func(v []float32) float32
	// EncodeV codes w against the scale s, divides m by the decoded w and
	// returns the largest |m/w| (Adam8EncodeV).
	EncodeV func(w, m []float32, vq []uint8, s float32, base int, step uint32) float32
	// EncodeM codes m/w against the scale s (Adam8EncodeM).
	EncodeM func(m []float32, mq []uint8, s float32, base int, step uint32)
}

// withDefaults fills the phases o leaves nil with their definitions.
func (o *Adam8Ops) withDefaults() Adam8Ops {
	var d Adam8Ops
	if o != nil {
		d = *o
	}
	if d.Update == nil {
		d.Update = AdamWFloat32
	}
	if d.Decode == nil {
		d.Decode = Adam8Decode
	}
	if d.Roots == nil {
		d.Roots = Adam8Roots
	}
	if d.EncodeV == nil {
		d.EncodeV = Adam8EncodeV
	}
	if d.EncodeM == nil {
		d.EncodeM = Adam8EncodeM
	}
	return d
}

// AdamW8Block is the definition of the 8-bit AdamW update of one block of
// at most Adam8Block parameters: decode the moments (m = (m/w)·w, v = w·w,
// each product rounded), take fp32 AdamW's step on them, then encode
// w = √v against the block's new largest w, and m/w against the largest
// |m/w|: those become the block's scales ms (of m/w) and vs (of w).
// base is the index of the block's first parameter in its tensor (the
// random bits of rounding: adamBits). scratch holds the decoded moments
// (nil: allocated here; a caller that runs many blocks passes
// 2·Adam8Block values of its own). ops may replace phases with a
// backend's versions of the same bits (nil: the definitions).
func AdamW8Block(p, g []float32, mq, vq []uint8, ms, vs *float32, c *AdamConst, base int, scratch []float32, ops *Adam8Ops) {
	if len(scratch) < 2*len(p) {
		scratch = make([]float32, 2*len(p))
	}
	o := ops.withDefaults()
	m, v := scratch[:len(p)], scratch[len(p):2*len(p)]
	mq, vq = mq[:len(m)], vq[:len(m)]
	o.Decode(m, v, mq, vq, *ms, *vs)
	o.Update(p, g, m, v, c)
	wmax := o.Roots(v) // (the moments are finite: a step with a non-finite gradient is skipped)
	mmax := o.EncodeV(v, m, vq, wmax, base, c.Step)
	o.EncodeM(m, mq, mmax, base, c.Step)
	*ms, *vs = mmax, wmax
}

// Adam8Decode writes the moments codes mq and vq stand for in a block of
// scales ms (of m/w) and vs (of w): w = DecodeV, m = DecodeM·w, v = w·w.
func Adam8Decode(m, v []float32, mq, vq []uint8, ms, vs float32) {
	for i := range m {
		wo := DecodeV(vq[i], vs)
		m[i], v[i] = DecodeM(mq[i], ms)*wo, wo*wo
	}
}

// Adam8Roots replaces each v by w = √v (rounded once) and returns the
// largest w (0 for none).
func Adam8Roots(v []float32) float32 {
	var wmax float32
	for i, x := range v {
		w := float32(math.Sqrt(float64(x)))
		v[i] = w
		if w > wmax {
			wmax = w
		}
	}
	return wmax
}

// Adam8EncodeV codes each w (of parameter base+i at step) against the
// scale s, replaces m by m/w with w as decoded (0 where that is 0) and
// returns the largest |m/w|.
func Adam8EncodeV(w, m []float32, vq []uint8, s float32, base int, step uint32) float32 {
	var mmax float32
	for i := range m {
		vq[i] = EncodeV(w[i], s, adamBits(uint32(base+i), step, 0))
		if wq := DecodeV(vq[i], s); wq > 0 {
			m[i] /= wq
		} else {
			m[i] = 0
		}
		if a := math.Float32frombits(math.Float32bits(m[i]) &^ (1 << 31)); a > mmax {
			mmax = a
		}
	}
	return mmax
}

// Adam8EncodeM codes each m/w (of parameter base+i at step) against the
// scale s.
func Adam8EncodeM(m []float32, mq []uint8, s float32, base int, step uint32) {
	for i := range m {
		mq[i] = EncodeM(m[i], s, adamBits(uint32(base+i), step, 1))
	}
}
