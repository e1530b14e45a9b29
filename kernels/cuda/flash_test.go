package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cuda"
)

// roundedAttnOp is attnOp with every input rounded to bfloat16 first, so
// that the CPU backend computes exactly what the tensor-core kernels are
// given, and what remains between them is the kernels' own rounding (P and
// dS to bfloat16, the order of sums).
func roundedAttnOp(s kernels.AttnShape, docLen int) op {
	return func(be kernels.Backend) map[string][]float32 {
		r := rand.New(rand.NewPCG(uint64(s.T*s.NH), uint64(s.HD)))
		rnd := func(n int) []float32 {
			x := randn(r, n, 1)
			for i := range x {
				x[i] = bf16(x[i])
			}
			return x
		}
		nq, nk := s.B*s.T*s.NH*s.HD, s.B*s.T*s.KVH*s.HD
		q, k, v := up(be, rnd(nq)), up(be, rnd(nk)), up(be, rnd(nk))
		ds := make([]int32, s.B*s.T)
		for i := range ds { // documents of docLen tokens, shifted per sequence
			t := i % s.T
			start := t - (t+i/s.T*7)%docLen
			ds[i] = int32(max(start, 0))
		}
		dsb := upInt(be, ds)
		out, lse := be.Alloc(nq), be.Alloc(s.B*s.NH*s.T)
		be.AttentionForward(out, lse, q, k, v, dsb, s)
		dq, dk, dv := be.Alloc(nq), be.Alloc(nk), be.Alloc(nk)
		be.AttentionBackward(dq, dk, dv, up(be, rnd(nq)), q, k, v, out, lse, dsb, s)
		return map[string][]float32{"out": down(be, out), "lse": down(be, lse), "dq": down(be, dq), "dk": down(be, dk), "dv": down(be, dv)}
	}
}

// TestFlashAttentionRows: the tensor-core attention against the CPU backend
// row by row (each head's row of HD values within 3% of its norm, each lse
// within 0.01), over several key blocks, documents crossing block edges,
// grouped heads and head dimensions 48, 64, 80 and 128.
func TestFlashAttentionRows(t *testing.T) {
	cases := []struct {
		s      kernels.AttnShape
		docLen int
	}{
		{kernels.AttnShape{B: 2, T: 200, NH: 6, KVH: 2, HD: 64}, 90},
		{kernels.AttnShape{B: 1, T: 150, NH: 2, KVH: 2, HD: 128}, 1000},
		{kernels.AttnShape{B: 1, T: 90, NH: 3, KVH: 1, HD: 48}, 37},
		{kernels.AttnShape{B: 1, T: 64, NH: 1, KVH: 1, HD: 80}, 20},
	}
	for _, c := range cases {
		f := roundedAttnOp(c.s, c.docLen)
		want := f(cpuBackend(t))
		for _, tg := range targets {
			got := f(tg.open(t, cuda.BF16))
			name := fmt.Sprintf("%s %+v", tg.name, c.s)
			for _, k := range []string{"out", "dq", "dk", "dv"} {
				checkRows(t, name+" "+k, got[k], want[k], c.s.HD, 3e-2)
			}
			for i, w := range want["lse"] {
				if d := math.Abs(float64(got["lse"][i] - w)); !(d <= 1e-2) {
					t.Errorf("%s lse[%d] = %v, cpu %v", name, i, got["lse"][i], w)
					break
				}
			}
		}
	}
}

// checkRows requires ‖got − want‖ ≤ tol·‖want‖ + 1e-3 on every row of n.
func checkRows(t *testing.T, name string, got, want []float32, n int, tol float64) {
	t.Helper()
	worst := 0.0
	for r := 0; r < len(want)/n; r++ {
		var num, den float64
		for i := r * n; i < (r+1)*n; i++ {
			d := float64(got[i] - want[i])
			num += d * d
			den += float64(want[i]) * float64(want[i])
		}
		err := math.Sqrt(num) / (math.Sqrt(den) + 1e-3/tol)
		if !(err <= tol) {
			t.Errorf("%s: row %d: relative error %.3g", name, r, err)
			return
		}
		worst = max(worst, err)
	}
	t.Logf("%s: worst row %.3g", name, worst)
}
