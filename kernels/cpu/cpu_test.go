package cpu

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fomnet/fomnet/kernels"
)

// configs are the backends every op is run on: each code path with 1, 2 and
// 8 threads. All of them must agree bit for bit (the arithmetic contract),
// and the first must match the float64 reference.
func configs(t testing.TB) []*Backend {
	var bes []*Backend
	paths := []string{"generic"}
	if hasAVX2FMA {
		paths = append(paths, "avx2")
	}
	if hasAVX512 { // not on this project's CI machines; see selfTest512
		paths = append(paths, "avx512")
	}
	for _, p := range paths {
		for _, th := range []int{1, 2, 8} {
			be, err := New(Options{Threads: th, Path: p})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { be.Close() })
			bes = append(bes, be)
		}
	}
	// The AVX-512 path's 12×32 tile geometry, with the Go micro-kernel, so
	// that its packing and edge handling are tested on every machine.
	wide := MustNew(Options{Threads: 2, Path: "generic"})
	wide.mr, wide.nr = 12, 32
	t.Cleanup(func() { wide.Close() })
	return append(bes, wide)
}

func randn(r *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * scale
	}
	return x
}

// poisoned returns a buffer of n NaNs, so an op that fails to write an
// element is caught.
func poisoned(be *Backend, n int) kernels.Buffer {
	x := be.Alloc(n)
	d := F(x)
	for i := range d {
		d[i] = float32(math.NaN())
	}
	return x
}

func upload(be *Backend, x []float32) kernels.Buffer {
	b := be.Alloc(len(x))
	be.Upload(b, x)
	return b
}

func uploadInt(be *Backend, x []int32) kernels.IntBuffer {
	b := be.AllocInt(len(x))
	be.UploadInt(b, x)
	return b
}

// closeTo checks got against want with tolerance tol relative to the larger
// of 1 and the largest reference magnitude.
func closeTo(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	scale := 1.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	worst, at := 0.0, -1
	for i := range got {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			t.Fatalf("%s[%d] = %v, want %v", what, i, g, want[i])
		}
		if e := math.Abs(g-want[i]) / scale; e > worst {
			worst, at = e, i
		}
	}
	if worst > tol {
		t.Fatalf("%s: error %.3g at [%d] (got %v, want %v) exceeds %.3g", what, worst, at, got[at], want[at], tol)
	}
}

// agree runs f on every config and checks the outputs are bit-identical;
// it returns the first config's output for comparison with the reference.
func agree(t *testing.T, f func(be *Backend) []float32) []float32 {
	t.Helper()
	bes := configs(t)
	first := f(bes[0])
	for _, be := range bes[1:] {
		got := f(be)
		if len(got) != len(first) {
			t.Fatalf("%s/%d threads: %d outputs, want %d", be.Name(), be.Threads(), len(got), len(first))
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(first[i]) {
				t.Fatalf("%s/%d threads differs from %s/%d threads at %d: %v vs %v",
					be.Name(), be.Threads(), bes[0].Name(), bes[0].Threads(), i, got[i], first[i])
			}
		}
	}
	return first
}

func TestMatmul(t *testing.T) {
	shapes := [][3]int{{1, 1, 1}, {7, 13, 5}, {6, 16, 256}, {50, 37, 300}, {97, 100, 513}, {13, 3100, 17}, {130, 9, 2}}
	rs := rand.New(rand.NewPCG(77, 77)) // plus random shapes, odd sizes likely
	for i := 0; i < 6; i++ {
		shapes = append(shapes, [3]int{1 + rs.IntN(120), 1 + rs.IntN(120), 1 + rs.IntN(600)})
	}
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, acc := range []bool{false, true} {
					t.Run(fmt.Sprintf("%dx%dx%d/ta=%v/tb=%v/acc=%v", m, n, k, ta, tb, acc), func(t *testing.T) {
						r := rand.New(rand.NewPCG(uint64(m*n*k), 1))
						a, b, c0 := randn(r, m*k, 1), randn(r, k*n, 1), randn(r, m*n, 1)
						got := agree(t, func(be *Backend) []float32 {
							c := poisoned(be, m*n)
							if acc {
								be.Upload(c, c0)
							}
							be.Matmul(c, upload(be, a), upload(be, b), m, n, k, ta, tb, acc)
							return F(c)
						})
						closeTo(t, "C", got, refMatmul(c0, a, b, m, n, k, ta, tb, acc), 1e-5*math.Sqrt(float64(k)))
					})
				}
			}
		}
	}
}

func TestEmbedding(t *testing.T) {
	const n, c, vocab = 37, 70, 11
	r := rand.New(rand.NewPCG(2, 2))
	table, dout, dt0 := randn(r, vocab*c, 1), randn(r, n*c, 1), randn(r, vocab*c, 1)
	tok := make([]int32, n)
	for i := range tok {
		tok[i] = int32(r.IntN(vocab))
	}
	got := agree(t, func(be *Backend) []float32 {
		out := poisoned(be, n*c)
		tb := uploadInt(be, tok)
		be.EmbeddingForward(out, upload(be, table), tb, n, c)
		dt := upload(be, dt0)
		be.EmbeddingBackward(dt, upload(be, dout), tb, n, c)
		return append(F(out), F(dt)...)
	})
	want := make([]float64, n*c+vocab*c)
	for i := 0; i < vocab*c; i++ {
		want[n*c+i] = float64(dt0[i])
	}
	for i, tk := range tok {
		for j := 0; j < c; j++ {
			want[i*c+j] = float64(table[int(tk)*c+j])
			want[n*c+int(tk)*c+j] += float64(dout[i*c+j])
		}
	}
	closeTo(t, "embedding", got, want, 1e-6)
}

func TestRMSNorm(t *testing.T) {
	const n, c = 19, 67
	const eps = 1e-5
	r := rand.New(rand.NewPCG(3, 3))
	x, w, dy := randn(r, n*c, 2), randn(r, c, 1), randn(r, n*c, 1)
	dx0, dw0 := randn(r, n*c, 1), randn(r, c, 1)
	got := agree(t, func(be *Backend) []float32 {
		out, rstd := poisoned(be, n*c), poisoned(be, n)
		xb, wb := upload(be, x), upload(be, w)
		be.RMSNormForward(out, rstd, xb, wb, n, c, eps)
		dx, dw := upload(be, dx0), upload(be, dw0)
		be.RMSNormBackward(dx, dw, upload(be, dy), xb, wb, rstd, n, c)
		return append(append(F(out), F(dx)...), F(dw)...)
	})
	y, _ := refRMSNorm(x, w, n, c, eps)
	dx, dw := refRMSNormBackward(x, w, dy, n, c, eps)
	for i := range dx {
		dx[i] += float64(dx0[i])
	}
	for i := range dw {
		dw[i] += float64(dw0[i])
	}
	closeTo(t, "rmsnorm out", got[:n*c], y, 1e-5)
	closeTo(t, "rmsnorm dx", got[n*c:2*n*c], dx, 1e-5)
	closeTo(t, "rmsnorm dw", got[2*n*c:], dw, 1e-5)
}

func TestRoPE(t *testing.T) {
	const n, heads, hd = 23, 3, 10
	const theta = 500000.0
	r := rand.New(rand.NewPCG(4, 4))
	x := randn(r, n*heads*hd, 1)
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(r.IntN(3000))
	}
	for _, bwd := range []bool{false, true} {
		got := agree(t, func(be *Backend) []float32 {
			b, src, dst := upload(be, x), upload(be, x), poisoned(be, len(x))
			rope := be.RoPEForward
			if bwd {
				rope = be.RoPEBackward
			}
			rope(b, b, uploadInt(be, pos), n, heads, hd, theta)
			rope(dst, src, uploadInt(be, pos), n, heads, hd, theta)
			for i := range x {
				if F(src)[i] != x[i] || F(dst)[i] != F(b)[i] {
					t.Fatalf("rope into another buffer: source %d %v (was %v), result %v (in place: %v)", i, F(src)[i], x[i], F(dst)[i], F(b)[i])
				}
			}
			return F(b)
		})
		closeTo(t, fmt.Sprintf("rope backward=%v", bwd), got, refRoPE(x, pos, n, heads, hd, theta, bwd), 2e-6)
	}
}

// docStarts builds document starts for sequences whose documents end at
// randomly placed EOS tokens.
func docStarts(r *rand.Rand, b, t int) []int32 {
	ds := make([]int32, b*t)
	for i := 0; i < b; i++ {
		start := 0
		for j := 0; j < t; j++ {
			ds[i*t+j] = int32(start)
			if r.IntN(17) == 0 { // token j is an EOS: the next one starts a document
				start = j + 1
			}
		}
	}
	return ds
}

func TestAttention(t *testing.T) {
	rs := rand.New(rand.NewPCG(78, 78))
	kv := 1 + rs.IntN(3)
	for _, s := range []kernels.AttnShape{
		{B: 2, T: 70, NH: 4, KVH: 2, HD: 5},
		{B: 1, T: 130, NH: 3, KVH: 1, HD: 16},
		{B: 3, T: 9, NH: 2, KVH: 2, HD: 8},
		{B: 1 + rs.IntN(3), T: 1 + rs.IntN(150), NH: kv * (1 + rs.IntN(3)), KVH: kv, HD: 1 + rs.IntN(40)},
	} {
		t.Run(fmt.Sprintf("%+v", s), func(t *testing.T) {
			r := rand.New(rand.NewPCG(5, uint64(s.T)))
			nq, nk := s.B*s.T*s.NH*s.HD, s.B*s.T*s.KVH*s.HD
			q, k, v, dout := randn(r, nq, 1), randn(r, nk, 1), randn(r, nk, 1), randn(r, nq, 1)
			ds := docStarts(r, s.B, s.T)
			got := agree(t, func(be *Backend) []float32 {
				out, lse := poisoned(be, nq), poisoned(be, s.B*s.NH*s.T)
				qb, kb, vb, dsb := upload(be, q), upload(be, k), upload(be, v), uploadInt(be, ds)
				be.AttentionForward(out, lse, qb, kb, vb, dsb, s)
				dq, dk, dv := poisoned(be, nq), poisoned(be, nk), poisoned(be, nk)
				be.AttentionBackward(dq, dk, dv, upload(be, dout), qb, kb, vb, out, lse, dsb, s)
				return append(append(append(F(out), F(dq)...), F(dk)...), F(dv)...)
			})
			out, dq, dk, dv := refAttention(q, k, v, dout, ds, s)
			closeTo(t, "out", got[:nq], out, 1e-5)
			closeTo(t, "dq", got[nq:2*nq], dq, 1e-5)
			closeTo(t, "dk", got[2*nq:2*nq+nk], dk, 1e-5)
			closeTo(t, "dv", got[2*nq+nk:], dv, 1e-5)
		})
	}
}

// TestAttentionDocumentMask checks the mask itself: changing a token of one
// document must not change any output of another document.
func TestAttentionDocumentMask(t *testing.T) {
	s := kernels.AttnShape{B: 1, T: 40, NH: 2, KVH: 1, HD: 4}
	ds := make([]int32, s.T)
	for i := 20; i < s.T; i++ {
		ds[i] = 20
	}
	be := MustNew(Options{})
	defer be.Close()
	r := rand.New(rand.NewPCG(6, 6))
	q, k, v := randn(r, s.T*s.NH*s.HD, 1), randn(r, s.T*s.HD, 1), randn(r, s.T*s.HD, 1)
	run := func(k, v []float32) []float32 {
		out, lse := poisoned(be, len(q)), poisoned(be, s.NH*s.T)
		be.AttentionForward(out, lse, upload(be, q), upload(be, k), upload(be, v), uploadInt(be, ds), s)
		return append([]float32(nil), F(out)...)
	}
	a := run(k, v)
	k2, v2 := append([]float32(nil), k...), append([]float32(nil), v...)
	for i := 0; i < 20*s.HD; i++ { // perturb every key and value of document 1
		k2[i] += 1
		v2[i] -= 3
	}
	b := run(k2, v2)
	for i := 20 * s.NH * s.HD; i < len(a); i++ {
		if a[i] != b[i] {
			t.Fatalf("output %d of document 2 changed (%v -> %v) when document 1 changed", i, a[i], b[i])
		}
	}
	if a[0] == b[0] {
		t.Fatal("document 1's own output did not change; the test perturbs nothing")
	}
}

func TestSwiGLU(t *testing.T) {
	const n = 1000
	r := rand.New(rand.NewPCG(7, 7))
	g, u, dh := randn(r, n, 3), randn(r, n, 1), randn(r, n, 1)
	got := agree(t, func(be *Backend) []float32 {
		h, dg, du := poisoned(be, n), poisoned(be, n), poisoned(be, n)
		gb, ub := upload(be, g), upload(be, u)
		be.SwiGLUForward(h, gb, ub, n)
		be.SwiGLUBackward(dg, du, upload(be, dh), gb, ub, n)
		return append(append(F(h), F(dg)...), F(du)...)
	})
	want := make([]float64, 3*n)
	for i := 0; i < n; i++ {
		gi, ui := float64(g[i]), float64(u[i])
		sg := 1 / (1 + math.Exp(-gi))
		want[i] = gi * sg * ui
		want[n+i] = float64(dh[i]) * ui * (sg + gi*sg*(1-sg))
		want[2*n+i] = float64(dh[i]) * gi * sg
	}
	closeTo(t, "swiglu", got, want, 2e-6)
}

func TestSoftmaxCrossEntropy(t *testing.T) {
	const n, v = 13, 301
	r := rand.New(rand.NewPCG(8, 8))
	logits := randn(r, n*v, 4)
	tg := make([]int32, n)
	for i := range tg {
		tg[i] = int32(r.IntN(v))
	}
	tg[3], tg[7] = kernels.IgnoreIndex, kernels.IgnoreIndex
	const dscale = 1.0 / 11
	got := agree(t, func(be *Backend) []float32 {
		loss := poisoned(be, n)
		lg := upload(be, logits)
		be.SoftmaxCrossEntropy(loss, lg, lg, uploadInt(be, tg), n, v, dscale)
		l2 := poisoned(be, n)
		be.SoftmaxCrossEntropy(l2, upload(be, logits), nil, uploadInt(be, tg), n, v, 0)
		l3, lg3, d3 := poisoned(be, n), upload(be, logits), poisoned(be, n*v)
		be.SoftmaxCrossEntropy(l3, lg3, d3, uploadInt(be, tg), n, v, dscale)
		for i := range F(loss) {
			if F(loss)[i] != F(l2)[i] || F(loss)[i] != F(l3)[i] {
				t.Fatalf("loss %d differs with and without gradient, or with it elsewhere", i)
			}
		}
		for i := range logits {
			if F(lg3)[i] != logits[i] || F(d3)[i] != F(lg)[i] {
				t.Fatalf("gradient into its own buffer: logit %d %v (was %v), gradient %v (in place: %v)", i, F(lg3)[i], logits[i], F(d3)[i], F(lg)[i])
			}
		}
		return append(F(loss), F(lg)...)
	})
	loss, grad := refXent(logits, tg, n, v, dscale)
	closeTo(t, "loss", got[:n], loss, 1e-6)
	closeTo(t, "dlogits", got[n:], grad, 1e-7)
}

func TestAdamW(t *testing.T) {
	const n = 40000 // more than one chunk of work
	r := rand.New(rand.NewPCG(9, 9))
	p, g, m := randn(r, n, 1), randn(r, n, 0.1), randn(r, n, 0.01)
	v := randn(r, n, 0.001)
	for i := range v {
		v[i] *= v[i]
	}
	h := kernels.AdamWStep{LR: 3e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: 7, GradScale: 0.5}
	got := agree(t, func(be *Backend) []float32 {
		pb, mb, vb := upload(be, p), upload(be, m), upload(be, v)
		be.AdamW(pb, upload(be, g), mb, vb, h)
		return append(append(F(pb), F(mb)...), F(vb)...)
	})
	pn, mn, vn := refAdamW(p, g, m, v, h)
	closeTo(t, "params", got[:n], pn, 1e-6)
	closeTo(t, "m", got[n:2*n], mn, 1e-7)
	closeTo(t, "v", got[2*n:], vn, 1e-7)
}

func TestClipGlobalNorm(t *testing.T) {
	const n = 10007
	r := rand.New(rand.NewPCG(10, 10))
	g := randn(r, n, 1)
	var ss float64
	for _, x := range g {
		ss += float64(x) * float64(x)
	}
	got := agree(t, func(be *Backend) []float32 {
		b := upload(be, g)
		norm := kernels.ClipGlobalNorm(be, b, 1)
		if math.Abs(norm-math.Sqrt(ss)) > 1e-9*math.Sqrt(ss) {
			t.Fatalf("norm %v, want %v", norm, math.Sqrt(ss))
		}
		return F(b)
	})
	want := make([]float64, n)
	for i, x := range g {
		want[i] = float64(x) / math.Sqrt(ss)
	}
	closeTo(t, "clipped", got, want, 1e-7)
}

func TestExpCore(t *testing.T) {
	worst := 0.0
	for x := float32(-87); x < 88.7; x += 0.0037 {
		want := math.Exp(float64(x))
		if e := math.Abs(float64(expCore(x))-want) / want; e > worst {
			worst = e
		}
	}
	if worst > 3e-7 {
		t.Fatalf("expCore relative error %g > 3e-7", worst)
	}
	if expCore(0) != 1 || expCore(-200) != expCore(expLo) || expCore(200) != expCore(expHi) || !math.IsNaN(float64(expCore(float32(math.NaN())))) {
		t.Fatalf("expCore edge values: %v %v %v", expCore(0), expCore(-200), expCore(200))
	}
	if math.IsInf(float64(expCore(expHi)), 0) || expCore(expLo) == 0 {
		t.Fatal("expCore range ends must be finite and non-zero")
	}
}

// TestFMA32 checks the float32 FMA emulation against exact big-float
// arithmetic, including cases where a plain float64 FMA would round twice.
func TestFMA32(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	check := func(a, b, c float32) {
		exact := new(big.Float).SetPrec(200).SetFloat64(float64(a))
		exact.Mul(exact, new(big.Float).SetFloat64(float64(b)))
		exact.Add(exact, new(big.Float).SetFloat64(float64(c)))
		want, _ := exact.Float32()
		if got := fma32(a, b, c); got != want {
			t.Fatalf("fma32(%g, %g, %g) = %g, want %g", a, b, c, got, want)
		}
	}
	// (2^-24 + 2^-42)(1 − 2^-18) + (1 + 2^-23) = 1 + 2^-23 + 2^-24 − 2^-60,
	// just below a float32 midpoint: the answer is 1 + 2^-23. Rounding to
	// float64 first lands on the midpoint, which ties to even: 1 + 2^-22.
	a, b, c := float32(0x1p-24+0x1p-42), float32(1-0x1p-18), float32(1+0x1p-23)
	if float32(math.FMA(float64(a), float64(b), float64(c))) == 1+0x1p-23 {
		t.Fatal("test case does not exercise double rounding")
	}
	check(a, b, c)
	for i := 0; i < 200000; i++ {
		a := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-20)))
		b := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-20)))
		c := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(80)-40)))
		check(a, b, c)
	}
}

// TestVectorPathsAgree runs the AVX2 elementwise kernels against their Go
// definitions on awkward inputs (huge, tiny, NaN, odd lengths).
func TestVectorPathsAgree(t *testing.T) {
	if !hasAVX2FMA {
		t.Skip("no AVX2+FMA on this machine")
	}
	fast := MustNew(Options{Threads: 1, Path: "avx2"})
	slow := MustNew(Options{Threads: 1, Path: "generic"})
	defer fast.Close()
	defer slow.Close()
	r := rand.New(rand.NewPCG(12, 12))
	x := randn(r, 1003, 30)
	x[5], x[6], x[7], x[8] = 200, -200, float32(math.NaN()), float32(math.Inf(-1))
	same := func(what string, a, b []float32) {
		t.Helper()
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("%s[%d]: avx2 %v, generic %v", what, i, a[i], b[i])
			}
		}
	}
	a, b := append([]float32(nil), x...), append([]float32(nil), x...)
	fast.expShift(a, 0.37, 1.5)
	slow.expShift(b, 0.37, 1.5)
	same("expShift", a, b)
	u, dh := randn(r, len(x), 1), randn(r, len(x), 1)
	h1, h2 := make([]float32, len(x)), make([]float32, len(x))
	fast.swigluFwd(h1, x, u)
	slow.swigluFwd(h2, x, u)
	same("swigluFwd", h1, h2)
	dg1, du1, dg2, du2 := make([]float32, len(x)), make([]float32, len(x)), make([]float32, len(x)), make([]float32, len(x))
	fast.swigluBwd(dg1, du1, dh, x, u)
	slow.swigluBwd(dg2, du2, dh, x, u)
	same("swigluBwd dg", dg1, dg2)
	same("swigluBwd du", du1, du2)

	y := randn(r, 1003, 1) // finite inputs for the optimizer and reductions
	c := adamConst{GS: 0.7, B1: 0.9, OmB1: 0.1, B2: 0.95, OmB2: 0.05, IBC1: 3.1, IBC2: 17.2, Eps: 1e-8, WD: 0.1, LR: 1e-3}
	ps := [2][]float32{append([]float32(nil), y...), append([]float32(nil), y...)}
	ms := [2][]float32{randn(r, len(y), 0.01), nil}
	ms[1] = append([]float32(nil), ms[0]...)
	vs := [2][]float32{randn(r, len(y), 0.01), nil}
	for i := range vs[0] {
		vs[0][i] *= vs[0][i]
	}
	vs[1] = append([]float32(nil), vs[0]...)
	fast.adamw(ps[0], u, ms[0], vs[0], &c)
	slow.adamw(ps[1], u, ms[1], vs[1], &c)
	same("adamw p", ps[0], ps[1])
	same("adamw m", ms[0], ms[1])
	same("adamw v", vs[0], vs[1])

	for _, n := range []int{1, 7, 8, 9, 16, 17, 1003} {
		var a1, a2 [16]float64
		fast.sumsqLanes(y[:n], &a1)
		slow.sumsqLanes(y[:n], &a2)
		if a1 != a2 {
			t.Fatalf("sumsqLanes(%d): %v vs %v", n, a1, a2)
		}
		if s1, s2 := fast.sum64(y[:n]), slow.sum64(y[:n]); s1 != s2 {
			t.Fatalf("sum64(%d): %v vs %v", n, s1, s2)
		}
		if m1, m2 := fast.maxOf(y[:n]), slow.maxOf(y[:n]); m1 != m2 {
			t.Fatalf("maxOf(%d): %v vs %v", n, m1, m2)
		}
		z1, z2 := append([]float32(nil), y[:n]...), append([]float32(nil), y[:n]...)
		fast.scale(z1, 0.3)
		slow.scale(z2, 0.3)
		same("scale", z1, z2)
	}
	var want float32 = -1
	for _, v := range y {
		want = max(want, v)
	}
	if got := fast.maxOf(y); got != want {
		t.Fatalf("maxOf = %v, want %v", got, want)
	}
}

func TestBadShapesPanic(t *testing.T) {
	be := MustNew(Options{Threads: 1})
	defer be.Close()
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("matmul with wrong buffer length did not panic")
		}
	}()
	be.Matmul(be.Alloc(5), be.Alloc(6), be.Alloc(6), 2, 3, 3, false, false, false)
}

func TestOptions(t *testing.T) {
	if _, err := New(Options{Path: "sse9"}); err == nil {
		t.Fatal("unknown path accepted")
	}
	if _, err := New(Options{Threads: -1}); err == nil {
		t.Fatal("negative threads accepted")
	}
	be := MustNew(Options{Threads: 3})
	if be.Threads() != 3 {
		t.Fatalf("threads %d, want 3", be.Threads())
	}
	be.Close()
	be.Close() // idempotent
}

// TestLinearPacked: Linear over packed weights gives Matmul's bits (A·Bᵀ),
// and each row of a product the bits of that row alone, on every code path
// this machine has and on one or two threads — what the decoder's
// batch-independence rests on.
func TestLinearPacked(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	paths := []string{"generic"}
	if hasAVX2FMA {
		paths = append(paths, "avx2")
	}
	if hasAVX512 {
		paths = append(paths, "avx512")
	}
	var ref [][]float32
	for pi, path := range paths {
		for _, threads := range []int{1, 2} {
			be := MustNew(Options{Threads: threads, Path: path})
			for si, sh := range [][3]int{{1, 256, 256}, {7, 704, 256}, {70, 300, 600}, {3, 3100, 40}} {
				m, n, k := sh[0], sh[1], sh[2]
				r = rand.New(rand.NewPCG(uint64(si), 1))
				a, w := fill(m*k), fill(n*k)
				got := make([]float32, m*n)
				be.Linear(got, a, m, be.Pack(w, n, k))
				want := make([]float32, m*n)
				be.Matmul(&buf{want}, &buf{a}, &buf{w}, m, n, k, false, true, false)
				if !slices.Equal(got, want) {
					t.Fatalf("%s/%d threads %v: Linear differs from Matmul", path, threads, sh)
				}
				for i := range m {
					row := make([]float32, n)
					be.Linear(row, a[i*k:(i+1)*k], 1, be.Pack(w, n, k))
					if !slices.Equal(row, got[i*n:(i+1)*n]) {
						t.Fatalf("%s %v: row %d alone differs from row %d of %d", path, sh, i, i, m)
					}
				}
				if pi == 0 && threads == 1 {
					ref = append(ref, got)
				} else if !slices.Equal(got, ref[si]) {
					t.Fatalf("%s/%d threads %v: differs from the generic path", path, threads, sh)
				}
			}
			be.Close()
		}
	}
}
