package cpu

import (
	"fmt"

	"github.com/fomnet/fomnet/kernels"
)

// The CPU backend keeps AdamW's moments in 8 bits when asked
// (kernels.Adam8Backend): the update is kernels.AdamW8Block on every block,
// its fp32 step the vectorised AdamW, blocks spread over the threads (a
// block's arithmetic never depends on which thread runs it).

type bytesBuf struct{ d []byte }

func (x *bytesBuf) Len() int { return len(x.d) }

func bs(x kernels.ByteBuffer) []byte {
	bb, ok := x.(*bytesBuf)
	if !ok {
		panic(fmt.Errorf("%w: byte buffer %T is not from the cpu backend", kernels.ErrShape, x))
	}
	return bb.d
}

// AllocBytes returns n zeroed bytes.
func (b *Backend) AllocBytes(n int) kernels.ByteBuffer { return &bytesBuf{make([]byte, n)} }

// ViewBytes aliases part of a byte buffer.
func (b *Backend) ViewBytes(x kernels.ByteBuffer, off, n int) kernels.ByteBuffer {
	d := bs(x)
	if off < 0 || n < 0 || off+n > len(d) {
		panic(fmt.Errorf("%w: view [%d:%d] of a %d-byte buffer", kernels.ErrShape, off, off+n, len(d)))
	}
	return &bytesBuf{d[off : off+n : off+n]}
}

// UploadBytes copies host bytes in.
func (b *Backend) UploadBytes(dst kernels.ByteBuffer, src []byte) {
	d := bs(dst)
	need("upload source", len(src), len(d))
	copy(d, src)
}

// DownloadBytes copies bytes out.
func (b *Backend) DownloadBytes(dst []byte, src kernels.ByteBuffer) {
	s := bs(src)
	need("download destination", len(dst), len(s))
	copy(dst, s)
}

type adam8Task struct {
	be           *Backend
	p, g, ms, vs []float32
	mq, vq       []byte
	c            kernels.AdamConst
}

func (t *adam8Task) run(w, lo, hi int) {
	ws := t.be.ws[w]
	ws.s = grow(ws.s, 2*kernels.Adam8Block) // attention's rows, free between ops
	for k := lo; k < hi; k++ {
		i, j := k*kernels.Adam8Block, min((k+1)*kernels.Adam8Block, len(t.p))
		kernels.AdamW8Block(t.p[i:j], t.g[i:j], t.mq[i:j], t.vq[i:j], &t.ms[k], &t.vs[k], &t.c, i, ws.s, t.be.adamw)
	}
}

// AdamW8 updates params with 8-bit moments.
func (b *Backend) AdamW8(params, grads kernels.Buffer, m, v kernels.ByteBuffer, ms, vs kernels.Buffer, h kernels.AdamWStep) {
	p := fs(params)
	nb := kernels.Adam8Blocks(len(p))
	need("adamw8 grads", len(fs(grads)), len(p))
	need("adamw8 m", len(bs(m)), len(p))
	need("adamw8 v", len(bs(v)), len(p))
	need("adamw8 m scales", len(fs(ms)), nb)
	need("adamw8 v scales", len(fs(vs)), nb)
	if h.Step < 1 {
		panic(fmt.Errorf("kernels: adamw step %d must count from 1", h.Step))
	}
	b.adam8T = adam8Task{be: b, p: p, g: fs(grads), mq: bs(m), vq: bs(v), ms: fs(ms), vs: fs(vs), c: h.Consts()}
	b.pool.run(&b.adam8T, nb, 64)
	b.adam8T = adam8Task{} // keep no model's buffers alive
}
