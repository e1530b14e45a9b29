package model

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
)

// Decoder runs the model one token at a time with a key/value cache: each
// step costs one token's matrix products and attention over the cached
// keys, instead of a forward pass over the whole window. It works on a host
// copy of the weights (the inference path of Generate on any backend) and
// follows Forward: RMSNorm, Hugging Face RoPE at positions counted from the
// start of the current document, causal attention within the document (a
// document ends with EOS), SwiGLU.
//
// A Decoder holds several sequences (slots), each with its own cache, and
// steps any of them together (StepRows): their rows go through each linear
// layer as one matrix product, so the weights are read once for all of
// them. The products are the CPU backend's GEMM (kernels/cpu Linear), whose
// every element is one FMA chain over the inner dimension in order, and
// everything else is computed row by row: a sequence's logits are the same
// bits whichever sequences step beside it, on any number of threads, on
// any machine — what re-generating one output to check it needs.
//
// A Decoder is used by one goroutine at a time; Close stops its threads.
type Decoder struct {
	c    Config
	be   *cpu.Backend
	emb  []float32
	head decLinear
	norm []float32
	lw   []decLayer

	cap   int // cache capacity in tokens, per slot
	slots []decSlot
	rope  []float64 // cos, sin per position (hd values a row)

	x, xn, q, kx, vx, att, o, g, u, hx, lg []float32 // rows × width scratch
	work                                   []decWork // per attention worker
	devRows                                *devRows  // a device backend's row buffers
}

type decLayer struct {
	ln1, ln2                   []float32
	q, k, v, o, gate, up, down decLinear
}

// decLinear is one of the decoder's weight matrices W [n, k] applied to rows
// of activations: out[rows, n] = x[rows, k]·Wᵀ.
type decLinear interface {
	apply(out, x []float32, rows int)
}

// hostLinear: W packed on the host, the CPU backend's GEMM.
type hostLinear struct {
	be *cpu.Backend
	p  *cpu.Packed
}

func (l hostLinear) apply(out, x []float32, rows int) { l.be.Linear(out, x, rows, l.p) }

// deviceLinear: W stays where the model's backend keeps it (a GPU's
// memory); the rows go there and the products come back. Its Matmul gives
// the CPU GEMM's bits in fp32 (kernels' determinism contract), so the
// decoder's output does not depend on where the weights are.
type deviceLinear struct {
	dv   *devRows
	w    kernels.Buffer
	n, k int
}

func (l deviceLinear) apply(out, x []float32, rows int) {
	xb, yb := l.dv.view(0, rows*l.k), l.dv.view(1, rows*l.n)
	l.dv.be.Upload(xb, x[:rows*l.k])
	l.dv.be.Matmul(yb, xb, l.w, rows, l.n, l.k, false, true, false)
	l.dv.be.Download(out[:rows*l.n], yb)
}

// devRows are the device buffers a step's rows pass through.
type devRows struct {
	be  kernels.Backend
	buf [2]kernels.Buffer
}

func (d *devRows) view(i, n int) kernels.Buffer { return d.be.View(d.buf[i], 0, n) }

// decSlot is one sequence's cache.
type decSlot struct {
	n    int         // tokens in the cache
	doc  int         // cache index where the current document starts
	k, v [][]float32 // per layer: [cap × KVHeads·hd]
}

type decWork struct {
	scores []float64
	acc    []float32
}

// NewDecoder copies m's current weights to the host and prepares one slot
// of window tokens (at most the model's max_seq).
func NewDecoder(m *Model, window int) *Decoder { return NewBatchDecoder(m, window, 1) }

// NewBatchDecoder is NewDecoder with slots sequences. On a CPU backend
// the weights are copied to the host and packed; on another (a GPU) the
// matrices stay there and only the embedding and norms are copied.
func NewBatchDecoder(m *Model, window, slots int) *Decoder {
	_, onHost := m.be.(*cpu.Backend)
	return newBatchDecoder(m, window, slots, !onHost)
}

func newBatchDecoder(m *Model, window, slots int, onDevice bool) *Decoder {
	c := m.Config
	if window <= 0 || window > c.MaxSeq {
		window = c.MaxSeq
	}
	slots = max(1, slots)
	// On a CPU backend the decoder computes on as many threads as the
	// model's backend; beside a GPU the host's share (attention, picks)
	// gets every core. The output does not depend on it.
	threads := runtime.GOMAXPROCS(0)
	if !onDevice {
		threads = m.be.Threads()
	}
	d := &Decoder{c: c, be: cpu.MustNew(cpu.Options{Threads: threads}), cap: window}
	host := func(name string) []float32 {
		tn := m.Layout.must(name)
		w := make([]float32, tn.Size)
		m.be.Download(w, m.be.View(m.Params, tn.Offset, tn.Size))
		return w
	}
	mat := func(name string, n, k int) decLinear {
		if !onDevice {
			return hostLinear{d.be, d.be.Pack(host(name), n, k)}
		}
		tn := m.Layout.must(name)
		return deviceLinear{dv: d.dev(m.be, slots), w: m.be.View(m.Params, tn.Offset, tn.Size), n: n, k: k}
	}
	d.emb, d.norm = host("model.embed_tokens.weight"), host("model.norm.weight")
	if c.Tied {
		d.head = mat("model.embed_tokens.weight", c.Vocab, c.Dim)
	} else {
		d.head = mat("lm_head.weight", c.Vocab, c.Dim)
	}
	hd := c.HeadDim()
	kvd := c.KVHeads * hd
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		d.lw = append(d.lw, decLayer{ln1: host(p + "input_layernorm.weight"), ln2: host(p + "post_attention_layernorm.weight"),
			q: mat(p+"self_attn.q_proj.weight", c.Heads*hd, c.Dim), k: mat(p+"self_attn.k_proj.weight", kvd, c.Dim),
			v: mat(p+"self_attn.v_proj.weight", kvd, c.Dim), o: mat(p+"self_attn.o_proj.weight", c.Dim, c.Heads*hd),
			gate: mat(p+"mlp.gate_proj.weight", c.FFNDim, c.Dim), up: mat(p+"mlp.up_proj.weight", c.FFNDim, c.Dim),
			down: mat(p+"mlp.down_proj.weight", c.Dim, c.FFNDim)})
	}
	d.slots = make([]decSlot, slots)
	for s := range d.slots {
		for range c.Layers {
			d.slots[s].k = append(d.slots[s].k, make([]float32, window*kvd))
			d.slots[s].v = append(d.slots[s].v, make([]float32, window*kvd))
		}
	}
	d.rope = make([]float64, window*hd)
	half := hd / 2
	for p := 0; p < window; p++ {
		for j := 0; j < half; j++ {
			s, co := math.Sincos(float64(p) * math.Pow(c.RopeTheta, -2*float64(j)/float64(hd)))
			d.rope[p*hd+j], d.rope[p*hd+half+j] = co, s
		}
	}
	d.work = make([]decWork, threads)
	for i := range d.work {
		d.work[i] = decWork{scores: make([]float64, window), acc: make([]float32, hd)}
	}
	return d
}

// dev is the device row buffers, made once: every slot's row of the
// widest input and output (the vocabulary).
func (d *Decoder) dev(be kernels.Backend, slots int) *devRows {
	if d.devRows == nil {
		c := d.c
		wide := max(c.Dim, c.Heads*c.HeadDim(), c.FFNDim)
		d.devRows = &devRows{be: be, buf: [2]kernels.Buffer{be.Alloc(slots * wide), be.Alloc(slots * max(wide, c.Vocab))}}
	}
	return d.devRows
}

// Close stops the decoder's compute threads; it is idempotent.
func (d *Decoder) Close() error { return d.be.Close() }

// Len is the number of tokens in slot 0's cache.
func (d *Decoder) Len() int { return d.slots[0].n }

// LenOf is the number of tokens in a slot's cache.
func (d *Decoder) LenOf(slot int) int { return d.slots[slot].n }

// Cap is the cache capacity in tokens, per slot.
func (d *Decoder) Cap() int { return d.cap }

// Slots is the number of sequences the decoder holds.
func (d *Decoder) Slots() int { return len(d.slots) }

// Reset empties slot 0's cache.
func (d *Decoder) Reset() { d.ResetSlot(0) }

// ResetSlot empties a slot's cache.
func (d *Decoder) ResetSlot(slot int) { d.slots[slot].n, d.slots[slot].doc = 0, 0 }

// Step appends token tok to slot 0's cache and writes the logits for the
// next token into logits (len Vocab; nil skips the output layer, for
// prompt tokens whose logits are not needed). The cache must not be full.
func (d *Decoder) Step(tok int32, logits []float32) error {
	return d.StepRows([]int{0}, []int32{tok}, [][]float32{logits})
}

// StepRows appends toks[i] to the cache of slot slots[i], for every i at
// once, and writes each slot's logits for its next token into logits[i]
// (nil: not needed). Slots are distinct; none may be full.
func (d *Decoder) StepRows(slots []int, toks []int32, logits [][]float32) error {
	c := d.c
	rows := len(slots)
	if len(toks) != rows || len(logits) != rows {
		return fmt.Errorf("model: %d slots, %d tokens and %d logit rows", rows, len(toks), len(logits))
	}
	for i, s := range slots {
		switch {
		case s < 0 || s >= len(d.slots) || slices.Contains(slots[:i], s):
			return fmt.Errorf("model: slot %d (of %d, each once)", s, len(d.slots))
		case d.slots[s].n >= d.cap:
			return fmt.Errorf("model: decoder cache full (%d tokens)", d.cap)
		case toks[i] < 0 || int(toks[i]) >= c.Vocab:
			return fmt.Errorf("model: token %d outside the vocabulary %d", toks[i], c.Vocab)
		case logits[i] != nil && len(logits[i]) != c.Vocab:
			return fmt.Errorf("model: %d logits for vocabulary %d", len(logits[i]), c.Vocab)
		}
	}
	hd, dim := c.HeadDim(), c.Dim
	kvd := c.KVHeads * hd
	grow := func(b *[]float32, n int) []float32 {
		if cap(*b) < n {
			*b = make([]float32, n)
		}
		return (*b)[:n]
	}
	x, xn := grow(&d.x, rows*dim), grow(&d.xn, rows*dim)
	q, att := grow(&d.q, rows*c.Heads*hd), grow(&d.att, rows*c.Heads*hd)
	kx, vx := grow(&d.kx, rows*kvd), grow(&d.vx, rows*kvd)
	o := grow(&d.o, rows*dim)
	g, u := grow(&d.g, rows*c.FFNDim), grow(&d.u, rows*c.FFNDim)
	for i, tok := range toks {
		copy(x[i*dim:(i+1)*dim], d.emb[int(tok)*dim:(int(tok)+1)*dim])
	}
	for l, w := range d.lw {
		for i := range rows {
			rmsnorm(xn[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], w.ln1, c.NormEps)
		}
		w.q.apply(q, xn, rows)
		w.k.apply(kx, xn, rows)
		w.v.apply(vx, xn, rows)
		for i, s := range slots {
			sl := &d.slots[s]
			kc := sl.k[l][sl.n*kvd : (sl.n+1)*kvd]
			copy(kc, kx[i*kvd:(i+1)*kvd])
			copy(sl.v[l][sl.n*kvd:(sl.n+1)*kvd], vx[i*kvd:(i+1)*kvd])
			pos := sl.n - sl.doc
			d.ropeAt(q[i*c.Heads*hd:(i+1)*c.Heads*hd], c.Heads, pos)
			d.ropeAt(kc, c.KVHeads, pos)
		}
		d.attend(l, slots, q, att)
		w.o.apply(o, att, rows)
		for i := range x {
			x[i] += o[i]
		}
		for i := range rows {
			rmsnorm(xn[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], w.ln2, c.NormEps)
		}
		w.gate.apply(g, xn, rows)
		w.up.apply(u, xn, rows)
		for i, gv := range g {
			g[i] = float32(float64(gv) / (1 + math.Exp(-float64(gv))) * float64(u[i]))
		}
		w.down.apply(o, g, rows)
		for i := range x {
			x[i] += o[i]
		}
	}
	var out []int // rows whose logits are wanted
	for i, s := range slots {
		sl := &d.slots[s]
		sl.n++
		if int(toks[i]) == c.EOS {
			sl.doc = sl.n // the next token starts a new document
		}
		if logits[i] != nil {
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		return nil
	}
	hx, lg := grow(&d.hx, len(out)*dim), grow(&d.lg, len(out)*c.Vocab)
	for j, i := range out {
		rmsnorm(hx[j*dim:(j+1)*dim], x[i*dim:(i+1)*dim], d.norm, c.NormEps)
	}
	d.head.apply(lg, hx, len(out))
	for j, i := range out {
		copy(logits[i], lg[j*c.Vocab:(j+1)*c.Vocab])
	}
	return nil
}

// attend writes each row's attention output over its slot's cache (the
// token just appended included); a row's arithmetic is its own.
func (d *Decoder) attend(l int, slots []int, q, att []float32) {
	d.eachRow(len(slots), func(i, w int) { d.attendRow(l, slots[i], q, att, i, &d.work[w]) })
}

// eachRow calls f(row, worker) for rows [0, n), spread over the decoder's
// workers (each with its own scratch, d.work[worker]).
func (d *Decoder) eachRow(n int, f func(i, w int)) {
	workers := min(len(d.work), n)
	if workers <= 1 {
		for i := range n {
			f(i, 0)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				f(i, w)
			}
		}()
	}
	wg.Wait()
}

func (d *Decoder) attendRow(l, s int, q, att []float32, i int, wk *decWork) {
	c := d.c
	hd := c.HeadDim()
	kvd := c.KVHeads * hd
	sl := &d.slots[s]
	group := c.Heads / c.KVHeads
	scale := 1 / math.Sqrt(float64(hd))
	kcache, vcache := sl.k[l], sl.v[l]
	for h := 0; h < c.Heads; h++ {
		qh := q[(i*c.Heads+h)*hd : (i*c.Heads+h+1)*hd]
		kvh := h / group
		mx := math.Inf(-1)
		sc := wk.scores[:sl.n-sl.doc+1]
		for s := sl.doc; s <= sl.n; s++ {
			dot := float64(dot32(qh, kcache[s*kvd+kvh*hd:s*kvd+(kvh+1)*hd])) * scale
			sc[s-sl.doc] = dot
			mx = math.Max(mx, dot)
		}
		var sum float64
		for j := range sc {
			sc[j] = math.Exp(sc[j] - mx)
			sum += sc[j]
		}
		acc := wk.acc
		clear(acc)
		for s := sl.doc; s <= sl.n; s++ {
			axpy32(acc, float32(sc[s-sl.doc]/sum), vcache[s*kvd+kvh*hd:s*kvd+(kvh+1)*hd])
		}
		copy(att[(i*c.Heads+h)*hd:(i*c.Heads+h+1)*hd], acc)
	}
}

// dot32 is Σ a[j]·b[j] in float32 over four lanes, every product rounded
// (no fused multiply-add whatever GOAMD64: the same bits on every build).
func dot32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	j := 0
	for ; j+4 <= len(a); j += 4 {
		s0 += float32(a[j] * b[j])
		s1 += float32(a[j+1] * b[j+1])
		s2 += float32(a[j+2] * b[j+2])
		s3 += float32(a[j+3] * b[j+3])
	}
	for ; j < len(a); j++ {
		s0 += float32(a[j] * b[j])
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy32 sets acc[j] += p·v[j], the product rounded (no fusion).
func axpy32(acc []float32, p float32, v []float32) {
	v = v[:len(acc)]
	for j := range acc {
		acc[j] += float32(p * v[j])
	}
}

// ropeAt rotates each head of v (Hugging Face layout: j with j+hd/2) to
// position pos.
func (d *Decoder) ropeAt(v []float32, heads, pos int) {
	hd := d.c.HeadDim()
	half := hd / 2
	tab := d.rope[pos*hd : (pos+1)*hd]
	for h := 0; h < heads; h++ {
		x := v[h*hd : (h+1)*hd]
		for j := 0; j < half; j++ {
			co, s := tab[j], tab[half+j]
			a, b := float64(x[j]), float64(x[j+half])
			x[j] = float32(float64(a*co) - float64(b*s)) // products rounded: no fusion
			x[j+half] = float32(float64(b*co) + float64(a*s))
		}
	}
}

func rmsnorm(out, x, w []float32, eps float64) {
	var ss float64
	for _, v := range x {
		ss += float64(float64(v) * float64(v)) // rounded: no fusion
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	for i, v := range x {
		out[i] = float32(float64(v) * r * float64(w[i]))
	}
}
