package cpu

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fomnet/fomnet/kernels"
)

// The backend's 8-bit AdamW is kernels.AdamW8Block on every block, the
// same bits on one thread or several.
func TestAdamW8MatchesDefinition(t *testing.T) {
	const n = 40*kernels.Adam8Block + 5
	r := rand.New(rand.NewPCG(3, 4))
	p0, g := make([]float32, n), make([]float32, n)
	for i := range p0 {
		p0[i], g[i] = float32(r.NormFloat64()), float32(r.NormFloat64()*1e-3)
	}
	nb := kernels.Adam8Blocks(n)
	h := kernels.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradScale: 0.5}
	// the definition, two steps
	wp, wm, wv := slices.Clone(p0), make([]byte, n), make([]byte, n)
	wms, wvs := make([]float32, nb), make([]float32, nb)
	for step := 1; step <= 2; step++ {
		h.Step = step
		c := h.Consts()
		for k := 0; k < nb; k++ {
			i, j := k*kernels.Adam8Block, min(n, (k+1)*kernels.Adam8Block)
			kernels.AdamW8Block(wp[i:j], g[i:j], wm[i:j], wv[i:j], &wms[k], &wvs[k], &c, i, nil, nil)
		}
	}
	for _, threads := range []int{1, 3} {
		be, err := New(Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		a, ok := kernels.AsAdam8(kernels.NewTimed(be))
		if !ok {
			t.Fatal("the cpu backend (timed) has no 8-bit AdamW")
		}
		p, gb := be.Alloc(n), be.Alloc(n)
		m, v := a.AllocBytes(n), a.AllocBytes(n)
		ms, vs := be.Alloc(nb), be.Alloc(nb)
		be.Upload(p, p0)
		be.Upload(gb, g)
		for step := 1; step <= 2; step++ {
			h.Step = step
			a.AdamW8(p, gb, m, v, ms, vs, h)
		}
		gotM, gotV := make([]byte, n), make([]byte, n)
		a.DownloadBytes(gotM, m)
		a.DownloadBytes(gotV, v)
		if !slices.Equal(F(p), wp) || !slices.Equal(gotM, wm) || !slices.Equal(gotV, wv) || !slices.Equal(F(ms), wms) || !slices.Equal(F(vs), wvs) {
			t.Errorf("%d threads: 8-bit AdamW differs from its definition", threads)
		}
		be.Close()
	}
}

// BenchmarkAdamW: fp32 and 8-bit AdamW over 4M parameters (ns/param).
func BenchmarkAdamW(b *testing.B) {
	const n = 1 << 22
	be, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	r := rand.New(rand.NewPCG(1, 1))
	g0 := make([]float32, n)
	for i := range g0 {
		g0[i] = float32(r.NormFloat64())
	}
	p, g := be.Alloc(n), be.Alloc(n)
	be.Upload(g, g0)
	h := kernels.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: 1}
	b.Run("fp32", func(b *testing.B) {
		m, v := be.Alloc(n), be.Alloc(n)
		be.AdamW(p, g, m, v, h)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			be.AdamW(p, g, m, v, h)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/param")
	})
	b.Run("8bit", func(b *testing.B) {
		nb := kernels.Adam8Blocks(n)
		m, v, ms, vs := be.AllocBytes(n), be.AllocBytes(n), be.Alloc(nb), be.Alloc(nb)
		be.AdamW8(p, g, m, v, ms, vs, h)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			be.AdamW8(p, g, m, v, ms, vs, h)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/param")
	})
}

// The AVX2 phases of 8-bit AdamW give the definitions' bits on blocks of
// every length up to two blocks (the vector part and the tail), values
// over the whole range of both codes (zeros of both signs, values in
// the codes' fixed-point range, values at the scale), the scale above
// the largest value, and scale 0.
func TestAdam8PhasesMatchDefinition(t *testing.T) {
	if !hasAVX2FMA {
		t.Skip("this processor has no AVX2+FMA: the phases are the definitions")
	}
	r := rand.New(rand.NewPCG(8, 9))
	value := func() float32 {
		switch r.IntN(8) {
		case 0:
			return 0
		case 1:
			return float32(math.Copysign(0, -1))
		default: // magnitudes over 2^-40 .. 1, both signs
			x := math.Ldexp(0.5+r.Float64()/2, -r.IntN(41))
			if r.IntN(2) == 0 {
				x = -x
			}
			return float32(x)
		}
	}
	same := func(what string, n int, got, want []float32) {
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s, length %d, value %d: %v (%#x), definition %v (%#x)", what, n, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
		}
	}
	for trial := range 3000 {
		n := 1 + trial%(2*kernels.Adam8Block)
		base, step := r.IntN(1<<20), uint32(1+r.IntN(1000))
		mq, vq := make([]uint8, n), make([]uint8, n)
		for i := range mq {
			mq[i], vq[i] = uint8(r.UintN(256)), uint8(r.UintN(256))
		}
		ms, vs := float32(r.ExpFloat64()), float32(r.ExpFloat64())
		m, v := make([]float32, n), make([]float32, n)
		wm, wv := make([]float32, n), make([]float32, n)
		adam8Decode(m, v, mq, vq, ms, vs)
		kernels.Adam8Decode(wm, wv, mq, vq, ms, vs)
		same("decode m", n, m, wm)
		same("decode v", n, v, wv)

		for i := range v {
			v[i] = float32(math.Abs(float64(value())))
			m[i] = value()
		}
		wv, wm = slices.Clone(v), slices.Clone(m)
		w, want := adam8Roots(v), kernels.Adam8Roots(wv)
		same("roots", n, append(v, w), append(wv, want))

		s := w
		switch trial % 5 {
		case 3:
			s *= 1 + float32(r.Float64())
		case 4:
			s = 0
		}
		gq, wq := make([]uint8, n), make([]uint8, n)
		mm, wmm := adam8EncodeV(v, m, gq, s, base, step), kernels.Adam8EncodeV(wv, wm, wq, s, base, step)
		if !slices.Equal(gq, wq) {
			t.Fatalf("encode v, length %d, scale %v: codes %v, definition %v", n, s, gq, wq)
		}
		same("encode v: m/w", n, append(m, mm), append(wm, wmm))

		s = mm
		if trial%5 == 3 {
			s *= 1 + float32(r.Float64())
		}
		adam8EncodeM(m, gq, s, base, step)
		kernels.Adam8EncodeM(wm, wq, s, base, step)
		if !slices.Equal(gq, wq) {
			t.Fatalf("encode m, length %d, scale %v: codes %v, definition %v", n, s, gq, wq)
		}
	}
}
