package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// nearest is the float64 reference quantiser: the code whose value is
// nearest r, ties to the even code, among codes of the given sign.
func nearest(r float64, table *[256]float32, codes []int) uint8 {
	best, bd := -1, math.Inf(1)
	for _, c := range codes {
		d := math.Abs(float64(table[c]) - r)
		if d < bd || d == bd && c%2 == 0 {
			best, bd = c, d
		}
	}
	return uint8(best)
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
// values, their neighbours, ties and random ratios over 24 binades.
func TestAdam8CodesNearest(t *testing.T) {
	var pos, neg []int
	for c := range 128 {
		pos, neg = append(pos, c), append(neg, c|128)
	}
	all := append(append([]int{}, pos...), neg...)
	for _, r := range adam8Ratios() {
		want := nearest(float64(r), &vTable, all[:256])
		if r > 0 && want == 0 {
			want = 1 // a positive v is never held as 0
		}
		// vTable's codes above 240 exceed 1 and are never chosen for r ≤ 1.
		if got := EncodeV(r, 1); got != want {
			t.Fatalf("EncodeV(%g) = %d (%g), want %d (%g)", r, got, vTable[got], want, vTable[want])
		}
		for _, sign := range []float32{1, -1} {
			codes := pos
			if sign < 0 {
				codes = neg
			}
			want := nearest(float64(sign*r), &mTable, codes)
			if mTable[want] == 0 {
				want = 0
			}
			if got := EncodeM(sign*r, 1); got != want {
				t.Fatalf("EncodeM(%g) = %d (%g), want %d (%g)", sign*r, got, mTable[got], want, mTable[want])
			}
		}
	}
}

// Round trips: relative error within half a mantissa step where the code
// is normal; every code decodes and re-encodes to itself at any scale that
// keeps the decoded value exact.
func TestAdam8RoundTrip(t *testing.T) {
	for _, r := range adam8Ratios() {
		if r < 0x1p-14 {
			continue
		}
		for _, s := range []float32{1, 3.7e-9, 12.5} {
			x := r * s
			if dv := float64(DecodeV(EncodeV(x, s), s)); math.Abs(dv-float64(x)) > float64(x)*(1.0/32+1e-6) {
				t.Fatalf("v %g at scale %g decodes to %g", x, s, dv)
			}
			if dm := float64(DecodeM(EncodeM(-x, s), s)); math.Abs(dm+float64(x)) > float64(x)*(1.0/16+1e-6) {
				t.Fatalf("m %g at scale %g decodes to %g", -x, s, dm)
			}
		}
	}
	for c := range 256 {
		if vTable[c] <= 1 && EncodeV(DecodeV(uint8(c), 0.25), 0.25) != uint8(max(c, 1)) && c != 0 {
			t.Errorf("v code %d does not survive a round trip", c)
		}
		if mTable[c] != 0 && math.Abs(float64(mTable[c])) <= 1 && EncodeM(DecodeM(uint8(c), 4), 4) != uint8(c) {
			t.Errorf("m code %d does not survive a round trip", c)
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
				AdamW8Block(p32[i:j], g32[i:j], mq[i:j], vq[i:j], &ms[k], &vs[k], &c, nil, nil)
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
