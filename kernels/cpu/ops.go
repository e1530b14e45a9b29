package cpu

import (
	"fmt"
	"math"

	"github.com/fomnet/fomnet/kernels"
)

// rowTask runs operations whose items are independent rows (or elements).
type rowTask struct {
	be               *Backend
	op               int
	out, inp, w, aux []float32
	d1, d2           []float32
	ints             []int32
	c, heads, hd     int
	eps, s           float32
	rope             []float32
}

const (
	rowEmbedFwd = iota
	rowRMSFwd
	rowRMSBwd
	rowRoPEFwd
	rowRoPEBwd
	rowSwiGLUFwd
	rowSwiGLUBwd
	rowXent
)

// colTask runs reductions over rows, partitioned by column ranges so that
// each column is summed by one worker in row order.
type colTask struct {
	op            int
	dst, src, inp []float32
	rstd          []float32
	ints          []int32
	n, c          int
}

const (
	colEmbedBwd = iota
	colRMSWeight
)

// colGrain is how many columns one item of a column reduction spans; the
// partition never changes the order of a column's sum.
const colGrain = 64

func (t *rowTask) run(w, lo, hi int) {
	switch t.op {
	case rowEmbedFwd:
		for i := lo; i < hi; i++ {
			tok := int(t.ints[i])
			copy(t.out[i*t.c:(i+1)*t.c], t.w[tok*t.c:(tok+1)*t.c])
		}
	case rowRMSFwd:
		for i := lo; i < hi; i++ {
			x := t.inp[i*t.c : (i+1)*t.c]
			var ss float64
			for _, v := range x {
				ss += float64(v) * float64(v)
			}
			r := float32(1 / math.Sqrt(ss/float64(t.c)+float64(t.eps)))
			t.aux[i] = r
			o := t.out[i*t.c : (i+1)*t.c]
			for j, v := range x {
				o[j] = v * r * t.w[j]
			}
		}
	case rowRMSBwd:
		// y = x·r·w, r = (mean x² + eps)^-1/2:
		// dx = r·(dy⊙w) − x·r³/C · Σ(dy⊙w⊙x)
		for i := lo; i < hi; i++ {
			x := t.inp[i*t.c : (i+1)*t.c]
			dy := t.d1[i*t.c : (i+1)*t.c]
			dx := t.out[i*t.c : (i+1)*t.c]
			r := t.aux[i]
			var dot float64
			for j, v := range x {
				dot += float64(float64(dy[j]) * float64(t.w[j]) * float64(v))
			}
			k := float32(dot * float64(r) * float64(r) * float64(r) / float64(t.c))
			for j, v := range x {
				dx[j] += float32(float32(r*dy[j])*t.w[j]) - float32(v*k)
			}
		}
	case rowRoPEFwd, rowRoPEBwd:
		half := t.hd / 2
		sign := float32(1)
		if t.op == rowRoPEBwd {
			sign = -1
		}
		for i := lo; i < hi; i++ {
			tab := t.rope[int(t.ints[i])*t.hd:][:t.hd] // cos[half], sin[half]
			for h := 0; h < t.heads; h++ {
				x, y := t.inp[(i*t.heads+h)*t.hd:][:t.hd], t.out[(i*t.heads+h)*t.hd:][:t.hd]
				for j := 0; j < half; j++ {
					c, s := tab[j], sign*tab[half+j]
					a, b := x[j], x[j+half]
					y[j] = float32(a*c) - float32(b*s)
					y[j+half] = float32(b*c) + float32(a*s)
				}
			}
		}
	case rowSwiGLUFwd:
		t.be.swigluFwd(t.out[lo:hi], t.inp[lo:hi], t.aux[lo:hi])
	case rowSwiGLUBwd:
		t.be.swigluBwd(t.out[lo:hi], t.d2[lo:hi], t.d1[lo:hi], t.inp[lo:hi], t.aux[lo:hi])
	case rowXent:
		ws := t.be.ws[w]
		for i := lo; i < hi; i++ {
			t.xentRow(ws, i)
		}
	}
}

// xentRow computes one row's loss (and gradient, into t.d2's row, which
// may be the logits' own): with m the row maximum and e_j = exp(x_j − m),
// loss = m + ln Σe − x_target and dx_j = dscale·e_j/Σe − dscale·[j =
// target]. Without gradient the exponentials go to the worker's scratch so
// the logits stay readable.
func (t *rowTask) xentRow(ws *workspace, i int) {
	row := t.inp[i*t.c : (i+1)*t.c]
	var e []float32
	if t.d2 != nil {
		e = t.d2[i*t.c : (i+1)*t.c]
	}
	tgt := t.ints[i]
	if tgt == kernels.IgnoreIndex {
		t.out[i] = 0
		clear(e)
		return
	}
	mx := t.be.maxOf(row)
	xt := row[tgt]
	if e == nil {
		ws.s = grow(ws.s, len(row))
		e = ws.s
	}
	if &e[0] != &row[0] {
		copy(e, row)
	}
	t.be.expShift(e, 1, mx)
	sum := t.be.sum64(e)
	t.out[i] = float32(float64(mx) + math.Log(sum) - float64(xt))
	if t.d2 == nil {
		return
	}
	t.be.scale(e, float32(float64(t.s)/sum))
	e[tgt] -= t.s
}

func (t *colTask) run(_, lo, hi int) {
	c0, c1 := lo*colGrain, min(hi*colGrain, t.c)
	switch t.op {
	case colEmbedBwd:
		for i, tok := range t.ints {
			d := t.dst[int(tok)*t.c+c0 : int(tok)*t.c+c1]
			s := t.src[i*t.c+c0 : i*t.c+c1]
			for j, v := range s {
				d[j] += v
			}
		}
	case colRMSWeight:
		dw := t.dst[c0:c1]
		for i := 0; i < t.n; i++ {
			r := t.rstd[i]
			dy := t.src[i*t.c+c0 : i*t.c+c1]
			x := t.inp[i*t.c+c0 : i*t.c+c1]
			for j, v := range dy {
				dw[j] += float32(float32(v*x[j]) * r)
			}
		}
	}
}

func (b *Backend) cols(t *colTask) {
	b.pool.run(t, (t.c+colGrain-1)/colGrain, 1)
}

// EmbeddingForward gathers rows of the table.
func (b *Backend) EmbeddingForward(out, table kernels.Buffer, tokens kernels.IntBuffer, n, c int) {
	o, w, tk := fs(out), fs(table), is(tokens)
	need("embedding out", len(o), n*c)
	need("embedding tokens", len(tk), n)
	vocab := len(w) / max(c, 1)
	need("embedding table", len(w), vocab*c)
	for i, v := range tk {
		if v < 0 || int(v) >= vocab {
			panic(fmt.Errorf("%w: token %d at %d outside vocabulary [0, %d)", kernels.ErrShape, v, i, vocab))
		}
	}
	b.rowT = rowTask{be: b, op: rowEmbedFwd, out: o, w: w, ints: tk, c: c}
	b.pool.run(&b.rowT, n, 64)
	b.forget()
}

// EmbeddingBackward scatters gradients into the table, each column in token order.
func (b *Backend) EmbeddingBackward(dtable, dout kernels.Buffer, tokens kernels.IntBuffer, n, c int) {
	dw, d, tk := fs(dtable), fs(dout), is(tokens)
	need("embedding dout", len(d), n*c)
	need("embedding tokens", len(tk), n)
	vocab := len(dw) / max(c, 1)
	for i, v := range tk {
		if v < 0 || int(v) >= vocab {
			panic(fmt.Errorf("%w: token %d at %d outside vocabulary [0, %d)", kernels.ErrShape, v, i, vocab))
		}
	}
	b.colT = colTask{op: colEmbedBwd, dst: dw, src: d, ints: tk, n: n, c: c}
	b.cols(&b.colT)
	b.forget()
}

// RMSNormForward normalises rows.
func (b *Backend) RMSNormForward(out, rstd, inp, weight kernels.Buffer, n, c int, eps float32) {
	o, r, x, w := fs(out), fs(rstd), fs(inp), fs(weight)
	need("rmsnorm out", len(o), n*c)
	need("rmsnorm inp", len(x), n*c)
	need("rmsnorm rstd", len(r), n)
	need("rmsnorm weight", len(w), c)
	b.rowT = rowTask{be: b, op: rowRMSFwd, out: o, aux: r, inp: x, w: w, c: c, eps: eps}
	b.pool.run(&b.rowT, n, 16)
	b.forget()
}

// RMSNormBackward accumulates input and weight gradients.
func (b *Backend) RMSNormBackward(dinp, dweight, dout, inp, weight, rstd kernels.Buffer, n, c int) {
	dx, dw, dy, x, w, r := fs(dinp), fs(dweight), fs(dout), fs(inp), fs(weight), fs(rstd)
	need("rmsnorm dinp", len(dx), n*c)
	need("rmsnorm dout", len(dy), n*c)
	need("rmsnorm inp", len(x), n*c)
	need("rmsnorm dweight", len(dw), c)
	need("rmsnorm weight", len(w), c)
	need("rmsnorm rstd", len(r), n)
	b.rowT = rowTask{be: b, op: rowRMSBwd, out: dx, d1: dy, inp: x, w: w, aux: r, c: c}
	b.pool.run(&b.rowT, n, 16)
	b.colT = colTask{op: colRMSWeight, dst: dw, src: dy, inp: x, rstd: r, n: n, c: c}
	b.cols(&b.colT)
	b.forget()
}

type ropeKey struct {
	hd    int
	theta float64
}

// ropeTable returns cos/sin rows for positions [0, maxPos): row p holds
// cos(p·f_j) for j < hd/2 then sin(p·f_j), computed in float64.
func (b *Backend) ropeTable(hd int, theta float64, maxPos int) []float32 {
	key := ropeKey{hd, theta}
	tab := b.ropeTab[key]
	if len(tab) >= maxPos*hd {
		return tab
	}
	tab = kernels.RoPETable(hd, theta, max(maxPos, 2*len(tab)/max(hd, 1), 64))
	b.ropeTab[key] = tab
	return tab
}

func (b *Backend) rope(op int, dst, x kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	yd, xd, p := fs(dst), fs(x), is(pos)
	need("rope x", len(xd), n*heads*hd)
	need("rope dst", len(yd), n*heads*hd)
	need("rope pos", len(p), n)
	if hd%2 != 0 {
		panic(fmt.Errorf("%w: rope head dim %d must be even", kernels.ErrShape, hd))
	}
	maxPos := 0
	for i, v := range p {
		if v < 0 {
			panic(fmt.Errorf("%w: rope position %d at %d is negative", kernels.ErrShape, v, i))
		}
		maxPos = max(maxPos, int(v)+1)
	}
	b.rowT = rowTask{be: b, op: op, out: yd, inp: xd, ints: p, heads: heads, hd: hd, rope: b.ropeTable(hd, theta, maxPos)}
	b.pool.run(&b.rowT, n, 16)
	b.forget()
}

// RoPEForward rotates x into dst (which may be x).
func (b *Backend) RoPEForward(dst, x kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	b.rope(rowRoPEFwd, dst, x, pos, n, heads, hd, theta)
}

// RoPEBackward rotates gradients dx back into dst (which may be dx).
func (b *Backend) RoPEBackward(dst, dx kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	b.rope(rowRoPEBwd, dst, dx, pos, n, heads, hd, theta)
}

// SwiGLUForward computes silu(g)·u.
func (b *Backend) SwiGLUForward(h, g, u kernels.Buffer, n int) {
	hd, gd, ud := fs(h), fs(g), fs(u)
	need("swiglu h", len(hd), n)
	need("swiglu g", len(gd), n)
	need("swiglu u", len(ud), n)
	b.rowT = rowTask{be: b, op: rowSwiGLUFwd, out: hd, inp: gd, aux: ud}
	b.pool.run(&b.rowT, n, 1<<13)
	b.forget()
}

// SwiGLUBackward computes dg and du.
func (b *Backend) SwiGLUBackward(dg, du, dh, g, u kernels.Buffer, n int) {
	dgd, dud, dhd, gd, ud := fs(dg), fs(du), fs(dh), fs(g), fs(u)
	for _, l := range []int{len(dgd), len(dud), len(dhd), len(gd), len(ud)} {
		need("swiglu backward buffer", l, n)
	}
	b.rowT = rowTask{be: b, op: rowSwiGLUBwd, out: dgd, d2: dud, d1: dhd, inp: gd, aux: ud}
	b.pool.run(&b.rowT, n, 1<<13)
	b.forget()
}

// SoftmaxCrossEntropy computes per-row losses and, given dlogits (which
// may be logits), the logits' gradient.
func (b *Backend) SoftmaxCrossEntropy(losses, logits, dlogits kernels.Buffer, targets kernels.IntBuffer, n, v int, dscale float32) {
	l, x, t := fs(losses), fs(logits), is(targets)
	need("cross-entropy losses", len(l), n)
	need("cross-entropy logits", len(x), n*v)
	need("cross-entropy targets", len(t), n)
	var d []float32
	if dlogits != nil {
		d = fs(dlogits)
		need("cross-entropy gradient", len(d), n*v)
	}
	for i, tg := range t {
		if tg != kernels.IgnoreIndex && (tg < 0 || int(tg) >= v) {
			panic(fmt.Errorf("%w: target %d at %d outside vocabulary [0, %d)", kernels.ErrShape, tg, i, v))
		}
	}
	b.rowT = rowTask{be: b, op: rowXent, out: l, inp: x, d2: d, ints: t, c: v, s: dscale}
	b.pool.run(&b.rowT, n, 4)
	b.forget()
}
