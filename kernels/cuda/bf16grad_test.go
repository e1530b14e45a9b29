package cuda_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cuda"
)

// gradOp runs one operation that writes or reads gradients, with the
// gradient buffers made by alloc (float32 or bfloat16), initialised from
// bfloat16 values, and returns what it computed (gradients widened to
// float32).
type gradOp func(be *cuda.Backend, alloc func(n int) kernels.Buffer) map[string][]float32

// roundedRandn is randn rounded to bfloat16 (a value either buffer holds
// exactly).
func roundedRandn(r *rand.Rand, n int, scale float32) []float32 {
	x := randn(r, n, scale)
	for i, v := range x {
		x[i] = kernels.BF16Float(kernels.BF16Bits(v))
	}
	return x
}

var gradOps = map[string]gradOp{
	"matmul": func(be *cuda.Backend, alloc func(int) kernels.Buffer) map[string][]float32 {
		out := map[string][]float32{}
		for i, c := range []mmCase{{70, 50, 40, true, false, true}, {65, 129, 17, true, true, false}, {33, 17, 300, false, false, true}} {
			r := rand.New(rand.NewPCG(uint64(c.m), uint64(c.k)))
			a, b := up(be, randn(r, c.m*c.k, 1)), up(be, randn(r, c.k*c.n, 1))
			dw := alloc(c.m*c.n + 1)
			be.Upload(dw, roundedRandn(r, c.m*c.n+1, 4))
			// An odd view: the epilogue's unaligned stores.
			be.Matmul(be.View(dw, 1, c.m*c.n), a, b, c.m, c.n, c.k, c.ta, c.tb, c.acc)
			out[string(rune('A'+i))] = down(be, dw)
		}
		return out
	},
	"embedding": func(be *cuda.Backend, alloc func(int) kernels.Buffer) map[string][]float32 {
		r := rand.New(rand.NewPCG(1, 2))
		const n, c, vocab = 300, 37, 11
		toks := make([]int32, n)
		for i := range toks {
			toks[i] = int32(r.IntN(vocab))
		}
		dtab := alloc(vocab * c)
		be.Upload(dtab, roundedRandn(r, vocab*c, 1))
		be.EmbeddingBackward(dtab, up(be, randn(r, n*c, 1)), upInt(be, toks), n, c)
		return map[string][]float32{"dtable": down(be, dtab)}
	},
	"rmsnorm": func(be *cuda.Backend, alloc func(int) kernels.Buffer) map[string][]float32 {
		out := map[string][]float32{}
		for _, n := range []int{100, 1100} { // one stage, and two (row chunks)
			r := rand.New(rand.NewPCG(uint64(n), 3))
			const c = 40
			x, w := up(be, randn(r, n*c, 2)), up(be, randn(r, c, 1))
			o, rstd := be.Alloc(n*c), be.Alloc(n)
			be.RMSNormForward(o, rstd, x, w, n, c, 1e-5)
			dx, dw := up(be, randn(r, n*c, 1)), alloc(c)
			be.Upload(dw, roundedRandn(r, c, 1))
			be.RMSNormBackward(dx, dw, up(be, randn(r, n*c, 1)), x, w, rstd, n, c)
			out["dw"+string(rune('0'+n/1000))] = down(be, dw)
		}
		return out
	},
	"adamw": func(be *cuda.Backend, alloc func(int) kernels.Buffer) map[string][]float32 {
		r := rand.New(rand.NewPCG(11, 12))
		const n = 9001
		p, g := up(be, randn(r, n, 1)), alloc(n)
		be.Upload(g, roundedRandn(r, n, 3))
		m, v := be.Alloc(n), be.Alloc(n)
		norm := be.SumSquares(g)
		p8, m8, v8 := up(be, down(be, p)), be.AllocBytes(n), be.AllocBytes(n)
		nb := kernels.Adam8Blocks(n)
		ms, vs := be.Alloc(nb), be.Alloc(nb)
		for step := 1; step <= 2; step++ {
			h := kernels.AdamWStep{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: step, GradScale: 0.5}
			be.AdamW(p, g, m, v, h)
			be.AdamW8(p8, g, m8, v8, ms, vs, h)
		}
		return map[string][]float32{"p": down(be, p), "m": down(be, m), "v": down(be, v), "p8": down(be, p8),
			"norm": {float32(norm), float32(norm - float64(float32(norm)))}}
	},
}

// TestBF16Gradients: each operation that takes gradients gives, with them
// in bfloat16, exactly the bfloat16 rounding of what it gives with them in
// float32 (the same sums in float32, rounded once); what only reads them
// (SumSquares, AdamW, AdamW8) gives the same bits. The float32 runs are held
// to the CPU backend by the other tests here.
func TestBF16Gradients(t *testing.T) {
	for _, tg := range targets {
		be := tg.open(t, cuda.BF16)
		bf, ok := kernels.AsBF16(be)
		if !ok {
			t.Fatalf("%s: the bf16 path holds no bfloat16 gradients", tg.name)
		}
		for name, f := range gradOps {
			want := f(be, be.Alloc)
			got := f(be, bf.AllocBF16)
			if err := be.Err(); err != nil {
				t.Fatalf("%s %s: %v", tg.name, name, err)
			}
			for k, w := range want {
				rounded := 0
				for i := range w {
					x := w[i]
					if name != "adamw" { // gradients written: rounded once
						x = kernels.BF16Float(kernels.BF16Bits(w[i]))
					}
					if math.Float32bits(got[k][i]) != math.Float32bits(x) {
						t.Fatalf("%s %s %s[%d] = %v with bfloat16 gradients, want %v (float32 gradients give %v)", tg.name, name, k, i, got[k][i], x, w[i])
					}
					if x != w[i] {
						rounded++
					}
				}
				if name != "adamw" && rounded == 0 {
					t.Errorf("%s %s %s: no value was rounded: the gradients were not held in bfloat16", tg.name, name, k)
				}
			}
		}
	}
}

// TestBF16GradientsRefused: the fp32 path holds no bfloat16 (it keeps the
// CPU's bits), and an operation that takes float32 refuses a bfloat16
// buffer by name.
func TestBF16GradientsRefused(t *testing.T) {
	if _, ok := kernels.AsBF16(emuBackend(t, cuda.FP32)); ok {
		t.Error("the fp32 path offers bfloat16 gradients")
	}
	be := emuBackend(t, cuda.BF16)
	h := be.AllocBF16(40)
	if got := be.View(h, 8, 16).Len(); got != 16 {
		t.Errorf("view of a bfloat16 buffer: %d values, want 16", got)
	}
	for name, f := range map[string]func(){
		"rmsnorm weight": func() { be.RMSNormForward(be.Alloc(80), be.Alloc(2), be.Alloc(80), h, 2, 40, 1e-5) },
		"scale":          func() { be.Scale(h, 2) },
		"copy":           func() { be.Copy(be.Alloc(40), h) },
		"swiglu input":   func() { be.SwiGLUForward(be.Alloc(40), h, be.Alloc(40), 40) },
	} {
		func() {
			defer func() {
				err, _ := recover().(error)
				if !errors.Is(err, kernels.ErrShape) {
					t.Errorf("%s given bfloat16: recovered %v, want ErrShape", name, err)
				}
			}()
			f()
		}()
	}
}

// TestBF16Activations: the operations that write the activations (and
// gradients) only matrix products read give, into a bfloat16 buffer,
// exactly the bfloat16 rounding of their float32 output, and Matmul reads bfloat16 operands
// (rows 16-byte aligned, or padded on the way) as it reads float32 ones
// holding the same values: the bf16 path's products round their operands
// so anyway.
func TestBF16Activations(t *testing.T) {
	for _, tg := range targets {
		be := tg.open(t, cuda.BF16)
		r := rand.New(rand.NewPCG(21, 22))
		check := func(what string, half, full kernels.Buffer) {
			t.Helper()
			h, f := down(be, half), down(be, full)
			for i := range f {
				if want := kernels.BF16Float(kernels.BF16Bits(f[i])); math.Float32bits(h[i]) != math.Float32bits(want) {
					t.Fatalf("%s %s[%d] = %v in bfloat16, want %v (float32 gives %v)", tg.name, what, i, h[i], want, f[i])
				}
			}
		}
		const n, c = 70, 40
		x, w := up(be, randn(r, n*c, 2)), up(be, randn(r, c, 1))
		out, outH, rstd := be.Alloc(n*c), be.AllocBF16(n*c), be.Alloc(n)
		be.RMSNormForward(out, rstd, x, w, n, c, 1e-5)
		be.RMSNormForward(outH, rstd, x, w, n, c, 1e-5)
		check("rmsnorm out", outH, out)
		g, u := up(be, randn(r, n*c, 3)), up(be, randn(r, n*c, 1))
		h, hH := be.Alloc(n*c), be.AllocBF16(n*c)
		be.SwiGLUForward(h, g, u, n*c)
		be.SwiGLUForward(hH, g, u, n*c)
		check("swiglu h", hH, h)
		dh := up(be, randn(r, n*c, 1))
		dg, du, dgH, duH := be.Alloc(n*c), be.Alloc(n*c), be.AllocBF16(n*c), be.AllocBF16(n*c)
		be.SwiGLUBackward(dg, du, dh, g, u, n*c)
		be.SwiGLUBackward(dgH, duH, dh, g, u, n*c)
		check("swiglu dg", dgH, dg)
		check("swiglu du", duH, du)
		cH := be.AllocBF16(n * c)
		be.Copy(cH, dg)
		check("copy", cH, dg)
		tgs := make([]int32, n)
		for i := range tgs {
			tgs[i] = int32(r.IntN(c))
		}
		tgs[5] = kernels.IgnoreIndex
		logits, losses := up(be, randn(r, n*c, 3)), be.Alloc(n)
		dlogits, dlogitsH := be.Alloc(n*c), be.AllocBF16(n*c)
		be.SoftmaxCrossEntropy(losses, logits, dlogits, upInt(be, tgs), n, c, 0.5)
		be.SoftmaxCrossEntropy(losses, logits, dlogitsH, upInt(be, tgs), n, c, 0.5)
		check("cross-entropy dlogits", dlogitsH, dlogits)
		const heads, hd = 2, 20 // n×c values
		pos := make([]int32, n)
		for i := range pos {
			pos[i] = int32(r.IntN(500))
		}
		rp, rx := upInt(be, pos), up(be, randn(r, n*c, 1))
		for _, rope := range []func(dst, x kernels.Buffer, pos kernels.IntBuffer, n, heads, hd int, theta float64){be.RoPEForward, be.RoPEBackward} {
			y, yH := be.Alloc(n*c), be.AllocBF16(n*c)
			rope(y, rx, rp, n, heads, hd, 10000)
			rope(yH, rx, rp, n, heads, hd, 10000)
			check("rope", yH, y)
		}

		for _, hd := range []int{32, 10} { // flash, and the scalar kernels
			attentionReadsBF16(t, tg.name, be, r, hd)
		}

		for _, mc := range []mmCase{{70, 50, 40, false, true, false}, {65, 129, 17, true, true, true}, {33, 17, 300, true, false, true}} {
			a, bm := roundedRandn(r, mc.m*mc.k, 1), roundedRandn(r, mc.k*mc.n, 1)
			aH, bH := be.AllocBF16(len(a)), be.AllocBF16(len(bm))
			be.Upload(aH, a)
			be.Upload(bH, bm)
			c0 := randn(r, mc.m*mc.n, 1)
			want, got := up(be, c0), up(be, c0)
			be.Matmul(want, up(be, a), up(be, bm), mc.m, mc.n, mc.k, mc.ta, mc.tb, mc.acc)
			be.Matmul(got, aH, bH, mc.m, mc.n, mc.k, mc.ta, mc.tb, mc.acc)
			compareBits(t, fmt.Sprintf("%s matmul of bfloat16 operands %+v", tg.name, mc), map[string][]float32{"C": down(be, got)}, map[string][]float32{"C": down(be, want)})
		}
		if err := be.Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// attentionReadsBF16 checks that attention given q, k and v (and in the
// backward pass dout) held in bfloat16 gives the bits it gives for float32
// ones (which it rounds so), forward and backward, that dv stored in
// bfloat16 is the rounding of the float32 dv, and that a mix of q, k and v
// is refused.
func attentionReadsBF16(t *testing.T, name string, be *cuda.Backend, r *rand.Rand, hd int) {
	t.Helper()
	s := kernels.AttnShape{B: 2, T: 37, NH: 4, KVH: 2, HD: hd}
	nq, nkv := s.B*s.T*s.NH*hd, s.B*s.T*s.KVH*hd
	ds := upInt(be, docStarts(r, s.B, s.T))
	q, k, v := up(be, randn(r, nq, 1)), up(be, randn(r, nkv, 1)), up(be, randn(r, nkv, 1))
	half := func(x kernels.Buffer) kernels.Buffer {
		h := be.AllocBF16(x.Len())
		be.Copy(h, x)
		return h
	}
	qH, kH, vH := half(q), half(k), half(v)
	dout32 := up(be, randn(r, nq, 1))
	dout := dout32
	run := func(q, k, v kernels.Buffer) map[string][]float32 {
		out, lse := be.Alloc(nq), be.Alloc(s.B*s.NH*s.T)
		dq, dk, dv := be.Alloc(nq), be.Alloc(nkv), be.Alloc(nkv)
		be.AttentionForward(out, lse, q, k, v, ds, s)
		be.AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, ds, s)
		return map[string][]float32{"out": down(be, out), "lse": down(be, lse), "dq": down(be, dq), "dk": down(be, dk), "dv": down(be, dv)}
	}
	want := run(q, k, v)
	compareBits(t, fmt.Sprintf("%s attention of bfloat16 q, k, v, head dim %d", name, hd), run(qH, kH, vH), want)
	dout = half(dout32)
	compareBits(t, fmt.Sprintf("%s attention of bfloat16 q, k, v and dout, head dim %d", name, hd), run(qH, kH, vH), want)
	dout = dout32
	out, lse := be.Alloc(nq), be.Alloc(s.B*s.NH*s.T)
	be.AttentionForward(out, lse, qH, kH, vH, ds, s)
	dvH := be.AllocBF16(nkv)
	be.AttentionBackward(be.Alloc(nq), be.Alloc(nkv), dvH, dout, qH, kH, vH, out, lse, ds, s)
	for i, got := range down(be, dvH) {
		if w := kernels.BF16Float(kernels.BF16Bits(want["dv"][i])); math.Float32bits(got) != math.Float32bits(w) {
			t.Fatalf("%s attention's dv[%d] = %v in bfloat16 (head dim %d), want %v (float32 gives %v)", name, i, got, hd, w, want["dv"][i])
		}
	}
	func() {
		defer func() {
			if err, _ := recover().(error); !errors.Is(err, kernels.ErrShape) {
				t.Fatalf("%s: attention of bfloat16 q with float32 k and v: recovered %v, want ErrShape", name, err)
			}
		}()
		be.AttentionForward(be.Alloc(nq), be.Alloc(s.B*s.NH*s.T), qH, k, v, ds, s)
	}()
}
