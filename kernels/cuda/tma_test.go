package cuda_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/fomnet/fomnet/kernels/cuda"
	"github.com/fomnet/fomnet/kernels/cuda/emu"
)

// fakeTMA stands in for a Hopper GPU's TMA GEMM on the emulator, which
// cannot run wgmma: its tensor maps record each operand's address and
// leading dimension, and its TMA launches run gemm.cu's 128×128 kernel on
// those operands, or nothing at all when broken. It tests the backend's side
// of the TMA path (tensor maps and their cache, arguments, the check at first
// use, the fallback) beside TestGPUHopper*, which test the kernel itself on
// a GPU.
type fakeTMA struct {
	*emu.Device
	broken   bool
	launches int
}

const fakeKernel = "fom_gemm90tma_128x256"

func (f *fakeTMA) Has(k string) bool { return k == fakeKernel || f.Device.Has(k) }

func (f *fakeTMA) TensorMap(p uint64, rows, cols, ld, boxRows, boxCols int) ([]byte, error) {
	b := make([]byte, 128)
	binary.LittleEndian.PutUint64(b, p)
	binary.LittleEndian.PutUint64(b[8:], uint64(ld))
	return b, nil
}

func (f *fakeTMA) Launch(k string, grid, block [3]int, shared int, args []uint64) error {
	if k != fakeKernel {
		return f.Device.Launch(k, grid, block, shared, args)
	}
	f.launches++
	if f.broken {
		return nil
	}
	// args: C, map A, map B, M, N, K, ta, tb, acc, cbf, lbo, sbo.
	var ma, mb [128]byte
	if err := f.CopyOut(unsafe.Pointer(&ma[0]), args[1], 128); err != nil {
		return err
	}
	if err := f.CopyOut(unsafe.Pointer(&mb[0]), args[2], 128); err != nil {
		return err
	}
	le := binary.LittleEndian
	m, n := int(args[3]), int(args[4])
	tiles := ((m + 127) / 128) * ((n + 127) / 128)
	return f.Device.Launch("fom_gemm_128x128", [3]int{tiles, 1, 1}, [3]int{128, 1, 1}, 2*4*(128*40+128*40),
		[]uint64{args[0], le.Uint64(ma[:]), le.Uint64(mb[:]), args[3], args[4], args[5], le.Uint64(ma[8:]), le.Uint64(mb[8:]), args[6], args[7], args[8], args[9]})
}

// TestTMAPathOnStandIn: on a device with a working TMA kernel, products
// large enough for it go through it after its check in their transposition
// (NT and NN: a check and two products each) and give the same bits as the
// sm_80 kernel; with a broken one, each transposition's check fails once,
// the products still come out right on the sm_80 kernel, and Note says why.
func TestTMAPathOnStandIn(t *testing.T) {
	const m, n, k = 1536, 2816, 16 // 12 × 11 = 132 blocks of 128×256: a wave
	r := rand.New(rand.NewPCG(3, 4))
	a, b := randn(r, m*k, 1), randn(r, n*k, 1)
	product := func(be *cuda.Backend, tb bool) []float32 {
		c := be.Alloc(m * n)
		be.Matmul(c, up(be, a), up(be, b), m, n, k, false, tb, false)
		if err := be.Err(); err != nil {
			t.Fatal(err)
		}
		return down(be, c)
	}
	ref := emuBackend(t, cuda.BF16)
	want := [][]float32{product(ref, true), product(ref, false)}
	for _, broken := range []bool{false, true} {
		d, err := emu.New()
		if err != nil {
			t.Skip(err)
		}
		f := &fakeTMA{Device: d, broken: broken}
		be, err := cuda.NewWith(f, cuda.Options{Precision: cuda.BF16})
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		for i := 0; i < 4; i++ {
			got := product(be, i < 2)
			for j, w := range want[i/2] {
				if math.Float32bits(got[j]) != math.Float32bits(w) {
					t.Fatalf("broken %v, product %d: [%d] = %v, want %v", broken, i, j, got[j], w)
				}
			}
		}
		wantLaunches, note := 6, "" // per transposition the check, then both products
		if broken {
			wantLaunches, note = 2, "disagreed with its check"
		}
		if f.launches != wantLaunches {
			t.Errorf("broken %v: %d TMA launches, want %d", broken, f.launches, wantLaunches)
		}
		if !strings.Contains(be.Note(), note) || (note == "" && be.Note() != "") {
			t.Errorf("broken %v: note %q, want %q", broken, be.Note(), note)
		}
	}
}
