package cpu

import (
	"fmt"
	"math"

	"github.com/fomnet/fomnet/kernels"
)

// Attention is computed per (batch, kv head): one work item owns every query
// head that shares the kv head, so the gradients of k and v are summed by one
// worker in a fixed order (query head, then query block). Queries go in
// blocks of qBlock rows; a block only looks at keys from the document start of
// its first row, so causal and document masking skip most masked work.
// Scores for one block are a small T-wide matrix in the worker's scratch; the
// full T×T matrix never exists.

const qBlock = 64

type attnTask struct {
	be                *Backend
	bwd               bool
	q, k, v, out, lse []float32
	dq, dk, dv, dout  []float32
	ds                []int32
	s                 kernels.AttnShape
}

func (b *Backend) checkAttn(q, k, v, out, lse []float32, ds []int32, s kernels.AttnShape) {
	if s.B < 0 || s.T < 0 || s.NH <= 0 || s.KVH <= 0 || s.HD <= 0 || s.NH%s.KVH != 0 {
		panic(fmt.Errorf("%w: attention shape %+v", kernels.ErrShape, s))
	}
	need("attention q", len(q), s.B*s.T*s.NH*s.HD)
	need("attention out", len(out), s.B*s.T*s.NH*s.HD)
	need("attention k", len(k), s.B*s.T*s.KVH*s.HD)
	need("attention v", len(v), s.B*s.T*s.KVH*s.HD)
	need("attention lse", len(lse), s.B*s.NH*s.T)
	need("attention docStart", len(ds), s.B*s.T)
	for bi := 0; bi < s.B; bi++ {
		prev := int32(0)
		for t := 0; t < s.T; t++ {
			d := ds[bi*s.T+t]
			if d < prev || int(d) > t {
				panic(fmt.Errorf("%w: docStart[%d,%d] = %d must be non-decreasing and at most %d", kernels.ErrShape, bi, t, d, t))
			}
			prev = d
		}
	}
}

// AttentionForward implements kernels.Backend.
func (b *Backend) AttentionForward(out, lse, q, k, v kernels.Buffer, docStart kernels.IntBuffer, s kernels.AttnShape) {
	t := &b.attnT
	t.bwd = false
	t.out, t.lse, t.q, t.k, t.v, t.ds, t.s = fs(out), fs(lse), fs(q), fs(k), fs(v), is(docStart), s
	b.checkAttn(t.q, t.k, t.v, t.out, t.lse, t.ds, s)
	b.pool.run(t, s.B*s.KVH, 1)
	*t = attnTask{be: b}
}

// AttentionBackward implements kernels.Backend.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse kernels.Buffer, docStart kernels.IntBuffer, s kernels.AttnShape) {
	t := &b.attnT
	t.bwd = true
	t.out, t.lse, t.q, t.k, t.v, t.ds, t.s = fs(out), fs(lse), fs(q), fs(k), fs(v), is(docStart), s
	t.dq, t.dk, t.dv, t.dout = fs(dq), fs(dk), fs(dv), fs(dout)
	b.checkAttn(t.q, t.k, t.v, t.out, t.lse, t.ds, s)
	need("attention dq", len(t.dq), len(t.q))
	need("attention dout", len(t.dout), len(t.q))
	need("attention dk", len(t.dk), len(t.k))
	need("attention dv", len(t.dv), len(t.v))
	b.pool.run(t, s.B*s.KVH, 1)
	*t = attnTask{be: b}
}

func (t *attnTask) run(w, lo, hi int) {
	ws := t.be.ws[w]
	for item := lo; item < hi; item++ {
		if t.bwd {
			t.backward(ws, item/t.s.KVH, item%t.s.KVH)
		} else {
			t.forward(ws, item/t.s.KVH, item%t.s.KVH)
		}
	}
}

// probs turns the score block S[qm×nk] (keys from ks) into probabilities in
// place, masked to each row's document. With store (forward) it computes the
// row's log-sum-exp l = m + ln Σ exp(x·scale − m) and P = exp(x·scale − m)/Σ,
// saving l; otherwise (backward) it recomputes P = exp(x·scale − l) from the
// saved l, as flash attention does.
func (t *attnTask) probs(S []float32, bi, h, i0, qm, ks, nk int, store bool) {
	s := t.s
	be := t.be
	scale := float32(1 / math.Sqrt(float64(s.HD)))
	for r := 0; r < qm; r++ {
		tt := i0 + r
		row := S[r*nk : (r+1)*nk]
		lo := int(t.ds[bi*s.T+tt]) - ks
		hi := tt - ks + 1
		li := (bi*s.NH+h)*s.T + tt
		clear(row[:lo])
		x := row[lo:hi]
		// Exponentiate a whole number of vectors where the row has room: the
		// values past hi are cleared right after, and keeping them out of the
		// scalar tail saves its cost.
		wide := x
		if n := roundUp(len(x), 8); lo+n <= len(row) {
			wide = row[lo : lo+n]
		}
		if !store {
			be.expShift(wide, scale, t.lse[li])
			clear(row[hi:])
			continue
		}
		mx := float32(be.maxOf(x) * scale) // rounding is monotonic: max(x)·scale = max(x·scale)
		be.expShift(wide, scale, mx)
		clear(row[hi:])
		sum := be.sum64(x)
		t.lse[li] = mx + float32(math.Log(sum))
		be.scale(x, float32(1/sum))
	}
}

func (t *attnTask) forward(ws *workspace, bi, g int) {
	s := t.s
	rep := s.NH / s.KVH
	qs, kvs := s.NH*s.HD, s.KVH*s.HD
	for h := g * rep; h < (g+1)*rep; h++ {
		for i0 := 0; i0 < s.T; i0 += qBlock {
			i1 := min(i0+qBlock, s.T)
			qm := i1 - i0
			ks := int(t.ds[bi*s.T+i0])
			nk := i1 - ks
			ws.s = grow(ws.s, qBlock*s.T)
			S := ws.s[:qm*nk]
			qv := mat{t.q[(bi*s.T+i0)*qs+h*s.HD:], qs, false}
			kt := mat{t.k[(bi*s.T+ks)*kvs+g*s.HD:], kvs, true}
			t.be.gemmSerial(ws, S, nk, qv, kt, qm, nk, s.HD, false)
			t.probs(S, bi, h, i0, qm, ks, nk, true)
			vv := mat{t.v[(bi*s.T+ks)*kvs+g*s.HD:], kvs, false}
			t.be.gemmSerial(ws, t.out[(bi*s.T+i0)*qs+h*s.HD:], qs, mat{S, nk, false}, vv, qm, s.HD, nk, false)
		}
	}
}

func (t *attnTask) backward(ws *workspace, bi, g int) {
	s := t.s
	rep := s.NH / s.KVH
	qs, kvs := s.NH*s.HD, s.KVH*s.HD
	scale := float32(1 / math.Sqrt(float64(s.HD)))
	for tt := 0; tt < s.T; tt++ {
		clear(t.dk[(bi*s.T+tt)*kvs+g*s.HD:][:s.HD])
		clear(t.dv[(bi*s.T+tt)*kvs+g*s.HD:][:s.HD])
	}
	for h := g * rep; h < (g+1)*rep; h++ {
		for i0 := 0; i0 < s.T; i0 += qBlock {
			i1 := min(i0+qBlock, s.T)
			qm := i1 - i0
			ks := int(t.ds[bi*s.T+i0])
			nk := i1 - ks
			ws.s = grow(ws.s, qBlock*s.T)
			ws.dp = grow(ws.dp, qBlock*s.T)
			P, dP := ws.s[:qm*nk], ws.dp[:qm*nk]
			qOff := (bi*s.T+i0)*qs + h*s.HD
			kOff := (bi*s.T+ks)*kvs + g*s.HD
			qv := mat{t.q[qOff:], qs, false}
			t.be.gemmSerial(ws, P, nk, qv, mat{t.k[kOff:], kvs, true}, qm, nk, s.HD, false)
			t.probs(P, bi, h, i0, qm, ks, nk, false)
			dov := mat{t.dout[qOff:], qs, false}
			t.be.gemmSerial(ws, dP, nk, dov, mat{t.v[kOff:], kvs, true}, qm, nk, s.HD, false)
			// dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale, in place over dP.
			for r := 0; r < qm; r++ {
				o := t.out[qOff+r*qs:][:s.HD]
				do := t.dout[qOff+r*qs:][:s.HD]
				var d float64
				for j, x := range o {
					d += float64(x) * float64(do[j])
				}
				df := float32(d)
				pr, dr := P[r*nk:(r+1)*nk], dP[r*nk:(r+1)*nk]
				for j, p := range pr {
					dr[j] = p * (dr[j] - df) * scale
				}
			}
			t.be.gemmSerial(ws, t.dq[qOff:], qs, mat{dP, nk, false}, mat{t.k[kOff:], kvs, false}, qm, s.HD, nk, false)
			t.be.gemmSerial(ws, t.dk[kOff:], kvs, mat{dP, nk, true}, qv, nk, s.HD, qm, true)
			t.be.gemmSerial(ws, t.dv[kOff:], kvs, mat{P, nk, true}, dov, nk, s.HD, qm, true)
		}
	}
}
