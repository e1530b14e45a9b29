package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cuda"
)

// bf16 rounds x to bfloat16 (nearest, ties to even), as the device does.
func bf16(x float32) float32 { return kernels.BF16Float(kernels.BF16Bits(x)) }

// gemmRef is op(A)·op(B) in float64 over bf16-rounded inputs (the reference
// the tensor-core kernels must meet to float32 accumulation error), with
// mag the sum of |products| per output, which bounds that error.
func gemmRef(a, b []float32, m, n, k int, ta, tb bool) (ref, mag []float64) {
	ref, mag = make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, g float64
			for p := 0; p < k; p++ {
				x, y := a[i*k+p], b[p*n+j]
				if ta {
					x = a[p*m+i]
				}
				if tb {
					y = b[j*k+p]
				}
				v := float64(bf16(x)) * float64(bf16(y))
				s += v
				g += math.Abs(v)
			}
			ref[i*n+j], mag[i*n+j] = s, g
		}
	}
	return ref, mag
}

// TestGEMMBF16Configs: every bf16 GEMM kernel, in every transposition, with
// partial tiles, K deeper than the stage ring, odd sizes, accumulation, a
// misaligned output view and bfloat16 output, against float64.
func TestGEMMBF16Configs(t *testing.T) {
	shapes := [][3]int{{130, 260, 100}, {33, 17, 9}, {1, 1, 1}, {64, 128, 200}}
	for _, tg := range targets {
		be := tg.open(t, cuda.BF16)
		for _, cfg := range be.GEMMConfigs() {
			for _, s := range shapes {
				for tr := 0; tr < 4; tr++ {
					m, n, k, ta, tb := s[0], s[1], s[2], tr&1 != 0, tr&2 != 0
					name := fmt.Sprintf("%s %s %dx%dx%d ta=%v tb=%v", tg.name, cfg, m, n, k, ta, tb)
					r := rand.New(rand.NewPCG(uint64(m*n), uint64(k+tr)))
					a, b, c0 := randn(r, m*k, 1), randn(r, k*n, 1), randn(r, m*n+1, 1)
					ar, ac, br, bc := cuda.StoredShapes(m, n, k, ta, tb)
					ref, mag := gemmRef(a, b, m, n, k, ta, tb)
					am, bm := be.ToBF16(up(be, a), ar, ac), be.ToBF16(up(be, b), br, bc)
					// Accumulating into a view one float off an aligned buffer.
					cb := up(be, c0)
					be.GEMMBF16(cfg, be.View(cb, 1, m*n), am, bm, m, n, k, ta, tb, true, false)
					got := down(be, cb)
					if got[0] != c0[0] {
						t.Fatalf("%s: wrote before its view", name)
					}
					checkGEMM(t, name+" acc", got[1:], ref, mag, c0[1:], 2e-5)
					// bfloat16 output.
					ob := be.Alloc((m*n + 1) / 2)
					be.GEMMBF16(cfg, ob, am, bm, m, n, k, ta, tb, false, true)
					checkGEMM(t, name+" bf16 out", unpackBF16(down(be, ob), m*n), ref, mag, nil, 4e-3)
					if err := be.Err(); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				}
			}
		}
	}
}

// checkGEMM requires |got − (base + ref)| ≤ tol·(mag + |want|) + 1e-30 everywhere.
func checkGEMM(t *testing.T, name string, got []float32, ref, mag []float64, base []float32, tol float64) {
	t.Helper()
	if bad, first := gemmMismatches(got, ref, mag, base, tol); bad > 0 {
		t.Errorf("%s: %d of %d outputs wrong; first %s", name, bad, len(ref), first)
	}
}

// gemmMismatches counts the outputs of checkGEMM's test that fail and
// describes the first.
func gemmMismatches(got []float32, ref, mag []float64, base []float32, tol float64) (bad int, first string) {
	for i := range ref {
		want := ref[i]
		if base != nil {
			want += float64(base[i])
		}
		if d := math.Abs(float64(got[i]) - want); !(d <= tol*(mag[i]+math.Abs(want))+1e-30) {
			if bad == 0 {
				first = fmt.Sprintf("[%d] = %v, want %v", i, got[i], want)
			}
			bad++
		}
	}
	return bad, first
}

// unpackBF16 reads n bfloat16 packed two per float32 (low half first).
func unpackBF16(x []float32, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		u := math.Float32bits(x[i/2])
		if i%2 == 0 {
			u <<= 16
		} else {
			u &= 0xffff0000
		}
		out[i] = math.Float32frombits(u)
	}
	return out
}
