package cuda

import (
	"fmt"
	"unsafe"

	"github.com/fomnet/fomnet/kernels"
)

// The CUDA backend keeps AdamW's moments in 8 bits when asked
// (kernels.Adam8Backend): fom_adamw8 (vec.cu) is kernels.AdamW8Block, one
// thread block a block of parameters, bit for bit.

type bytesBuf struct {
	p     uint64
	n     int
	owner *Backend
}

func (x *bytesBuf) Len() int { return x.n }

func (b *Backend) bb(x kernels.ByteBuffer) *bytesBuf {
	bb, ok := x.(*bytesBuf)
	if !ok || bb.owner != b {
		panic(fmt.Errorf("%w: byte buffer %T is not from this cuda backend", kernels.ErrShape, x))
	}
	return bb
}

// AllocBytes returns n zeroed bytes.
func (b *Backend) AllocBytes(n int) kernels.ByteBuffer {
	if n < 0 {
		panic(fmt.Errorf("%w: alloc of %d bytes", kernels.ErrShape, n))
	}
	return &bytesBuf{p: b.alloc(int64(n)), n: n, owner: b}
}

// ViewBytes aliases x[off : off+n].
func (b *Backend) ViewBytes(x kernels.ByteBuffer, off, n int) kernels.ByteBuffer {
	d := b.bb(x)
	if off < 0 || n < 0 || off+n > d.n {
		panic(fmt.Errorf("%w: view [%d:%d] of a %d-byte buffer", kernels.ErrShape, off, off+n, d.n))
	}
	return &bytesBuf{p: d.p + uint64(off), n: n, owner: b}
}

// UploadBytes copies src into dst.
func (b *Backend) UploadBytes(dst kernels.ByteBuffer, src []byte) {
	d := b.bb(dst)
	need("upload source", len(src), d.n)
	if len(src) == 0 || !b.ok() {
		return
	}
	b.fail("upload", b.dev.CopyIn(d.p, unsafe.Pointer(&src[0]), int64(len(src))))
}

// DownloadBytes copies src into dst.
func (b *Backend) DownloadBytes(dst []byte, src kernels.ByteBuffer) {
	s := b.bb(src)
	need("download destination", len(dst), s.n)
	if len(dst) == 0 || !b.ok() {
		return
	}
	b.fail("download", b.dev.CopyOut(unsafe.Pointer(&dst[0]), s.p, int64(len(dst))))
}

// AdamW8 updates params with 8-bit moments.
func (b *Backend) AdamW8(params, grads kernels.Buffer, m, v kernels.ByteBuffer, ms, vs kernels.Buffer, h kernels.AdamWStep) {
	p, g, mq, vq, mss, vss := b.fw(params), b.fg(grads), b.bb(m), b.bb(v), b.fb(ms), b.fb(vs)
	nb := kernels.Adam8Blocks(p.n)
	need("adamw8 grads", g.n, p.n)
	need("adamw8 m", mq.n, p.n)
	need("adamw8 v", vq.n, p.n)
	need("adamw8 m scales", mss.n, nb)
	need("adamw8 v scales", vss.n, nb)
	if h.Step < 1 {
		panic(fmt.Errorf("kernels: adamw step %d must count from 1", h.Step))
	}
	c := h.Consts()
	b.launch("fom_adamw8", [3]int{nb, 1, 1}, kernels.Adam8Block, ptr(p), ptr(g), mq.p, vq.p, ptr(mss), ptr(vss), i64(p.n),
		f32(c.GS), f32(c.B1), f32(c.OmB1), f32(c.B2), f32(c.OmB2), f32(c.IBC1), f32(c.IBC2), f32(c.Eps), f32(c.WD), f32(c.LR), i32(int(c.Step)), flag(g.half), p.mirror)
}

var _ kernels.Adam8Backend = (*Backend)(nil)
