package model

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
)

// memConfigs are the shapes the memory options are checked on: tiny (tied
// output head) and an untied three-block variant.
func memConfigs() map[string]Config {
	tiny, _ := Preset("tiny")
	untied := tiny
	untied.Tied, untied.Layers = false, 3
	return map[string]Config{"tied": tiny, "untied": untied}
}

// gradOf runs fn on a fresh model (same weights, grads preset to a
// non-zero pattern so that adding, not overwriting, is checked) and returns
// the loss and the gradient's bits.
func gradOf(t *testing.T, be kernels.Backend, c Config, recompute bool, fn func(m *Model) (float32, error)) (uint32, []uint32) {
	t.Helper()
	m, err := New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(7)
	m.SetRecompute(recompute)
	pre := make([]float32, m.Layout.Size)
	for i := range pre {
		pre[i] = float32(i%13) * 1e-3
	}
	be.Upload(m.Grads, pre)
	loss, err := fn(m)
	if err != nil {
		t.Fatal(err)
	}
	g := make([]float32, m.Layout.Size)
	be.Download(g, m.Grads)
	bits := make([]uint32, len(g))
	for i, v := range g {
		bits[i] = math.Float32bits(v)
	}
	return math.Float32bits(loss), bits
}

func sameBits(t *testing.T, what string, wantLoss, gotLoss uint32, want, got []uint32) {
	t.Helper()
	if wantLoss != gotLoss {
		t.Errorf("%s: loss %v, want %v", what, math.Float32frombits(gotLoss), math.Float32frombits(wantLoss))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Errorf("%s: gradient %d is %v, want %v (and maybe more)", what, i, math.Float32frombits(got[i]), math.Float32frombits(want[i]))
			return
		}
	}
}

// Recomputation and micro-batches change what is held, never a bit of the
// result: against one forward and backward pass over the whole batch.
func TestMemoryOptionsBitIdentical(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 2})
	const b, T = 4, 24
	for name, c := range memConfigs() {
		tokens, targets := batch(3, c, b, T)
		whole := func(m *Model) (float32, error) {
			l, err := m.Forward(tokens, targets, b, T, true)
			if err != nil {
				return 0, err
			}
			return l, m.Backward()
		}
		wl, wg := gradOf(t, be, c, false, whole)
		for _, rc := range []bool{false, true} {
			if rc {
				l, g := gradOf(t, be, c, true, whole)
				sameBits(t, name+" recompute", wl, l, wg, g)
			}
			for _, micro := range []int{1, 2, 4} {
				l, g := gradOf(t, be, c, rc, func(m *Model) (float32, error) { return m.Accumulate(tokens, targets, b, T, micro) })
				sameBits(t, name+" accumulate", wl, l, wg, g)
			}
		}
	}
}

// The held activations shrink as documented, and a forward pass without
// gradient (evaluation) is unchanged by recomputation.
func TestRecomputeHoldsLess(t *testing.T) {
	c, _ := Preset("demo")
	full, rc := ActivationBytes(c, 8, 256, false, false), ActivationBytes(c, 8, 256, true, false)
	if rc >= full*3/4 {
		t.Errorf("recomputation holds %d of %d activation bytes; want well under", rc, full)
	}
	be := backend(t, cpu.Options{Threads: 2})
	tiny, _ := Preset("tiny")
	tokens, targets := batch(5, tiny, 2, 16)
	var losses [2]float32
	for i, on := range []bool{false, true} {
		m := newTiny(t, be)
		m.SetRecompute(on)
		l, err := m.Forward(tokens, targets, 2, 16, false)
		if err != nil {
			t.Fatal(err)
		}
		losses[i] = l
	}
	if losses[0] != losses[1] {
		t.Errorf("evaluation loss %v with recomputation, %v without", losses[1], losses[0])
	}
}

func TestAccumulateBadInput(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 1})
	m := newTiny(t, be)
	tokens, targets := batch(1, m.Config, 4, 8)
	for _, micro := range []int{0, -1, 3, 8} {
		if _, err := m.Accumulate(tokens, targets, 4, 8, micro); err == nil {
			t.Errorf("micro %d of 4 rows accepted", micro)
		}
	}
	if _, err := m.Accumulate(tokens, nil, 4, 8, 2); err == nil {
		t.Error("accumulating without targets accepted")
	}
}

// A model with 8-bit moments trains, saves and loads them exactly, and
// refuses a state held the other way.
func TestAdamW8ModelState(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 2})
	c, _ := Preset("tiny")
	m, err := NewWith(be, c, Options{AdamW8: true})
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	step := func(m *Model, seed uint64) {
		t.Helper()
		tokens, targets := batch(seed, c, 2, 16)
		m.ZeroGrad()
		if _, err := m.Accumulate(tokens, targets, 2, 16, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Step(1e-2, DefaultOptim()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		step(m, uint64(i))
	}
	st := m.OptimState()
	if st.Step != 3 || len(st.M8) != m.Layout.Size || len(st.MS) != Adam8Scales(m.Layout) || st.M != nil {
		t.Fatalf("state: step %d, %d codes, %d scales, %d fp32 moments", st.Step, len(st.M8), len(st.MS), len(st.M))
	}
	dir := t.TempDir() + "/ck"
	if err := m.Save(dir, nil); err != nil {
		t.Fatal(err)
	}
	back, _, err := Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !back.AdamW8() || !reflect.DeepEqual(back.OptimState(), st) {
		t.Fatal("the 8-bit state did not come back from the checkpoint")
	}
	step(m, 9)
	step(back, 9)
	a, b := make([]float32, m.Layout.Size), make([]float32, m.Layout.Size)
	be.Download(a, m.Params)
	be.Download(b, back.Params)
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(m.OptimState(), back.OptimState()) {
		t.Error("a step after loading differs from a step before saving")
	}
	fp := newTiny(t, be)
	if err := fp.SetOptimState(st); err == nil {
		t.Error("an fp32 model took 8-bit moments")
	}
	if err := m.SetOptimState(fp.OptimState()); err == nil {
		t.Error("an 8-bit model took fp32 moments")
	}
}

// A model its owner lets go of is collected whole: its backend keeps none
// of its buffers alive past the call that used them (a lean swarm node
// drops its model between rounds; kernels/cpu's reused tasks once held
// views of the weights and gradients).
func TestDroppedModelIsCollected(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 2})
	c, _ := Preset("tiny")
	for _, eight := range []bool{false, true} {
		collected := make(chan string, 2)
		func() {
			m, err := NewWith(be, c, Options{AdamW8: eight, Recompute: true})
			if err != nil {
				t.Fatal(err)
			}
			m.Init(1)
			tokens, targets := batch(1, c, 2, 16)
			m.ZeroGrad()
			if _, err := m.Accumulate(tokens, targets, 2, 16, 1); err != nil {
				t.Fatal(err)
			}
			o := DefaultOptim()
			o.ClipNorm = 1e-3 // clipping scales the gradients too
			if _, err := m.Step(1e-2, o); err != nil {
				t.Fatal(err)
			}
			runtime.AddCleanup(&cpu.F(m.Params)[0], func(s string) { collected <- s }, "weights")
			runtime.AddCleanup(&cpu.F(m.Grads)[0], func(s string) { collected <- s }, "gradients")
		}()
		got := map[string]bool{}
		for range 20 {
			runtime.GC()
			for len(collected) > 0 {
				got[<-collected] = true
			}
			if len(got) == 2 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(got) != 2 {
			t.Errorf("8-bit %v: of the dropped model's weights and gradients, only %v were collected", eight, got)
		}
	}
}

// WriteMoments streams the moments as OptimState's vectors in order, and
// ReadMoments puts them back, across the chunks both move (demo: 5M
// parameters), fp32 and 8-bit; a stream a byte short is an error, and a
// frozen model has no moments to move.
func TestMomentsStream(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 2})
	c, _ := Preset("demo")
	r := rand.New(rand.NewPCG(4, 4))
	floats := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	for _, eight := range []bool{false, true} {
		m, err := NewWith(be, c, Options{AdamW8: eight})
		if err != nil {
			t.Fatal(err)
		}
		n, nb := m.Layout.Size, Adam8Scales(m.Layout)
		st := OptimState{Step: 7}
		var want bytes.Buffer
		if eight {
			st.M8, st.V8 = make([]byte, n), make([]byte, n)
			for i := range st.M8 {
				st.M8[i], st.V8[i] = byte(r.UintN(256)), byte(r.UintN(256))
			}
			st.MS, st.VS = floats(nb), floats(nb)
			want.Write(st.M8)
			want.Write(st.V8)
			binary.Write(&want, binary.LittleEndian, st.MS)
			binary.Write(&want, binary.LittleEndian, st.VS)
		} else {
			st.M, st.V = floats(n), floats(n)
			binary.Write(&want, binary.LittleEndian, st.M)
			binary.Write(&want, binary.LittleEndian, st.V)
		}
		if err := m.SetOptimState(st); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := m.WriteMoments(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("8-bit %v: WriteMoments wrote %d bytes, not OptimState's %d in order", eight, got.Len(), want.Len())
		}
		back, _ := NewWith(be, c, Options{AdamW8: eight})
		if err := back.ReadMoments(bytes.NewReader(want.Bytes()), st.Step); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back.OptimState(), st) {
			t.Fatalf("8-bit %v: ReadMoments did not give the state back", eight)
		}
		if err := back.ReadMoments(bytes.NewReader(want.Bytes()[:want.Len()-1]), 1); err == nil || back.Steps() != st.Step {
			t.Fatalf("8-bit %v: a stream a byte short: %v, step %d", eight, err, back.Steps())
		}
	}
	fz, _ := NewFrozen(be, c)
	if err := fz.WriteMoments(io.Discard); !errors.Is(err, ErrFrozen) {
		t.Errorf("a frozen model's moments: %v", err)
	}
}
