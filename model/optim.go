package model

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/fomnet/fomnet/internal/le"
	"github.com/fomnet/fomnet/kernels"
)

// OptimConfig holds AdamW's settings.
type OptimConfig struct {
	Beta1, Beta2, Eps, WeightDecay float32
	// ClipNorm is the global gradient-norm threshold; 0 disables clipping.
	ClipNorm float64
}

// DefaultOptim returns AdamW settings common for LLM pretraining:
// β = (0.9, 0.95), ε = 1e-8, weight decay 0.1, clip at 1.0.
func DefaultOptim() OptimConfig {
	return OptimConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1}
}

// Validate reports a setting out of range: β1 and β2 must lie in [0, 1),
// ε be positive, weight decay and the clip threshold finite and not
// negative.
func (o OptimConfig) Validate() error {
	switch {
	case !(o.Beta1 >= 0 && o.Beta1 < 1) || !(o.Beta2 >= 0 && o.Beta2 < 1):
		return fmt.Errorf("adamw beta1 %v and beta2 %v must lie in [0, 1)", o.Beta1, o.Beta2)
	case !(o.Eps > 0) || math.IsInf(float64(o.Eps), 0):
		return fmt.Errorf("adamw eps %v must be positive", o.Eps)
	case !(o.WeightDecay >= 0) || math.IsInf(float64(o.WeightDecay), 0) || !(o.ClipNorm >= 0) || math.IsInf(o.ClipNorm, 0):
		return fmt.Errorf("adamw weight decay %v and clip norm %v must be finite and not negative", o.WeightDecay, o.ClipNorm)
	}
	return nil
}

// optView is one AdamW call's share of the parameters, gradients and
// moments: a tensor's, or with fp32 moments a run of neighbouring tensors
// alike in weight decay (one launch where a GPU would make one a tensor;
// the update is elementwise, so the bits are the same).
type optView struct {
	p, g, m, v kernels.Buffer     // m, v: fp32 moments
	mq, vq     kernels.ByteBuffer // or 8-bit codes
	ms, vs     kernels.Buffer     // and their block scales
	decay      bool
}

// adam8State holds the moments in 8 bits: a code a parameter for each, and
// per-tensor blocks of kernels.Adam8Block values sharing a scale.
type adam8State struct {
	be     kernels.Adam8Backend
	m, v   kernels.ByteBuffer // [params]
	ms, vs kernels.Buffer     // [Adam8Scales]
}

// zero clears the codes a megabyte at a time (the backends' Zero is for
// float buffers).
func (q *adam8State) zero() {
	z := make([]byte, min(q.m.Len(), 1<<20))
	for _, b := range []kernels.ByteBuffer{q.m, q.v} {
		for off := 0; off < b.Len(); off += len(z) {
			n := min(len(z), b.Len()-off)
			q.be.UploadBytes(q.be.ViewBytes(b, off, n), z[:n])
		}
	}
}

// Adam8Scales is how many block scales each 8-bit moment of a model of
// layout l has: the tensors' blocks, each tensor cut from its first value.
func Adam8Scales(l *Layout) int {
	n := 0
	for _, t := range l.Tensors {
		n += kernels.Adam8Blocks(t.Size)
	}
	return n
}

// allocOptim allocates AdamW's moments as o says: fp32 or 8-bit, on the
// backend's device or (OffloadMoments) in the host's memory.
func (m *Model) allocOptim(o Options) error {
	be, l := m.be, m.Layout
	alloc := be.Alloc
	var allocBytes func(int) kernels.ByteBuffer
	if o.OffloadMoments {
		h, ok := kernels.AsHost(be)
		if !ok {
			return unsupported(be, "keep AdamW's moments in host memory", "a GPU's")
		}
		alloc, allocBytes = h.AllocHost, h.AllocHostBytes
	}
	if o.AdamW8 {
		a, ok := kernels.AsAdam8(be)
		if !ok {
			return fmt.Errorf("%w: backend %s cannot keep AdamW's moments in 8 bits", kernels.ErrUnsupported, be.Name())
		}
		if allocBytes == nil {
			allocBytes = a.AllocBytes
		}
		nb := Adam8Scales(l)
		m.q = &adam8State{be: a, m: allocBytes(l.Size), v: allocBytes(l.Size), ms: alloc(nb), vs: alloc(nb)}
	} else {
		m.M, m.V = alloc(l.Size), alloc(l.Size)
	}
	block := 0
	for _, t := range optSpans(l.Tensors, m.q == nil) {
		view := func(b kernels.Buffer) kernels.Buffer { return be.View(b, t.off, t.n) }
		o := optView{p: view(m.Params), g: view(m.Grads), decay: t.decay}
		if q := m.q; q != nil {
			nb := kernels.Adam8Blocks(t.n)
			o.mq, o.vq = q.be.ViewBytes(q.m, t.off, t.n), q.be.ViewBytes(q.v, t.off, t.n)
			o.ms, o.vs = be.View(q.ms, block, nb), be.View(q.vs, block, nb)
			block += nb
		} else {
			o.m, o.v = view(m.M), view(m.V)
		}
		m.opt = append(m.opt, o)
	}
	return nil
}

// optSpan is the range of the flat parameters one AdamW call updates.
type optSpan struct {
	off, n int
	decay  bool
}

// optSpans is a span a tensor; with merge, neighbours of the same weight
// decay are joined (8-bit moments cut their blocks at every tensor, so they
// are not).
func optSpans(ts []Tensor, merge bool) []optSpan {
	var out []optSpan
	for _, t := range ts {
		if k := len(out) - 1; merge && k >= 0 && out[k].decay == t.Decay && out[k].off+out[k].n == t.Offset {
			out[k].n += t.Size
			continue
		}
		out = append(out, optSpan{t.Offset, t.Size, t.Decay})
	}
	return out
}

// AdamW8 says whether the model keeps AdamW's moments in 8 bits.
func (m *Model) AdamW8() bool { return m.q != nil }

// Step applies one AdamW step with learning rate lr to the gradients clipped
// to o.ClipNorm (the clipping factor is folded into the update; Grads keep
// their unclipped values). It returns the gradient norm before clipping. A
// non-finite norm skips the step and returns ErrNotFinite; parameters and
// moments are left untouched.
func (m *Model) Step(lr float64, o OptimConfig) (float64, error) {
	if m.frozen() {
		return 0, ErrFrozen
	}
	norm := math.Sqrt(m.be.SumSquares(m.Grads))
	if err := kernels.Err(m.be); err != nil {
		return norm, err
	}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, fmt.Errorf("%w: gradient norm %v; step skipped", ErrNotFinite, norm)
	}
	m.step++
	gs := kernels.ClipScale(norm, o.ClipNorm)
	for _, v := range m.opt {
		h := kernels.AdamWStep{LR: float32(lr), Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, Step: m.step, GradScale: gs}
		if v.decay {
			h.WeightDecay = o.WeightDecay
		}
		if m.q != nil {
			m.q.be.AdamW8(v.p, v.g, v.mq, v.vq, v.ms, v.vs, h)
		} else {
			m.be.AdamW(v.p, v.g, v.m, v.v, h)
		}
	}
	return norm, kernels.Err(m.be)
}

// OptimState is a host copy of AdamW's state: with the parameters, all that
// the next Step depends on. Its moments are fp32 (M, V) or 8-bit codes with
// their block scales (M8, V8, MS, VS), as the model holds them; a zero
// OptimState is the state before the first step.
type OptimState struct {
	Step   int
	M, V   []float32
	M8, V8 []byte
	MS, VS []float32
}

// Zero says whether s holds no moments (the state before any step).
func (s *OptimState) Zero() bool {
	return s.M == nil && s.V == nil && s.M8 == nil && s.V8 == nil && s.MS == nil && s.VS == nil
}

// OptimState returns a copy of the optimizer state.
func (m *Model) OptimState() OptimState {
	var s OptimState
	m.OptimStateInto(&s)
	return s
}

// OptimStateInto is OptimState into s, reusing its slices where their
// lengths fit (a caller that keeps its buffers between rounds).
func (m *Model) OptimStateInto(s *OptimState) {
	n := m.Layout.Size
	fit := func(x []float32, n int) []float32 {
		if len(x) != n {
			return make([]float32, n)
		}
		return x
	}
	s.Step = m.step
	if m.frozen() {
		*s = OptimState{}
		return
	}
	if q := m.q; q != nil {
		nb := Adam8Scales(m.Layout)
		if len(s.M8) != n || len(s.V8) != n {
			s.M8, s.V8 = make([]byte, n), make([]byte, n)
		}
		s.MS, s.VS, s.M, s.V = fit(s.MS, nb), fit(s.VS, nb), nil, nil
		q.be.DownloadBytes(s.M8, q.m)
		q.be.DownloadBytes(s.V8, q.v)
		m.be.Download(s.MS, q.ms)
		m.be.Download(s.VS, q.vs)
		return
	}
	s.M, s.V, s.M8, s.V8, s.MS, s.VS = fit(s.M, n), fit(s.V, n), nil, nil, nil, nil
	m.be.Download(s.M, m.M)
	m.be.Download(s.V, m.V)
}

// ErrOptimState reports an optimizer state that does not fit the model.
var ErrOptimState = errors.New("model: optimizer state does not fit the model")

// CheckOptimState says whether s fits the model: its moments held the way
// the model holds them, sized for its parameters (or none), a step count
// not negative.
func (m *Model) CheckOptimState(s *OptimState) error {
	n, nb := m.Layout.Size, Adam8Scales(m.Layout)
	switch {
	case s.Step < 0:
		return fmt.Errorf("%w: step %d", ErrOptimState, s.Step)
	case s.Zero():
		return nil
	case m.frozen():
		return fmt.Errorf("%w: a frozen model keeps no moments", ErrOptimState)
	case m.q != nil && (len(s.M8) != n || len(s.V8) != n || len(s.MS) != nb || len(s.VS) != nb || s.M != nil || s.V != nil):
		return fmt.Errorf("%w: the model keeps 8-bit moments of %d parameters with %d block scales; the state has %d and %d codes, %d and %d scales, %d and %d fp32 moments",
			ErrOptimState, n, nb, len(s.M8), len(s.V8), len(s.MS), len(s.VS), len(s.M), len(s.V))
	case m.q == nil && (len(s.M) != n || len(s.V) != n || s.M8 != nil || s.V8 != nil || s.MS != nil || s.VS != nil):
		return fmt.Errorf("%w: the model keeps fp32 moments of %d parameters; the state has %d and %d fp32 moments, %d and %d 8-bit codes",
			ErrOptimState, n, len(s.M), len(s.V), len(s.M8), len(s.V8))
	}
	return nil
}

// SetOptimState restores what OptimState returned; a zero state clears the
// moments (and sets the step count to s.Step).
func (m *Model) SetOptimState(s OptimState) error {
	if err := m.CheckOptimState(&s); err != nil {
		return err
	}
	m.step = s.Step
	if q := m.q; q != nil {
		if s.Zero() { // zero codes and scales: the stored state is one byte string
			q.zero()
			m.be.Zero(q.ms)
			m.be.Zero(q.vs)
			return nil
		}
		q.be.UploadBytes(q.m, s.M8)
		q.be.UploadBytes(q.v, s.V8)
		m.be.Upload(q.ms, s.MS)
		m.be.Upload(q.vs, s.VS)
		return nil
	}
	if s.Zero() {
		if !m.frozen() {
			m.be.Zero(m.M)
			m.be.Zero(m.V)
		}
		return nil
	}
	m.be.Upload(m.M, s.M)
	m.be.Upload(m.V, s.V)
	return nil
}

// momentsChunk is how many values WriteMoments and ReadMoments move
// between the backend and the stream at a time.
const momentsChunk = 1 << 20

// WriteMoments writes AdamW's moments to w as the model holds them, a
// chunk at a time (never a whole copy on the host): fp32, m's values then
// v's (4 bytes each, little-endian); 8-bit, m's codes, v's codes, then
// m's and v's block scales. OptimState's vectors in that order are the
// same bytes.
func (m *Model) WriteMoments(w io.Writer) error {
	n := min(m.Layout.Size, momentsChunk)
	f, b := make([]float32, n), make([]byte, n)
	return m.visitMoments(func(x kernels.Buffer, off, k int) error {
		m.be.Download(f[:k], m.be.View(x, off, k))
		if err := kernels.Err(m.be); err != nil {
			return err
		}
		return le.WriteFloats(w, f[:k])
	}, func(x kernels.ByteBuffer, off, k int) error {
		m.q.be.DownloadBytes(b[:k], m.q.be.ViewBytes(x, off, k))
		if err := kernels.Err(m.be); err != nil {
			return err
		}
		_, err := w.Write(b[:k])
		return err
	})
}

// ReadMoments reads WriteMoments' bytes from r into the model's moments, a
// chunk at a time, and sets its step count to step. After an error the
// moments are partly read: set a state (SetOptimState) before the next
// Step.
func (m *Model) ReadMoments(r io.Reader, step int) error {
	if step < 0 {
		return fmt.Errorf("%w: step %d", ErrOptimState, step)
	}
	n := min(m.Layout.Size, momentsChunk)
	f, b := make([]float32, n), make([]byte, n)
	err := m.visitMoments(func(x kernels.Buffer, off, k int) error {
		if err := le.ReadFloats(r, f[:k]); err != nil {
			return err
		}
		m.be.Upload(m.be.View(x, off, k), f[:k])
		return nil
	}, func(x kernels.ByteBuffer, off, k int) error {
		if _, err := io.ReadFull(r, b[:k]); err != nil {
			return err
		}
		m.q.be.UploadBytes(m.q.be.ViewBytes(x, off, k), b[:k])
		return nil
	})
	if err == nil {
		m.step = step
		err = kernels.Err(m.be)
	}
	return err
}

// visitMoments calls floats or bytes on each chunk (k values from off) of
// the moments' buffers, in WriteMoments' order.
func (m *Model) visitMoments(floats func(x kernels.Buffer, off, k int) error, bytes func(x kernels.ByteBuffer, off, k int) error) error {
	if m.frozen() {
		return ErrFrozen
	}
	var fs []kernels.Buffer
	if q := m.q; q != nil {
		for _, x := range []kernels.ByteBuffer{q.m, q.v} {
			if err := chunked(x.Len(), func(off, k int) error { return bytes(x, off, k) }); err != nil {
				return err
			}
		}
		fs = []kernels.Buffer{q.ms, q.vs}
	} else {
		fs = []kernels.Buffer{m.M, m.V}
	}
	for _, x := range fs {
		if err := chunked(x.Len(), func(off, k int) error { return floats(x, off, k) }); err != nil {
			return err
		}
	}
	return nil
}

// chunked calls f on [0, n) momentsChunk values at a time.
func chunked(n int, f func(off, k int) error) error {
	for off := 0; off < n; off += momentsChunk {
		if err := f(off, min(momentsChunk, n-off)); err != nil {
			return err
		}
	}
	return nil
}
