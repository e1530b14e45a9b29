package cpu

import (
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
