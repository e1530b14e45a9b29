package cuda

import (
	"fmt"
	"math"

	"github.com/fomnet/fomnet/kernels"
)

func (b *Backend) checkAttn(q, k, v, out, lse *buf, ds *ibuf, s kernels.AttnShape) {
	if s.B < 0 || s.T < 0 || s.NH <= 0 || s.KVH <= 0 || s.HD <= 0 || s.NH%s.KVH != 0 {
		panic(fmt.Errorf("%w: attention shape %+v", kernels.ErrShape, s))
	}
	if s.HD > MaxHeadDim {
		panic(fmt.Errorf("%w: attention head dimension %d: the cuda kernels take at most %d", kernels.ErrUnsupported, s.HD, MaxHeadDim))
	}
	need("attention q", q.n, s.B*s.T*s.NH*s.HD)
	need("attention out", out.n, s.B*s.T*s.NH*s.HD)
	need("attention k", k.n, s.B*s.T*s.KVH*s.HD)
	need("attention v", v.n, s.B*s.T*s.KVH*s.HD)
	need("attention lse", lse.n, s.B*s.NH*s.T)
	need("attention docStart", ds.Len(), s.B*s.T)
	for bi := 0; bi < s.B; bi++ {
		prev := int32(0)
		for t := 0; t < s.T; t++ {
			d := ds.host[bi*s.T+t]
			if d < prev || int(d) > t {
				panic(fmt.Errorf("%w: docStart[%d,%d] = %d must be non-decreasing and at most %d", kernels.ErrShape, bi, t, d, t))
			}
			prev = d
		}
	}
}

const attnBlock = 64

// tensorCores reports whether attention of this shape runs on the WMMA
// kernels (the bf16 path, head dimensions that are multiples of 16).
func (b *Backend) tensorCores(s kernels.AttnShape) bool { return b.prec == BF16 && s.HD%16 == 0 }

func (b *Backend) attnArgs(s kernels.AttnShape) []uint64 {
	a := []uint64{i32(s.B), i32(s.T), i32(s.NH), i32(s.KVH), i32(s.HD), f32(float32(1 / math.Sqrt(float64(s.HD))))}
	if !b.tensorCores(s) {
		a = append(a, flag(b.prec == BF16)) // the scalar kernels round to bf16 on this flag
	}
	return a
}

// AttentionForward computes causal, document-masked attention and the per-row
// log-sum-exp.
func (b *Backend) AttentionForward(out, lse, q, k, v kernels.Buffer, docStart kernels.IntBuffer, s kernels.AttnShape) {
	o, l, qd, kd, vd, ds := b.fb(out), b.fb(lse), b.fb(q), b.fb(k), b.fb(v), b.ib(docStart)
	b.checkAttn(qd, kd, vd, o, l, ds, s)
	args := append([]uint64{ptr(o), ptr(l), ptr(qd), ptr(kd), ptr(vd), iptr(ds)}, b.attnArgs(s)...)
	if b.tensorCores(s) {
		b.launch("fom_attn_fwd_tc", [3]int{(s.T + 63) / 64, s.NH, s.B}, 128, args...)
		return
	}
	b.launch("fom_attn_fwd", [3]int{(s.T + attnBlock - 1) / attnBlock, s.NH, s.B}, attnBlock, args...)
}

// AttentionBackward overwrites dq, dk and dv.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse kernels.Buffer, docStart kernels.IntBuffer, s kernels.AttnShape) {
	gq, gk, gv, do := b.fb(dq), b.fb(dk), b.fb(dv), b.fb(dout)
	o, l, qd, kd, vd, ds := b.fb(out), b.fb(lse), b.fb(q), b.fb(k), b.fb(v), b.ib(docStart)
	b.checkAttn(qd, kd, vd, o, l, ds, s)
	need("attention dq", gq.n, qd.n)
	need("attention dout", do.n, qd.n)
	need("attention dk", gk.n, kd.n)
	need("attention dv", gv.n, vd.n)
	D := b.scratch(&b.delta, s.B*s.NH*s.T)
	nb := (s.T + attnBlock - 1) / attnBlock
	b.launch("fom_attn_delta", [3]int{nb, s.NH, s.B}, attnBlock, ptr(D), ptr(o), ptr(do), i32(s.B), i32(s.T), i32(s.NH), i32(s.HD))
	common := append([]uint64{ptr(do), ptr(qd), ptr(kd), ptr(vd), ptr(l), ptr(D), iptr(ds)}, b.attnArgs(s)...)
	if b.tensorCores(s) {
		nt := (s.T + 31) / 32
		b.launch("fom_attn_dkdv_tc", [3]int{nt, s.KVH, s.B}, 64, append([]uint64{ptr(gk), ptr(gv)}, common...)...)
		b.launch("fom_attn_dq_tc", [3]int{nt, s.NH, s.B}, 64, append([]uint64{ptr(gq)}, common...)...)
		return
	}
	b.launch("fom_attn_dkdv", [3]int{nb, s.KVH, s.B}, attnBlock, append([]uint64{ptr(gk), ptr(gv)}, common...)...)
	b.launch("fom_attn_dq", [3]int{nb, s.NH, s.B}, attnBlock, append([]uint64{ptr(gq)}, common...)...)
}
