package model

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/fomnet/fomnet/kernels"
)

// BenchResult is a measured training step.
type BenchResult struct {
	StepMS        float64          // median step time
	TokensPerS    float64          // batch·seq / median step time
	GFLOPS        float64          // TrainFLOPsPerToken · tokens/s
	Breakdown     []kernels.OpTime // per-op time summed over the timed steps
	Steps         int              // timed steps
	AllocsPerStep float64          // heap allocations per timed step
}

// BenchTrain times steps full training steps (forward, backward, AdamW) of a
// model with config c on random tokens, after two warm-up steps. Batches have
// no EOS, so attention is fully causal, as TrainFLOPsPerToken assumes.
func BenchTrain(be kernels.Backend, c Config, batch, seq, steps int, allocs func() uint64) (BenchResult, error) {
	timed := kernels.NewTimed(be)
	m, err := New(timed, c)
	if err != nil {
		return BenchResult{}, err
	}
	m.Init(1)
	r := rand.New(rand.NewPCG(1, 2))
	tokens, targets := make([]int32, batch*seq), make([]int32, batch*seq)
	for i := range tokens {
		tokens[i] = int32(r.IntN(c.Vocab))
		if tokens[i] == int32(c.EOS) {
			tokens[i] = 0
		}
		targets[i] = int32(r.IntN(c.Vocab))
	}
	step := func() error {
		m.ZeroGrad()
		if _, err := m.Forward(tokens, targets, batch, seq, true); err != nil {
			return err
		}
		if err := m.Backward(); err != nil {
			return err
		}
		if _, err := m.Step(1e-4, DefaultOptim()); err != nil {
			return err
		}
		return timed.Sync() // a device that queues work has finished the step
	}
	for i := 0; i < 2; i++ {
		if err := step(); err != nil {
			return BenchResult{}, err
		}
	}
	timed.Reset()
	ds := make([]float64, 0, steps)
	var a0 uint64
	if allocs != nil {
		a0 = allocs()
	}
	for i := 0; i < steps; i++ {
		t0 := time.Now()
		if err := step(); err != nil {
			return BenchResult{}, err
		}
		ds = append(ds, time.Since(t0).Seconds())
	}
	res := BenchResult{Steps: steps}
	if allocs != nil {
		res.AllocsPerStep = float64(allocs()-a0) / float64(steps)
	}
	res.Breakdown = timed.Times()
	sort.Float64s(ds)
	med := ds[len(ds)/2]
	res.StepMS = med * 1e3
	res.TokensPerS = float64(batch*seq) / med
	res.GFLOPS = TrainFLOPsPerToken(c, seq) * res.TokensPerS / 1e9
	return res, nil
}
