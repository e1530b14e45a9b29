package cuda

import (
	"fmt"
	"unsafe"

	"github.com/fomnet/fomnet/kernels"
)

func (b *Backend) checkTokens(what string, tk []int32, vocab int) {
	for i, v := range tk {
		if v < 0 || int(v) >= vocab {
			panic(fmt.Errorf("%w: %s %d at %d outside vocabulary [0, %d)", kernels.ErrShape, what, v, i, vocab))
		}
	}
}

// EmbeddingForward gathers rows of the table.
func (b *Backend) EmbeddingForward(out, table kernels.Buffer, tokens kernels.IntBuffer, n, c int) {
	o, w, tk := b.fb(out), b.fw(table), b.ib(tokens)
	need("embedding out", o.n, n*c)
	need("embedding tokens", tk.Len(), n)
	vocab := w.n / max(c, 1)
	need("embedding table", w.n, vocab*c)
	b.checkTokens("token", tk.host, vocab)
	wp, wbf := weights(w)
	b.launch("fom_embed_fwd", rowsGrid((c+block1D-1)/block1D, n), block1D, ptr(o), wp, iptr(tk), i64(n), i64(c), wbf)
}

// EmbeddingBackward adds dout's rows into dtable: the host groups positions by
// token (in position order) so that each table row is summed by one block, in
// the order the CPU backend sums it.
func (b *Backend) EmbeddingBackward(dtable, dout kernels.Buffer, tokens kernels.IntBuffer, n, c int) {
	dw, d, tk := b.fg(dtable), b.fb(dout), b.ib(tokens)
	need("embedding dout", d.n, n*c)
	need("embedding tokens", tk.Len(), n)
	vocab := dw.n / max(c, 1)
	b.checkTokens("token", tk.host, vocab)
	if n == 0 {
		return
	}
	// Counting sort of positions by token (stable: positions stay in order
	// within a token), reusing host buffers: no allocation in a steady step.
	counts := grow32(b.embSt, vocab+1)
	clear(counts)
	for _, v := range tk.host {
		counts[v+1]++
	}
	ids := b.embIDs[:0]
	for v := 0; v < vocab; v++ {
		if counts[v+1] > 0 {
			ids = append(ids, int32(v))
		}
		counts[v+1] += counts[v]
	}
	// host = ids, then each id's start (len(ids)+1 of them), then positions
	host := grow32(b.embPos, 2*len(ids)+1+n)
	st, pos := host[len(ids):2*len(ids)+1], host[2*len(ids)+1:]
	copy(host, ids)
	for i, v := range ids {
		st[i] = counts[v]
	}
	st[len(ids)] = int32(n)
	for i, v := range tk.host {
		pos[counts[v]] = int32(i)
		counts[v]++
	}
	b.embSt, b.embIDs, b.embPos = counts, ids, host
	if b.csr == nil || b.csr.Len() < len(host) {
		if b.csr != nil {
			b.release(b.csr.p)
		}
		b.csr = b.AllocInt(len(host)).(*ibuf)
	}
	if !b.ok() {
		return
	}
	b.fail("upload", b.dev.CopyIn(b.csr.p, unsafe.Pointer(&host[0]), 4*int64(len(host))))
	base := b.csr.p
	b.launch("fom_embed_bwd", rowsGrid((c+block1D-1)/block1D, len(ids)), block1D, ptr(dw), ptr(d),
		base, base+4*uint64(len(ids)), base+4*uint64(2*len(ids)+1), i32(len(ids)), i64(c), flag(dw.half))
}

// grow32 returns x resized to n, reallocating only when it is too small.
func grow32(x []int32, n int) []int32 {
	if cap(x) < n {
		return make([]int32, n)
	}
	return x[:n]
}

// RMSNormForward normalises rows.
func (b *Backend) RMSNormForward(out, rstd, inp, weight kernels.Buffer, n, c int, eps float32) {
	o, r, x, w := b.fg(out), b.fb(rstd), b.fb(inp), b.fw(weight)
	need("rmsnorm out", o.n, n*c)
	need("rmsnorm inp", x.n, n*c)
	need("rmsnorm rstd", r.n, n)
	need("rmsnorm weight", w.n, c)
	if b.prec == BF16 {
		wp, wbf := weights(w)
		b.launch("fom_rms_fwd_warp", [3]int{(n + 3) / 4, 1, 1}, 128, ptr(o), ptr(r), ptr(x), wp, i64(n), i64(c), f32(eps), flag(o.half), wbf)
		return
	}
	b.launch("fom_rms_fwd", [3]int{(n + 127) / 128, 1, 1}, 128, ptr(o), ptr(r), ptr(x), ptr(w), i64(n), i64(c), f32(eps))
}

// RMSNormBackward accumulates input and weight gradients.
func (b *Backend) RMSNormBackward(dinp, dweight, dout, inp, weight, rstd kernels.Buffer, n, c int) {
	dx, dw, dy, x, w, r := b.fb(dinp), b.fg(dweight), b.fb(dout), b.fb(inp), b.fw(weight), b.fb(rstd)
	need("rmsnorm dinp", dx.n, n*c)
	need("rmsnorm dout", dy.n, n*c)
	need("rmsnorm inp", x.n, n*c)
	need("rmsnorm dweight", dw.n, c)
	need("rmsnorm weight", w.n, c)
	need("rmsnorm rstd", r.n, n)
	if b.prec == BF16 {
		wp, wbf := weights(w)
		b.launch("fom_rms_bwd_rows_warp", [3]int{(n + 3) / 4, 1, 1}, 128, ptr(dx), ptr(dy), ptr(x), wp, ptr(r), i64(n), i64(c), wbf)
	} else {
		b.launch("fom_rms_bwd_rows", [3]int{(n + 127) / 128, 1, 1}, 128, ptr(dx), ptr(dy), ptr(x), ptr(w), ptr(r), i64(n), i64(c))
	}
	if b.prec == BF16 && n > 2*colChunk {
		// Two stages over row chunks: a column per thread down all n rows
		// leaves most of a GPU idle.
		chunks := (n + colChunk - 1) / colChunk
		part := b.scratch(&b.colPart, chunks*c)
		b.launch("fom_rms_bwd_weight_part", [3]int{(c + 127) / 128, chunks, 1}, 128, ptr(part), ptr(dy), ptr(x), ptr(r), i64(n), i64(c), i32(colChunk))
		b.launch("fom_colsum_add", [3]int{(c + 127) / 128, 1, 1}, 128, ptr(dw), ptr(part), i32(chunks), i64(c), flag(dw.half))
		return
	}
	b.launch("fom_rms_bwd_weight", [3]int{(c + 127) / 128, 1, 1}, 128, ptr(dw), ptr(dy), ptr(x), ptr(r), i64(n), i64(c), flag(dw.half))
}

// colChunk is the row chunk of the bf16 path's two-stage column sums.
const colChunk = 256

// ropeTable returns the device copy of the CPU backend's cos/sin table for at
// least maxPos positions (computed on the host in float64, rounded to float32).
func (b *Backend) ropeTable(hd int, theta float64, maxPos int) *buf {
	key := ropeKey{hd, theta}
	old := b.ropeTab[key]
	if old != nil && old.n/hd >= maxPos {
		return old
	}
	rows := max(maxPos, 64)
	if old != nil {
		rows = max(rows, 2*old.n/hd)
		b.release(old.p)
	}
	tab := kernels.RoPETable(hd, theta, rows)
	t := b.Alloc(len(tab)).(*buf)
	b.Upload(t, tab)
	b.ropeTab[key] = t
	return t
}

func (b *Backend) rope(sign float32, dst, x kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	yd, xd, p := b.fg(dst), b.fb(x), b.ib(pos)
	need("rope x", xd.n, n*heads*hd)
	need("rope dst", yd.n, n*heads*hd)
	need("rope pos", p.Len(), n)
	if hd%2 != 0 {
		panic(fmt.Errorf("%w: rope head dim %d must be even", kernels.ErrShape, hd))
	}
	if n == 0 || hd == 0 {
		return
	}
	tab := b.ropeTable(hd, theta, p.maxPos())
	b.launch1D("fom_rope", n*heads*(hd/2), ptr(yd), flag(yd.half), ptr(xd), iptr(p), ptr(tab), i64(n), i32(heads), i32(hd), f32(sign))
}

// RoPEForward rotates x into dst (x, or a buffer held in bfloat16).
func (b *Backend) RoPEForward(dst, x kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	b.rope(1, dst, x, pos, n, heads, hd, theta)
}

// RoPEBackward rotates gradients back into dst, as RoPEForward.
func (b *Backend) RoPEBackward(dst, dx kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	b.rope(-1, dst, dx, pos, n, heads, hd, theta)
}

// SoftmaxCrossEntropy computes per-row losses and, given dlogits (which
// may be logits, or a buffer held in bfloat16), the logits' gradient.
func (b *Backend) SoftmaxCrossEntropy(losses, logits, dlogits kernels.Buffer, targets kernels.IntBuffer, n, v int, dscale float32) {
	l, x, t := b.fb(losses), b.fb(logits), b.ib(targets)
	need("cross-entropy losses", l.n, n)
	need("cross-entropy logits", x.n, n*v)
	need("cross-entropy targets", t.Len(), n)
	d := &buf{}
	if dlogits != nil {
		d = b.fg(dlogits)
		need("cross-entropy gradient", d.n, n*v)
	}
	for i, tg := range t.host {
		if tg != kernels.IgnoreIndex && (tg < 0 || int(tg) >= v) {
			panic(fmt.Errorf("%w: target %d at %d outside vocabulary [0, %d)", kernels.ErrShape, tg, i, v))
		}
	}
	b.launch("fom_xent", [3]int{(n + 7) / 8, 1, 1}, 128, ptr(l), ptr(x), iptr(t), i64(n), i64(v), ptr(d), flag(d.half), f32(dscale))
}

// SwiGLUForward computes h = silu(g)·u.
func (b *Backend) SwiGLUForward(h, g, u kernels.Buffer, n int) {
	hd, gd, ud := b.fg(h), b.fb(g), b.fb(u)
	need("swiglu h", hd.n, n)
	need("swiglu g", gd.n, n)
	need("swiglu u", ud.n, n)
	b.launch1D("fom_swiglu_fwd", n, ptr(hd), ptr(gd), ptr(ud), i64(n), flag(hd.half))
}

// SwiGLUBackward computes dg and du (either may hold bfloat16: gradients
// only matrix products read).
func (b *Backend) SwiGLUBackward(dg, du, dh, g, u kernels.Buffer, n int) {
	bs := []*buf{b.fg(dg), b.fg(du), b.fb(dh), b.fb(g), b.fb(u)}
	for _, x := range bs {
		need("swiglu backward buffer", x.n, n)
	}
	b.launch1D("fom_swiglu_bwd", n, ptr(bs[0]), ptr(bs[1]), ptr(bs[2]), ptr(bs[3]), ptr(bs[4]), i64(n), flag(bs[0].half), flag(bs[1].half))
}
