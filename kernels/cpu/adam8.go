package cpu

import (
	"fmt"
	"math"

	"github.com/fomnet/fomnet/kernels"
)

// The CPU backend keeps AdamW's moments in 8 bits when asked
// (kernels.Adam8Backend): the update is kernels.AdamW8Block on every block,
// blocks spread over the threads (a block's arithmetic never depends on
// which thread runs it). On the AVX2 paths every phase but the last few
// values of a block runs in adam8_amd64.s — its fp32 step the vectorised
// AdamW, a code's value built from its bits, its rounding the same integer
// arithmetic on eight floats' bits at once — and the definitions run the
// rest.

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
		kernels.AdamW8Block(t.p[i:j], t.g[i:j], t.mq[i:j], t.vq[i:j], &t.ms[k], &t.vs[k], &t.c, i, ws.s, &t.be.ops8)
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

// adam8Ops returns the phases of 8-bit AdamW on this backend's path.
func (b *Backend) adam8Ops() kernels.Adam8Ops {
	o := kernels.Adam8Ops{Update: b.adamw}
	if b.fma {
		o.Decode, o.Roots, o.EncodeV, o.EncodeM = adam8Decode, adam8Roots, adam8EncodeV, adam8EncodeM
	}
	return o
}

// adam8Consts are adam8_amd64.s's constants, each broadcast to eight
// lanes: the lanes 0–7 and 8; kernels.adamBits's three multipliers; the
// masks of 23 and 19 random bits and of a float's magnitude; 1.0, 1 and
// the sign bit of a byte; then, for v's code (bias 15) and m's (bias 7),
// kernels.floatCode's threshold and rebias of the float's bits and its
// fixed-point scale; then 15 and 127 (the largest code of no exponent, a
// code's magnitude) and the values of v's and m's fixed-point steps,
// 2^-18 and 2^-10.
type adam8Consts [21][8]uint32

var adam8K = func() *adam8Consts {
	var k adam8Consts
	rows := []uint32{0, 8, 0x9e3779b1, 0x7feb352d, 0x846ca68b, 1<<23 - 1, 1<<19 - 1, 1<<31 - 1, math.Float32bits(1), 1, 128}
	for _, bias := range []uint32{15, 7} {
		rows = append(rows, (128-bias)<<23, (127-bias)<<23, (127+bias+26)<<23)
	}
	rows = append(rows, 15, 127, math.Float32bits(0x1p-18), math.Float32bits(0x1p-10))
	for r, x := range rows {
		for l := range 8 {
			k[r][l] = x
			if r == 0 {
				k[r][l] = uint32(l)
			}
		}
	}
	return &k
}()

// stepMix is the step's term of kernels.adamBits.
func stepMix(step uint32) uint32 { return step * 0x85ebca77 }

func adam8Decode(m, v []float32, mq, vq []uint8, ms, vs float32) {
	n := len(m) &^ 7
	if n > 0 {
		_, _, _ = v[n-1], mq[n-1], vq[n-1]
		adam8DecodeAVX(&m[0], &v[0], &mq[0], &vq[0], n, ms, vs, adam8K)
	}
	kernels.Adam8Decode(m[n:], v[n:], mq[n:], vq[n:], ms, vs)
}

func adam8Roots(v []float32) float32 {
	n := len(v) &^ 7
	var w float32
	if n > 0 {
		w = adam8RootsAVX(&v[0], n)
	}
	if t := kernels.Adam8Roots(v[n:]); t > w {
		w = t
	}
	return w
}

func adam8EncodeV(w, m []float32, vq []uint8, s float32, base int, step uint32) float32 {
	n := len(m) &^ 7
	if !(s > 0) {
		n = 0 // (every code is 0: the definition)
	}
	var mmax float32
	if n > 0 {
		_, _ = w[n-1], vq[n-1]
		mmax = adam8EncodeVAVX(&w[0], &m[0], &vq[0], n, s, uint32(base), stepMix(step), adam8K)
	}
	if t := kernels.Adam8EncodeV(w[n:], m[n:], vq[n:], s, base+n, step); t > mmax {
		mmax = t
	}
	return mmax
}

func adam8EncodeM(m []float32, mq []uint8, s float32, base int, step uint32) {
	n := len(m) &^ 7
	if !(s > 0) {
		n = 0
	}
	if n > 0 {
		_ = mq[n-1]
		adam8EncodeMAVX(&m[0], &mq[0], n, s, uint32(base), stepMix(step), adam8K)
	}
	kernels.Adam8EncodeM(m[n:], mq[n:], s, base+n, step)
}
