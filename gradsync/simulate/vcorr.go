package simulate

import (
	"fmt"
	"math"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
)

// The noise-corrected second moment (Method.VCorr), an experiment.
//
// DDP's AdamW divides by the running square of the mean gradient of all K
// workers' batches; a DiLoCo worker's AdamW by that of its own batch, which
// holds K times the sampling variance: E[g²] = μ² + σ², against
// E[ḡ²] = μ² + σ²/K. Where noise dominates, the worker's steps are smaller
// and differently shaped than DDP's, and averaging K of them at the outer
// step does not give DDP's step back (docs/BENCHMARKS.md: on tiny, plain
// averaged AdamW at every step is as far from DDP as DiLoCo at H=300).
//
// A worker can estimate σ² from its own batch without talking: the gradients
// gA and gB of its two halves have d = (gA − gB)/2 with E[d²] = σ², the
// variance of g = (gA + gB)/2. So g² − (1 − 1/K)·d² is an unbiased estimate
// of DDP's ḡ². The worker keeps running means of g² and of d² (AdamW's β2,
// bias-corrected alike) and divides by
//
//	v = max(EMA(g²) − (1 − 1/K)·EMA(d²), EMA(g²)/K)
//
// whose floor is the smallest the true value μ² + σ²/K can be. Everything
// else is AdamW as the kernels run it: global-norm clipping of g (d scaled
// alike), decoupled weight decay on the tensors that decay.
//
// It runs on the host (the gradients are downloaded, the parameters
// uploaded again), not as a kernel: it is a simulation experiment, and the
// node's workers do not use it.

// vcorrState is one worker's optimizer state for VCorr.
type vcorrState struct {
	k         float64 // the corrected moment estimates a batch k times the worker's
	t         int     // optimizer steps taken
	p, gA, gB []float32
	m, v1, v2 []float32
	decay     []bool // per parameter, from the layout
}

// newVCorrBuffers is the state of n parameters, zero, none decaying.
func newVCorrBuffers(n int, k float64) *vcorrState {
	return &vcorrState{k: k, p: make([]float32, n), gA: make([]float32, n), gB: make([]float32, n),
		m: make([]float32, n), v1: make([]float32, n), v2: make([]float32, n), decay: make([]bool, n)}
}

// newVCorrState is the state of model m's parameters, decaying as its
// layout says.
func newVCorrState(m *model.Model, k float64) *vcorrState {
	s := newVCorrBuffers(m.Layout.Size, k)
	for _, t := range m.Layout.Tensors {
		for i := t.Offset; i < t.Offset+t.Size; i++ {
			s.decay[i] = t.Decay
		}
	}
	return s
}

// step takes one optimizer step of worker mod on the batch tokens/targets
// of rows sequences of seq tokens (rows even, as RunParallel checks): a
// forward and backward pass on each half, then vcorrUpdate on the host.
func (s *vcorrState) step(be kernels.Backend, mod *model.Model, tokens, targets []int32, rows, seq int, lr float64, o model.OptimConfig) error {
	h := rows / 2 * seq
	for i, g := range [][]float32{s.gA, s.gB} {
		mod.ZeroGrad()
		if _, err := mod.Forward(tokens[i*h:(i+1)*h], targets[i*h:(i+1)*h], rows/2, seq, true); err != nil {
			return err
		}
		if err := mod.Backward(); err != nil {
			return err
		}
		be.Download(g, mod.Grads)
	}
	be.Download(s.p, mod.Params)
	if err := kernels.Err(be); err != nil {
		return err
	}
	s.t++
	if err := vcorrUpdate(s, lr, o); err != nil {
		return err
	}
	be.Upload(mod.Params, s.p)
	return kernels.Err(be)
}

// vcorrUpdate is one step of AdamW with the noise-corrected second moment,
// from the half-batch gradients s.gA and s.gB, on s.p (step s.t ≥ 1).
func vcorrUpdate(s *vcorrState, lr float64, o model.OptimConfig) error {
	var sq float64
	for i := range s.gA {
		g := float64(s.gA[i]+s.gB[i]) / 2
		sq += g * g
	}
	norm := math.Sqrt(sq)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return fmt.Errorf("%w: gradient norm %v; step skipped", model.ErrNotFinite, norm)
	}
	gs := kernels.ClipScale(norm, o.ClipNorm)
	b1, b2 := o.Beta1, o.Beta2
	ibc1 := float32(1 / (1 - math.Pow(float64(b1), float64(s.t))))
	ibc2 := float32(1 / (1 - math.Pow(float64(b2), float64(s.t))))
	c := float32(1 - 1/s.k)
	ik := float32(1 / s.k)
	lrf := float32(lr)
	for i := range s.p {
		a, b := s.gA[i]*gs, s.gB[i]*gs
		g := (a + b) / 2
		d := (a - b) / 2
		mi := b1*s.m[i] + (1-b1)*g
		v1 := b2*s.v1[i] + (1-b2)*g*g
		v2 := b2*s.v2[i] + (1-b2)*d*d
		s.m[i], s.v1[i], s.v2[i] = mi, v1, v2
		v := max(v1-c*v2, v1*ik)
		den := float32(math.Sqrt(float64(v*ibc2))) + o.Eps
		upd := mi * ibc1 / den
		if s.decay[i] {
			upd += o.WeightDecay * s.p[i]
		}
		s.p[i] -= lrf * upd
	}
	return nil
}
