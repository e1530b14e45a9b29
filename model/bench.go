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
	Losses        []float32        // every step's loss, warm-up steps first
}

// BenchConfig is what BenchTrain times: steps of a batch×seq batch, cut
// into Micro micro-batches (0: 1), on a model with the options.
type BenchConfig struct {
	Batch, Seq, Steps, Micro int
	Options
}

// BenchTrain times bc.Steps full training steps (forward, backward, AdamW)
// of a model with config c on one batch of random tokens, after two warm-up
// steps. The batch has no EOS, so attention is fully causal, as
// TrainFLOPsPerToken assumes; the same batch every step, so the loss falls.
func BenchTrain(be kernels.Backend, c Config, bc BenchConfig, allocs func() uint64) (BenchResult, error) {
	batch, seq, steps := bc.Batch, bc.Seq, bc.Steps
	timed := kernels.NewTimed(be)
	m, err := NewWith(timed, c, bc.Options)
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
	var losses []float32
	step := func() error {
		m.ZeroGrad()
		loss, err := m.Accumulate(tokens, targets, batch, seq, max(1, bc.Micro))
		if err != nil {
			return err
		}
		losses = append(losses, loss)
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
	res := BenchResult{Steps: steps, Losses: losses}
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
