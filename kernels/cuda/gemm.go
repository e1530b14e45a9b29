package cuda

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/fomnet/fomnet/kernels"
)

// gemmConfig is one of the bf16 GEMM kernels: a bm×bn block tile, K in
// steps of bk through a ring of stages, with nt threads.
type gemmConfig struct {
	name                   string
	bm, bn, bk, stages, nt int
	// tma: gemm_sm90a.cu's wgmma kernel (compute capability 9.0 only),
	// reading its operands through tensor maps.
	tma bool
}

// The bf16 GEMM kernels (pickGEMM chooses among them for Matmul).
var (
	gemmBig     = gemmConfig{name: "fom_gemm_128x128", bm: 128, bn: 128, bk: 32, stages: 4, nt: 128}
	gemmSmall   = gemmConfig{name: "fom_gemm_64x128", bm: 64, bn: 128, bk: 32, stages: 4, nt: 128}
	gemmTMA     = gemmConfig{name: "fom_gemm90tma_128x256", bm: 128, bn: 256, bk: 64, stages: 4, nt: 384, tma: true}
	gemmConfigs = []gemmConfig{gemmBig, gemmSmall, gemmTMA}
)

// gemmByName returns the configuration of a kernel.
func gemmByName(name string) (gemmConfig, bool) {
	for _, g := range gemmConfigs {
		if g.name == name {
			return g, true
		}
	}
	return gemmConfig{}, false
}

// shared is the dynamic shared memory the kernel uses. gemm.cu: per stage,
// each operand's tile in the larger of its two layouts, rows padded by 8
// bfloat16 (its FOM_GEMM_SPAN). gemm_sm90a.cu: per stage, 128-byte rows
// of both tiles, 1 KiB to align them on 1024 bytes, and two mbarriers (8
// bytes each) per stage.
func (g gemmConfig) shared() int {
	if g.tma {
		return g.stages*(g.bm+g.bn)*2*g.bk + 1024 + 16*g.stages
	}
	span := func(r int) int { return max(r*(g.bk+8), g.bk*(r+8)) }
	return 2 * g.stages * (span(g.bm) + span(g.bn))
}

func (g gemmConfig) tiles(m, n int) int { return ((m + g.bm - 1) / g.bm) * ((n + g.bn - 1) / g.bn) }

// GEMMConfigs names the bf16 GEMM kernels this backend's device has (for
// benchmarks and tests).
func (b *Backend) GEMMConfigs() []string {
	var s []string
	for _, g := range gemmConfigs {
		if b.dev.Has(g.name) && (!g.tma || b.hasTMA()) {
			s = append(s, g.name)
		}
	}
	return s
}

// tensorMapper is a Device that encodes TMA tensor maps (the CUDA driver's).
type tensorMapper interface {
	TensorMap(p uint64, rows, cols, ld, boxRows, boxCols int) ([]byte, error)
}

type tensorMapKey struct {
	p                       uint64
	rows, cols, ld, boxRows int
}

// tensorMap returns the device address of the tensor map of m for copies of
// boxRows × 64 (made once per matrix and box; a map only records the
// address and the shape, so a reused address with the same shape reuses it).
func (b *Backend) tensorMap(m BF16Matrix, boxRows int) uint64 {
	key := tensorMapKey{m.p, m.Rows, m.Cols, m.Ld, boxRows}
	if p, ok := b.tensorMaps[key]; ok || !b.ok() {
		return p
	}
	enc, ok := b.dev.(tensorMapper)
	if !ok {
		b.fail("tensor map", errors.New("this device has no tensor maps"))
		return 0
	}
	tm, err := enc.TensorMap(m.p, m.Rows, m.Cols, m.Ld, boxRows, 64)
	if err != nil {
		b.fail("tensor map", err)
		return 0
	}
	p := b.alloc(int64(len(tm)))
	if b.ok() {
		b.fail("tensor map upload", b.dev.CopyIn(p, unsafe.Pointer(&tm[0]), int64(len(tm))))
	}
	if b.tensorMaps == nil {
		b.tensorMaps = map[tensorMapKey]uint64{}
	}
	b.tensorMaps[key] = p
	return p
}

// pickGEMM chooses the kernel for an m×n product: on a Hopper GPU the TMA
// wgmma kernel for products that fill a wave of blocks (132
// multiprocessors on an H200), once it has passed its check in that
// transposition on this device (tmaAgrees); else the 128×128 tile while it
// makes a wave, and the 64×128 tile for smaller products.
func (b *Backend) pickGEMM(m, n int, ta, tb bool) gemmConfig {
	if gemmTMA.tiles(m, n) >= 132 && b.hasTMA() && b.tmaAgrees(ta, tb) {
		return gemmTMA
	}
	if gemmBig.tiles(m, n) >= 132 {
		return gemmBig
	}
	return gemmSmall
}

// mnStrides are the wgmma descriptor strides of M/N-major tiles in
// gemm_sm90a.cu's TMA kernel: bytes between 64-element chunks along M (N)
// (its boxes lie 8 KiB apart) and between groups of 8 K rows (128-byte rows),
// as PTX's "leading" and "stride dimension byte offsets" of swizzled
// MN-major layouts read.
var mnStrides = [2]int{8192, 1024}

// SetHopperMNStrides replaces the descriptor strides of M/N-major tiles of
// the TMA kernel (a probe for tests on a GPU: TestGPUHopperMNStrides).
func (b *Backend) SetHopperMNStrides(lbo, sbo int) { b.mnStrides = [2]int{lbo, sbo} }

// tmaAgrees reports whether the TMA kernel computes a product in
// transposition (ta, tb) exactly as it must, checking once per backend on a
// 200×300×136 product (partial tiles, K not a multiple of 64) whose
// operands are multiples of 1/8 in [−1, 1]: exact in bfloat16, with every
// sum exact in float32, so any correct kernel gives the same bits, whatever
// its order of accumulation — those of gemm.cu's kernel, which CI checks on
// the emulator. A kernel that disagrees is not used by this backend, and
// Note says so.
func (b *Backend) tmaAgrees(ta, tb bool) bool {
	i := 0
	if ta {
		i |= 1
	}
	if tb {
		i |= 2
	}
	if b.tmaChecked[i] == 0 {
		b.tmaChecked[i] = -1
		if b.checkTMA(ta, tb) {
			b.tmaChecked[i] = 1
		} else if b.ok() {
			b.notes = append(b.notes, fmt.Sprintf("the sm_90a TMA GEMM (ta=%v, tb=%v) disagreed with its check on this device; its products run on the sm_80 kernels", ta, tb))
		}
	}
	return b.tmaChecked[i] > 0
}

func (b *Backend) checkTMA(ta, tb bool) bool {
	const m, n, k = 200, 300, 136
	exact := func(n, salt int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32((i*7+salt)%17-8) / 8
		}
		return x
	}
	var bufs []*buf
	defer func() {
		for _, x := range bufs {
			if x != nil {
				b.release(x.p)
			}
		}
	}()
	alloc := func(n int) *buf {
		x := b.Alloc(n).(*buf)
		bufs = append(bufs, x)
		return x
	}
	fa, fb, want, got := alloc(m*k), alloc(k*n), alloc(m*n), alloc(m*n)
	b.Upload(fa, exact(m*k, 3))
	b.Upload(fb, exact(k*n, 5))
	ar, ac, br, bc := stored(m, n, k, ta, tb)
	var sa, sb *buf
	am, bm := b.toBF16(&sa, fa, ar, ac), b.toBF16(&sb, fb, br, bc)
	bufs = append(bufs, sa, sb)
	b.gemm(gemmBig, want.p, am, bm, m, n, k, ta, tb, false, false)
	b.gemm(gemmTMA, got.p, am, bm, m, n, k, ta, tb, false, false)
	w, g := make([]float32, m*n), make([]float32, m*n)
	b.Download(w, want)
	b.Download(g, got)
	return b.ok() && slices.Equal(w, g)
}

// hasTMA reports whether the device runs the TMA wgmma kernel (a Hopper
// GPU whose driver loaded the sm_90a module).
func (b *Backend) hasTMA() bool {
	_, maps := b.dev.(tensorMapper)
	return maps && b.dev.Has(gemmTMA.name)
}

// BF16Matrix is a bfloat16 matrix on the device: rows × cols stored
// row-major with a leading dimension Ld, a multiple of 8 (16-byte rows),
// padded with zeros.
type BF16Matrix struct {
	p              uint64
	Rows, Cols, Ld int
}

func roundUp8(n int) int { return (n + 7) &^ 7 }

// toBF16 rounds x, a rows×cols float32 matrix, to bfloat16 into the scratch
// buffer in *slot.
func (b *Backend) toBF16(slot **buf, x *buf, rows, cols int) BF16Matrix {
	ld := roundUp8(cols)
	s := b.scratch(slot, (rows*ld+1)/2)
	b.launch1D("fom_to_bf16", rows*ld/8, s.p, ptr(x), i64(rows), i64(cols), i64(ld))
	return BF16Matrix{p: s.p, Rows: rows, Cols: cols, Ld: ld}
}

// operand is x, a rows×cols matrix, as the tensor cores read it: rounded
// to bfloat16 into the scratch buffer in *slot; or, held in bfloat16 (or
// weights whose bfloat16 copy is kept: the same rounding), as it is where
// its rows lie on 16-byte boundaries, else copied into the scratch with
// rows padded to a multiple of 8.
func (b *Backend) operand(slot **buf, x *buf, rows, cols int) BF16Matrix {
	if x.mirror != 0 { // weights with a bfloat16 copy: read it
		x = &buf{p: x.mirror, n: x.n, half: true, owner: b}
	}
	if !x.half {
		return b.toBF16(slot, x, rows, cols)
	}
	if cols%8 == 0 && x.p%16 == 0 {
		return BF16Matrix{p: x.p, Rows: rows, Cols: cols, Ld: cols}
	}
	ld := roundUp8(cols)
	s := b.scratch(slot, (rows*ld+1)/2)
	b.launch1D("fom_bf16_pad", rows*ld, s.p, x.p, i64(rows), i64(cols), i64(ld))
	return BF16Matrix{p: s.p, Rows: rows, Cols: cols, Ld: ld}
}

// ToBF16 returns a new bfloat16 copy of x as a rows×cols matrix (for
// benchmarks and tests of GEMMBF16; the backend's Matmul converts into
// scratch memory itself).
func (b *Backend) ToBF16(x kernels.Buffer, rows, cols int) BF16Matrix {
	d := b.fb(x)
	need("bf16 source", d.n, rows*cols)
	var slot *buf
	return b.toBF16(&slot, d, rows, cols)
}

// stored returns the shapes A and B are stored in for an m×n×k product
// (transposed when ta, tb): A ar×ac, B br×bc.
func stored(m, n, k int, ta, tb bool) (ar, ac, br, bc int) {
	ar, ac, br, bc = m, k, k, n
	if ta {
		ar, ac = k, m
	}
	if tb {
		br, bc = n, k
	}
	return ar, ac, br, bc
}

// matmulBF16 is the bf16 path's Matmul: A and B are rounded to bfloat16
// into scratch memory (or taken as they are, if held in bfloat16), then
// multiplied on tensor cores; C is float32, or bfloat16 where it holds it.
func (b *Backend) matmulBF16(c, a, bm *buf, m, n, k int, ta, tb, acc bool) {
	ar, ac, br, bc := stored(m, n, k, ta, tb)
	am := b.operand(&b.bfA, a, ar, ac)
	bb := b.operand(&b.bfB, bm, br, bc)
	b.gemm(b.pickGEMM(m, n, ta, tb), c.p, am, bb, m, n, k, ta, tb, acc, c.half)
}

// GEMMBF16 computes c = (acc ? c : 0) + op(a)·op(bm) with the named kernel
// (one of GEMMConfigs), a and bm as stored (transposed when ta, tb). With
// outBF16, c receives m×n bfloat16 (it needs m·n/2 float32s; with acc,
// its bfloat16 values are added to in float32 and rounded again).
func (b *Backend) GEMMBF16(config string, c kernels.Buffer, a, bm BF16Matrix, m, n, k int, ta, tb, acc, outBF16 bool) {
	cd := b.fb(c)
	want := m * n
	if outBF16 {
		want = (m*n + 1) / 2
	}
	if cd.n < want {
		panic(fmt.Errorf("%w: bf16 gemm output of %d elements for %d×%d (bf16 %v, acc %v)", kernels.ErrShape, cd.n, m, n, outBF16, acc))
	}
	ar, ac, br, bc := stored(m, n, k, ta, tb)
	if a.Rows != ar || a.Cols != ac || bm.Rows != br || bm.Cols != bc {
		panic(fmt.Errorf("%w: bf16 gemm %d×%d×%d of a %d×%d and b %d×%d", kernels.ErrShape, m, n, k, a.Rows, a.Cols, bm.Rows, bm.Cols))
	}
	g, ok := gemmByName(config)
	if !ok {
		panic(fmt.Errorf("%w: no bf16 gemm kernel %q", kernels.ErrUnsupported, config))
	}
	b.gemm(g, cd.p, a, bm, m, n, k, ta, tb, acc, outBF16)
}

func (b *Backend) gemm(g gemmConfig, c uint64, a, bm BF16Matrix, m, n, k int, ta, tb, acc, outBF16 bool) {
	if g.tma {
		// K-major operands come in boxes of all the tile's rows × 64 K,
		// M/N-major ones in boxes of 64 K rows × 64.
		boxA, boxB := g.bm, g.bn
		if ta {
			boxA = 64
		}
		if !tb {
			boxB = 64
		}
		ma, mb := b.tensorMap(a, boxA), b.tensorMap(bm, boxB)
		b.launchShared(g.name, [3]int{g.tiles(m, n), 1, 1}, g.nt, g.shared(), c, ma, mb, i64(m), i64(n), i64(k),
			flag(ta), flag(tb), flag(acc), flag(outBF16), i32(b.mnStrides[0]), i32(b.mnStrides[1]))
		return
	}
	b.launchShared(g.name, [3]int{g.tiles(m, n), 1, 1}, g.nt, g.shared(), c, a.p, bm.p, i64(m), i64(n), i64(k),
		i64(a.Ld), i64(bm.Ld), flag(ta), flag(tb), flag(acc), flag(outBF16))
}
