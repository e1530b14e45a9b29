package cuda_test

// The CUDA backend and its kernels, run on the CPU emulator (package emu),
// against the CPU backend. The CPU backend is itself checked against float64
// references (kernels/cpu); here the fp32 path must agree with it bit for bit
// and the bf16 path within bfloat16's precision. The GPU runs of the same
// checks are in gpu_test.go (-tags cuda).

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/kernels/cuda"
	"github.com/fomnet/fomnet/kernels/cuda/emu"
)

func emuBackend(t testing.TB, p cuda.Precision) *cuda.Backend {
	t.Helper()
	d, err := emu.New()
	if err != nil {
		t.Skip(err)
	}
	be, err := cuda.NewWith(d, cuda.Options{Precision: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func cpuBackend(t testing.TB) *cpu.Backend {
	t.Helper()
	be, err := cpu.New(cpu.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func randn(r *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * scale
	}
	return x
}

func up(be kernels.Backend, x []float32) kernels.Buffer {
	b := be.Alloc(len(x))
	be.Upload(b, x)
	return b
}

func upInt(be kernels.Backend, x []int32) kernels.IntBuffer {
	b := be.AllocInt(len(x))
	be.UploadInt(b, x)
	return b
}

func down(be kernels.Backend, b kernels.Buffer) []float32 {
	x := make([]float32, b.Len())
	be.Download(x, b)
	return x
}

// targets are the devices the tests run on: the emulator always, the GPU in
// a -tags cuda build (gpu_test.go adds it).
var targets = []target{{"emu", emuBackend}}

type target struct {
	name string
	open func(testing.TB, cuda.Precision) *cuda.Backend
}

// op runs f on a backend and returns its named outputs; f must build its
// inputs from its own seeded generator so both backends see the same.
type op func(be kernels.Backend) map[string][]float32

// sameBits runs f on the CPU backend and on the emulated fp32 CUDA backend
// and requires identical bits.
func sameBits(t *testing.T, name string, f op) {
	t.Helper()
	want := f(cpuBackend(t))
	for _, tg := range targets {
		be := tg.open(t, cuda.FP32)
		got := f(be)
		if err := be.Err(); err != nil {
			t.Fatalf("%s on %s: %v", name, tg.name, err)
		}
		compareBits(t, tg.name+" "+name, got, want)
	}
}

func compareBits(t *testing.T, name string, got, want map[string][]float32) {
	t.Helper()
	for k, w := range want {
		g := got[k]
		if len(g) != len(w) {
			t.Fatalf("%s %s: %d values, want %d", name, k, len(g), len(w))
		}
		bad := 0
		for i := range w {
			if math.Float32bits(g[i]) != math.Float32bits(w[i]) {
				if bad < 3 {
					t.Errorf("%s %s[%d] = %v (%#08x), cpu %v (%#08x)", name, k, i, g[i], math.Float32bits(g[i]), w[i], math.Float32bits(w[i]))
				}
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%s %s: %d of %d values differ from the cpu backend", name, k, bad, len(w))
		}
	}
}

// closeRel runs f on the CPU backend and on the bf16 backend and requires
// ‖got − want‖ ≤ tol·‖want‖ for every output; with rounded, also that the
// outputs differ (the operands went through bfloat16).
func closeRel(t *testing.T, name string, tol float64, rounded bool, f op) {
	t.Helper()
	want := f(cpuBackend(t))
	for _, tg := range targets {
		be := tg.open(t, cuda.BF16)
		got := f(be)
		if err := be.Err(); err != nil {
			t.Fatalf("%s on %s: %v", name, tg.name, err)
		}
		compareRel(t, tg.name+" "+name, tol, rounded, got, want)
	}
}

func compareRel(t *testing.T, name string, tol float64, rounded bool, got, want map[string][]float32) {
	t.Helper()
	for k, w := range want {
		g := got[k]
		var num, den float64
		for i := range w {
			d := float64(g[i]) - float64(w[i])
			num += d * d
			den += float64(w[i]) * float64(w[i])
		}
		rel := math.Sqrt(num / max(den, 1e-300))
		if rel > tol || math.IsNaN(rel) {
			t.Errorf("%s %s: relative error %.3g, want ≤ %.3g", name, k, rel, tol)
		} else {
			t.Logf("%s %s: relative error %.3g", name, k, rel)
		}
		if rounded && rel == 0 && len(w) > 16 {
			t.Errorf("%s %s: bf16 path equals fp32 exactly: inputs were not rounded", name, k)
		}
	}
}

type mmCase struct {
	m, n, k     int
	ta, tb, acc bool
}

var mmCases = []mmCase{
	{1, 1, 1, false, false, false},
	{70, 50, 40, false, false, false},
	{70, 50, 40, true, false, true},
	{70, 50, 40, false, true, false},
	{65, 129, 17, true, true, true},
	{130, 131, 33, false, true, true},
	{3, 200, 300, false, false, false},
}

func matmulOp(c mmCase) op {
	return func(be kernels.Backend) map[string][]float32 {
		r := rand.New(rand.NewPCG(uint64(c.m), uint64(c.k)))
		a := up(be, randn(r, c.m*c.k, 1))
		b := up(be, randn(r, c.k*c.n, 1))
		out := up(be, randn(r, c.m*c.n, 1))
		be.Matmul(out, a, b, c.m, c.n, c.k, c.ta, c.tb, c.acc)
		return map[string][]float32{"C": down(be, out)}
	}
}

func TestMatmulMatchesCPU(t *testing.T) {
	for _, c := range mmCases {
		sameBits(t, "matmul", matmulOp(c))
	}
}

func TestMatmulBF16(t *testing.T) {
	for _, c := range mmCases[1:] {
		closeRel(t, "matmul bf16", 1e-2, true, matmulOp(c))
	}
}

func TestEmbeddingMatchesCPU(t *testing.T) {
	sameBits(t, "embedding", func(be kernels.Backend) map[string][]float32 {
		r := rand.New(rand.NewPCG(1, 2))
		const n, c, vocab = 300, 37, 11
		toks := make([]int32, n)
		for i := range toks {
			toks[i] = int32(r.IntN(vocab))
		}
		tk := upInt(be, toks)
		table := up(be, randn(r, vocab*c, 1))
		out := be.Alloc(n * c)
		be.EmbeddingForward(out, table, tk, n, c)
		dtab := up(be, randn(r, vocab*c, 1))
		be.EmbeddingBackward(dtab, up(be, randn(r, n*c, 1)), tk, n, c)
		return map[string][]float32{"out": down(be, out), "dtable": down(be, dtab)}
	})
}

func rmsOp(n, c int) op {
	return func(be kernels.Backend) map[string][]float32 {
		r := rand.New(rand.NewPCG(uint64(n), uint64(c)))
		x, w := up(be, randn(r, n*c, 2)), up(be, randn(r, c, 1))
		out, rstd := be.Alloc(n*c), be.Alloc(n)
		be.RMSNormForward(out, rstd, x, w, n, c, 1e-5)
		dx, dw := up(be, randn(r, n*c, 1)), up(be, randn(r, c, 1))
		be.RMSNormBackward(dx, dw, up(be, randn(r, n*c, 1)), x, w, rstd, n, c)
		return map[string][]float32{"out": down(be, out), "rstd": down(be, rstd), "dx": down(be, dx), "dw": down(be, dw)}
	}
}

func TestRMSNormMatchesCPU(t *testing.T) { sameBits(t, "rmsnorm", rmsOp(133, 37)) }

// TestRMSNormBF16: the bf16 path sums rows with a warp each and the weight
// gradient in two stages (row chunks, then chunks in order) once there are
// more than 512 rows.
func TestRMSNormBF16(t *testing.T) { closeRel(t, "rmsnorm bf16", 1e-5, false, rmsOp(1100, 40)) }

func TestRoPEMatchesCPU(t *testing.T) {
	sameBits(t, "rope", func(be kernels.Backend) map[string][]float32 {
		r := rand.New(rand.NewPCG(5, 6))
		const n, heads, hd = 40, 3, 10
		pos := make([]int32, n)
		for i := range pos {
			pos[i] = int32(r.IntN(3000))
		}
		p := upInt(be, pos)
		x := up(be, randn(r, n*heads*hd, 1))
		y := up(be, randn(r, n*heads*hd, 1))
		be.RoPEForward(y, x, p, n, heads, hd, 10000)
		apart := down(be, y)
		be.RoPEForward(x, x, p, n, heads, hd, 10000)
		fwd := down(be, x)
		be.RoPEBackward(x, x, p, n, heads, hd, 500000)
		return map[string][]float32{"fwd": fwd, "fwd apart": apart, "bwd": down(be, x)}
	})
}

func TestSwiGLUMatchesCPU(t *testing.T) {
	sameBits(t, "swiglu", func(be kernels.Backend) map[string][]float32 {
		r := rand.New(rand.NewPCG(7, 8))
		const n = 1003
		gs := randn(r, n, 4)
		gs[0], gs[1], gs[2] = 200, -200, 0 // exponential clamps
		g, u := up(be, gs), up(be, randn(r, n, 1))
		h := be.Alloc(n)
		be.SwiGLUForward(h, g, u, n)
		dg, du := be.Alloc(n), be.Alloc(n)
		be.SwiGLUBackward(dg, du, up(be, randn(r, n, 1)), g, u, n)
		return map[string][]float32{"h": down(be, h), "dg": down(be, dg), "du": down(be, du)}
	})
}

func TestSoftmaxCrossEntropyMatchesCPU(t *testing.T) {
	for _, grad := range []string{"none", "in place", "apart"} {
		sameBits(t, "cross-entropy, gradient "+grad, func(be kernels.Backend) map[string][]float32 {
			r := rand.New(rand.NewPCG(9, 10))
			const n, v = 21, 77
			tg := make([]int32, n)
			for i := range tg {
				tg[i] = int32(r.IntN(v))
			}
			tg[3], tg[20] = kernels.IgnoreIndex, kernels.IgnoreIndex
			logits := up(be, randn(r, n*v, 3))
			losses := be.Alloc(n)
			var d kernels.Buffer
			switch grad {
			case "in place":
				d = logits
			case "apart":
				d = up(be, randn(r, n*v, 1))
			}
			be.SoftmaxCrossEntropy(losses, logits, d, upInt(be, tg), n, v, 0.25)
			out := map[string][]float32{"losses": down(be, losses), "logits": down(be, logits)}
			if d != nil {
				out["dlogits"] = down(be, d)
			}
			return out
		})
	}
}

func TestAdamWAndNormsMatchCPU(t *testing.T) {
	sameBits(t, "adamw", func(be kernels.Backend) map[string][]float32 {
		r := rand.New(rand.NewPCG(11, 12))
		const n = 9001 // three SumSquares chunks, the last partial
		p, g := up(be, randn(r, n, 1)), up(be, randn(r, n, 3))
		m, v := be.Alloc(n), be.Alloc(n)
		norm := kernels.ClipGlobalNorm(be, g, 1.5)
		for step := 1; step <= 3; step++ {
			be.AdamW(p, g, m, v, kernels.AdamWStep{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: step, GradScale: 0.5})
		}
		view := be.View(p, 100, 50)
		cp := be.Alloc(50)
		be.Copy(cp, view)
		be.Scale(cp, -3)
		z := up(be, randn(r, 7, 1))
		be.Zero(z)
		return map[string][]float32{"p": down(be, p), "m": down(be, m), "v": down(be, v), "g": down(be, g),
			"norm": {float32(norm), float32(norm - float64(float32(norm)))}, "copy": down(be, cp), "zero": down(be, z)}
	})
}

// 8-bit AdamW: the same parameters, codes and scales as the CPU backend,
// over three steps of blocks with a short last one, gradients spread over
// binades (codes from subnormal to the top), and a block of zeros.
func TestAdamW8MatchesCPU(t *testing.T) {
	sameBits(t, "adamw8", func(be kernels.Backend) map[string][]float32 {
		a, ok := kernels.AsAdam8(be)
		if !ok {
			t.Fatalf("%s has no 8-bit AdamW", be.Name())
		}
		r := rand.New(rand.NewPCG(13, 14))
		const n = 3*kernels.Adam8Block + 77
		gh := randn(r, n, 1)
		for i := range gh {
			gh[i] *= float32(math.Ldexp(1, -r.IntN(20)))
			if i >= kernels.Adam8Block && i < 2*kernels.Adam8Block {
				gh[i] = 0
			}
		}
		p, g := up(be, randn(r, n, 1)), up(be, gh)
		nb := kernels.Adam8Blocks(n)
		m, v, ms, vs := a.AllocBytes(n), a.AllocBytes(n), be.Alloc(nb), be.Alloc(nb)
		for step := 1; step <= 3; step++ {
			a.AdamW8(p, g, m, v, ms, vs, kernels.AdamWStep{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: step, GradScale: 0.5})
		}
		codes := func(x kernels.ByteBuffer) []float32 {
			b := make([]byte, n)
			a.DownloadBytes(b, x)
			f := make([]float32, n)
			for i, c := range b {
				f[i] = float32(c)
			}
			return f
		}
		return map[string][]float32{"p": down(be, p), "m codes": codes(m), "v codes": codes(v), "m scales": down(be, ms), "v scales": down(be, vs)}
	})
}

func docStarts(r *rand.Rand, b, t int) []int32 {
	ds := make([]int32, b*t)
	for bi := 0; bi < b; bi++ {
		start := 0
		for i := 0; i < t; i++ {
			if i > 0 && r.IntN(23) == 0 {
				start = i
			}
			ds[bi*t+i] = int32(start)
		}
	}
	return ds
}

func attnOp(s kernels.AttnShape) op {
	return func(be kernels.Backend) map[string][]float32 {
		r := rand.New(rand.NewPCG(uint64(s.T), uint64(s.HD)))
		nq, nk := s.B*s.T*s.NH*s.HD, s.B*s.T*s.KVH*s.HD
		q, k, v := up(be, randn(r, nq, 1)), up(be, randn(r, nk, 1)), up(be, randn(r, nk, 1))
		ds := upInt(be, docStarts(r, s.B, s.T))
		out, lse := be.Alloc(nq), be.Alloc(s.B*s.NH*s.T)
		be.AttentionForward(out, lse, q, k, v, ds, s)
		dq, dk, dv := be.Alloc(nq), up(be, randn(r, nk, 1)), up(be, randn(r, nk, 1))
		be.AttentionBackward(dq, dk, dv, up(be, randn(r, nq, 1)), q, k, v, out, lse, ds, s)
		return map[string][]float32{"out": down(be, out), "lse": down(be, lse), "dq": down(be, dq), "dk": down(be, dk), "dv": down(be, dv)}
	}
}

var attnShapes = []kernels.AttnShape{
	{B: 2, T: 70, NH: 4, KVH: 2, HD: 8},
	{B: 1, T: 130, NH: 2, KVH: 1, HD: 16},
	{B: 1, T: 5, NH: 3, KVH: 3, HD: 6},
}

func TestAttentionMatchesCPU(t *testing.T) {
	for _, s := range attnShapes {
		sameBits(t, "attention", attnOp(s))
	}
}

// attnShapesTC exercise the tensor-core kernels (bf16, head dim a multiple of
// 16): partial tiles, GQA, several documents, the largest head dimension.
var attnShapesTC = []kernels.AttnShape{
	{B: 2, T: 100, NH: 4, KVH: 2, HD: 32},
	{B: 1, T: 40, NH: 2, KVH: 1, HD: 128},
	{B: 1, T: 130, NH: 2, KVH: 1, HD: 16},
}

func TestAttentionBF16(t *testing.T) {
	for _, s := range append(attnShapes[:1], attnShapesTC...) {
		closeRel(t, "attention bf16", 2e-2, true, attnOp(s))
	}
}

func TestBadShapesPanic(t *testing.T) {
	be := emuBackend(t, cuda.FP32)
	for name, f := range map[string]func(){
		"matmul": func() { be.Matmul(be.Alloc(4), be.Alloc(4), be.Alloc(3), 2, 2, 2, false, false, false) },
		"token":  func() { be.EmbeddingForward(be.Alloc(2), be.Alloc(6), upInt(be, []int32{3}), 1, 2) },
		"target": func() { be.SoftmaxCrossEntropy(be.Alloc(1), be.Alloc(3), nil, upInt(be, []int32{3}), 1, 3, 1) },
		"head dim": func() {
			be.AttentionForward(be.Alloc(130), be.Alloc(1), be.Alloc(130), be.Alloc(130), be.Alloc(130), be.AllocInt(1), kernels.AttnShape{B: 1, T: 1, NH: 1, KVH: 1, HD: 130})
		},
		"docStart": func() {
			be.AttentionForward(be.Alloc(2), be.Alloc(2), be.Alloc(2), be.Alloc(2), be.Alloc(2), upInt(be, []int32{0, 2}), kernels.AttnShape{B: 1, T: 2, NH: 1, KVH: 1, HD: 1})
		},
		"docStart uploaded again": func() { // valid once, then not: the check must not be remembered
			ds, sh := upInt(be, []int32{0, 1}), kernels.AttnShape{B: 1, T: 2, NH: 1, KVH: 1, HD: 1}
			be.AttentionForward(be.Alloc(2), be.Alloc(2), be.Alloc(2), be.Alloc(2), be.Alloc(2), ds, sh)
			be.UploadInt(ds, []int32{0, 2})
			be.AttentionForward(be.Alloc(2), be.Alloc(2), be.Alloc(2), be.Alloc(2), be.Alloc(2), ds, sh)
		},
		"docStart in longer rows": func() { // valid as two rows of 2, not as one of 4
			ds := upInt(be, []int32{0, 1, 0, 1})
			be.AttentionForward(be.Alloc(4), be.Alloc(4), be.Alloc(4), be.Alloc(4), be.Alloc(4), ds, kernels.AttnShape{B: 2, T: 2, NH: 1, KVH: 1, HD: 1})
			be.AttentionForward(be.Alloc(4), be.Alloc(4), be.Alloc(4), be.Alloc(4), be.Alloc(4), ds, kernels.AttnShape{B: 1, T: 4, NH: 1, KVH: 1, HD: 1})
		},
		"foreign":   func() { be.Zero(cpuBackend(t).Alloc(1)) },
		"precision": func() { must(cuda.NewWith(nil, cuda.Options{Precision: "fp8"})) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func must(_ *cuda.Backend, err error) {
	if err != nil {
		panic(err)
	}
}

// failing is a device whose launches fail after a count: device errors must
// come back from Err, once, without panics, and later calls must do nothing.
type failing struct {
	cuda.Device
	left int
}

func (f *failing) Launch(k string, g, b [3]int, shared int, a []uint64) error {
	if f.left == 0 {
		return errors.New("CUDA_ERROR_LAUNCH_FAILED")
	}
	f.left--
	return f.Device.Launch(k, g, b, shared, a)
}

func TestDeviceErrorsAreReturned(t *testing.T) {
	d, err := emu.New()
	if err != nil {
		t.Skip(err)
	}
	be, err := cuda.NewWith(&failing{Device: d, left: 1}, cuda.Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := up(be, []float32{1, 2, 3})
	be.Scale(x, 2) // succeeds
	be.Scale(x, 2) // fails
	be.Scale(x, 2) // skipped
	got := []float32{-1, -1, -1}
	be.Download(got, x)
	if err := kernels.Err(be); err == nil || !strings.Contains(err.Error(), "fom_scale") || !strings.Contains(err.Error(), "LAUNCH_FAILED") {
		t.Fatalf("Err = %v, want the failed fom_scale launch", err)
	}
	if got[0] != -1 {
		t.Errorf("download after a device error wrote %v", got)
	}
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	if err := be.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestEmulatorIsCurrent(t *testing.T) {
	sum, err := emu.HashSources(".")
	if err != nil {
		t.Fatal(err)
	}
	if sum != emu.SourcesSHA256 {
		t.Fatal("kernel sources changed since the emulator's hash was generated: run `go generate ./kernels/cuda/emu` (the build cache may hold an emulator built from the old sources)")
	}
}
