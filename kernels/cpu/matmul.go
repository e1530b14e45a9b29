package cpu

import (
	"fmt"

	"github.com/fomnet/fomnet/kernels"
)

// GEMM in the BLIS style: op(B) is packed in KC×NR micro-panels and op(A) in
// MR×KC micro-panels, and an MR×NR register tile is computed by the
// micro-kernel (6×16 on AVX2 and in Go, 12×32 on AVX-512). Each C element is one FMA chain over k in
// order: the first KC block starts from 0 (or from C when accumulating) and
// every later block continues from the stored partial. Which worker computes
// a tile never changes the result.

const (
	kc      = 256  // depth of one packed block
	mc      = 48   // rows of A per task (a multiple of every MR)
	nc      = 3072 // columns of B packed at once (a multiple of every NR)
	maxTile = 12 * 32
)

// mat is a strided row-major matrix seen through an optional transposition:
// element (r, c) of op(X) is d[r*ld+c], or d[c*ld+r] when t.
type mat struct {
	d  []float32
	ld int
	t  bool
}

// workspace is one worker's scratch; it only grows.
type workspace struct {
	apack []float32
	bpack []float32 // for serial GEMMs run inside other tasks
	tile  [maxTile]float32
	s, dp []float32 // attention score rows
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// packA packs rows [i0, i0+m) and depth [p0, p0+k) of op(A) into mr-row
// micro-panels: dst[panel][k][mr], zero padded.
func packA(dst []float32, a mat, i0, m, p0, k, mr int) {
	for pi := 0; pi < m; pi += mr {
		rows := min(mr, m-pi)
		panel := dst[(pi/mr)*k*mr:][:k*mr]
		if a.t {
			for kk := 0; kk < k; kk++ {
				src := a.d[(p0+kk)*a.ld+i0+pi:]
				o := panel[kk*mr : kk*mr+mr]
				for i := 0; i < rows; i++ {
					o[i] = src[i]
				}
				for i := rows; i < mr; i++ {
					o[i] = 0
				}
			}
			continue
		}
		for i := 0; i < mr; i++ {
			if i >= rows {
				for kk := 0; kk < k; kk++ {
					panel[kk*mr+i] = 0
				}
				continue
			}
			src := a.d[(i0+pi+i)*a.ld+p0:][:k]
			for kk, v := range src {
				panel[kk*mr+i] = v
			}
		}
	}
}

// packB packs depth [p0, p0+k) and columns [j0+q0, j0+q1) of op(B) into nr-column
// micro-panels dst[panel][k][nr], where q0, q1 are multiples of nr relative to
// j0 and n is the block's full width (for zero padding).
func packB(dst []float32, b mat, p0, k, j0, n, q0, q1, nr int) {
	for qj := q0; qj < q1 && qj < n; qj += nr {
		cols := min(nr, n-qj)
		panel := dst[(qj/nr)*k*nr:][:k*nr]
		if !b.t {
			for kk := 0; kk < k; kk++ {
				src := b.d[(p0+kk)*b.ld+j0+qj:][:cols]
				o := panel[kk*nr : kk*nr+nr]
				copy(o, src)
				for j := cols; j < nr; j++ {
					o[j] = 0
				}
			}
			continue
		}
		// Transposed: column j of the panel is row j0+qj+j of b. Copy in
		// 8-deep slabs so the 16 source rows stream and the writes stay
		// within one 512-byte block.
		for k0 := 0; k0 < k; k0 += 8 {
			k1 := min(k0+8, k)
			for j := 0; j < nr; j++ {
				if j >= cols {
					for kk := k0; kk < k1; kk++ {
						panel[kk*nr+j] = 0
					}
					continue
				}
				src := b.d[(j0+qj+j)*b.ld+p0+k0:][:k1-k0]
				for kk, v := range src {
					panel[(k0+kk)*nr+j] = v
				}
			}
		}
	}
}

// kernelGeneric is the portable micro-kernel: the same FMA chains as the
// assembly one, via fma32.
func kernelGeneric(k, mr, nr int, ap, bp, c []float32, ldc int, load bool) {
	for i := 0; i < mr; i++ {
		for j := 0; j < nr; j++ {
			var acc float32
			if load {
				acc = c[i*ldc+j]
			}
			for kk := 0; kk < k; kk++ {
				acc = fma32(ap[kk*mr+i], bp[kk*nr+j], acc)
			}
			c[i*ldc+j] = acc
		}
	}
}

// macro computes C[i0:i0+m, j0:j0+n] from packed A (apack, rows from i0) and
// packed B (bpack, columns from j0) over depth k. Edge tiles go through the
// workspace tile so that the micro-kernel always sees a full 6×16 tile.
func (b *Backend) macro(ws *workspace, apack, bpack []float32, c []float32, ldc, m, n, k int, load bool) {
	mr, nr := b.mr, b.nr
	for jr := 0; jr < n; jr += nr {
		bp := bpack[(jr/nr)*k*nr:]
		cols := min(nr, n-jr)
		for ir := 0; ir < m; ir += mr {
			ap := apack[(ir/mr)*k*mr:]
			rows := min(mr, m-ir)
			if rows == mr && cols == nr {
				b.kernel(k, ap, bp, c[ir*ldc+jr:], ldc, load)
				continue
			}
			t := ws.tile[:]
			if load {
				for i := 0; i < rows; i++ {
					copy(t[i*nr:i*nr+cols], c[(ir+i)*ldc+jr:])
				}
			}
			b.kernel(k, ap, bp, t, nr, load)
			for i := 0; i < rows; i++ {
				copy(c[(ir+i)*ldc+jr:(ir+i)*ldc+jr+cols], t[i*nr:])
			}
		}
	}
}

func (b *Backend) kernel(k int, ap, bp, c []float32, ldc int, load bool) {
	switch {
	case b.avx512:
		kernel512(k, ap, bp, c, ldc, load)
	case b.fma:
		kernelFMA(k, ap, bp, c, ldc, load)
	default:
		kernelGeneric(k, b.mr, b.nr, ap, bp, c, ldc, load)
	}
}

// gemmSerial computes C = (acc ? C : 0) + op(A)·op(B) on the calling worker
// only; kernels that already run in parallel (attention) use it.
func (b *Backend) gemmSerial(ws *workspace, c []float32, ldc int, a, bm mat, m, n, k int, acc bool) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !acc {
			for i := 0; i < m; i++ {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		return
	}
	for j0 := 0; j0 < n; j0 += nc {
		nb := min(nc, n-j0)
		for p0 := 0; p0 < k; p0 += kc {
			kb := min(kc, k-p0)
			load := acc || p0 > 0
			ws.bpack = grow(ws.bpack, roundUp(nb, b.nr)*kb)
			packB(ws.bpack, bm, p0, kb, j0, nb, 0, nb, b.nr)
			for i0 := 0; i0 < m; i0 += mc {
				mb := min(mc, m-i0)
				ws.apack = grow(ws.apack, roundUp(mb, b.mr)*kb)
				packA(ws.apack, a, i0, mb, p0, kb, b.mr)
				b.macro(ws, ws.apack, ws.bpack, c[i0*ldc+j0:], ldc, mb, nb, kb, load)
			}
		}
	}
}

func roundUp(x, m int) int { return (x + m - 1) / m * m }

// ncSub is the width of C one parallel work item computes.
const ncSub = 256

// matmulTask is the parallel GEMM for one (column block, depth block):
// phase 0 packs B panels, phase 1 packs A panels (all rows), phase 2
// computes (row block × column sub-block) items of C from the shared packs.
type matmulTask struct {
	be           *Backend
	phase        int
	c            []float32
	ldc          int
	a, b         mat
	m, n, k      int
	j0, nb       int
	p0, kb       int
	load         bool
	apack, bpack []float32
	nsub         int // column sub-blocks per row block
}

func (t *matmulTask) run(w, lo, hi int) {
	switch t.phase {
	case 0:
		nr := t.be.nr
		packB(t.bpack, t.b, t.p0, t.kb, t.j0, t.nb, lo*nr, hi*nr, nr)
	case 1:
		mr := t.be.mr
		i0, i1 := lo*mr, min(hi*mr, t.m)
		packA(t.apack[lo*mr*t.kb:], t.a, i0, i1-i0, t.p0, t.kb, mr)
	case 2:
		ws := t.be.ws[w]
		for it := lo; it < hi; it++ {
			i0 := (it / t.nsub) * mc
			q0 := (it % t.nsub) * ncSub
			mb, qb := min(mc, t.m-i0), min(ncSub, t.nb-q0)
			t.be.macro(ws, t.apack[i0*t.kb:], t.bpack[q0*t.kb:], t.c[i0*t.ldc+t.j0+q0:], t.ldc, mb, qb, t.kb, t.load)
		}
	}
}

// Matmul implements kernels.Backend.
func (b *Backend) Matmul(c, a, bb kernels.Buffer, m, n, k int, transA, transB, acc bool) {
	cd, ad, bd := fs(c), fs(a), fs(bb)
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Errorf("%w: matmul m=%d n=%d k=%d", kernels.ErrShape, m, n, k))
	}
	need("matmul C", len(cd), m*n)
	need("matmul A", len(ad), m*k)
	need("matmul B", len(bd), k*n)
	am := mat{ad, k, transA}
	if transA {
		am.ld = m
	}
	bm := mat{bd, n, transB}
	if transB {
		bm.ld = k
	}
	b.gemm(cd, n, am, bm, m, n, k, acc)
}

// Packed is a linear layer's weight w [n×k], as Linear multiplies by wᵀ,
// packed once into the micro-kernel's panels: products with few rows (one
// decoding step) would otherwise spend most of their time repacking it.
type Packed struct {
	n, k   int
	nr     int
	blocks [][]float32 // [column block (nc)][depth block (kc)] panels
}

// Pack packs w [n×k] for Linear on this backend.
func (b *Backend) Pack(w []float32, n, k int) *Packed {
	need("pack W", len(w), n*k)
	p := &Packed{n: n, k: k, nr: b.nr}
	bm := mat{w, k, true}
	for j0 := 0; j0 < n; j0 += nc {
		nb := min(nc, n-j0)
		for p0 := 0; p0 < k; p0 += kc {
			kb := min(kc, k-p0)
			dst := make([]float32, roundUp(nb, b.nr)*kb)
			packB(dst, bm, p0, kb, j0, nb, 0, nb, b.nr)
			p.blocks = append(p.blocks, dst)
		}
	}
	return p
}

// Linear computes c[m×n] = a[m×k]·wᵀ on host slices, w packed by Pack,
// with Matmul's FMA chains: each element of c is the same whatever m, the
// thread count or the code path, so a row's result does not depend on the
// rows computed beside it.
func (b *Backend) Linear(c, a []float32, m int, w *Packed) {
	n, k := w.n, w.k
	need("linear C", len(c), m*n)
	need("linear A", len(a), m*k)
	if w.nr != b.nr {
		panic(fmt.Errorf("%w: weights packed for %d-column panels, backend uses %d", kernels.ErrShape, w.nr, b.nr))
	}
	if m == 0 || n == 0 || k == 0 {
		clear(c[:m*n])
		return
	}
	am := mat{a, k, false}
	nkb := (k + kc - 1) / kc
	serial := b.pool.n == 1 || int64(m)*int64(n)*int64(k) < 1<<15
	ws := b.ws[0]
	for jb, j0 := 0, 0; j0 < n; jb, j0 = jb+1, j0+nc {
		nb := min(nc, n-j0)
		for pb, p0 := 0, 0; p0 < k; pb, p0 = pb+1, p0+kc {
			kb := min(kc, k-p0)
			bpack := w.blocks[jb*nkb+pb]
			if serial {
				for i0 := 0; i0 < m; i0 += mc {
					mb := min(mc, m-i0)
					ws.apack = grow(ws.apack, roundUp(mb, b.mr)*kb)
					packA(ws.apack, am, i0, mb, p0, kb, b.mr)
					b.macro(ws, ws.apack, bpack, c[i0*n+j0:], n, mb, nb, kb, p0 > 0)
				}
				continue
			}
			t := &b.matmulT
			ws.apack = grow(ws.apack, roundUp(m, b.mr)*kb)
			t.c, t.ldc, t.a, t.m, t.n, t.k = c, n, am, m, n, k
			t.bpack, t.apack = bpack, ws.apack
			t.j0, t.nb, t.p0, t.kb, t.load = j0, nb, p0, kb, p0 > 0
			t.nsub = (nb + ncSub - 1) / ncSub
			t.phase = 1
			b.pool.run(t, (m+b.mr-1)/b.mr, 8)
			t.phase = 2
			b.pool.run(t, ((m+mc-1)/mc)*t.nsub, 1)
			t.c, t.a.d, t.bpack = nil, nil, nil
		}
	}
}

func (b *Backend) gemm(c []float32, ldc int, a, bm mat, m, n, k int, acc bool) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || b.pool.n == 1 || int64(m)*int64(n)*int64(k) < 1<<15 {
		b.gemmSerial(b.ws[0], c, ldc, a, bm, m, n, k, acc)
		return
	}
	t := &b.matmulT
	t.c, t.ldc, t.a, t.b, t.m, t.n, t.k = c, ldc, a, bm, m, n, k
	ws := b.ws[0] // worker 0's serial buffers are free while a parallel GEMM runs
	for j0 := 0; j0 < n; j0 += nc {
		nb := min(nc, n-j0)
		for p0 := 0; p0 < k; p0 += kc {
			kb := min(kc, k-p0)
			ws.bpack = grow(ws.bpack, roundUp(nb, b.nr)*kb)
			ws.apack = grow(ws.apack, roundUp(m, b.mr)*kb)
			t.bpack, t.apack = ws.bpack, ws.apack
			t.j0, t.nb, t.p0, t.kb = j0, nb, p0, kb
			t.load = acc || p0 > 0
			t.nsub = (nb + ncSub - 1) / ncSub
			t.phase = 0
			b.pool.run(t, (nb+b.nr-1)/b.nr, 8)
			t.phase = 1
			b.pool.run(t, (m+b.mr-1)/b.mr, 8)
			t.phase = 2
			b.pool.run(t, ((m+mc-1)/mc)*t.nsub, 1)
		}
	}
	t.c, t.a.d, t.b.d, t.bpack = nil, nil, nil, nil
}

// WorkspaceBytes is the scratch the backend's workers hold now (it only
// grows, to at most MaxWorkspaceBytes).
func (b *Backend) WorkspaceBytes() int64 {
	var n int64
	for _, ws := range b.ws {
		n += int64(cap(ws.apack)+cap(ws.bpack)+cap(ws.s)+cap(ws.dp)+len(ws.tile)) * 4
	}
	return n
}

// MaxWorkspaceBytes bounds the scratch a backend of this many threads
// grows for products whose op(A) has at most rows rows and attention over
// sequences of seq tokens: a parallel product packs a depth block of all
// of op(A) and one of op(B); each worker may hold a serial product's
// panels and attention's score rows.
func MaxWorkspaceBytes(threads, rows, seq int) int64 {
	shared := int64(kc) * int64(nc+rows+16)
	per := int64(kc)*int64(nc+mc) + int64(2*qBlock*seq) + maxTile
	return 4 * (shared + int64(max(threads, 1))*per)
}

// WorkspaceBound is MaxWorkspaceBytes for this backend's threads.
func (b *Backend) WorkspaceBound(rows, seq int) int64 {
	return MaxWorkspaceBytes(b.Threads(), rows, seq)
}
