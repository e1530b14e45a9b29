package kernels

import (
	"sort"
	"time"
)

// Timed wraps a Backend and adds up the wall time spent in each operation,
// for per-op breakdowns of a training step. It is only meaningful for
// backends whose calls are synchronous (the CPU backend); where the wrapped
// backend has a Sync method (the CUDA backend queues work), each timed call
// ends with Sync, which makes the breakdown true and the step a little slower.
type Timed struct {
	Backend
	dur   [numOps]time.Duration
	calls [numOps]int
}

const (
	opMatmul = iota
	opEmbedding
	opRMSNorm
	opRoPE
	opAttention
	opSwiGLU
	opCrossEntropy
	opAdamW
	opNorm
	opCopy
	numOps
)

var opNames = [numOps]string{"matmul", "embedding", "rmsnorm", "rope", "attention", "swiglu", "cross-entropy", "adamw", "grad-norm", "copy/zero"}

// NewTimed wraps be.
func NewTimed(be Backend) *Timed { return &Timed{Backend: be} }

// OpTime is the total time and call count of one operation family.
type OpTime struct {
	Op    string
	Total time.Duration
	Calls int
}

// Times returns the accumulated times, largest first.
func (t *Timed) Times() []OpTime {
	var out []OpTime
	for i := range t.dur {
		if t.calls[i] > 0 {
			out = append(out, OpTime{opNames[i], t.dur[i], t.calls[i]})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Total > out[b].Total })
	return out
}

// Reset clears the accumulated times.
func (t *Timed) Reset() { t.dur, t.calls = [numOps]time.Duration{}, [numOps]int{} }

// Err forwards the wrapped backend's device error (see Err).
func (t *Timed) Err() error { return Err(t.Backend) }

// Sync waits for the wrapped backend's queued work, where it queues any.
func (t *Timed) Sync() error {
	if s, ok := t.Backend.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}

func (t *Timed) done(op int, start time.Time) {
	t.Sync()
	t.dur[op] += time.Since(start)
	t.calls[op]++
}

func (t *Timed) Zero(b Buffer) { defer t.done(opCopy, time.Now()); t.Backend.Zero(b) }

func (t *Timed) Copy(dst, src Buffer) { defer t.done(opCopy, time.Now()); t.Backend.Copy(dst, src) }

func (t *Timed) Scale(b Buffer, s float32) { defer t.done(opNorm, time.Now()); t.Backend.Scale(b, s) }

func (t *Timed) SumSquares(b Buffer) float64 {
	defer t.done(opNorm, time.Now())
	return t.Backend.SumSquares(b)
}

func (t *Timed) Matmul(c, a, b Buffer, m, n, k int, transA, transB, acc bool) {
	defer t.done(opMatmul, time.Now())
	t.Backend.Matmul(c, a, b, m, n, k, transA, transB, acc)
}

func (t *Timed) EmbeddingForward(out, table Buffer, tokens IntBuffer, n, c int) {
	defer t.done(opEmbedding, time.Now())
	t.Backend.EmbeddingForward(out, table, tokens, n, c)
}

func (t *Timed) EmbeddingBackward(dtable, dout Buffer, tokens IntBuffer, n, c int) {
	defer t.done(opEmbedding, time.Now())
	t.Backend.EmbeddingBackward(dtable, dout, tokens, n, c)
}

func (t *Timed) RMSNormForward(out, rstd, inp, weight Buffer, n, c int, eps float32) {
	defer t.done(opRMSNorm, time.Now())
	t.Backend.RMSNormForward(out, rstd, inp, weight, n, c, eps)
}

func (t *Timed) RMSNormBackward(dinp, dweight, dout, inp, weight, rstd Buffer, n, c int) {
	defer t.done(opRMSNorm, time.Now())
	t.Backend.RMSNormBackward(dinp, dweight, dout, inp, weight, rstd, n, c)
}

func (t *Timed) RoPEForward(dst, x Buffer, pos IntBuffer, n, heads, hd int, theta float64) {
	defer t.done(opRoPE, time.Now())
	t.Backend.RoPEForward(dst, x, pos, n, heads, hd, theta)
}

func (t *Timed) RoPEBackward(dst, dx Buffer, pos IntBuffer, n, heads, hd int, theta float64) {
	defer t.done(opRoPE, time.Now())
	t.Backend.RoPEBackward(dst, dx, pos, n, heads, hd, theta)
}

func (t *Timed) AttentionForward(out, lse, q, k, v Buffer, docStart IntBuffer, s AttnShape) {
	defer t.done(opAttention, time.Now())
	t.Backend.AttentionForward(out, lse, q, k, v, docStart, s)
}

func (t *Timed) AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse Buffer, docStart IntBuffer, s AttnShape) {
	defer t.done(opAttention, time.Now())
	t.Backend.AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, docStart, s)
}

func (t *Timed) SwiGLUForward(h, g, u Buffer, n int) {
	defer t.done(opSwiGLU, time.Now())
	t.Backend.SwiGLUForward(h, g, u, n)
}

func (t *Timed) SwiGLUBackward(dg, du, dh, g, u Buffer, n int) {
	defer t.done(opSwiGLU, time.Now())
	t.Backend.SwiGLUBackward(dg, du, dh, g, u, n)
}

func (t *Timed) SoftmaxCrossEntropy(losses, logits, dlogits Buffer, targets IntBuffer, n, v int, dscale float32) {
	defer t.done(opCrossEntropy, time.Now())
	t.Backend.SoftmaxCrossEntropy(losses, logits, dlogits, targets, n, v, dscale)
}

func (t *Timed) AdamW(params, grads, m, v Buffer, h AdamWStep) {
	defer t.done(opAdamW, time.Now())
	t.Backend.AdamW(params, grads, m, v, h)
}
