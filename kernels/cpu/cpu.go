package cpu

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/fomnet/fomnet/kernels"
)

// Options configure a CPU backend. The zero value picks the fastest code path
// this processor supports and one thread per GOMAXPROCS.
type Options struct {
	// Threads is the number of threads to compute with; 0 means GOMAXPROCS.
	Threads int
	// Path forces a code path: "" or "auto" (best available), "avx512",
	// "avx2" or "generic". Forcing a path the processor lacks is an error.
	Path string
}

// Backend is the CPU implementation of kernels.Backend.
type Backend struct {
	path    string
	fma     bool // AVX2+FMA assembly for GEMM and vector helpers
	avx512  bool // AVX-512 GEMM micro-kernel
	mr, nr  int  // GEMM register tile
	note    string
	pool    *pool
	ws      []*workspace // one per worker
	once    sync.Once
	matmulT matmulTask
	attnT   attnTask
	rowT    rowTask
	colT    colTask
	chunkT  chunkTask
	adam8T  adam8Task
	ops8    kernels.Adam8Ops // 8-bit AdamW's phases on this path
	sumsq   []float64
	ropeTab map[ropeKey][]float32
}

var _ kernels.Backend = (*Backend)(nil)

// New starts a backend. It fails only when Options ask for something the
// machine cannot do.
func New(o Options) (*Backend, error) {
	threads := o.Threads
	if threads == 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if threads < 0 || threads > 1024 {
		return nil, fmt.Errorf("cpu: threads %d out of range [0, 1024]", o.Threads)
	}
	b := &Backend{ropeTab: map[ropeKey][]float32{}, mr: 6, nr: 16}
	switch o.Path {
	case "", "auto":
		b.fma = hasAVX2FMA
		if hasAVX512 {
			if err := selfTest512(); err != nil {
				b.note = err.Error()
			} else {
				b.avx512 = true
			}
		}
	case "avx512":
		if !hasAVX512 {
			return nil, fmt.Errorf("cpu: path avx512 requested but this processor lacks AVX-512F: %w", kernels.ErrUnsupported)
		}
		if err := selfTest512(); err != nil {
			return nil, err
		}
		b.fma, b.avx512 = true, true
	case "avx2":
		if !hasAVX2FMA {
			return nil, fmt.Errorf("cpu: path avx2 requested but this processor lacks AVX2+FMA: %w", kernels.ErrUnsupported)
		}
		b.fma = true
	case "generic":
	default:
		return nil, fmt.Errorf("cpu: unknown path %q (want auto, avx512, avx2 or generic)", o.Path)
	}
	switch {
	case b.avx512:
		b.path, b.mr, b.nr = "avx512", 12, 32
	case b.fma:
		b.path = "avx2"
	default:
		b.path = "generic"
	}
	b.pool = newPool(threads)
	b.ws = make([]*workspace, threads)
	for i := range b.ws {
		b.ws[i] = &workspace{}
	}
	b.matmulT.be = b
	b.attnT.be = b
	b.chunkT.be = b
	b.ops8 = b.adam8Ops()
	return b, nil
}

// MustNew is New for callers whose Options are constants; it panics on error.
func MustNew(o Options) *Backend {
	b, err := New(o)
	if err != nil {
		panic(err)
	}
	return b
}

// Name reports "cpu/" and the code path.
func (b *Backend) Name() string { return "cpu/" + b.path }

// Path reports the code path in use: "avx512", "avx2" or "generic".
func (b *Backend) Path() string { return b.path }

// Note explains why a faster path was not used (empty if none was skipped).
func (b *Backend) Note() string { return b.note }

// Threads reports the number of compute threads.
func (b *Backend) Threads() int { return b.pool.n }

// Close stops the worker goroutines. It is idempotent; buffers stay readable
// by the Go garbage collector's rules but the backend must not be used again.
func (b *Backend) Close() error {
	b.once.Do(b.pool.close)
	return nil
}

// buf is the CPU Buffer: a Go slice.
type buf struct{ d []float32 }

func (x *buf) Len() int { return len(x.d) }

type ibuf struct{ d []int32 }

func (x *ibuf) Len() int { return len(x.d) }

// F returns the slice behind a CPU buffer. It exists for tests and for host
// code that is known to run on the CPU backend; model code must not use it.
func F(x kernels.Buffer) []float32 { return fs(x) }

func fs(x kernels.Buffer) []float32 {
	bb, ok := x.(*buf)
	if !ok {
		panic(fmt.Errorf("%w: buffer %T is not from the cpu backend", kernels.ErrShape, x))
	}
	return bb.d
}

func is(x kernels.IntBuffer) []int32 {
	bb, ok := x.(*ibuf)
	if !ok {
		panic(fmt.Errorf("%w: int buffer %T is not from the cpu backend", kernels.ErrShape, x))
	}
	return bb.d
}

func need(what string, got, want int) {
	if got != want {
		panic(fmt.Errorf("%w: %s has %d elements, shape needs %d", kernels.ErrShape, what, got, want))
	}
}

// Alloc returns a zeroed buffer.
func (b *Backend) Alloc(n int) kernels.Buffer { return &buf{make([]float32, n)} }

// AllocInt returns a zeroed int32 buffer.
func (b *Backend) AllocInt(n int) kernels.IntBuffer { return &ibuf{make([]int32, n)} }

// View aliases part of a buffer.
func (b *Backend) View(x kernels.Buffer, off, n int) kernels.Buffer {
	d := fs(x)
	if off < 0 || n < 0 || off+n > len(d) {
		panic(fmt.Errorf("%w: view [%d:%d] of a %d-element buffer", kernels.ErrShape, off, off+n, len(d)))
	}
	return &buf{d[off : off+n : off+n]}
}

// Upload copies host data in.
func (b *Backend) Upload(dst kernels.Buffer, src []float32) {
	d := fs(dst)
	need("upload source", len(src), len(d))
	copy(d, src)
}

// UploadInt copies host int32 data in.
func (b *Backend) UploadInt(dst kernels.IntBuffer, src []int32) {
	d := is(dst)
	need("upload source", len(src), len(d))
	copy(d, src)
}

// Download copies data out.
func (b *Backend) Download(dst []float32, src kernels.Buffer) {
	s := fs(src)
	need("download destination", len(dst), len(s))
	copy(dst, s)
}

// Zero clears a buffer.
func (b *Backend) Zero(x kernels.Buffer) { clear(fs(x)) }

// Copy copies src to dst.
func (b *Backend) Copy(dst, src kernels.Buffer) {
	d, s := fs(dst), fs(src)
	need("copy destination", len(d), len(s))
	copy(d, s)
}

// Scale multiplies in place.
func (b *Backend) Scale(x kernels.Buffer, s float32) {
	b.chunkT.set(chunkScale, fs(x))
	b.chunkT.s = s
	b.pool.run(&b.chunkT, len(b.chunkT.x), 1<<14)
	b.forget()
}

// forget clears the operands of the tasks the backend reuses from call to
// call: a view keeps its whole buffer alive, and the backend must keep no
// model's buffers past the call that used them (a lean swarm node lets go
// of its model between rounds).
func (b *Backend) forget() {
	b.chunkT = chunkTask{be: b}
	b.rowT, b.colT = rowTask{}, colTask{}
}

const sumChunk = 4096

// SumSquares sums squares over fixed 4096-element chunks, each with 16
// interleaved float64 FMA lanes added in lane order, then adds the chunk sums
// in order.
func (b *Backend) SumSquares(x kernels.Buffer) float64 {
	d := fs(x)
	nc := (len(d) + sumChunk - 1) / sumChunk
	if cap(b.sumsq) < nc {
		b.sumsq = make([]float64, nc)
	}
	b.chunkT.set(chunkSumSq, d)
	b.chunkT.partial = b.sumsq[:nc]
	b.pool.run(&b.chunkT, nc, 16)
	var s float64
	for _, v := range b.chunkT.partial {
		s += v
	}
	b.forget()
	return s
}

// chunkTask runs simple elementwise and chunked-reduction operations.
type chunkTask struct {
	op      int
	x       []float32
	s       float32
	partial []float64
	be      *Backend
	g, m, v []float32 // AdamW
	ac      adamConst
}

const (
	chunkScale = iota
	chunkSumSq
	chunkAdamW
)

func (t *chunkTask) set(op int, x []float32) { t.op, t.x = op, x }

func (t *chunkTask) run(_, lo, hi int) {
	switch t.op {
	case chunkScale:
		t.be.scale(t.x[lo:hi], t.s)
	case chunkSumSq:
		for c := lo; c < hi; c++ {
			var acc [16]float64
			t.be.sumsqLanes(t.x[c*sumChunk:min((c+1)*sumChunk, len(t.x))], &acc)
			var s float64
			for _, v := range acc {
				s += v
			}
			t.partial[c] = s
		}
	case chunkAdamW:
		t.be.adamw(t.x[lo:hi], t.g[lo:hi], t.m[lo:hi], t.v[lo:hi], &t.ac)
	}
}

// AdamW runs one decoupled-weight-decay Adam step, elementwise.
func (b *Backend) AdamW(params, grads, m, v kernels.Buffer, h kernels.AdamWStep) {
	p := fs(params)
	need("adamw grads", len(fs(grads)), len(p))
	need("adamw m", len(fs(m)), len(p))
	need("adamw v", len(fs(v)), len(p))
	if h.Step < 1 {
		panic(fmt.Errorf("kernels: adamw step %d must count from 1", h.Step))
	}
	t := &b.chunkT
	t.set(chunkAdamW, p)
	t.g, t.m, t.v = fs(grads), fs(m), fs(v)
	t.ac = h.Consts()
	b.pool.run(t, len(p), 1<<14)
	b.forget()
}
