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
	if ds.docT == s.T { // checked since its upload, for rows of this length
		return
	}
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
	ds.docT = s.T
}

const attnBlock = 64

// tensorCores reports whether attention of this shape runs on flash.cu's
// tensor-core kernels (the bf16 path, head dimensions that are multiples of
// 16).
func (b *Backend) tensorCores(s kernels.AttnShape) bool { return b.prec == BF16 && s.HD%16 == 0 }

// flashHDP is the head dimension flash.cu's kernel computes with: 64 or 128.
func flashHDP(hd int) int {
	if hd <= 64 {
		return 64
	}
	return 128
}

// flashShared is the dynamic shared memory of flash.cu's kernels (kernel
// fwd, dkdv or dq), tiles of rows of HDP+8 bfloat16: the forward pass holds
// 64 query rows and two stages of 64 keys and values; dq 64 query and dout
// rows and the same two stages; dkdv 64 keys and values and two stages of BQ
// query and dout rows (BQ 32 for HDP 128, else 64).
func flashShared(kernel string, hdp int) int {
	rows := 2*64 + 4*64 // dq, and dkdv for HDP 64
	switch {
	case kernel == "fwd":
		rows = 64 + 4*64
	case kernel == "dkdv" && hdp == 128:
		rows = 2*64 + 4*32
	}
	return 2 * rows * (hdp + 8)
}

// flashInputs is the attention operands in bfloat16: as they are where
// held so, else rounded into scratch memory.
func (b *Backend) flashInputs(s kernels.AttnShape, q, k, v *buf) (bq, bk, bv BF16Matrix) {
	return b.operand(&b.bfQ, q, s.B*s.T*s.NH, s.HD), b.operand(&b.bfK, k, s.B*s.T*s.KVH, s.HD), b.operand(&b.bfV, v, s.B*s.T*s.KVH, s.HD)
}

// qkv returns q, k and v, which may be held in bfloat16 (all three or none).
func (b *Backend) qkv(q, k, v kernels.Buffer) (qd, kd, vd *buf) {
	qd, kd, vd = b.fg(q), b.fg(k), b.fg(v)
	if qd.half != kd.half || qd.half != vd.half {
		panic(fmt.Errorf("%w: attention q, k and v held in bfloat16 %v, %v and %v: all or none", kernels.ErrShape, qd.half, kd.half, vd.half))
	}
	return qd, kd, vd
}

// flashKernels names flash.cu's kernels by pass and HDP.
var flashKernels = map[string]map[int]string{
	"fwd":  {64: "fom_flash_fwd_64", 128: "fom_flash_fwd_128"},
	"dkdv": {64: "fom_flash_dkdv_64", 128: "fom_flash_dkdv_128"},
	"dq":   {64: "fom_flash_dq_64", 128: "fom_flash_dq_128"},
}

func (b *Backend) flash(kernel string, s kernels.AttnShape, args ...uint64) {
	hdp := flashHDP(s.HD)
	nb := (s.T + 63) / 64
	heads := s.NH
	if kernel == "dkdv" {
		heads = s.KVH
	}
	args = append(args, i32(s.B), i32(s.T), i32(s.NH), i32(s.KVH), i32(s.HD), f32(float32(1/math.Sqrt(float64(s.HD)))))
	b.launchShared(flashKernels[kernel][hdp], [3]int{nb, heads, s.B}, 128, flashShared(kernel, hdp), args...)
}

// ld says how the attention kernels read x (fom_ld): as it is on the fp32
// path; on the bf16 path rounded to bfloat16, or as held in it.
func (b *Backend) ld(x *buf) uint64 {
	switch {
	case x.half:
		return 2
	case b.prec == BF16:
		return 1
	}
	return 0
}

// attnArgs ends the scalar kernels' arguments; the last says how they read
// q, k and v.
func (b *Backend) attnArgs(s kernels.AttnShape, q *buf) []uint64 {
	return []uint64{i32(s.B), i32(s.T), i32(s.NH), i32(s.KVH), i32(s.HD), f32(float32(1 / math.Sqrt(float64(s.HD)))), b.ld(q)}
}

// AttentionForward computes causal, document-masked attention and the per-row
// log-sum-exp.
func (b *Backend) AttentionForward(out, lse, q, k, v kernels.Buffer, docStart kernels.IntBuffer, s kernels.AttnShape) {
	o, l, ds := b.fb(out), b.fb(lse), b.ib(docStart)
	qd, kd, vd := b.qkv(q, k, v)
	b.checkAttn(qd, kd, vd, o, l, ds, s)
	if b.tensorCores(s) {
		bq, bk, bv := b.flashInputs(s, qd, kd, vd)
		b.flash("fwd", s, ptr(o), ptr(l), bq.p, bk.p, bv.p, iptr(ds))
		return
	}
	args := append([]uint64{ptr(o), ptr(l), ptr(qd), ptr(kd), ptr(vd), iptr(ds)}, b.attnArgs(s, qd)...)
	b.launch("fom_attn_fwd", [3]int{(s.T + attnBlock - 1) / attnBlock, s.NH, s.B}, attnBlock, args...)
}

// AttentionBackward overwrites dq, dk and dv (which may be held in
// bfloat16: only products read it). On the bf16 path it reads dout (which
// may be held in bfloat16) rounded to bfloat16 throughout, the row sums of
// dout∘out too; out stays float32, whose rounding would cost those sums
// their accuracy (dq's error on TestFlashAttentionRows' worst row: 4.6%
// against 1.3%).
func (b *Backend) AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse kernels.Buffer, docStart kernels.IntBuffer, s kernels.AttnShape) {
	gq, gk, gv, do := b.fb(dq), b.fb(dk), b.fg(dv), b.fg(dout)
	o, l, ds := b.fb(out), b.fb(lse), b.ib(docStart)
	qd, kd, vd := b.qkv(q, k, v)
	b.checkAttn(qd, kd, vd, o, l, ds, s)
	need("attention dq", gq.n, qd.n)
	need("attention dout", do.n, qd.n)
	need("attention dk", gk.n, kd.n)
	need("attention dv", gv.n, vd.n)
	D := b.scratch(&b.delta, s.B*s.NH*s.T)
	nb := (s.T + attnBlock - 1) / attnBlock
	b.launch("fom_attn_delta", [3]int{nb, s.NH, s.B}, attnBlock, ptr(D), ptr(o), ptr(do), b.ld(do), i32(s.B), i32(s.T), i32(s.NH), i32(s.HD))
	if b.tensorCores(s) {
		bq, bk, bv := b.flashInputs(s, qd, kd, vd)
		bdo := b.operand(&b.bfDO, do, s.B*s.T*s.NH, s.HD)
		rest := []uint64{bdo.p, bq.p, bk.p, bv.p, ptr(l), ptr(D), iptr(ds)}
		b.flash("dkdv", s, append([]uint64{ptr(gk), ptr(gv), flag(gv.half)}, rest...)...)
		b.flash("dq", s, append([]uint64{ptr(gq)}, rest...)...)
		return
	}
	common := append([]uint64{ptr(do), b.ld(do), ptr(qd), ptr(kd), ptr(vd), ptr(l), ptr(D), iptr(ds)}, b.attnArgs(s, qd)...)
	b.launch("fom_attn_dkdv", [3]int{nb, s.KVH, s.B}, attnBlock, append([]uint64{ptr(gk), ptr(gv), flag(gv.half)}, common...)...)
	b.launch("fom_attn_dq", [3]int{nb, s.NH, s.B}, attnBlock, append([]uint64{ptr(gq)}, common...)...)
}
