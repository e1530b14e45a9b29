package cuda_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cuda"
	"github.com/fomnet/fomnet/model"
)

// trainTiny trains the tiny preset for steps AdamW steps on fixed random
// batches (documents packed with EOS, some targets ignored) and returns the
// loss of every step and the final parameters.
func trainTiny(t *testing.T, be kernels.Backend, steps int) ([]float32, []float32) {
	t.Helper()
	c, err := model.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(be, c)
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
// bfloat16 tolerance on the bf16 path.
func TestTinyModelTrainsAsOnCPU(t *testing.T) {
	steps := 4
	if testing.Short() {
		steps = 2
	}
	wantLoss, wantP := trainTiny(t, cpuBackend(t), steps)
	for _, tg := range targets {
		gotLoss, gotP := trainTiny(t, tg.open(t, cuda.FP32), steps)
		compareBits(t, tg.name+" tiny fp32", map[string][]float32{"loss": gotLoss, "params": gotP},
			map[string][]float32{"loss": wantLoss, "params": wantP})
		bfLoss, _ := trainTiny(t, tg.open(t, cuda.BF16), steps)
		for i := range bfLoss {
			if d := math.Abs(float64(bfLoss[i]-wantLoss[i])) / float64(wantLoss[i]); d > 1e-2 || math.IsNaN(d) {
				t.Errorf("%s tiny bf16 step %d: loss %.5f, cpu %.5f", tg.name, i, bfLoss[i], wantLoss[i])
			}
		}
		t.Logf("%s: cpu losses %v, bf16 %v", tg.name, wantLoss, bfLoss)
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
