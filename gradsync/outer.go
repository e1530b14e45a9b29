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
func (o *OuterOptimizer) Step(params, delta []float32) {
	if len(params) != len(delta) || len(params) != len(o.Buf) {
		panic("gradsync: OuterOptimizer.Step: length mismatch")
	}
	mu, lr := o.Momentum, o.LR
	for i, d := range delta {
		b := float32(mu*o.Buf[i]) + d
		o.Buf[i] = b
		params[i] -= float32(lr * (d + float32(mu*b)))
	}
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
