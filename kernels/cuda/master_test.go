package cuda_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cuda"
)

// Shapes of masterReads: the weights are a vocab×c embedding table, whose
// first c values are also an RMSNorm gain and whose whole is also Matmul's
// B (c×vocab, and transposed).
const mrVocab, mrC, mrN = 25, 40, 70

// masterReads runs every operation that reads weights w (mrVocab×mrC
// values) and returns what each computed.
func masterReads(be *cuda.Backend, w kernels.Buffer) map[string][]float32 {
	r := rand.New(rand.NewPCG(41, 42))
	toks := make([]int32, mrN)
	for i := range toks {
		toks[i] = int32(r.IntN(mrVocab))
	}
	out := map[string][]float32{}
	emb := be.Alloc(mrN * mrC)
	be.EmbeddingForward(emb, w, upInt(be, toks), mrN, mrC)
	out["embedding"] = down(be, emb)
	gain := be.View(w, 0, mrC)
	x := up(be, randn(r, mrN*mrC, 2))
	o, rstd := be.Alloc(mrN*mrC), be.Alloc(mrN)
	be.RMSNormForward(o, rstd, x, gain, mrN, mrC, 1e-5)
	dx, dw := up(be, randn(r, mrN*mrC, 1)), be.Alloc(mrC)
	be.RMSNormBackward(dx, dw, up(be, randn(r, mrN*mrC, 1)), x, gain, rstd, mrN, mrC)
	out["rmsnorm out"], out["rmsnorm dx"], out["rmsnorm dw"] = down(be, o), down(be, dx), down(be, dw)
	a := up(be, randn(r, mrN*mrC, 1))
	logits, back := be.Alloc(mrN*mrVocab), be.Alloc(mrN*mrC)
	be.Matmul(logits, a, w, mrN, mrVocab, mrC, false, true, false) // the tied output head
	be.Matmul(back, logits, w, mrN, mrC, mrVocab, false, false, false)
	out["matmul NT"], out["matmul NN"] = down(be, logits), down(be, back)
	return out
}

func rounded(x []float32) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = kernels.BF16Float(kernels.BF16Bits(v))
	}
	return y
}

// TestMasterWeights: weights kept in host memory (AllocMaster, here a view
// at an odd offset) are read by every operation that reads weights as their
// bfloat16 rounding — the same bits as float32 weights holding the rounded
// values — and weights on the device with a copy for the products
// (AllocCopied) as float32 weights — and stay so through each write the
// backend accepts (Upload, Zero, Copy, Scale, AdamW, AdamW8), while the
// float32 values take exactly those a float32 buffer takes. Operations
// that do not read weights refuse them.
func TestMasterWeights(t *testing.T) {
	if _, ok := kernels.AsMaster(emuBackend(t, cuda.FP32)); ok {
		t.Error("the fp32 path offers weights in host memory")
	}
	for _, tg := range targets {
		for _, inHost := range []bool{true, false} {
			masterWeights(t, tg, inHost)
		}
	}
}

func masterWeights(t *testing.T, tg target, inHost bool) {
	be := tg.open(t, cuda.BF16)
	mb, ok := kernels.AsMaster(be)
	if !ok {
		t.Fatalf("%s: the bf16 path keeps no weights in host memory", tg.name)
	}
	const n = mrVocab * mrC
	r := rand.New(rand.NewPCG(43, 44))
	alloc, kind := mb.AllocMaster, "in host memory"
	if !inHost {
		alloc, kind = mb.AllocCopied, "with a copy on the device"
	}
	master := be.View(alloc(n+3), 3, n)
	plain := be.Alloc(n)
	check := func(after string) {
		t.Helper()
		if err := be.Err(); err != nil {
			t.Fatalf("%s, weights %s, after %s: %v", tg.name, kind, after, err)
		}
		got, want := down(be, master), down(be, plain)
		if !slices.EqualFunc(got, want, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
			t.Fatalf("%s, weights %s, after %s: they differ from float32 weights given the same writes", tg.name, kind, after)
		}
		reads, unrounded := masterReads(be, master), masterReads(be, plain)
		wantReads, as := unrounded, "float32 weights"
		if inHost {
			wantReads, as = masterReads(be, up(be, rounded(want))), "their bfloat16 rounding read as float32"
			if slices.Equal(reads["embedding"], unrounded["embedding"]) {
				t.Fatalf("%s after %s: the embedding read unrounded weights", tg.name, after)
			}
		}
		for op, w := range wantReads {
			for i := range w {
				if math.Float32bits(reads[op][i]) != math.Float32bits(w[i]) {
					t.Fatalf("%s, weights %s, after %s: %s[%d] = %v, want %v (%s)", tg.name, kind, after, op, i, reads[op][i], w[i], as)
				}
			}
		}
	}
	both := func(f func(kernels.Buffer)) { f(master); f(plain) }

	w := randn(r, n, 1)
	both(func(x kernels.Buffer) { be.Upload(x, w) })
	check("upload")
	part := randn(r, 300, 1)
	both(func(x kernels.Buffer) { be.Upload(be.View(x, 101, 300), part) })
	check("an upload into a view")
	both(func(x kernels.Buffer) { be.Zero(be.View(x, 7, 50)) })
	check("zero")
	src := up(be, randn(r, 200, 1))
	both(func(x kernels.Buffer) { be.Copy(be.View(x, 500, 200), src) })
	check("copy")
	both(func(x kernels.Buffer) { be.Scale(be.View(x, 333, 400), 1.5) })
	check("scale")
	g := up(be, randn(r, n, 1))
	m1, v1, m2, v2 := be.Alloc(n), be.Alloc(n), be.Alloc(n), be.Alloc(n)
	mq1, vq1, mq2, vq2 := be.AllocBytes(n), be.AllocBytes(n), be.AllocBytes(n), be.AllocBytes(n)
	nb := kernels.Adam8Blocks(n)
	ms1, vs1, ms2, vs2 := be.Alloc(nb), be.Alloc(nb), be.Alloc(nb), be.Alloc(nb)
	for step := 1; step <= 2; step++ {
		h := kernels.AdamWStep{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: step, GradScale: 0.5}
		be.AdamW(master, g, m1, v1, h)
		be.AdamW(plain, g, m2, v2, h)
		check("adamw")
		be.AdamW8(master, g, mq1, vq1, ms1, vs1, h)
		be.AdamW8(plain, g, mq2, vq2, ms2, vs2, h)
		check("adamw8")
	}
	if got, want := be.SumSquares(master), be.SumSquares(plain); got != want {
		t.Errorf("%s: SumSquares of the master weights %v, of float32 ones %v", tg.name, got, want)
	}

	for name, f := range map[string]func(){
		"swiglu input":       func() { be.SwiGLUForward(be.Alloc(n), master, be.Alloc(n), n) },
		"matmul output":      func() { be.Matmul(master, be.Alloc(n), be.Alloc(1), n, 1, 1, false, false, false) },
		"embedding gradient": func() { be.EmbeddingBackward(master, be.Alloc(mrC), upInt(be, []int32{1}), 1, mrC) },
		"rmsnorm output":     func() { be.RMSNormForward(master, be.Alloc(1), be.Alloc(mrC), be.Alloc(mrC), 1, mrC, 1e-5) },
		"adamw moment":       func() { be.AdamW(plain, g, master, v2, kernels.AdamWStep{Step: 1}) },
	} {
		func() {
			defer func() {
				err, _ := recover().(error)
				if !errors.Is(err, kernels.ErrShape) {
					t.Errorf("%s: %s given the master weights: recovered %v, want ErrShape", tg.name, name, err)
				}
			}()
			f()
		}()
	}
}
