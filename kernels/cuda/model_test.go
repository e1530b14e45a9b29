package cuda_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cuda"
	"github.com/fomnet/fomnet/kernels/cuda/emu"
	"github.com/fomnet/fomnet/model"
)

// trainTiny trains the tiny preset for steps AdamW steps on fixed random
// batches (documents packed with EOS, some targets ignored) and returns the
// loss of every step and the final parameters.
func trainTiny(t *testing.T, be kernels.Backend, steps int, o model.Options) ([]float32, []float32) {
	t.Helper()
	c, err := model.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.NewWith(be, c, o)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(7)
	const b, T = 2, 48
	r := rand.New(rand.NewPCG(5, 6))
	opt := model.DefaultOptim()
	var losses []float32
	for s := 0; s < steps; s++ {
		tokens := make([]int32, b*T)
		targets := make([]int32, b*T)
		for i := range tokens {
			tokens[i] = int32(r.IntN(c.Vocab))
			if r.IntN(17) == 0 {
				tokens[i] = int32(c.EOS)
			}
		}
		for i := range targets {
			targets[i] = int32((int(tokens[i])*7 + 3) % c.Vocab) // a learnable mapping
			if r.IntN(9) == 0 {
				targets[i] = kernels.IgnoreIndex
			}
		}
		m.ZeroGrad()
		l, err := m.Forward(tokens, targets, b, T, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Step(3e-3, opt); err != nil {
			t.Fatal(err)
		}
		losses = append(losses, l)
	}
	p := make([]float32, m.Params.Len())
	be.Download(p, m.Params)
	return losses, p
}

// TestTinyModelTrainsAsOnCPU: whole training steps of the tiny model —
// forward, backward, clipping, AdamW — give the CPU backend's losses and
// parameters bit for bit on the fp32 path, and the same loss curve within
// bfloat16 tolerance on the bf16 path, as given, and with the gradients
// in bfloat16 and the master weights in host memory (the passes reading
// their bfloat16 copy).
func TestTinyModelTrainsAsOnCPU(t *testing.T) {
	steps := 4
	if testing.Short() {
		steps = 2
	}
	wantLoss, wantP := trainTiny(t, cpuBackend(t), steps, model.Options{})
	for _, tg := range targets {
		gotLoss, gotP := trainTiny(t, tg.open(t, cuda.FP32), steps, model.Options{})
		compareBits(t, tg.name+" tiny fp32", map[string][]float32{"loss": gotLoss, "params": gotP},
			map[string][]float32{"loss": wantLoss, "params": wantP})
		for _, o := range []model.Options{{}, {GradsBF16: true, OffloadMaster: true}} {
			bfLoss, _ := trainTiny(t, tg.open(t, cuda.BF16), steps, o)
			for i := range bfLoss {
				if d := math.Abs(float64(bfLoss[i]-wantLoss[i])) / float64(wantLoss[i]); d > 1e-2 || math.IsNaN(d) {
					t.Errorf("%s tiny bf16 (%+v) step %d: loss %.5f, cpu %.5f", tg.name, o, i, bfLoss[i], wantLoss[i])
				}
			}
			t.Logf("%s: cpu losses %v, bf16 (%+v) %v", tg.name, wantLoss, o, bfLoss)
		}
	}
}

// hidden is a backend with only kernels.Backend's methods: no bfloat16
// buffers, so a model on it keeps its activations in float32.
type hidden struct{ kernels.Backend }

// TestBF16ActivationsSameBits: on the bf16 path, a model holding the
// activations only products read in bfloat16 takes a step to the same
// loss and parameters, bit for bit, as one holding them in float32 (the
// products round them to bfloat16 either way); and so does one whose
// products read a bfloat16 copy of the weights (Options.WeightCopy;
// TestMasterWeights holds the copy to every write, AdamW's included).
func TestBF16ActivationsSameBits(t *testing.T) {
	for _, tg := range targets {
		be := tg.open(t, cuda.BF16)
		wantLoss, wantP := trainTiny(t, hidden{be}, 1, model.Options{})
		for _, o := range []model.Options{{}, {WeightCopy: true}} {
			gotLoss, gotP := trainTiny(t, be, 1, o)
			compareBits(t, fmt.Sprintf("%s bf16 activations, %+v", tg.name, o), map[string][]float32{"loss": gotLoss, "params": gotP},
				map[string][]float32{"loss": wantLoss, "params": wantP})
		}
	}
}

// TestMemoryOptionsNeedTheirBackend: a model asked to hold its gradients
// in bfloat16 on a backend that cannot (the CPU, the CUDA fp32 path), or
// its moments in host memory on the CPU, is refused, naming the backend.
func TestMemoryOptionsNeedTheirBackend(t *testing.T) {
	c, _ := model.Preset("tiny")
	for _, x := range []struct {
		be kernels.Backend
		o  model.Options
	}{
		{cpuBackend(t), model.Options{GradsBF16: true}},
		{emuBackend(t, cuda.FP32), model.Options{GradsBF16: true}},
		{cpuBackend(t), model.Options{OffloadMoments: true}},
		{cpuBackend(t), model.Options{OffloadMaster: true}},
		{emuBackend(t, cuda.FP32), model.Options{OffloadMaster: true}},
		{cpuBackend(t), model.Options{WeightCopy: true}},
		{emuBackend(t, cuda.FP32), model.Options{WeightCopy: true}},
	} {
		if _, err := model.NewWith(x.be, c, x.o); !errors.Is(err, kernels.ErrUnsupported) || !strings.Contains(err.Error(), x.be.Name()) {
			t.Errorf("%+v on %s: %v, want ErrUnsupported naming the backend", x.o, x.be.Name(), err)
		}
	}
}

// TestOffloadedMomentsSameBits: AdamW's moments in host memory (mapped:
// the device's AdamW reads and writes them there) give the CPU backend's
// losses, parameters and optimizer state bit for bit on the fp32 path, in
// fp32 and in 8 bits; the state reads back and restores through them.
func TestOffloadedMomentsSameBits(t *testing.T) {
	c, _ := model.Preset("tiny")
	run := func(be kernels.Backend, o model.Options) (map[string][]float32, *model.Model) {
		m, err := model.NewWith(be, c, o)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(3)
		r := rand.New(rand.NewPCG(3, 4))
		out := map[string][]float32{}
		for s := 0; s < 2; s++ {
			tokens, targets := make([]int32, 32), make([]int32, 32)
			for i := range tokens {
				tokens[i], targets[i] = int32(r.IntN(c.Vocab)), int32(r.IntN(c.Vocab))
			}
			l, err := m.Accumulate(tokens, targets, 1, 32, 1)
			if err == nil {
				_, err = m.Step(1e-2, model.DefaultOptim())
			}
			if err != nil {
				t.Fatal(err)
			}
			out["loss"] = append(out["loss"], l)
		}
		out["params"] = down(be, m.Params)
		st := m.OptimState()
		out["m"], out["v"], out["ms"], out["vs"] = st.M, st.V, st.MS, st.VS
		for _, b := range st.M8 {
			out["m8"] = append(out["m8"], float32(b))
		}
		return out, m
	}
	for _, eight := range []bool{false, true} {
		want, _ := run(cpuBackend(t), model.Options{AdamW8: eight})
		for _, tg := range targets {
			got, m := run(tg.open(t, cuda.FP32), model.Options{AdamW8: eight, OffloadMoments: true})
			compareBits(t, fmt.Sprintf("%s offloaded moments (8-bit %v)", tg.name, eight), got, want)
			st := m.OptimState()
			if err := m.SetOptimState(model.OptimState{}); err != nil {
				t.Fatal(err)
			}
			if z := m.OptimState(); !slices.Equal(z.MS, make([]float32, len(z.MS))) || !slices.Equal(z.M, make([]float32, len(z.M))) {
				t.Errorf("%s: a zero state left offloaded moments behind", tg.name)
			}
			if err := m.SetOptimState(st); err != nil {
				t.Fatal(err)
			}
			if back := m.OptimState(); !slices.Equal(back.M, st.M) || !slices.Equal(back.V8, st.V8) || !slices.Equal(back.VS, st.VS) {
				t.Errorf("%s: the optimizer state did not restore through host memory", tg.name)
			}
		}
	}
}

// TestTinyModelGeneratesAsOnCPU: batched generation with the weights on
// the device (the decoder's device path: each step's rows uploaded and
// multiplied there) gives the CPU's tokens, greedy and sampled, several
// sequences at once.
func TestTinyModelGeneratesAsOnCPU(t *testing.T) {
	gen := func(be kernels.Backend) []float32 {
		c, _ := model.Preset("tiny")
		m, err := model.New(be, c)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(9)
		reqs := []model.GenRequest{{Prompt: []int32{'a', 'b'}, Seed: 1}, {Prompt: []int32{'k', int32(c.EOS), 'x'}, Seed: 2}, {Prompt: []int32{'q'}, Seed: 3}}
		var out []float32
		for _, temp := range []float64{0, 0.9} {
			toks, err := model.GenerateBatch(m, reqs, model.SampleConfig{MaxTokens: 6, Window: 32, Temperature: temp, TopP: 0.95}, 2, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, ts := range toks {
				for _, tok := range ts {
					out = append(out, float32(tok))
				}
				out = append(out, -1)
			}
		}
		return out
	}
	want := gen(cpuBackend(t))
	for _, tg := range targets {
		compareBits(t, tg.name+" generation", map[string][]float32{"tokens": gen(tg.open(t, cuda.FP32))}, map[string][]float32{"tokens": want})
	}
}

// countingDevice records the device memory a backend holds and its peak,
// and the host memory it maps (host).
type countingDevice struct {
	cuda.Device
	sizes            map[uint64]int64
	held, peak, host int64
}

type mapper interface {
	AllocMapped(bytes int64) (uint64, error)
	FreeMapped(p uint64) error
}

func (d *countingDevice) AllocMapped(bytes int64) (uint64, error) {
	p, err := d.Device.(mapper).AllocMapped(bytes)
	if err == nil {
		d.host += bytes
	}
	return p, err
}

func (d *countingDevice) FreeMapped(p uint64) error { return d.Device.(mapper).FreeMapped(p) }

func (d *countingDevice) Alloc(bytes int64) (uint64, error) {
	p, err := d.Device.Alloc(bytes)
	if err == nil {
		d.sizes[p] = bytes
		d.held += bytes
		d.peak = max(d.peak, d.held)
	}
	return p, err
}

func (d *countingDevice) Free(p uint64) error {
	d.held -= d.sizes[p]
	delete(d.sizes, p)
	return d.Device.Free(p)
}

// TestPlanMatchesDeviceAllocations: the plan's device bytes for a training
// step on the bf16 path against the peak the backend allocated (the
// emulator's device memory): never under it by more than the backend's
// small scratch (RoPE tables, sums, token plans: 256 KiB), within 25% over
// it (the plan's bf16 operand copies are a bound: the largest product's),
// bf16 gradients saving exactly the 2 bytes a parameter it says, and
// moments in host memory exactly their bytes, which the host then holds.
func TestPlanMatchesDeviceAllocations(t *testing.T) {
	c, _ := model.Preset("tiny")
	const b, T = 1, 32
	var host int64
	peak := func(o model.Options) (got, want int64) {
		d, err := emu.New()
		if err != nil {
			t.Skip(err)
		}
		dev := &countingDevice{Device: d, sizes: map[uint64]int64{}}
		be, err := cuda.NewWith(dev, cuda.Options{Precision: cuda.BF16})
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		m, err := model.NewWith(be, c, o)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		r := rand.New(rand.NewPCG(1, 2))
		tokens, targets := make([]int32, b*T), make([]int32, b*T)
		for i := range tokens {
			tokens[i], targets[i] = int32(r.IntN(c.Vocab)), int32(r.IntN(c.Vocab))
		}
		if _, err := m.Accumulate(tokens, targets, b, T, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Step(1e-3, model.DefaultOptim()); err != nil {
			t.Fatal(err)
		}
		in := model.PlanInput{Batch: b, Seq: T, Options: o, BF16: true, GPU: true}
		got, want, host = dev.peak, model.MakePlan(c, in).Device, dev.host
		if got > want+256<<10 || want > got+got/4 {
			t.Errorf("%s: the device held %s at its peak, the plan says %s", in.Settings(), model.Bytes(got), model.Bytes(want))
		}
		t.Logf("%s: device peak %s, planned %s", in.Settings(), model.Bytes(got), model.Bytes(want))
		return got, want
	}
	g32, p32 := peak(model.Options{})
	g16, p16 := peak(model.Options{GradsBF16: true})
	if saved := 2 * model.NumParams(c); g32-g16 != saved || p32-p16 != saved {
		t.Errorf("bf16 gradients: the device held %d bytes less and the plan says %d, want %d (2 a parameter)", g32-g16, p32-p16, saved)
	}
	gh, ph := peak(model.Options{GradsBF16: true, OffloadMoments: true})
	in := model.PlanInput{Batch: b, Seq: T, Options: model.Options{OffloadMoments: true}, GPU: true, BF16: true}
	if moved := 8 * model.NumParams(c); g16-gh != moved || p16-ph != moved || host != moved || model.MakePlan(c, in).Host != moved {
		t.Errorf("offloaded moments: the device held %d bytes less and the plan says %d; the host held %d; want %d (8 a parameter)", g16-gh, p16-ph, host, moved)
	}
	gm, pm := peak(model.Options{GradsBF16: true, OffloadMoments: true, OffloadMaster: true})
	in.OffloadMaster = true
	// The device saves the 2 bytes a parameter and the weights' operand
	// copies (the plan bounds those); the host holds exactly the master.
	if saved, moved := 2*model.NumParams(c), 12*model.NumParams(c); gh-gm < saved || ph-pm < saved || host != moved || model.MakePlan(c, in).Host != moved {
		t.Errorf("master weights in host memory: the device held %d bytes less and the plan says %d, want at least %d (a bfloat16 copy for the float32); the host held %d, want %d", gh-gm, ph-pm, saved, host, moved)
	}
	gc, pc := peak(model.Options{GradsBF16: true, WeightCopy: true})
	// The device adds the copy, at most 2 bytes a parameter (less the
	// weights' operand copies it spares), and so does the plan.
	if added := 2 * model.NumParams(c); gc-g16 > added || pc-p16 > added || gc <= g16 || pc <= p16 {
		t.Errorf("a bf16 weight copy: the device held %d bytes more and the plan says %d, want more and at most %d (2 a parameter)", gc-g16, pc-p16, added)
	}
}
