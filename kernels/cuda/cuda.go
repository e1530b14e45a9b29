package cuda

import (
	"errors"
	"fmt"
	"math"
	"strings"
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

	allocs []uint64        // every allocation, freed by Close
	mapped map[uint64]bool // those in host memory (AllocHost)

	// scratch, grown on demand
	lanes, sums   *buf // float64 scratch of SumSquares (counted in float32 pairs)
	delta         *buf // attention backward's D
	colPart       *buf // partial column sums (bf16 path)
	bfA, bfB      *buf // bfloat16 operands of matrix products (bf16 path)
	bfQ, bfK, bfV *buf // bfloat16 operands of attention (bf16 path)
	bfDO          *buf
	tensorMaps    map[tensorMapKey]uint64 // device copies of TMA tensor maps
	mnStrides     [2]int                  // gemm.go's mnStrides, unless a test set others
	tmaChecked    [4]int8                 // per transposition: 0 unchecked, 1 the TMA kernel agreed, −1 not
	notes         []string                // what the backend left out (Note)
	csr           *ibuf
	ropeTab       map[ropeKey]*buf // rows = Len()/hd
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
	return &Backend{dev: dev, prec: o.Precision, ropeTab: map[ropeKey]*buf{}, mapped: map[uint64]bool{}, mnStrides: mnStrides}, nil
}

// Name is "cuda/<precision> <device>".
func (b *Backend) Name() string { return "cuda/" + string(b.prec) + " " + b.dev.Name() }

// Note says what the device or the backend left out (an sm_90a module the
// driver could not load, a kernel that failed its check), or "".
func (b *Backend) Note() string {
	notes := b.notes
	if n, ok := b.dev.(interface{ Note() string }); ok && n.Note() != "" {
		notes = append([]string{n.Note()}, notes...)
	}
	return strings.Join(notes, "; ")
}

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
			if e := b.free(p); e != nil && err == nil {
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

// buf is a device buffer of float32s, or of bfloat16s where half
// (AllocBF16: gradients, activations), or a view of one.
type buf struct {
	p     uint64
	n     int
	half  bool
	owner *Backend
	// mirror, on weights with a bfloat16 copy (AllocMaster, AllocCopied),
	// is the device address of the copy at this view's first element;
	// inHost says the float32 values are in host memory (AllocMaster).
	mirror uint64
	inHost bool
}

func (x *buf) Len() int { return x.n }

// elem is the size of one element; bytes the buffer's in device memory.
func (x *buf) elem() int64 {
	if x.half {
		return 2
	}
	return 4
}

func (x *buf) bytes() int64 { return x.elem() * int64(x.n) }

// ibuf is an int32 device buffer with a host mirror: only UploadInt writes
// int buffers, so the mirror is always current, and the host uses it to check
// token ids and to plan the embedding backward pass.
type ibuf struct {
	p     uint64
	host  []int32
	owner *Backend
	rows  int // maxPos's answer since the last upload, or 0 before it is asked
	docT  int // the row length attention last found these valid document starts for, or 0
}

func (x *ibuf) Len() int { return len(x.host) }

// maxPos is the rows a RoPE table needs for positions x: one more than the
// largest. It scans the host copy once after each upload (every block's
// RoPE reads the same positions); a negative position panics.
func (x *ibuf) maxPos() int {
	if x.rows > 0 {
		return x.rows
	}
	rows := 0
	for i, v := range x.host {
		if v < 0 {
			panic(fmt.Errorf("%w: rope position %d at %d is negative", kernels.ErrShape, v, i))
		}
		rows = max(rows, int(v)+1)
	}
	x.rows = rows
	return rows
}

// fb is a float32 buffer of this backend's; fg may hold bfloat16 as well,
// for the arguments that take either (kernels.BF16Backend). Neither takes
// weights with a bfloat16 copy (AllocMaster, AllocCopied): fw (float32)
// and bufOf (any kind) do, for the operations that read weights or keep
// their copy current.
func (b *Backend) fb(x kernels.Buffer) *buf { return float32Only(b.fg(x)) }

func (b *Backend) fg(x kernels.Buffer) *buf {
	bb := b.bufOf(x)
	if bb.mirror != 0 {
		panic(fmt.Errorf("%w: weights with a bfloat16 copy given to an operation that neither reads weights nor keeps the copy", kernels.ErrShape))
	}
	return bb
}

func (b *Backend) fw(x kernels.Buffer) *buf { return float32Only(b.bufOf(x)) }

// float32Only refuses a bfloat16 buffer.
func float32Only(bb *buf) *buf {
	if bb.half {
		panic(fmt.Errorf("%w: a bfloat16 buffer given where the operation takes float32", kernels.ErrShape))
	}
	return bb
}

func (b *Backend) bufOf(x kernels.Buffer) *buf {
	bb, ok := x.(*buf)
	if !ok || bb.owner != b {
		panic(fmt.Errorf("%w: buffer %T is not from this cuda backend", kernels.ErrShape, x))
	}
	return bb
}

// weights returns where a kernel other than a product reads weights x:
// their bfloat16 copy (bf16 1) where they are kept in host memory, else x
// itself (a copy beside weights on the device is the products' alone).
func weights(x *buf) (p, bf16 uint64) {
	if x.inHost {
		return x.mirror, 1
	}
	return x.p, 0
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

// alloc returns the address of bytes of zeroed device memory.
func (b *Backend) alloc(bytes int64) uint64 { return b.allocIn(bytes, false) }

// allocIn is alloc, in host memory mapped into the device's where mapped
// (zeroed by the device's AllocMapped).
func (b *Backend) allocIn(bytes int64, mapped bool) uint64 {
	if !b.ok() {
		return 0
	}
	bytes = max(bytes, 4)
	var p uint64
	var err error
	if m, ok := b.dev.(mapper); mapped && ok {
		p, err = m.AllocMapped(bytes)
	} else if mapped {
		err = fmt.Errorf("%w: %s maps no host memory", kernels.ErrUnsupported, b.dev.Name())
	} else {
		p, err = b.dev.Alloc(bytes)
	}
	if err != nil {
		b.fail(fmt.Sprintf("allocating %d bytes (host memory: %v)", bytes, mapped), err)
		return 0
	}
	b.allocs = append(b.allocs, p)
	if mapped {
		b.mapped[p] = true
	} else {
		b.fail("clearing new memory", b.dev.Clear(p, bytes))
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

// HoldsBF16 says whether the backend holds buffers in bfloat16
// (kernels.AsBF16): on the bf16 path only; the fp32 path keeps the CPU's
// bits.
func (b *Backend) HoldsBF16() bool { return b.prec == BF16 }

// AllocBF16 returns a zeroed buffer of n bfloat16s (kernels.BF16Backend).
// Only the bf16 path makes them, so the fp32 path's kernels never see one.
func (b *Backend) AllocBF16(n int) kernels.Buffer {
	if n < 0 {
		panic(fmt.Errorf("%w: alloc of %d elements", kernels.ErrShape, n))
	}
	if b.prec != BF16 {
		panic(fmt.Errorf("%w: bfloat16 buffers on the %s path", kernels.ErrUnsupported, b.prec))
	}
	return &buf{p: b.alloc(2 * int64(n)), n: n, half: true, owner: b}
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
	d := b.bufOf(x)
	if off < 0 || n < 0 || off+n > d.n {
		panic(fmt.Errorf("%w: view [%d:%d] of a %d-element buffer", kernels.ErrShape, off, off+n, d.n))
	}
	v := &buf{p: d.p + uint64(d.elem()*int64(off)), n: n, half: d.half, owner: b, inHost: d.inHost}
	if d.mirror != 0 {
		v.mirror = d.mirror + 2*uint64(off)
	}
	return v
}

// Upload copies src into dst (rounded to bfloat16 on the host where dst
// holds bfloat16).
func (b *Backend) Upload(dst kernels.Buffer, src []float32) {
	d := b.bufOf(dst)
	need("upload source", len(src), d.n)
	if len(src) == 0 || !b.ok() {
		return
	}
	if d.half {
		h := make([]uint16, len(src))
		for i, v := range src {
			h[i] = kernels.BF16Bits(v)
		}
		b.fail("upload", b.dev.CopyIn(d.p, unsafe.Pointer(&h[0]), d.bytes()))
		return
	}
	b.fail("upload", b.dev.CopyIn(d.p, unsafe.Pointer(&src[0]), d.bytes()))
	b.refresh(d)
}

// UploadInt copies src into dst (and its host mirror).
func (b *Backend) UploadInt(dst kernels.IntBuffer, src []int32) {
	d := b.ib(dst)
	need("upload source", len(src), len(d.host))
	copy(d.host, src)
	d.rows, d.docT = 0, 0
	if len(src) == 0 || !b.ok() {
		return
	}
	b.fail("upload", b.dev.CopyIn(d.p, unsafe.Pointer(&src[0]), 4*int64(len(src))))
}

// Download copies src into dst (widened on the host where src holds
// bfloat16). After a device error dst is left as it was.
func (b *Backend) Download(dst []float32, src kernels.Buffer) {
	s := b.bufOf(src)
	need("download destination", len(dst), s.n)
	if len(dst) == 0 || !b.ok() {
		return
	}
	if !s.half {
		b.fail("download", b.dev.CopyOut(unsafe.Pointer(&dst[0]), s.p, s.bytes()))
		return
	}
	h := make([]uint16, len(dst))
	if b.fail("download", b.dev.CopyOut(unsafe.Pointer(&h[0]), s.p, s.bytes())); b.ok() {
		for i, v := range h {
			dst[i] = kernels.BF16Float(v)
		}
	}
}

// Zero clears x.
func (b *Backend) Zero(x kernels.Buffer) {
	d := b.bufOf(x)
	if d.n == 0 || !b.ok() {
		return
	}
	b.fail("zero", b.dev.Clear(d.p, d.bytes()))
	if d.mirror != 0 {
		b.fail("zero", b.dev.Clear(d.mirror, 2*int64(d.n)))
	}
}

// Copy copies src into dst, rounding to bfloat16 where dst holds it.
func (b *Backend) Copy(dst, src kernels.Buffer) {
	d, s := b.bufOf(dst), b.fw(src)
	need("copy destination", d.n, s.n)
	if d.n == 0 || !b.ok() {
		return
	}
	if d.half {
		b.round(d.p, s)
		return
	}
	b.fail("copy", b.dev.CopyDev(d.p, s.p, 4*int64(d.n)))
	b.refresh(d)
}

// round writes the bfloat16 rounding of float32 src to dst.
func (b *Backend) round(dst uint64, src *buf) {
	b.launch1D("fom_f2bf", src.n, dst, ptr(src), i64(src.n))
}

// refresh rounds weights with a bfloat16 copy into it after a write other
// than AdamW's (which writes both).
func (b *Backend) refresh(d *buf) {
	if d.mirror != 0 {
		b.round(d.mirror, d)
	}
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
			b.fail("free", b.free(p))
			return
		}
	}
}

// free returns an allocation to the device (or, mapped, to the host).
func (b *Backend) free(p uint64) error {
	if b.mapped[p] {
		delete(b.mapped, p)
		return b.dev.(mapper).FreeMapped(p)
	}
	return b.dev.Free(p)
}

// AllocHost returns a zeroed buffer of n float32s in the host's memory,
// which kernels read and write over the bus (kernels.HostBackend).
func (b *Backend) AllocHost(n int) kernels.Buffer {
	if n < 0 {
		panic(fmt.Errorf("%w: alloc of %d elements", kernels.ErrShape, n))
	}
	return &buf{p: b.allocIn(4*int64(n), true), n: n, owner: b}
}

// AllocMaster returns n zeroed float32s in the host's memory with a
// bfloat16 copy on the device (kernels.MasterBackend), on the bf16 path.
func (b *Backend) AllocMaster(n int) kernels.Buffer { return b.allocCopied(n, true) }

// AllocCopied returns n zeroed float32s on the device with a bfloat16 copy
// beside them, which matrix products read (kernels.MasterBackend), on the
// bf16 path.
func (b *Backend) AllocCopied(n int) kernels.Buffer { return b.allocCopied(n, false) }

// allocCopied returns n zeroed float32 weights, in host memory or on the
// device, with their bfloat16 copy on the device.
func (b *Backend) allocCopied(n int, inHost bool) kernels.Buffer {
	if n < 0 {
		panic(fmt.Errorf("%w: alloc of %d elements", kernels.ErrShape, n))
	}
	if b.prec != BF16 {
		panic(fmt.Errorf("%w: a bfloat16 copy of weights on the %s path", kernels.ErrUnsupported, b.prec))
	}
	return &buf{p: b.allocIn(4*int64(n), inHost), n: n, owner: b, mirror: b.alloc(2 * int64(n)), inHost: inHost}
}

// AllocHostBytes returns n zeroed bytes in the host's memory.
func (b *Backend) AllocHostBytes(n int) kernels.ByteBuffer {
	if n < 0 {
		panic(fmt.Errorf("%w: alloc of %d bytes", kernels.ErrShape, n))
	}
	return &bytesBuf{p: b.allocIn(int64(n), true), n: n, owner: b}
}

var (
	_ kernels.HostBackend   = (*Backend)(nil)
	_ kernels.MasterBackend = (*Backend)(nil)
)

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
	b.launchShared(kernel, grid, block, 0, args...)
}

// launchShared runs a kernel with shared bytes of dynamic shared memory.
func (b *Backend) launchShared(kernel string, grid [3]int, block, shared int, args ...uint64) {
	if !b.ok() {
		return
	}
	for _, g := range grid {
		if g <= 0 {
			return // nothing to do
		}
	}
	b.fail(kernel, b.dev.Launch(kernel, grid, [3]int{block, 1, 1}, shared, args))
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
	d := b.fw(x)
	b.launch1D("fom_scale", d.n, ptr(d), i64(d.n), f32(s))
	b.refresh(d)
}

const sumChunk = 4096

// SumSquares is the CPU backend's: float64 over 4096-element chunks, each with
// 16 interleaved FMA lanes added in lane order, chunk sums added in order
// (on the host).
func (b *Backend) SumSquares(x kernels.Buffer) float64 {
	d := b.bufOf(x)
	nc := (d.n + sumChunk - 1) / sumChunk
	if nc == 0 {
		return 0
	}
	lanes := b.scratch(&b.lanes, 2*16*nc)
	sums := b.scratch(&b.sums, 2*nc)
	b.launch1D("fom_sumsq_lanes", 16*nc, ptr(lanes), ptr(d), i64(d.n), flag(d.half))
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
	p, g, mm, vv := b.fw(params), b.fg(grads), b.fb(m), b.fb(v)
	need("adamw grads", g.n, p.n)
	need("adamw m", mm.n, p.n)
	need("adamw v", vv.n, p.n)
	if h.Step < 1 {
		panic(fmt.Errorf("kernels: adamw step %d must count from 1", h.Step))
	}
	c := h.Consts()
	b.launch1D("fom_adamw", p.n, ptr(p), ptr(g), ptr(mm), ptr(vv), i64(p.n),
		f32(c.GS), f32(c.B1), f32(c.OmB1), f32(c.B2), f32(c.OmB2), f32(c.IBC1), f32(c.IBC2),
		f32(c.Eps), f32(c.WD), f32(c.LR), flag(g.half), p.mirror)
}

var _ kernels.Backend = (*Backend)(nil)
