package cpu

import (
	"math"

	"github.com/fomnet/fomnet/kernels"
)

// Elementwise kernels with exponentials. Each has a Go version (the
// definition) and, on amd64, an AVX2+FMA twin in vec_amd64.s that performs
// the same float32 operations in the same order, so results do not depend
// on the code path. Explicit float32 conversions keep the Go compiler from
// fusing a multiply and an add where the definition has two roundings.

// fma32 returns a·b+c rounded once to float32, like the VFMADD instructions.
// The float64 product is exact; the sum is rounded to odd in float64 (via
// TwoSum), after which rounding to float32 is correct (53 ≥ 24+2 bits).
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	s := p + float64(c)
	bv := s - p
	e := (p - (s - bv)) + (float64(c) - bv)
	if e != 0 && !math.IsInf(s, 0) {
		bits := math.Float64bits(s)
		if bits&1 == 0 {
			if (e > 0) == (s > 0) {
				bits++
			} else {
				bits--
			}
			s = math.Float64frombits(bits)
		}
	}
	return float32(s)
}

// Constants of expCore.
const (
	expLo    = -87.33654 // exp(expLo) is about the smallest normal float32
	expHi    = 88.72283  // exp(expHi) is about the largest float32
	expLog2e = 1.44269504088896341
	expLn2Hi = 0.693359375 // few significant bits: k·ln2hi is exact
	expLn2Lo = -2.12194440e-4
)

// expCore is a float32 exponential accurate to about 2 ulp and several times
// faster than math.Exp. Inputs are clamped to [expLo, expHi] (so it never
// returns 0 or +Inf); NaN stays NaN.
//
// exp(t) = 2^k · exp(r), k = roundeven(t·log2e), r = t − k·ln2 (in two
// parts); exp(r) is a degree-6 Taylor polynomial in Horner form with FMA
// (truncation error below 7e-8 relative for |r| <= ln2/2).
func expCore(t float32) float32 {
	if t != t {
		return t
	}
	if t < expLo {
		t = expLo
	}
	if t > expHi {
		t = expHi
	}
	k := float32(math.RoundToEven(float64(float32(t * expLog2e))))
	r := fma32(-k, expLn2Hi, t)
	r = fma32(-k, expLn2Lo, r)
	p := float32(1.0 / 720)
	p = fma32(p, r, 1.0/120)
	p = fma32(p, r, 1.0/24)
	p = fma32(p, r, 1.0/6)
	p = fma32(p, r, 0.5)
	p = fma32(p, r, 1)
	p = fma32(p, r, 1)
	ki := int32(k)
	k1 := ki >> 1
	k2 := ki - k1
	p = p * math.Float32frombits(uint32(k1+127)<<23)
	return p * math.Float32frombits(uint32(k2+127)<<23)
}

// sigmoid is 1/(1+exp(0−g)).
func sigmoid(g float32) float32 { return 1 / (1 + expCore(0-g)) }

// expShift sets x[i] = exp(x[i]·scale − shift).
func (b *Backend) expShift(x []float32, scale, shift float32) {
	n8 := 0
	if b.fma && len(x) >= 8 {
		n8 = len(x) &^ 7
		expShiftAVX(&x[0], n8, scale, shift)
	}
	for i := n8; i < len(x); i++ {
		x[i] = expCore(float32(x[i]*scale) - shift)
	}
}

// swigluFwd sets h = silu(g)·u = (g·sigmoid(g))·u.
func (b *Backend) swigluFwd(h, g, u []float32) {
	n8 := 0
	if b.fma && len(h) >= 8 {
		n8 = len(h) &^ 7
		swigluFwdAVX(&h[0], &g[0], &u[0], n8)
	}
	for i := n8; i < len(h); i++ {
		gv := g[i]
		h[i] = float32(gv*sigmoid(gv)) * u[i]
	}
}

// swigluBwd sets du = dh·silu(g) and dg = dh·u·σ'(g)·… with
// silu'(g) = σ(g)·(1 + g·(1−σ(g))).
func (b *Backend) swigluBwd(dg, du, dh, g, u []float32) {
	n8 := 0
	if b.fma && len(dg) >= 8 {
		n8 = len(dg) &^ 7
		swigluBwdAVX(&dg[0], &du[0], &dh[0], &g[0], &u[0], n8)
	}
	for i := n8; i < len(dg); i++ {
		gv := g[i]
		sg := sigmoid(gv)
		du[i] = dh[i] * float32(gv*sg)
		d := float32(float32(dh[i]*u[i]) * sg)
		dg[i] = d * (1 + float32(gv*(1-sg)))
	}
}

// adamConst holds one AdamW step's constants; adamwAVX reads them in the
// order of kernels.AdamConst's fields.
type adamConst = kernels.AdamConst

// adamw applies adamwGo's update, eight lanes at a time where it can.
func (b *Backend) adamw(p, g, m, v []float32, c *adamConst) {
	n8 := 0
	if b.fma && len(p) >= 8 {
		n8 = len(p) &^ 7
		adamwAVX(&p[0], &g[0], &m[0], &v[0], n8, c)
	}
	adamwGo(p[n8:], g[n8:], m[n8:], v[n8:], c)
}

// adamwGo is the definition, kernels.AdamWFloat32.
func adamwGo(p, g, m, v []float32, c *adamConst) { kernels.AdamWFloat32(p, g, m, v, c) }

// sumsqLanes adds x[i]² to acc[i%16] with one float64 FMA each.
func (b *Backend) sumsqLanes(x []float32, acc *[16]float64) {
	n16 := 0
	if b.fma && len(x) >= 16 {
		n16 = len(x) &^ 15
		sumsqAVX(&x[0], n16, acc)
	}
	for i := n16; i < len(x); i++ {
		v := float64(x[i])
		acc[i%16] = math.FMA(v, v, acc[i%16])
	}
}

// sumLanes adds x[i] to acc[i%16] in float64.
func (b *Backend) sumLanes(x []float32, acc *[16]float64) {
	n16 := 0
	if b.fma && len(x) >= 16 {
		n16 = len(x) &^ 15
		sumAVX(&x[0], n16, acc)
	}
	for i := n16; i < len(x); i++ {
		acc[i%16] += float64(x[i])
	}
}

// sum64 is Σx in float64 over 16 interleaved lanes added in lane order.
func (b *Backend) sum64(x []float32) float64 {
	var acc [16]float64
	b.sumLanes(x, &acc)
	var s float64
	for _, v := range acc {
		s += v
	}
	return s
}

// scale multiplies x by s.
func (b *Backend) scale(x []float32, s float32) {
	n8 := 0
	if b.fma && len(x) >= 8 {
		n8 = len(x) &^ 7
		scaleAVX(&x[0], n8, s)
	}
	for i := n8; i < len(x); i++ {
		x[i] *= s
	}
}

// maxOf returns the largest value of x (len(x) > 0) as the vector code
// computes it: eight lanes, each keeping (acc > x ? acc : x), reduced
// pairwise. Without NaNs this is the plain maximum.
func (b *Backend) maxOf(x []float32) float32 {
	pick := func(a, c float32) float32 {
		if a > c {
			return a
		}
		return c
	}
	n8 := len(x) &^ 7
	var l [8]float32
	if n8 > 0 {
		if b.fma {
			l[0] = maxAVX(&x[0], n8)
			for i := 1; i < 8; i++ {
				l[i] = l[0]
			}
		} else {
			copy(l[:], x[:8])
			for i := 8; i < n8; i++ {
				l[i%8] = pick(l[i%8], x[i])
			}
			for j := 0; j < 4; j++ {
				l[j] = pick(l[j], l[j+4])
			}
			l[0], l[1] = pick(l[0], l[2]), pick(l[1], l[3])
			l[0] = pick(l[0], l[1])
		}
	} else {
		l[0] = x[0]
	}
	m := l[0]
	for i := n8; i < len(x); i++ {
		m = pick(m, x[i])
	}
	return m
}
