package cuda

import "github.com/fomnet/fomnet/kernels"

// Matmul computes C = (acc ? C : 0) + op(A)·op(B). On the bf16 path any of
// the three may hold bfloat16 (AllocBF16: gradients, activations).
func (b *Backend) Matmul(c, a, bm kernels.Buffer, m, n, k int, transA, transB, acc bool) {
	cd, ad, bd := b.fg(c), b.bufOf(a), b.bufOf(bm)
	need("matmul C", cd.n, m*n)
	need("matmul A", ad.n, m*k)
	need("matmul B", bd.n, k*n)
	if m == 0 || n == 0 {
		return
	}
	args := []uint64{ptr(cd), ptr(ad), ptr(bd), i64(m), i64(n), i64(k), flag(transA), flag(transB), flag(acc)}
	if k == 0 {
		if !acc {
			b.Zero(c)
		}
		return
	}
	if b.prec == BF16 {
		b.matmulBF16(cd, ad, bd, m, n, k, transA, transB, acc)
		return
	}
	b.launch("fom_matmul_f32", [3]int{(n + 63) / 64, (m + 63) / 64, 1}, 256, args...)
}
