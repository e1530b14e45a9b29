package model

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fomnet/fomnet/kernels"
)

// Errors.
var (
	// ErrBatch reports a batch that does not fit the model (length, ids).
	ErrBatch = errors.New("model: bad batch")
	// ErrNotFinite reports a loss or gradient norm that is NaN or infinite;
	// the optimizer step was skipped and the parameters are unchanged.
	ErrNotFinite = errors.New("model: non-finite value")
	// ErrFrozen: a model made by NewFrozen only evaluates.
	ErrFrozen = errors.New("model: a frozen model only evaluates")
)

// weights are the views of one flat buffer (parameters or gradients).
type weights struct {
	embed, norm, head kernels.Buffer // head aliases embed when tied
	layers            []layerWeights
}

type layerWeights struct {
	ln1, q, k, v, o, ln2, gate, up, down kernels.Buffer
}

func viewWeights(be kernels.Backend, l *Layout, c Config, flat kernels.Buffer) weights {
	v := func(name string) kernels.Buffer {
		t := l.must(name)
		return be.View(flat, t.Offset, t.Size)
	}
	w := weights{embed: v("model.embed_tokens.weight"), norm: v("model.norm.weight")}
	w.head = w.embed
	if !c.Tied {
		w.head = v("lm_head.weight")
	}
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		w.layers = append(w.layers, layerWeights{
			ln1: v(p + "input_layernorm.weight"), q: v(p + "self_attn.q_proj.weight"),
			k: v(p + "self_attn.k_proj.weight"), v: v(p + "self_attn.v_proj.weight"),
			o: v(p + "self_attn.o_proj.weight"), ln2: v(p + "post_attention_layernorm.weight"),
			gate: v(p + "mlp.gate_proj.weight"), up: v(p + "mlp.up_proj.weight"),
			down: v(p + "mlp.down_proj.weight"),
		})
	}
	return w
}

// Model is a Llama-style decoder whose parameters, gradients and AdamW
// moments each live in one flat backend buffer with the same Layout.
//
// A Model is used by one goroutine at a time (it drives one Backend).
type Model struct {
	Config Config
	Layout *Layout
	be     kernels.Backend

	Params, Grads kernels.Buffer
	// M and V are AdamW's fp32 moments (nil when they are held in 8 bits:
	// OptimState reads either).
	M, V kernels.Buffer
	q    *adam8State // the 8-bit moments, or nil
	p, g weights
	opt  []optView // per-tensor views for AdamW
	step int       // optimizer steps taken

	act *acts // sized for the last batch shape

	// recompute keeps only each block's input through a forward pass with
	// gradient and recomputes the block in backward (SetRecompute).
	recompute bool
	acc       *accum // Accumulate's buffers, sized for the last batch
}

// SetRecompute chooses activation recomputation: with it, a forward pass
// keeps each transformer block's input only, one block's activations are
// shared by all blocks, and Backward recomputes each block before its
// gradient. Gradients and losses are bit-identical either way (every kernel
// is deterministic); it trades about one more forward pass for the memory of
// all but one block's activations. ActivationBytes gives both figures.
func (m *Model) SetRecompute(on bool) {
	if on != m.recompute {
		m.recompute, m.act = on, nil
	}
}

// Options say how a model holds its state.
type Options struct {
	// Recompute: see SetRecompute. It changes no result's bits.
	Recompute bool
	// AdamW8 keeps AdamW's moments in 8 bits a value (kernels.Adam8Backend):
	// 2.03 bytes a parameter instead of 8, a different optimizer — a run
	// chooses it for every participant.
	AdamW8 bool
	// GradsBF16 holds the gradients in bfloat16 (kernels.BF16Backend: the
	// CUDA bf16 path): 2 bytes a parameter instead of 4. Each gradient is
	// rounded once where it is stored, so results change as the bf16
	// path's roundings change them.
	GradsBF16 bool
	// OffloadMoments keeps AdamW's moments in the host's memory, where the
	// device's AdamW reads and writes them in place (kernels.HostBackend:
	// a GPU's backend): the same arithmetic and bits, none of the device's
	// memory, each step's moments crossing the bus twice.
	OffloadMoments bool
	// OffloadMaster keeps the float32 parameters (the master weights
	// AdamW updates) in the host's memory and a bfloat16 copy of them on
	// the device, which the forward and backward passes read
	// (kernels.MasterBackend: the CUDA bf16 path): 2 bytes a parameter on
	// the device instead of 4, each step's parameters crossing the bus
	// twice in AdamW. Matrix products read the weights as they rounded
	// them before; the embedding and RMSNorm's gains read rounded weights,
	// so results change as the bf16 path's roundings change them.
	OffloadMaster bool
	// WeightCopy keeps a bfloat16 copy of the weights on the device beside
	// the float32 ones (kernels.MasterBackend's AllocCopied: the CUDA bf16
	// path), which matrix products read instead of rounding the weights at
	// every use: the same bits, 2 bytes a parameter more, and no rounding
	// pass over each weight twice a step (three times with recomputation).
	// With OffloadMaster the copy is there already.
	WeightCopy bool
}

// New allocates a model on be with zeroed parameters and fp32 AdamW
// moments; call Init or load a checkpoint next.
func New(be kernels.Backend, c Config) (*Model, error) { return NewWith(be, c, Options{}) }

// NewWith is New with options.
func NewWith(be kernels.Backend, c Config, o Options) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	l := NewLayout(c)
	m := &Model{Config: c, Layout: l, be: be, recompute: o.Recompute}
	params, grads := be.Alloc, be.Alloc
	switch {
	case o.OffloadMaster:
		h, ok := kernels.AsMaster(be)
		if !ok {
			return nil, unsupported(be, "keep the master weights in host memory", "the CUDA bf16 path")
		}
		params = h.AllocMaster
	case o.WeightCopy:
		h, ok := kernels.AsMaster(be)
		if !ok {
			return nil, unsupported(be, "keep a bfloat16 copy of the weights", "the CUDA bf16 path")
		}
		params = h.AllocCopied
	}
	if o.GradsBF16 {
		h, ok := kernels.AsBF16(be)
		if !ok {
			return nil, unsupported(be, "hold gradients in bfloat16", "the CUDA bf16 path")
		}
		grads = h.AllocBF16
	}
	m.Params, m.Grads = params(l.Size), grads(l.Size)
	m.p = viewWeights(be, l, c, m.Params)
	m.g = viewWeights(be, l, c, m.Grads)
	if err := m.allocOptim(o); err != nil {
		return nil, err
	}
	return m, nil
}

// unsupported is the refusal of a memory option be cannot do (what) and
// who can.
func unsupported(be kernels.Backend, what, who string) error {
	return fmt.Errorf("%w: backend %s cannot %s (%s can)", kernels.ErrUnsupported, be.Name(), what, who)
}

// NewFrozen allocates a model that only evaluates (a preference run's
// reference): its weights, and a forward pass's activations kept as
// recomputation keeps them (a block's input each, one block's at a time:
// nothing else needs them); no gradients or optimizer state — Backward
// and Step return ErrFrozen. Load its weights with the backend's Upload
// into Params.
func NewFrozen(be kernels.Backend, c Config) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	l := NewLayout(c)
	m := &Model{Config: c, Layout: l, be: be, recompute: true}
	m.Params = be.Alloc(l.Size)
	m.p = viewWeights(be, l, c, m.Params)
	return m, nil
}

// frozen says whether m is NewFrozen's.
func (m *Model) frozen() bool { return m.Grads == nil }

// Backend returns the backend the model runs on.
func (m *Model) Backend() kernels.Backend { return m.be }

// Steps is the number of optimizer steps taken.
func (m *Model) Steps() int { return m.step }

// Init sets parameters deterministically from seed: norm gains 1, matrices
// N(0, 0.02²), with the residual projections (o_proj, down_proj) scaled by
// 1/√(2·layers) as in GPT-2. The optimizer state is cleared.
//
// Tensors are filled on every core (each from its own stream, so the bits
// do not depend on which) and uploaded one at a time: the host holds a
// tensor per core, not the whole model.
func (m *Model) Init(seed uint64) {
	resid := 0.02 / math.Sqrt(2*float64(m.Config.Layers))
	var (
		next atomic.Int64
		mu   sync.Mutex // the backend is driven by one goroutine at a time
		wg   sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), len(m.Layout.Tensors)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var host []float32
			for i := int(next.Add(1) - 1); i < len(m.Layout.Tensors); i = int(next.Add(1) - 1) {
				t := m.Layout.Tensors[i]
				if cap(host) < t.Size {
					host = make([]float32, t.Size)
				}
				dst := host[:t.Size]
				m.init(i, dst, seed, resid)
				mu.Lock()
				m.be.Upload(m.be.View(m.Params, t.Offset, t.Size), dst)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if !m.frozen() {
		m.be.Zero(m.Grads)
		m.SetOptimState(OptimState{})
	}
}

// init fills dst, tensor i, as Init says.
func (m *Model) init(i int, dst []float32, seed uint64, resid float64) {
	t := m.Layout.Tensors[i]
	if len(t.Shape) == 1 {
		for j := range dst {
			dst[j] = 1
		}
		return
	}
	std := 0.02
	if strings.HasSuffix(t.Name, "o_proj.weight") || strings.HasSuffix(t.Name, "down_proj.weight") {
		std = resid
	}
	fillNormal(dst, seed, uint64(i), std)
}

// acts holds the activations of one batch shape, kept for backward, and the
// scratch of backward.
type acts struct {
	B, T int
	N    int

	tokens, targets, pos, docStart kernels.IntBuffer
	hostPos, hostDoc               []int32
	hostLoss                       []float32

	resid  []kernels.Buffer // [L+1] residual stream entering block l; [L] is the output
	layers []layerActs
	lnf    kernels.Buffer
	rstdf  kernels.Buffer
	logits kernels.Buffer // [N,V]
	losses kernels.Buffer // [N]
	// dlogits, after a forward with gradient, is the logits' gradient: in
	// logits' place, or in dy16 (gradOut).
	dlogits kernels.Buffer

	dres, dln        kernels.Buffer // [N,C]
	datt, dq, dk, dv kernels.Buffer
	dh, dg, du       kernels.Buffer // [N,F]
	// dy16 holds, on a backend that keeps bfloat16 buffers, a linear
	// layer's output gradient rounded once for its two backward products
	// (gradOut, once) — two at a time in attention's backward (dv beside
	// dq, then dk); nil elsewhere.
	dy16 kernels.Buffer
	// qk32 is, where q and k are held in bfloat16, the float32 scratch
	// their products write before RoPE rotates and rounds them once; nil
	// elsewhere (they rotate in place).
	qk32     kernels.Buffer
	count    int // targets that count in the last forward
	haveGrad bool
}

type layerActs struct {
	ln1, rstd1, q, k, v, att, lse, x2, ln2, rstd2, g, u, h kernels.Buffer
}

// ActivationBytes is the bytes of activation and scratch values a batch of
// b×t tokens holds, as allocated by the model (with recompute: as
// SetRecompute(true) allocates); half: on a backend that holds the
// activations only matrix products read in bfloat16 (kernels.AsBF16).
func ActivationBytes(c Config, b, t int, recompute, half bool) int64 {
	return actBytes(actSizes(c, b, t, recompute, true), half)
}

// actBytes is the bytes of buffers sizes.
func actBytes(sizes []actBuf, half bool) int64 {
	var n int64
	for _, s := range sizes {
		n += int64(s.n) * s.bytes(half)
	}
	return n
}

// actBuf is one activation buffer: its values, and whether it is held in
// bfloat16 where the backend holds such buffers (mm: only matrix products
// and attention read it), and whether it exists only there (onlyHalf).
type actBuf struct {
	n        int
	mm       bool
	onlyHalf bool
}

func (a actBuf) bytes(half bool) int64 {
	switch {
	case a.onlyHalf && !half:
		return 0
	case half && a.mm:
		return 2
	}
	return 4
}

// actSizes lists every activation buffer, in allocation order: one table that
// both allocation and memory reports read. Without grad (a frozen model)
// the gradients' buffers are left out.
func actSizes(c Config, b, t int, recompute, grad bool) []actBuf {
	n := b * t
	hd := c.HeadDim()
	qd, kvd := c.Heads*hd, c.KVHeads*hd
	var s []actBuf
	add := func(mm bool, sizes ...int) {
		for _, x := range sizes {
			s = append(s, actBuf{n: x, mm: mm})
		}
	}
	for i := 0; i <= c.Layers; i++ {
		add(false, n*c.Dim) // resid
	}
	for i := 0; i < actLayers(c, recompute); i++ {
		add(true, n*c.Dim)                        // ln1
		add(false, n)                             // rstd1
		add(true, n*qd, n*kvd, n*kvd)             // q k v
		add(false, n*qd, b*c.Heads*t, n*c.Dim, n) // att lse x2 rstd2
		add(true, n*c.Dim)                        // ln2
		add(false, n*c.FFNDim, n*c.FFNDim)        // g u
		add(true, n*c.FFNDim)                     // h
	}
	add(true, n*c.Dim)                                         // lnf
	add(false, n, n*c.Vocab, n)                                // rstdf logits losses
	s = append(s, actBuf{n: n * max(qd, kvd), onlyHalf: true}) // qk32
	if !grad {
		return s
	}
	add(false, n*c.Dim, n*c.Dim)                                                        // dres dln
	add(true, n*qd)                                                                     // datt
	add(false, n*qd, n*kvd, n*kvd)                                                      // dq dk dv
	add(false, n*c.FFNDim)                                                              // dh
	add(true, n*c.FFNDim, n*c.FFNDim)                                                   // dg du
	s = append(s, actBuf{n: n * max(c.Vocab, c.Dim, qd+kvd), mm: true, onlyHalf: true}) // dy16
	return s
}

// actLayers is how many blocks' activations are kept: all, or the one set
// every block shares under recomputation.
func actLayers(c Config, recompute bool) int {
	if recompute {
		return 1
	}
	return c.Layers
}

func (m *Model) acts(b, t int) *acts {
	if m.act != nil && m.act.B == b && m.act.T == t {
		return m.act
	}
	m.act = nil // let the old shape go before allocating the new one
	sizes := actSizes(m.Config, b, t, m.recompute, !m.frozen())
	half, _ := kernels.AsBF16(m.be)
	next := func() kernels.Buffer {
		s := sizes[0]
		sizes = sizes[1:]
		switch {
		case s.onlyHalf && half == nil:
			return nil
		case s.mm && half != nil:
			return half.AllocBF16(s.n)
		}
		return m.be.Alloc(s.n)
	}
	a := &acts{B: b, T: t, N: b * t}
	a.tokens, a.targets = m.be.AllocInt(a.N), m.be.AllocInt(a.N)
	a.pos, a.docStart = m.be.AllocInt(a.N), m.be.AllocInt(a.N)
	a.hostPos, a.hostDoc = make([]int32, a.N), make([]int32, a.N)
	a.hostLoss = make([]float32, a.N)
	for i := 0; i <= m.Config.Layers; i++ {
		a.resid = append(a.resid, next())
	}
	for i := 0; i < actLayers(m.Config, m.recompute); i++ {
		a.layers = append(a.layers, layerActs{ln1: next(), rstd1: next(), q: next(), k: next(), v: next(), att: next(),
			lse: next(), x2: next(), rstd2: next(), ln2: next(), g: next(), u: next(), h: next()})
	}
	a.lnf, a.rstdf, a.logits, a.losses, a.qk32 = next(), next(), next(), next(), next()
	if !m.frozen() {
		a.dres, a.dln, a.datt, a.dq, a.dk, a.dv = next(), next(), next(), next(), next(), next()
		a.dh, a.dg, a.du, a.dy16 = next(), next(), next(), next()
	}
	m.act = a
	return a
}

// layer is block l's activations (the shared set under recomputation).
func (a *acts) layer(l int) layerActs { return a.layers[min(l, len(a.layers)-1)] }

// DocLayout derives, for packed sequences, each token's document start and
// its position within its document: a document ends with (and includes) an
// EOS token, and the next token starts a new one. Both slices are [B·T].
func DocLayout(tokens []int32, b, t int, eos int32, docStart, pos []int32) {
	for bi := 0; bi < b; bi++ {
		start := 0
		for j := 0; j < t; j++ {
			docStart[bi*t+j] = int32(start)
			pos[bi*t+j] = int32(j - start)
			if tokens[bi*t+j] == eos {
				start = j + 1
			}
		}
	}
}

func (m *Model) checkBatch(tokens, targets []int32, b, t int) error {
	c := m.Config
	if b <= 0 || t <= 0 {
		return fmt.Errorf("%w: batch %d×%d must be positive", ErrBatch, b, t)
	}
	if t > c.MaxSeq {
		return fmt.Errorf("%w: sequence length %d exceeds the model's max_seq %d", ErrBatch, t, c.MaxSeq)
	}
	if len(tokens) != b*t {
		return fmt.Errorf("%w: %d tokens for a %d×%d batch", ErrBatch, len(tokens), b, t)
	}
	if targets != nil && len(targets) != b*t {
		return fmt.Errorf("%w: %d targets for a %d×%d batch", ErrBatch, len(targets), b, t)
	}
	for i, v := range tokens {
		if v < 0 || int(v) >= c.Vocab {
			return fmt.Errorf("%w: token %d at index %d outside vocabulary [0, %d)", ErrBatch, v, i, c.Vocab)
		}
	}
	for i, v := range targets {
		if v != kernels.IgnoreIndex && (v < 0 || int(v) >= c.Vocab) {
			return fmt.Errorf("%w: target %d at index %d outside vocabulary [0, %d) and not the ignore index %d", ErrBatch, v, i, c.Vocab, kernels.IgnoreIndex)
		}
	}
	return nil
}

// Forward runs the model on a b×t batch and returns the mean cross-entropy
// over targets that are not kernels.IgnoreIndex (0 if none count). With
// grad, it also leaves what Backward needs. targets may be nil when only the
// logits are wanted (Logits).
func (m *Model) Forward(tokens, targets []int32, b, t int, grad bool) (float32, error) {
	if err := m.checkBatch(tokens, targets, b, t); err != nil {
		return 0, err
	}
	if grad && targets == nil {
		return 0, fmt.Errorf("%w: a forward pass with gradient needs targets", ErrBatch)
	}
	count := countTargets(targets)
	m.forward(tokens, targets, b, t, grad, count)
	if targets == nil {
		return 0, kernels.Err(m.be)
	}
	var sum float64
	if err := m.addLosses(&sum); err != nil {
		return 0, err
	}
	return meanLoss(sum, count)
}

// countTargets is how many targets count in the loss.
func countTargets(targets []int32) int {
	n := 0
	for _, v := range targets {
		if v != kernels.IgnoreIndex {
			n++
		}
	}
	return n
}

// meanLoss is the mean of a sum of count losses (0 when none count), or
// ErrNotFinite.
func meanLoss(sum float64, count int) (float32, error) {
	if count == 0 {
		return 0, nil
	}
	loss := float32(sum / float64(count))
	if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
		return loss, fmt.Errorf("%w: loss %v", ErrNotFinite, loss)
	}
	return loss, nil
}

// forward runs a checked batch. With targets it leaves the rows' losses
// on the device (addLosses reads them), and with grad the gradient of
// their sum over count targets (count: of the whole batch when this is
// one slice of it). It does not wait for the device.
func (m *Model) forward(tokens, targets []int32, b, t int, grad bool, count int) {
	c, be := m.Config, m.be
	a := m.acts(b, t)
	n := a.N
	DocLayout(tokens, b, t, int32(c.EOS), a.hostDoc, a.hostPos)
	be.UploadInt(a.tokens, tokens)
	be.UploadInt(a.pos, a.hostPos)
	be.UploadInt(a.docStart, a.hostDoc)
	be.EmbeddingForward(a.resid[0], m.p.embed, a.tokens, n, c.Dim)
	for l := 0; l < c.Layers; l++ {
		m.blockForward(a, l, true)
	}
	be.RMSNormForward(a.lnf, a.rstdf, a.resid[c.Layers], m.p.norm, n, c.Dim, float32(c.NormEps))
	linear(be, a.logits, a.lnf, m.p.head, n, c.Dim, c.Vocab)
	a.haveGrad, a.dlogits = false, nil
	if targets == nil {
		return
	}
	a.count = count
	be.UploadInt(a.targets, targets)
	var dscale float32
	if count > 0 {
		dscale = 1 / float32(count)
	}
	if grad {
		a.dlogits = a.gradOut(be, a.logits, 0, n*c.Vocab)
	}
	be.SoftmaxCrossEntropy(a.losses, a.logits, a.dlogits, a.targets, n, c.Vocab, dscale)
	a.haveGrad = grad
}

// addLosses adds the last forward's row losses to *sum in row order. It
// waits for the device (a download), so a training step reads them after
// its backward pass is queued, not between the two.
func (m *Model) addLosses(sum *float64) error {
	a := m.act
	m.be.Download(a.hostLoss, a.losses)
	if err := kernels.Err(m.be); err != nil {
		return err
	}
	for _, v := range a.hostLoss {
		*sum += float64(v)
	}
	return nil
}

// blockForward runs transformer block l from a.resid[l] into its
// activations and, with out, into a.resid[l+1] (recomputation needs
// everything but that output).
func (m *Model) blockForward(a *acts, l int, out bool) {
	c, be := m.Config, m.be
	w, x := m.p.layers[l], a.layer(l)
	n, hd := a.N, c.HeadDim()
	qd, kvd := c.Heads*hd, c.KVHeads*hd
	shape := kernels.AttnShape{B: a.B, T: a.T, NH: c.Heads, KVH: c.KVHeads, HD: hd}
	eps := float32(c.NormEps)
	be.RMSNormForward(x.ln1, x.rstd1, a.resid[l], w.ln1, n, c.Dim, eps)
	q, k := x.q, x.k // rotated in place, or from float32 scratch into bfloat16
	if a.qk32 != nil {
		q, k = be.View(a.qk32, 0, n*qd), be.View(a.qk32, 0, n*kvd)
	}
	linear(be, q, x.ln1, w.q, n, c.Dim, qd)
	be.RoPEForward(x.q, q, a.pos, n, c.Heads, hd, c.RopeTheta)
	linear(be, k, x.ln1, w.k, n, c.Dim, kvd)
	be.RoPEForward(x.k, k, a.pos, n, c.KVHeads, hd, c.RopeTheta)
	linear(be, x.v, x.ln1, w.v, n, c.Dim, kvd)
	be.AttentionForward(x.att, x.lse, x.q, x.k, x.v, a.docStart, shape)
	be.Copy(x.x2, a.resid[l])
	be.Matmul(x.x2, x.att, w.o, n, c.Dim, qd, false, true, true)
	be.RMSNormForward(x.ln2, x.rstd2, x.x2, w.ln2, n, c.Dim, eps)
	linear(be, x.g, x.ln2, w.gate, n, c.Dim, c.FFNDim)
	linear(be, x.u, x.ln2, w.up, n, c.Dim, c.FFNDim)
	be.SwiGLUForward(x.h, x.g, x.u, n*c.FFNDim)
	if out {
		be.Copy(a.resid[l+1], x.x2)
		be.Matmul(a.resid[l+1], x.h, w.down, n, c.Dim, c.FFNDim, false, true, true)
	}
}

// Logits copies the logits of the last Forward (made without targets or
// without gradient) for batch row bi, position ti into dst[:Vocab].
func (m *Model) Logits(dst []float32, bi, ti int) error {
	a := m.act
	if a == nil || a.dlogits != nil { // a forward with gradient may have written it over them
		return errors.New("model: no logits: run Forward without gradient first")
	}
	if bi < 0 || bi >= a.B || ti < 0 || ti >= a.T || len(dst) != m.Config.Vocab {
		return fmt.Errorf("model: logits of row %d position %d into %d values; batch is %d×%d, vocab %d", bi, ti, len(dst), a.B, a.T, m.Config.Vocab)
	}
	row := bi*a.T + ti
	m.be.Download(dst, m.be.View(a.logits, row*m.Config.Vocab, m.Config.Vocab))
	return nil
}

// linear: out[n,oc] = inp[n,ic] · W[oc,ic]ᵀ.
func linear(be kernels.Backend, out, inp, w kernels.Buffer, n, ic, oc int) {
	be.Matmul(out, inp, w, n, oc, ic, false, true, false)
}

// linearBackward: dinp (+)= dout·W; dW += doutᵀ·inp.
func linearBackward(be kernels.Backend, dinp, dw, dout, inp, w kernels.Buffer, n, ic, oc int, accIn bool) {
	be.Matmul(dinp, dout, w, n, ic, oc, false, false, accIn)
	be.Matmul(dw, dout, inp, oc, ic, n, true, false, true)
}

// once returns dout, a float32 output gradient of size values, as a
// linear layer's two backward products read it: on a backend holding
// bfloat16 buffers, rounded into a.dy16 once (each product would round
// it so: the same bits), else as it is.
func (a *acts) once(be kernels.Backend, dout kernels.Buffer, size int) kernels.Buffer {
	d := a.gradOut(be, dout, 0, size)
	if d != dout {
		be.Copy(d, dout)
	}
	return d
}

// gradOut is where an op producing a linear layer's output gradient of
// size values (in place of dout, a float32 buffer) best writes it for the
// two backward products: a.dy16 from off (dv waits there beside dq and
// dk) where the backend holds bfloat16 buffers, else dout.
func (a *acts) gradOut(be kernels.Backend, dout kernels.Buffer, off, size int) kernels.Buffer {
	if a.dy16 == nil {
		return dout
	}
	return be.View(a.dy16, off, size)
}

// ZeroGrad clears the gradient buffer.
func (m *Model) ZeroGrad() {
	if !m.frozen() {
		m.be.Zero(m.Grads)
	}
}

// Backward adds the gradient of the last Forward's mean loss to Grads.
func (m *Model) Backward() error {
	if m.frozen() {
		return ErrFrozen
	}
	if err := m.backward(); err != nil {
		return err
	}
	a := m.act
	m.be.EmbeddingBackward(m.g.embed, a.dres, a.tokens, a.N, m.Config.Dim)
	return kernels.Err(m.be)
}

// backward is Backward down to the embedding: a.dres holds the gradient
// of the embedding lookup's output.
func (m *Model) backward() error {
	a := m.act
	if a == nil || !a.haveGrad {
		return errors.New("model: Backward needs a Forward with grad first")
	}
	a.haveGrad = false
	c, be := m.Config, m.be
	n := a.N
	linearBackward(be, a.dln, m.g.head, a.dlogits, a.lnf, m.p.head, n, c.Dim, c.Vocab, false)
	be.Zero(a.dres)
	be.RMSNormBackward(a.dres, m.g.norm, a.dln, a.resid[c.Layers], m.p.norm, a.rstdf, n, c.Dim)
	for l := c.Layers - 1; l >= 0; l-- {
		if len(a.layers) < c.Layers && l < c.Layers-1 {
			m.blockForward(a, l, false) // the shared set holds the last block's
		}
		m.blockBackward(a, l)
	}
	return kernels.Err(be)
}

// blockBackward adds block l's weight gradients to Grads and turns a.dres,
// the gradient of the block's output, into that of its input.
func (m *Model) blockBackward(a *acts, l int) {
	c, be := m.Config, m.be
	w, g, x := m.p.layers[l], m.g.layers[l], a.layer(l)
	n, hd := a.N, c.HeadDim()
	qd, kvd := c.Heads*hd, c.KVHeads*hd
	shape := kernels.AttnShape{B: a.B, T: a.T, NH: c.Heads, KVH: c.KVHeads, HD: hd}
	linearBackward(be, a.dh, g.down, a.once(be, a.dres, n*c.Dim), x.h, w.down, n, c.FFNDim, c.Dim, false)
	be.SwiGLUBackward(a.dg, a.du, a.dh, x.g, x.u, n*c.FFNDim)
	linearBackward(be, a.dln, g.gate, a.dg, x.ln2, w.gate, n, c.Dim, c.FFNDim, false)
	linearBackward(be, a.dln, g.up, a.du, x.ln2, w.up, n, c.Dim, c.FFNDim, true)
	be.RMSNormBackward(a.dres, g.ln2, a.dln, x.x2, w.ln2, x.rstd2, n, c.Dim)
	linearBackward(be, a.datt, g.o, a.once(be, a.dres, n*c.Dim), x.att, w.o, n, qd, c.Dim, false)
	dv := a.gradOut(be, a.dv, n*qd, n*kvd) // beside dq and dk in dy16
	be.AttentionBackward(a.dq, a.dk, dv, a.datt, x.q, x.k, x.v, x.att, x.lse, a.docStart, shape)
	dq := a.gradOut(be, a.dq, 0, n*qd)
	be.RoPEBackward(dq, a.dq, a.pos, n, c.Heads, hd, c.RopeTheta)
	linearBackward(be, a.dln, g.q, dq, x.ln1, w.q, n, c.Dim, qd, false)
	dk := a.gradOut(be, a.dk, 0, n*kvd)
	be.RoPEBackward(dk, a.dk, a.pos, n, c.KVHeads, hd, c.RopeTheta)
	linearBackward(be, a.dln, g.k, dk, x.ln1, w.k, n, c.Dim, kvd, true)
	linearBackward(be, a.dln, g.v, dv, x.ln1, w.v, n, c.Dim, kvd, true)
	be.RMSNormBackward(a.dres, g.ln1, a.dln, a.resid[l], w.ln1, x.rstd1, n, c.Dim)
}
