package gradsync

// OuterOptimizer is SGD with Nesterov momentum over the global parameters,
// applied to the aggregated pseudo-gradient (a descent direction:
// Δ = θ_global − θ_local). Its momentum buffer is part of a checkpoint.
type OuterOptimizer struct {
	LR, Momentum float32
	Buf          []float32 // momentum, same length as the parameters
}

// NewOuterOptimizer makes an optimizer for n parameters.
func NewOuterOptimizer(c Config, n int) *OuterOptimizer {
	return &OuterOptimizer{LR: float32(c.OuterLR), Momentum: float32(c.Momentum), Buf: make([]float32, n)}
}

// Step is the outer step, elementwise and in a fixed order:
//
//	buf = μ·buf + Δ
//	θ   = θ − lr·(Δ + μ·buf)
//
// (PyTorch's SGD with nesterov=True, dampening 0). Each product is rounded
// on its own, so every node gets the same bits.
func (o *OuterOptimizer) Step(params, delta []float32) { o.step(params, params, delta, true) }

// Estimate writes into dst what Step(params, delta) would leave in params,
// and changes neither params nor the momentum buffer: a worker's guess at
// the next global parameters, taking its own pseudo-gradient for the
// aggregate it has not received yet ("eager" overlap).
func (o *OuterOptimizer) Estimate(dst, params, delta []float32) { o.step(dst, params, delta, false) }

func (o *OuterOptimizer) step(dst, params, delta []float32, keep bool) {
	if len(params) != len(delta) || len(params) != len(o.Buf) || len(dst) != len(params) {
		panic("gradsync: OuterOptimizer: length mismatch")
	}
	mu, lr := o.Momentum, o.LR
	for i, d := range delta {
		b := o.next(i, d)
		if keep {
			o.Buf[i] = b
		}
		dst[i] = params[i] - float32(lr*(d+float32(mu*b)))
	}
}

// Advance is Step's momentum update alone, buf = μ·buf + Δ, with Step's
// bits: a state written a file at a time updates its momentum apart from
// its weights.
func (o *OuterOptimizer) Advance(delta []float32) {
	if len(delta) != len(o.Buf) {
		panic("gradsync: OuterOptimizer: length mismatch")
	}
	for i, d := range delta {
		o.Buf[i] = o.next(i, d)
	}
}

// next is coordinate i's momentum after Δ_i = d.
func (o *OuterOptimizer) next(i int, d float32) float32 { return float32(o.Momentum*o.Buf[i]) + d }

// Slice is the optimizer of parameters [off, off+n): it shares o's
// momentum buffer, so a step of the slice is a step of those coordinates
// of o (streaming DiLoCo steps one fragment at a time).
func (o *OuterOptimizer) Slice(off, n int) *OuterOptimizer {
	return &OuterOptimizer{LR: o.LR, Momentum: o.Momentum, Buf: o.Buf[off : off+n : off+n]}
}

// PseudoGradient writes Δ = global − local into dst.
func PseudoGradient(dst, global, local []float32) {
	for i := range dst {
		dst[i] = global[i] - local[i]
	}
}

// Clone returns an independent copy.
func (o *OuterOptimizer) Clone() *OuterOptimizer {
	c := *o
	c.Buf = append([]float32(nil), o.Buf...)
	return &c
}
