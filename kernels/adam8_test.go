package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// neighbours is the float64 reference: the codes of the given sign whose
// values are nearest r from below and from above (the same code when r is
// one), and the probability stochastic rounding should take the upper.
func neighbours(r float64, table *[256]float32, codes []int) (lo, hi uint8, p float64) {
	l, h := -1, -1
	for _, c := range codes {
		x := math.Abs(float64(table[c]))
		if x <= r && (l < 0 || x > math.Abs(float64(table[l]))) {
			l = c
		}
		if x >= r && (h < 0 || x < math.Abs(float64(table[h]))) {
			h = c
		}
	}
	a, b := math.Abs(float64(table[l])), math.Abs(float64(table[h]))
	if l == h {
		return uint8(l), uint8(h), 0
	}
	return uint8(l), uint8(h), (r - a) / (b - a)
}

func adam8Ratios() []float32 {
	r := rand.New(rand.NewPCG(8, 8))
	out := []float32{0, 1, 0x1p-14, 0x1p-18, 0x1p-19, 0x1p-30, 1e-45, 0.5, 0.75, 0.96875, 0x1.08p-1, 0x1.18p-3, 0x1.04p-14}
	for _, c := range vTable {
		out = append(out, c, math.Nextafter32(c, 2), math.Nextafter32(c, 0))
	}
	for c := range mTable {
		if x := mTable[c]; x >= 0 {
			out = append(out, x, math.Nextafter32(x, 2), math.Nextafter32(x, 0))
		}
	}
	for range 20000 {
		out = append(out, float32(math.Ldexp(r.Float64(), -r.IntN(24))))
	}
	kept := out[:0]
	for _, x := range out {
		if x <= 1 { // ratios to the block's largest
			kept = append(kept, x)
		}
	}
	return kept
}

// The codes against a float64 search over every code, over the tables'
// values, their neighbours and random ratios over 24 binades: with no
// random bits a ratio takes the code below it, with all of them the code
// above, and over the random bits it takes the upper code as often as its
// distance from the lower says (to the 64 evenly spaced bit patterns
// tried). Every code decodes and encodes back to itself whatever the bits.
func TestAdam8CodesStochastic(t *testing.T) {
	var pos, neg []int
	for c := range 128 {
		if math.Abs(float64(mTable[c])) <= 1 {
			pos, neg = append(pos, c), append(neg, c|128)
		}
	}
	var vcodes []int
	for c := range 256 {
		if vTable[c] <= 1 {
			vcodes = append(vcodes, c)
		}
	}
	check := func(what string, r float64, lo, hi uint8, p float64, enc func(rnd uint32) uint8, sh uint) {
		t.Helper()
		if p*(1<<23) < 1 { // below the fixed point's last bit: never up
			hi, p = lo, 0
		}
		if got := enc(0); got != lo {
			t.Fatalf("%s(%g) with no random bits = %d, want %d", what, r, got, lo)
		}
		if got := enc(^uint32(0)); got != hi {
			t.Fatalf("%s(%g) with every random bit = %d, want %d", what, r, got, hi)
		}
		up := 0
		for k := range 64 {
			rnd := uint32(k) << (sh - 6) // spread over the bits that round
			switch enc(rnd) {
			case hi:
				if hi != lo {
					up++
				}
			case lo:
			default:
				t.Fatalf("%s(%g) took a code that is not a neighbour", what, r)
			}
		}
		if math.Abs(float64(up)/64-p) > 1.0/64+1e-9 {
			t.Fatalf("%s(%g): up %d/64 times, want p = %.4f", what, r, up, p)
		}
	}
	for _, r32 := range adam8Ratios() {
		r := float64(r32)
		sh := uint(19)
		if r < 0x1p-14 {
			sh = 23
		}
		lo, hi, p := neighbours(r, &vTable, vcodes)
		if r > 0 && hi == 0 { // never reached: 0 is only exact 0
			t.Fatalf("ratio %g: no upper v code", r)
		}
		if r > 0 && lo == 0 {
			lo = 1 // a positive w is never held as 0
			if hi == 0 || vTable[hi] < vTable[1] {
				hi = 1
			}
			if r <= float64(vTable[1]) {
				p = 0
				hi = 1
			}
		}
		if r > 0 && r < float64(vTable[1]) {
			check("EncodeV", r, 1, 1, 0, func(rnd uint32) uint8 { return EncodeV(r32, 1, rnd) }, sh)
		} else {
			check("EncodeV", r, lo, hi, p, func(rnd uint32) uint8 { return EncodeV(r32, 1, rnd) }, sh)
		}
		msh := uint(19)
		if r < 0x1p-6 {
			msh = 23
		}
		for _, sign := range []float32{1, -1} {
			codes := pos
			if sign < 0 {
				codes = neg
			}
			lo, hi, p := neighbours(r, &mTable, codes)
			if mTable[lo] == 0 {
				lo = 0
			}
			if mTable[hi] == 0 {
				hi = 0
			}
			x := sign * r32
			check("EncodeM", float64(x), lo, hi, p, func(rnd uint32) uint8 { return EncodeM(x, 1, rnd) }, msh)
		}
	}
	for c := range 256 {
		for _, rnd := range []uint32{0, 12345, ^uint32(0)} {
			if c > 0 && vTable[c] <= 1 && EncodeV(DecodeV(uint8(c), 0.25), 0.25, rnd) != uint8(c) {
				t.Errorf("v code %d does not survive a round trip", c)
			}
			if mTable[c] != 0 && math.Abs(float64(mTable[c])) <= 1 && EncodeM(DecodeM(uint8(c), 4), 4, rnd) != uint8(c) {
				t.Errorf("m code %d does not survive a round trip", c)
			}
		}
	}
}

// adamRef is fp32 AdamW in float64: the update the 8-bit one approximates.
func adamRef(p, g, m, v []float64, h AdamWStep) {
	bc1 := 1 - math.Pow(float64(h.Beta1), float64(h.Step))
	bc2 := 1 - math.Pow(float64(h.Beta2), float64(h.Step))
	for i := range p {
		m[i] = float64(h.Beta1)*m[i] + (1-float64(h.Beta1))*g[i]
		v[i] = float64(h.Beta2)*v[i] + (1-float64(h.Beta2))*g[i]*g[i]
		p[i] -= float64(h.LR) * (m[i]/bc1/(math.Sqrt(v[i]/bc2)+float64(h.Eps)) + float64(h.WeightDecay)*p[i])
	}
}

// 8-bit AdamW follows float64 AdamW on noisy quadratics whose curvatures
// spread over a log-normal of σ up to 2 inside each block: after 300
// steps the parameters are where float64 AdamW put them to a fraction of
// a percent on average, and to 10% of the distance travelled at worst up
// to σ = 1. (At σ = 2 a parameter whose gradient is ~10⁷ times below its
// block's largest has √v clamped at 2^−18 of the block's and moves slower.)
// fp32 AdamW, computed the same way, is the control.
func TestAdamW8FollowsAdamW(t *testing.T) {
	const n = 3*Adam8Block + 77
	for _, spread := range []float64{0, 0.5, 1, 2} {
		r := rand.New(rand.NewPCG(1, 2))
		target, scale := make([]float64, n), make([]float64, n)
		for i := range target {
			target[i] = r.NormFloat64()
			scale[i] = math.Exp(r.NormFloat64() * spread)
		}
		p32, g32 := make([]float32, n), make([]float32, n)
		m32, v32 := make([]float32, n), make([]float32, n)
		p64, m64, v64 := make([]float64, n), make([]float64, n), make([]float64, n)
		mq, vq := make([]uint8, n), make([]uint8, n)
		ms, vs := make([]float32, Adam8Blocks(n)), make([]float32, Adam8Blocks(n))
		pf := make([]float32, n)
		g64 := make([]float64, n)
		gf := make([]float32, n)
		for step := 1; step <= 300; step++ {
			for i := range g64 {
				noise := 0.1 * r.NormFloat64()
				g64[i] = scale[i] * (p64[i] - target[i] + noise)
				g32[i] = float32(scale[i] * (float64(p32[i]) - target[i] + noise))
				gf[i] = float32(scale[i] * (float64(pf[i]) - target[i] + noise))
			}
			h := AdamWStep{LR: 0.01, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.01, Step: step}
			adamRef(p64, g64, m64, v64, h)
			c := h.Consts()
			for k := range ms {
				i, j := k*Adam8Block, min((k+1)*Adam8Block, n)
				AdamW8Block(p32[i:j], g32[i:j], mq[i:j], vq[i:j], &ms[k], &vs[k], &c, i, nil, nil)
			}
			for i := range pf {
				gi := gf[i]
				m32[i] = c.B1*m32[i] + c.OmB1*gi
				v32[i] = c.B2*v32[i] + c.OmB2*gi*gi
				pf[i] -= c.LR * ((m32[i]*c.IBC1)/(float32(math.Sqrt(float64(v32[i]*c.IBC2)))+c.Eps) + c.WD*pf[i])
			}
		}
		var worst, worstF, mean float64
		for i := range p64 {
			d := math.Abs(float64(p32[i])-p64[i]) / (math.Abs(target[i]) + 0.1)
			worst = max(worst, d)
			mean += d / n
			worstF = max(worstF, math.Abs(float64(pf[i])-p64[i])/(math.Abs(target[i])+0.1))
		}
		t.Logf("σ %.1f: 8-bit worst %.4f mean %.4f; fp32 worst %.4f", spread, worst, mean, worstF)
		if mean > 0.01 || spread <= 1 && worst > 0.1 || worstF > 1e-3 {
			t.Errorf("σ %.1f: 8-bit AdamW ends %.4f (mean) and %.4f (worst) of the distance from float64 AdamW; fp32 %.4f", spread, mean, worst, worstF)
		}
	}
}

// Moments follow their float64 values as gradients quieten: 100 steps of
// unit gradients, then 400 a hundred times smaller, β2 = 0.99 (v falls by
// 1% a step, less than half the codes' spacing). Rounded to the nearest
// code, v would stay near its peak; stochastic rounding tracks it.
func TestAdamW8MomentsDecay(t *testing.T) {
	const n = 4 * Adam8Block
	r := rand.New(rand.NewPCG(5, 6))
	p, g := make([]float32, n), make([]float32, n)
	mq, vq := make([]uint8, n), make([]uint8, n)
	ms, vs := make([]float32, Adam8Blocks(n)), make([]float32, Adam8Blocks(n))
	v64 := make([]float64, n)
	h := AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8}
	for step := 1; step <= 500; step++ {
		scale := 1.0
		if step > 100 {
			scale = 0.01
		}
		for i := range g {
			g[i] = float32(scale * (1 + 0.1*r.NormFloat64()))
			v64[i] = 0.99*v64[i] + 0.01*float64(g[i])*float64(g[i])
		}
		h.Step = step
		c := h.Consts()
		for k := range ms {
			i := k * Adam8Block
			AdamW8Block(p[i:i+Adam8Block], g[i:i+Adam8Block], mq[i:i+Adam8Block], vq[i:i+Adam8Block], &ms[k], &vs[k], &c, i, nil, nil)
		}
	}
	var ratio float64
	for i := range v64 {
		w := float64(DecodeV(vq[i], vs[i/Adam8Block]))
		ratio += w * w / v64[i] / n
	}
	t.Logf("held v / float64 v after the decay: %.4f on average", ratio)
	if math.Abs(ratio-1) > 0.05 {
		t.Errorf("held v is %.3f× the float64 v on average after gradients quietened", ratio)
	}
}
