package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
)

func newTiny(t testing.TB, be kernels.Backend) *Model {
	t.Helper()
	c, _ := Preset("tiny")
	m, err := New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(42)
	return m
}

func backend(t testing.TB, o cpu.Options) *cpu.Backend {
	t.Helper()
	be, err := cpu.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// batch returns random tokens with a few EOS tokens (so documents are
// packed) and next-token targets with some positions ignored.
func batch(seed uint64, c Config, b, t int) (tokens, targets []int32) {
	r := rand.New(rand.NewPCG(seed, 99))
	tokens = make([]int32, b*t)
	targets = make([]int32, b*t)
	for i := range tokens {
		tokens[i] = int32(r.IntN(ByteVocab - 3))
		if r.IntN(9) == 0 {
			tokens[i] = int32(c.EOS)
		}
		targets[i] = int32(r.IntN(c.Vocab))
		if r.IntN(7) == 0 {
			targets[i] = kernels.IgnoreIndex
		}
	}
	return tokens, targets
}

func TestPresets(t *testing.T) {
	for _, name := range PresetNames() {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	check := func(name string, lo, hi int64) {
		c, _ := Preset(name)
		if n := NumParams(c); n < lo || n > hi {
			t.Errorf("%s has %d parameters, want [%d, %d]", name, n, lo, hi)
		}
	}
	check("tiny", 1, 1_000_000)
	check("demo", 4_500_000, 5_500_000)
	check("kormo-10b", 10_642_500_000, 10_857_500_000) // 10.75B ± 1%
	if l, _ := Preset("llama-1b"); NumParams(l) != 1_107_363_840 || l.Tied {
		t.Errorf("llama-1b has %d parameters (tied %v); the documented figure is 1,107,363,840, untied", NumParams(l), l.Tied)
	}
	c, _ := Preset("kormo-10b")
	if c.Dim != 4096 || c.Heads != 32 || c.KVHeads != 8 {
		t.Errorf("kormo-10b shape %+v", c)
	}
	if n := NumParams(c); n != 10_756_624_384 {
		t.Errorf("kormo-10b has %d parameters; the documented figure is 10,756,624,384", n)
	}
	if _, err := Preset("nope"); err == nil {
		t.Error("unknown preset accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	base, _ := Preset("tiny")
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"heads not dividing dim", func(c *Config) { c.Heads = 5 }},
		{"kv heads not dividing heads", func(c *Config) { c.KVHeads = 3 }},
		{"zero layers", func(c *Config) { c.Layers = 0 }},
		{"eos outside vocab", func(c *Config) { c.EOS = c.Vocab }},
		{"bad eps", func(c *Config) { c.NormEps = 0 }},
		{"odd head dim", func(c *Config) { c.Dim = 60; c.Heads = 4 }},
	} {
		c := base
		tc.mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestLayoutNames(t *testing.T) {
	c, _ := Preset("tiny")
	l := NewLayout(c)
	want := []string{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
		"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "model.norm.weight"}
	for _, n := range want {
		if _, ok := l.Lookup(n); !ok {
			t.Errorf("layout lacks %s", n)
		}
	}
	k, _ := l.Lookup("model.layers.1.self_attn.k_proj.weight")
	if k.Shape[0] != c.KVHeads*c.HeadDim() || k.Shape[1] != c.Dim {
		t.Errorf("k_proj shape %v", k.Shape)
	}
	off := 0
	for _, tn := range l.Tensors {
		if tn.Offset != off {
			t.Fatalf("%s at %d, want %d (tensors must tile the buffer)", tn.Name, tn.Offset, off)
		}
		off += tn.Size
	}
	if off != l.Size {
		t.Fatalf("tensors cover %d of %d", off, l.Size)
	}
}

// TestGradientFiniteDifference checks backward against central differences
// of the loss along a random unit direction within each tensor.
func TestGradientFiniteDifference(t *testing.T) {
	be := backend(t, cpu.Options{})
	m := newTiny(t, be)
	c := m.Config
	// Larger weights than Init's make every gradient comfortably above the
	// float32 noise of the loss.
	host := make([]float32, m.Layout.Size)
	be.Download(host, m.Params)
	r := rand.New(rand.NewPCG(5, 5))
	for _, tn := range m.Layout.Tensors {
		for i := tn.Offset; i < tn.Offset+tn.Size; i++ {
			if len(tn.Shape) == 1 {
				host[i] = 1 + 0.3*float32(r.NormFloat64())
			} else {
				host[i] = 0.15 * float32(r.NormFloat64())
			}
		}
	}
	be.Upload(m.Params, host)
	const b, T = 2, 24
	tokens, targets := batch(1, c, b, T)
	m.ZeroGrad()
	if _, err := m.Forward(tokens, targets, b, T, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	grad := make([]float32, m.Layout.Size)
	be.Download(grad, m.Grads)
	loss := func(p []float32) float64 {
		be.Upload(m.Params, p)
		l, err := m.Forward(tokens, targets, b, T, false)
		if err != nil {
			t.Fatal(err)
		}
		return float64(l)
	}
	const eps = 1e-2
	for _, tn := range m.Layout.Tensors {
		dir := make([]float64, tn.Size)
		var norm float64
		for i := range dir {
			dir[i] = r.NormFloat64()
			norm += dir[i] * dir[i]
		}
		var analytic float64
		plus := append([]float32(nil), host...)
		minus := append([]float32(nil), host...)
		for i := range dir {
			dir[i] /= math.Sqrt(norm)
			analytic += dir[i] * float64(grad[tn.Offset+i])
			plus[tn.Offset+i] += float32(eps * dir[i])
			minus[tn.Offset+i] -= float32(eps * dir[i])
		}
		fd := (loss(plus) - loss(minus)) / (2 * eps)
		rel := math.Abs(fd-analytic) / math.Max(math.Abs(fd), 1e-3)
		if rel > 2e-2 {
			t.Errorf("%s: directional derivative %.6g by finite differences, %.6g by backward (rel err %.3g)", tn.Name, fd, analytic, rel)
		}
	}
}

// TestOverfitOneBatch: the tiny model memorises one fixed batch, reaching a
// mean loss below 0.05 nats (from ln 320 ≈ 5.77) within 300 AdamW steps.
func TestOverfitOneBatch(t *testing.T) {
	be := backend(t, cpu.Options{})
	m := newTiny(t, be)
	const b, T = 4, 32
	tokens, targets := batch(3, m.Config, b, T)
	opt := DefaultOptim()
	opt.WeightDecay = 0
	var first, loss float32
	for step := 0; step < 300; step++ {
		m.ZeroGrad()
		l, err := m.Forward(tokens, targets, b, T, true)
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = l
		}
		loss = l
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Step(3e-3, opt); err != nil {
			t.Fatal(err)
		}
		if loss < 0.05 {
			break
		}
	}
	if math.Abs(float64(first)-math.Log(320)) > 0.1 {
		t.Errorf("initial loss %.3f, want about ln 320 = %.3f", first, math.Log(320))
	}
	if loss >= 0.05 {
		t.Fatalf("loss %.4f after 300 steps, want < 0.05", loss)
	}
}

// trainTwoSteps runs forward, backward and AdamW twice and returns the loss
// bits and the parameter bits.
func trainTwoSteps(t *testing.T, be kernels.Backend) []uint32 {
	m := newTiny(t, be)
	const b, T = 3, 40
	var out []uint32
	for s := 0; s < 2; s++ {
		tokens, targets := batch(uint64(7+s), m.Config, b, T)
		m.ZeroGrad()
		l, err := m.Forward(tokens, targets, b, T, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Step(1e-3, DefaultOptim()); err != nil {
			t.Fatal(err)
		}
		out = append(out, math.Float32bits(l))
	}
	p := make([]float32, m.Layout.Size)
	be.Download(p, m.Params)
	g := make([]float32, m.Layout.Size)
	be.Download(g, m.Grads)
	for _, v := range append(p, g...) {
		out = append(out, math.Float32bits(v))
	}
	return out
}

// TestDeterministicAcrossGOMAXPROCS: forward, backward and the optimizer step
// give bit-identical losses, gradients and parameters for GOMAXPROCS 1, 2
// and 8, on every code path. Verification of other peers' work relies on it.
func TestDeterministicAcrossGOMAXPROCS(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var ref []uint32
	for _, path := range []string{"auto", "generic"} {
		for _, procs := range []int{1, 2, 8} {
			runtime.GOMAXPROCS(procs)
			be := backend(t, cpu.Options{Path: path}) // Threads 0: one per GOMAXPROCS
			if be.Threads() != procs {
				t.Fatalf("backend has %d threads under GOMAXPROCS %d", be.Threads(), procs)
			}
			got := trainTwoSteps(t, be)
			if ref == nil {
				ref = got
				continue
			}
			for i := range got {
				if got[i] != ref[i] {
					t.Fatalf("%s with GOMAXPROCS=%d differs at value %d", be.Name(), procs, i)
				}
			}
		}
	}
}

// TestDocumentMasking: changing the first document of a packed sequence
// leaves every logit of the second document unchanged.
func TestDocumentMasking(t *testing.T) {
	be := backend(t, cpu.Options{})
	m := newTiny(t, be)
	c := m.Config
	const T = 20
	tokens := make([]int32, T)
	for i := range tokens {
		tokens[i] = int32(65 + i)
	}
	tokens[7] = int32(c.EOS) // document 1 is tokens 0..7
	logits := func(tok []int32) [][]float32 {
		if _, err := m.Forward(tok, nil, 1, T, false); err != nil {
			t.Fatal(err)
		}
		var rows [][]float32
		for i := 0; i < T; i++ {
			row := make([]float32, c.Vocab)
			if err := m.Logits(row, 0, i); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, row)
		}
		return rows
	}
	a := logits(tokens)
	changed := append([]int32(nil), tokens...)
	changed[2], changed[5] = 200, 201
	bb := logits(changed)
	for i := 8; i < T; i++ {
		for j := range a[i] {
			if a[i][j] != bb[i][j] {
				t.Fatalf("position %d (document 2) logit %d changed: %v -> %v", i, j, a[i][j], bb[i][j])
			}
		}
	}
	if a[5][0] == bb[5][0] {
		t.Fatal("document 1's own logits did not change")
	}
	// Positions restart: document 2 alone at the start of a sequence gives
	// the same logits as packed after document 1.
	alone := append(append([]int32(nil), tokens[8:]...), make([]int32, 8)...)
	cc := logits(alone)
	for i := 8; i < T; i++ {
		for j := range a[i] {
			if d := math.Abs(float64(a[i][j] - cc[i-8][j])); d > 1e-5 {
				t.Fatalf("document 2 token %d logit %d: packed %v, alone %v", i-8, j, a[i][j], cc[i-8][j])
			}
		}
	}
}

func TestBadBatch(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 1})
	m := newTiny(t, be)
	tok, tg := batch(1, m.Config, 1, 8)
	for _, tc := range []struct {
		name        string
		tokens, tgt []int32
		b, t        int
	}{
		{"length", tok[:7], tg, 1, 8},
		{"token id", append([]int32{int32(m.Config.Vocab)}, tok[1:]...), tg, 1, 8},
		{"negative target", tok, append([]int32{-5}, tg[1:]...), 1, 8},
		{"too long", make([]int32, 200), make([]int32, 200), 1, 200},
	} {
		if _, err := m.Forward(tc.tokens, tc.tgt, tc.b, tc.t, true); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if err := m.Backward(); err == nil {
		t.Error("Backward without Forward accepted")
	}
	// After a forward with gradient the logits may hold their gradient, so
	// Logits refuses, before Backward and after it.
	row := make([]float32, m.Config.Vocab)
	if _, err := m.Forward(tok, tg, 1, 8, true); err != nil {
		t.Fatal(err)
	}
	for _, when := range []string{"before Backward", "after Backward"} {
		if err := m.Logits(row, 0, 0); err == nil {
			t.Errorf("Logits after a forward with gradient, %s: accepted", when)
		}
		if err := m.Backward(); err != nil && when == "before Backward" {
			t.Fatal(err)
		}
	}
	if _, err := m.Forward(tok, nil, 1, 8, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Logits(row, 0, 0); err != nil {
		t.Errorf("Logits after a forward without gradient: %v", err)
	}
}

// TestStepAllocs: after the first step has sized every buffer, a training
// step (forward, backward, AdamW) allocates nothing.
func TestStepAllocs(t *testing.T) {
	be := backend(t, cpu.Options{})
	m := newTiny(t, be)
	tokens, targets := batch(1, m.Config, 2, 64)
	step := func() {
		m.ZeroGrad()
		if _, err := m.Forward(tokens, targets, 2, 64, true); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Step(1e-3, DefaultOptim()); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if a := testing.AllocsPerRun(5, step); a != 0 {
		t.Fatalf("%v allocations per training step, want 0", a)
	}
}

func ExampleNew() {
	be := cpu.MustNew(cpu.Options{})
	defer be.Close()
	c, _ := Preset("tiny")
	m, _ := New(be, c)
	m.Init(1)
	fmt.Println(NumParams(c), m.Layout.Tensors[0].Name)
	// Output: 112960 model.embed_tokens.weight
}

// BenchmarkTrainStep reports allocs/op of a steady-state training step of
// the tiny preset (expected: 0).
func BenchmarkTrainStep(b *testing.B) {
	be := backend(b, cpu.Options{})
	m := newTiny(b, be)
	tokens, targets := batch(1, m.Config, 4, 128)
	step := func() {
		m.ZeroGrad()
		if _, err := m.Forward(tokens, targets, 4, 128, true); err != nil {
			b.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Step(1e-3, DefaultOptim()); err != nil {
			b.Fatal(err)
		}
	}
	step()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step()
	}
	b.ReportMetric(float64(4*128*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// AdamW updates runs of neighbouring tensors alike in weight decay in one
// call each with fp32 moments, and every tensor on its own with 8-bit ones;
// either way each parameter once, in order.
func TestOptSpans(t *testing.T) {
	c, _ := Preset("demo")
	l := NewLayout(c)
	for _, merge := range []bool{false, true} {
		spans := optSpans(l.Tensors, merge)
		off := 0
		for i, s := range spans {
			if s.off != off || s.n <= 0 {
				t.Fatalf("merge %v: span %d covers [%d, %d), want it to start at %d", merge, i, s.off, s.off+s.n, off)
			}
			if merge && i > 0 && spans[i-1].decay == s.decay {
				t.Fatalf("merge %v: spans %d and %d both have decay %v", merge, i-1, i, s.decay)
			}
			off += s.n
		}
		if off != l.Size {
			t.Fatalf("merge %v: spans cover %d of %d parameters", merge, off, l.Size)
		}
		want := len(l.Tensors)
		if merge {
			want = 2 + 4*c.Layers // embedding, norm; a block: ln1 | q k v o | ln2 | gate up down
		}
		if len(spans) != want {
			t.Fatalf("merge %v: %d spans, want %d", merge, len(spans), want)
		}
	}
}
