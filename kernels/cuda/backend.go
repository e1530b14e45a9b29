package cuda

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/fomnet/fomnet/kernels"
)

// Precision selects the arithmetic of matrix products and attention.
type Precision string

const (
	// FP32 follows the CPU backend's arithmetic contract bit for bit.
	FP32 Precision = "fp32"
	// BF16 rounds the inputs of matrix products and attention to bfloat16
	// and accumulates in float32 (tensor cores for matrix products); master
	// weights, optimizer state, every other operation and the loss stay float32.
	BF16 Precision = "bf16"
)

// Options configures a Backend.
type Options struct {
	// Device is the GPU ordinal (Open only).
	Device int
	// Precision is FP32 (default) or BF16.
	Precision Precision
}

// ErrNotBuilt reports a binary built without the cuda tag.
var ErrNotBuilt = errors.New("cuda: this fomnet was built without CUDA support; build it with `go build -tags cuda ./cmd/fomnet` on a machine with the CUDA headers (see README)")

// MaxHeadDim is the largest attention head dimension the kernels take.
const MaxHeadDim = 128

// Backend runs kernels.Backend's operations on a Device.
//
// Errors: a failed device call (out of memory, a launch error) does not
// panic. The Backend records the first one, skips every later device call and
// reports it from Err; model code checks Err after each step (kernels.Err).
// Shape mistakes are programmer errors and panic with kernels.ErrShape, as on
// the CPU backend.
type Backend struct {
	dev  Device
	prec Precision

	err    error
	closed bool
	once   sync.Once

	allocs []uint64 // every allocation, freed by Close

	// scratch, grown on demand
	lanes, sums   *buf // float64 scratch of SumSquares (counted in float32 pairs)
	delta         *buf // attention backward's D
	colPart       *buf // partial column sums (bf16 path)
	csr           *ibuf
	ropeTab       map[ropeKey]*buf
	ropeRows      map[ropeKey]int
	sumsHost      []float64
	embIDs, embSt []int32
	embPos        []int32
}

type ropeKey struct {
	hd    int
	theta float64
}

// NewWith returns a Backend on dev. The Backend owns dev and closes it.
func NewWith(dev Device, o Options) (*Backend, error) {
	switch o.Precision {
	case "":
		o.Precision = FP32
	case FP32, BF16:
	default:
		return nil, fmt.Errorf("cuda: precision %q: want fp32 or bf16", o.Precision)
	}
	return &Backend{dev: dev, prec: o.Precision, ropeTab: map[ropeKey]*buf{}, ropeRows: map[ropeKey]int{}}, nil
}

// Name is "cuda/<precision> <device>".
func (b *Backend) Name() string { return "cuda/" + string(b.prec) + " " + b.dev.Name() }

// Precision reports the backend's arithmetic.
func (b *Backend) Precision() Precision { return b.prec }

// Threads is 1: one host thread drives the device.
func (b *Backend) Threads() int { return 1 }

// Err returns the first device error, or nil.
func (b *Backend) Err() error { return b.err }

// Close frees every buffer and the device. It is idempotent.
func (b *Backend) Close() error {
	var err error
	b.once.Do(func() {
		for _, p := range b.allocs {
			if e := b.dev.Free(p); e != nil && err == nil {
				err = e
			}
		}
		b.allocs = nil
		if e := b.dev.Close(); e != nil && err == nil {
			err = e
		}
		b.closed = true
	})
	return err
}

func (b *Backend) fail(what string, err error) {
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("cuda: %s: %w", what, err)
	}
}

func (b *Backend) ok() bool {
	if b.closed {
		panic("cuda: backend used after Close")
	}
	return b.err == nil
}

// buf is a float32 device buffer (or a view of one).
type buf struct {
	p     uint64
	n     int
	owner *Backend
}

func (x *buf) Len() int { return x.n }

// ibuf is an int32 device buffer with a host mirror: only UploadInt writes
// int buffers, so the mirror is always current, and the host uses it to check
// token ids and to plan the embedding backward pass.
type ibuf struct {
	p     uint64
	host  []int32
	owner *Backend
}

func (x *ibuf) Len() int { return len(x.host) }

func (b *Backend) fb(x kernels.Buffer) *buf {
	bb, ok := x.(*buf)
	if !ok || bb.owner != b {
		panic(fmt.Errorf("%w: buffer %T is not from this cuda backend", kernels.ErrShape, x))
	}
	return bb
}

func (b *Backend) ib(x kernels.IntBuffer) *ibuf {
	bb, ok := x.(*ibuf)
	if !ok || bb.owner != b {
		panic(fmt.Errorf("%w: int buffer %T is not from this cuda backend", kernels.ErrShape, x))
	}
	return bb
}

func need(what string, got, want int) {
	if got != want {
		panic(fmt.Errorf("%w: %s has %d elements, shape needs %d", kernels.ErrShape, what, got, want))
	}
}

func (b *Backend) alloc(bytes int64) uint64 {
	if !b.ok() {
		return 0
	}
	p, err := b.dev.Alloc(max(bytes, 4))
	if err != nil {
		b.fail(fmt.Sprintf("allocating %d bytes", bytes), err)
		return 0
	}
	b.allocs = append(b.allocs, p)
	if err := b.dev.Clear(p, max(bytes, 4)); err != nil {
		b.fail("clearing new memory", err)
	}
	return p
}

// Alloc returns a zeroed buffer of n float32s.
func (b *Backend) Alloc(n int) kernels.Buffer {
	if n < 0 {
		panic(fmt.Errorf("%w: alloc of %d elements", kernels.ErrShape, n))
	}
	return &buf{p: b.alloc(4 * int64(n)), n: n, owner: b}
}

// AllocInt returns a zeroed buffer of n int32s.
func (b *Backend) AllocInt(n int) kernels.IntBuffer {
	if n < 0 {
		panic(fmt.Errorf("%w: alloc of %d elements", kernels.ErrShape, n))
	}
	return &ibuf{p: b.alloc(4 * int64(n)), host: make([]int32, n), owner: b}
}

// View aliases x[off : off+n].
func (b *Backend) View(x kernels.Buffer, off, n int) kernels.Buffer {
	d := b.fb(x)
	if off < 0 || n < 0 || off+n > d.n {
		panic(fmt.Errorf("%w: view [%d:%d] of a %d-element buffer", kernels.ErrShape, off, off+n, d.n))
	}
	return &buf{p: d.p + 4*uint64(off), n: n, owner: b}
}

// Upload copies src into dst.
func (b *Backend) Upload(dst kernels.Buffer, src []float32) {
	d := b.fb(dst)
	need("upload source", len(src), d.n)
	if len(src) == 0 || !b.ok() {
		return
	}
	b.fail("upload", b.dev.CopyIn(d.p, unsafe.Pointer(&src[0]), 4*int64(len(src))))
}

// UploadInt copies src into dst (and its host mirror).
func (b *Backend) UploadInt(dst kernels.IntBuffer, src []int32) {
	d := b.ib(dst)
	need("upload source", len(src), len(d.host))
	copy(d.host, src)
	if len(src) == 0 || !b.ok() {
		return
	}
	b.fail("upload", b.dev.CopyIn(d.p, unsafe.Pointer(&src[0]), 4*int64(len(src))))
}

// Download copies src into dst. After a device error dst is left as it was.
func (b *Backend) Download(dst []float32, src kernels.Buffer) {
	s := b.fb(src)
	need("download destination", len(dst), s.n)
	if len(dst) == 0 || !b.ok() {
		return
	}
	b.fail("download", b.dev.CopyOut(unsafe.Pointer(&dst[0]), s.p, 4*int64(len(dst))))
}

// Zero clears x.
func (b *Backend) Zero(x kernels.Buffer) {
	d := b.fb(x)
	if d.n == 0 || !b.ok() {
		return
	}
	b.fail("zero", b.dev.Clear(d.p, 4*int64(d.n)))
}

// Copy copies src into dst.
func (b *Backend) Copy(dst, src kernels.Buffer) {
	d, s := b.fb(dst), b.fb(src)
	need("copy destination", d.n, s.n)
	if d.n == 0 || !b.ok() {
		return
	}
	b.fail("copy", b.dev.CopyDev(d.p, s.p, 4*int64(d.n)))
}

// scratch returns a buffer of at least n float32s in *slot, replacing (and
// freeing) a smaller one.
func (b *Backend) scratch(slot **buf, n int) *buf {
	if *slot == nil || (*slot).n < n {
		if *slot != nil {
			b.release((*slot).p)
		}
		*slot = &buf{p: b.alloc(4 * int64(max(n, 1))), n: max(n, 1), owner: b}
	}
	return *slot
}

// release frees an allocation the backend no longer hands out.
func (b *Backend) release(p uint64) {
	for i, q := range b.allocs {
		if q == p {
			b.allocs = append(b.allocs[:i], b.allocs[i+1:]...)
			b.fail("free", b.dev.Free(p))
			return
		}
	}
}

// Arguments of a launch, 64 bits each.
func ptr(x *buf) uint64    { return x.p }
func iptr(x *ibuf) uint64  { return x.p }
func i64(n int) uint64     { return uint64(int64(n)) }
func i32(n int) uint64     { return uint64(uint32(int32(n))) }
func f32(f float32) uint64 { return uint64(math.Float32bits(f)) }
func flag(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

const block1D = 256

func (b *Backend) launch(kernel string, grid [3]int, block int, args ...uint64) {
	if !b.ok() {
		return
	}
	for _, g := range grid {
		if g <= 0 {
			return // nothing to do
		}
	}
	b.fail(kernel, b.dev.Launch(kernel, grid, [3]int{block, 1, 1}, args))
}

// launch1D runs a kernel with one thread per element of n.
func (b *Backend) launch1D(kernel string, n int, args ...uint64) {
	b.launch(kernel, [3]int{(n + block1D - 1) / block1D, 1, 1}, block1D, args...)
}

// rowsGrid spreads n rows over grid y and z (y is limited to 65535).
func rowsGrid(x, n int) [3]int {
	y := min(n, 65535)
	if y == 0 {
		return [3]int{x, 0, 0}
	}
	return [3]int{x, y, (n + y - 1) / y}
}

// Sync waits until the device has finished every call made so far and
// returns Err. Only timing needs it: Download already waits.
func (b *Backend) Sync() error {
	if s, ok := b.dev.(interface{ Sync() error }); ok && b.ok() {
		b.fail("sync", s.Sync())
	}
	return b.err
}

// Scale multiplies x by s.
func (b *Backend) Scale(x kernels.Buffer, s float32) {
	d := b.fb(x)
	b.launch1D("fom_scale", d.n, ptr(d), i64(d.n), f32(s))
}

const sumChunk = 4096

// SumSquares is the CPU backend's: float64 over 4096-element chunks, each with
// 16 interleaved FMA lanes added in lane order, chunk sums added in order
// (on the host).
func (b *Backend) SumSquares(x kernels.Buffer) float64 {
	d := b.fb(x)
	nc := (d.n + sumChunk - 1) / sumChunk
	if nc == 0 {
		return 0
	}
	lanes := b.scratch(&b.lanes, 2*16*nc)
	sums := b.scratch(&b.sums, 2*nc)
	b.launch1D("fom_sumsq_lanes", 16*nc, ptr(lanes), ptr(d), i64(d.n))
	b.launch1D("fom_sum_lanes", nc, ptr(sums), ptr(lanes), i64(nc))
	if cap(b.sumsHost) < nc {
		b.sumsHost = make([]float64, nc)
	}
	h := b.sumsHost[:nc]
	if !b.ok() {
		return math.NaN()
	}
	b.fail("download", b.dev.CopyOut(unsafe.Pointer(&h[0]), sums.p, 8*int64(nc)))
	var s float64
	for _, v := range h {
		s += v
	}
	return s
}

// AdamW updates params in place.
func (b *Backend) AdamW(params, grads, m, v kernels.Buffer, h kernels.AdamWStep) {
	p, g, mm, vv := b.fb(params), b.fb(grads), b.fb(m), b.fb(v)
	need("adamw grads", g.n, p.n)
	need("adamw m", mm.n, p.n)
	need("adamw v", vv.n, p.n)
	if h.Step < 1 {
		panic(fmt.Errorf("kernels: adamw step %d must count from 1", h.Step))
	}
	gs := h.GradScale
	if gs == 0 {
		gs = 1
	}
	ibc1 := float32(1 / (1 - math.Pow(float64(h.Beta1), float64(h.Step))))
	ibc2 := float32(1 / (1 - math.Pow(float64(h.Beta2), float64(h.Step))))
	b.launch1D("fom_adamw", p.n, ptr(p), ptr(g), ptr(mm), ptr(vv), i64(p.n),
		f32(gs), f32(h.Beta1), f32(1-h.Beta1), f32(h.Beta2), f32(1-h.Beta2), f32(ibc1), f32(ibc2),
		f32(h.Eps), f32(h.WeightDecay), f32(h.LR))
}

// SwiGLUForward computes h = silu(g)·u.
func (b *Backend) SwiGLUForward(h, g, u kernels.Buffer, n int) {
	hd, gd, ud := b.fb(h), b.fb(g), b.fb(u)
	need("swiglu h", hd.n, n)
	need("swiglu g", gd.n, n)
	need("swiglu u", ud.n, n)
	b.launch1D("fom_swiglu_fwd", n, ptr(hd), ptr(gd), ptr(ud), i64(n))
}

// SwiGLUBackward computes dg and du.
func (b *Backend) SwiGLUBackward(dg, du, dh, g, u kernels.Buffer, n int) {
	bs := []*buf{b.fb(dg), b.fb(du), b.fb(dh), b.fb(g), b.fb(u)}
	for _, x := range bs {
		need("swiglu backward buffer", x.n, n)
	}
	b.launch1D("fom_swiglu_bwd", n, ptr(bs[0]), ptr(bs[1]), ptr(bs[2]), ptr(bs[3]), ptr(bs[4]), i64(n))
}

// Matmul computes C = (acc ? C : 0) + op(A)·op(B).
func (b *Backend) Matmul(c, a, bm kernels.Buffer, m, n, k int, transA, transB, acc bool) {
	cd, ad, bd := b.fb(c), b.fb(a), b.fb(bm)
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
		b.launch("fom_matmul_bf16", [3]int{(n + 127) / 128, (m + 127) / 128, 1}, 256, args...)
		return
	}
	b.launch("fom_matmul_f32", [3]int{(n + 63) / 64, (m + 63) / 64, 1}, 256, args...)
}

func (b *Backend) checkTokens(what string, tk []int32, vocab int) {
	for i, v := range tk {
		if v < 0 || int(v) >= vocab {
			panic(fmt.Errorf("%w: %s %d at %d outside vocabulary [0, %d)", kernels.ErrShape, what, v, i, vocab))
		}
	}
}

// EmbeddingForward gathers rows of the table.
func (b *Backend) EmbeddingForward(out, table kernels.Buffer, tokens kernels.IntBuffer, n, c int) {
	o, w, tk := b.fb(out), b.fb(table), b.ib(tokens)
	need("embedding out", o.n, n*c)
	need("embedding tokens", tk.Len(), n)
	vocab := w.n / max(c, 1)
	need("embedding table", w.n, vocab*c)
	b.checkTokens("token", tk.host, vocab)
	b.launch("fom_embed_fwd", rowsGrid((c+block1D-1)/block1D, n), block1D, ptr(o), ptr(w), iptr(tk), i64(n), i64(c))
}

// EmbeddingBackward adds dout's rows into dtable: the host groups positions by
// token (in position order) so that each table row is summed by one block, in
// the order the CPU backend sums it.
func (b *Backend) EmbeddingBackward(dtable, dout kernels.Buffer, tokens kernels.IntBuffer, n, c int) {
	dw, d, tk := b.fb(dtable), b.fb(dout), b.ib(tokens)
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
		base, base+4*uint64(len(ids)), base+4*uint64(2*len(ids)+1), i32(len(ids)), i64(c))
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
	o, r, x, w := b.fb(out), b.fb(rstd), b.fb(inp), b.fb(weight)
	need("rmsnorm out", o.n, n*c)
	need("rmsnorm inp", x.n, n*c)
	need("rmsnorm rstd", r.n, n)
	need("rmsnorm weight", w.n, c)
	if b.prec == BF16 {
		b.launch("fom_rms_fwd_warp", [3]int{(n + 3) / 4, 1, 1}, 128, ptr(o), ptr(r), ptr(x), ptr(w), i64(n), i64(c), f32(eps))
		return
	}
	b.launch("fom_rms_fwd", [3]int{(n + 127) / 128, 1, 1}, 128, ptr(o), ptr(r), ptr(x), ptr(w), i64(n), i64(c), f32(eps))
}

// RMSNormBackward accumulates input and weight gradients.
func (b *Backend) RMSNormBackward(dinp, dweight, dout, inp, weight, rstd kernels.Buffer, n, c int) {
	dx, dw, dy, x, w, r := b.fb(dinp), b.fb(dweight), b.fb(dout), b.fb(inp), b.fb(weight), b.fb(rstd)
	need("rmsnorm dinp", dx.n, n*c)
	need("rmsnorm dout", dy.n, n*c)
	need("rmsnorm inp", x.n, n*c)
	need("rmsnorm dweight", dw.n, c)
	need("rmsnorm weight", w.n, c)
	need("rmsnorm rstd", r.n, n)
	if b.prec == BF16 {
		b.launch("fom_rms_bwd_rows_warp", [3]int{(n + 3) / 4, 1, 1}, 128, ptr(dx), ptr(dy), ptr(x), ptr(w), ptr(r), i64(n), i64(c))
	} else {
		b.launch("fom_rms_bwd_rows", [3]int{(n + 127) / 128, 1, 1}, 128, ptr(dx), ptr(dy), ptr(x), ptr(w), ptr(r), i64(n), i64(c))
	}
	if b.prec == BF16 && n > 2*colChunk {
		// Two stages over row chunks: a column per thread down all n rows
		// leaves most of a GPU idle.
		chunks := (n + colChunk - 1) / colChunk
		part := b.scratch(&b.colPart, chunks*c)
		b.launch("fom_rms_bwd_weight_part", [3]int{(c + 127) / 128, chunks, 1}, 128, ptr(part), ptr(dy), ptr(x), ptr(r), i64(n), i64(c), i32(colChunk))
		b.launch("fom_colsum_add", [3]int{(c + 127) / 128, 1, 1}, 128, ptr(dw), ptr(part), i32(chunks), i64(c))
		return
	}
	b.launch("fom_rms_bwd_weight", [3]int{(c + 127) / 128, 1, 1}, 128, ptr(dw), ptr(dy), ptr(x), ptr(r), i64(n), i64(c))
}

// colChunk is the row chunk of the bf16 path's two-stage column sums.
const colChunk = 256

// ropeTable returns the device copy of the CPU backend's cos/sin table for at
// least maxPos positions (computed on the host in float64, rounded to float32).
func (b *Backend) ropeTable(hd int, theta float64, maxPos int) *buf {
	key := ropeKey{hd, theta}
	if t := b.ropeTab[key]; t != nil && b.ropeRows[key] >= maxPos {
		return t
	}
	rows := max(maxPos, 2*b.ropeRows[key], 64)
	tab := kernels.RoPETable(hd, theta, rows)
	if old := b.ropeTab[key]; old != nil {
		b.release(old.p)
	}
	t := b.Alloc(len(tab)).(*buf)
	b.Upload(t, tab)
	b.ropeTab[key], b.ropeRows[key] = t, rows
	return t
}

func (b *Backend) rope(sign float32, x kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	xd, p := b.fb(x), b.ib(pos)
	need("rope x", xd.n, n*heads*hd)
	need("rope pos", p.Len(), n)
	if hd%2 != 0 {
		panic(fmt.Errorf("%w: rope head dim %d must be even", kernels.ErrShape, hd))
	}
	maxPos := 0
	for i, v := range p.host {
		if v < 0 {
			panic(fmt.Errorf("%w: rope position %d at %d is negative", kernels.ErrShape, v, i))
		}
		maxPos = max(maxPos, int(v)+1)
	}
	if n == 0 || hd == 0 {
		return
	}
	tab := b.ropeTable(hd, theta, maxPos)
	b.launch1D("fom_rope", n*heads*(hd/2), ptr(xd), iptr(p), ptr(tab), i64(n), i32(heads), i32(hd), f32(sign))
}

// RoPEForward rotates in place.
func (b *Backend) RoPEForward(x kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	b.rope(1, x, pos, n, heads, hd, theta)
}

// RoPEBackward rotates gradients back in place.
func (b *Backend) RoPEBackward(dx kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64) {
	b.rope(-1, dx, pos, n, heads, hd, theta)
}

// SoftmaxCrossEntropy computes per-row losses and, with grad, the logits'
// gradient in place.
func (b *Backend) SoftmaxCrossEntropy(losses, logits kernels.Buffer, targets kernels.IntBuffer, n, v int, grad bool, dscale float32) {
	l, x, t := b.fb(losses), b.fb(logits), b.ib(targets)
	need("cross-entropy losses", l.n, n)
	need("cross-entropy logits", x.n, n*v)
	need("cross-entropy targets", t.Len(), n)
	for i, tg := range t.host {
		if tg != kernels.IgnoreIndex && (tg < 0 || int(tg) >= v) {
			panic(fmt.Errorf("%w: target %d at %d outside vocabulary [0, %d)", kernels.ErrShape, tg, i, v))
		}
	}
	b.launch("fom_xent", [3]int{(n + 7) / 8, 1, 1}, 128, ptr(l), ptr(x), iptr(t), i64(n), i64(v), flag(grad), f32(dscale))
}

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

var _ kernels.Backend = (*Backend)(nil)
