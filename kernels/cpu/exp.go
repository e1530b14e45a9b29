package cpu

import "math"

// expf is a float32 exponential accurate to about 2 ulp over the range that
// softmax and SiLU use, and several times faster than math.Exp. It is plain
// float32 arithmetic, so its result depends only on its input.
//
// exp(x) = 2^n · exp(r) with n = round(x/ln2) and |r| <= ln2/2; exp(r) is a
// degree-6 Taylor polynomial (truncation error below 7e-8 relative).
func expf(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375 // exact in a few bits, so n*ln2hi is exact
		ln2lo = -2.12194440e-4
	)
	if x > 88.72283 {
		return float32(math.Inf(1))
	}
	if x < -87.33654 {
		return 0
	}
	if x != x {
		return x
	}
	fn := float32(math.Floor(float64(x*log2e) + 0.5))
	r := x - fn*ln2hi
	r = r - fn*ln2lo
	p := float32(1.0 / 720)
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	n := int32(fn)
	// 2^n split in two factors so that n = 128 (x near the top of the range)
	// and n = -126 stay representable.
	h := n / 2
	s1 := math.Float32frombits(uint32(h+127) << 23)
	s2 := math.Float32frombits(uint32(n-h+127) << 23)
	return p * s1 * s2
}

// sigmoidf is 1/(1+e^-x) through expf.
func sigmoidf(x float32) float32 { return 1 / (1 + expf(-x)) }
