package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fomnet/fomnet/kernels"
)

func BenchmarkMatmul(b *testing.B) {
	for _, sh := range [][3]int{{256, 768, 768}, {1024, 1024, 1024}, {2048, 3072, 768}, {256, 2048, 768}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tr := range [][2]bool{{false, true}, {false, false}, {true, false}} {
			b.Run(fmt.Sprintf("%dx%dx%d/ta=%v/tb=%v", m, n, k, tr[0], tr[1]), func(b *testing.B) {
				be := MustNew(Options{})
				defer be.Close()
				r := rand.New(rand.NewPCG(1, 1))
				A, B, C := upload(be, randn(r, m*k, 1)), upload(be, randn(r, k*n, 1)), be.Alloc(m*n)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					be.Matmul(C, A, B, m, n, k, tr[0], tr[1], false)
				}
				b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

func BenchmarkAttention(b *testing.B) {
	s := kernels.AttnShape{B: 8, T: 256, NH: 8, KVH: 4, HD: 32}
	be := MustNew(Options{})
	defer be.Close()
	r := rand.New(rand.NewPCG(1, 1))
	nq, nk := s.B*s.T*s.NH*s.HD, s.B*s.T*s.KVH*s.HD
	q, k, v := upload(be, randn(r, nq, 1)), upload(be, randn(r, nk, 1)), upload(be, randn(r, nk, 1))
	ds := be.AllocInt(s.B * s.T)
	out, lse := be.Alloc(nq), be.Alloc(s.B*s.NH*s.T)
	dq, dk, dv := be.Alloc(nq), be.Alloc(nk), be.Alloc(nk)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		be.AttentionForward(out, lse, q, k, v, ds, s)
		be.AttentionBackward(dq, dk, dv, out, q, k, v, out, lse, ds, s)
	}
}

func BenchmarkPeak(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.ReportMetric(PeakGFLOPS(0, 200e6), "GFLOP/s")
	}
}
