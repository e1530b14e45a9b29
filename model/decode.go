package model

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Decoder runs the model one token at a time with a key/value cache: each
// step costs one token's matrix-vector products and attention over the
// cached keys, instead of a forward pass over the whole window. It works on
// a host copy of the weights in plain Go (the inference path of Generate on
// any backend) and follows Forward exactly: RMSNorm, Hugging Face RoPE at
// positions counted from the start of the current document, causal
// attention within the document (a document ends with EOS), SwiGLU.
//
// A Decoder is used by one goroutine at a time.
type Decoder struct {
	c    Config
	emb  []float32
	head []float32
	norm []float32
	lw   []decLayer

	cap  int         // cache capacity in tokens
	n    int         // tokens in the cache
	doc  int         // cache index where the current document starts
	k, v [][]float32 // per layer: [cap × KVHeads·hd]
	rope []float64   // cos, sin per position (hd values a row)

	x, xn, q, att, o, g, u []float32
	scores, acc            []float64
}

type decLayer struct{ ln1, q, k, v, o, ln2, gate, up, down []float32 }

// NewDecoder copies m's current weights to the host and prepares a cache of
// window tokens (at most the model's max_seq).
func NewDecoder(m *Model, window int) *Decoder {
	c := m.Config
	if window <= 0 || window > c.MaxSeq {
		window = c.MaxSeq
	}
	w := make([]float32, m.Layout.Size)
	m.be.Download(w, m.Params)
	return newDecoder(c, m.Layout, w, window)
}

func newDecoder(c Config, lay *Layout, w []float32, window int) *Decoder {
	t := func(name string) []float32 {
		tn := lay.must(name)
		return w[tn.Offset : tn.Offset+tn.Size]
	}
	d := &Decoder{c: c, cap: window, emb: t("model.embed_tokens.weight"), norm: t("model.norm.weight")}
	d.head = d.emb
	if !c.Tied {
		d.head = t("lm_head.weight")
	}
	hd := c.HeadDim()
	kvd := c.KVHeads * hd
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		d.lw = append(d.lw, decLayer{t(p + "input_layernorm.weight"), t(p + "self_attn.q_proj.weight"),
			t(p + "self_attn.k_proj.weight"), t(p + "self_attn.v_proj.weight"), t(p + "self_attn.o_proj.weight"),
			t(p + "post_attention_layernorm.weight"), t(p + "mlp.gate_proj.weight"), t(p + "mlp.up_proj.weight"),
			t(p + "mlp.down_proj.weight")})
		d.k = append(d.k, make([]float32, window*kvd))
		d.v = append(d.v, make([]float32, window*kvd))
	}
	d.rope = make([]float64, window*hd)
	half := hd / 2
	for p := 0; p < window; p++ {
		for j := 0; j < half; j++ {
			s, co := math.Sincos(float64(p) * math.Pow(c.RopeTheta, -2*float64(j)/float64(hd)))
			d.rope[p*hd+j], d.rope[p*hd+half+j] = co, s
		}
	}
	d.x, d.xn = make([]float32, c.Dim), make([]float32, c.Dim)
	d.q, d.att, d.o = make([]float32, c.Heads*hd), make([]float32, c.Heads*hd), make([]float32, c.Dim)
	d.g, d.u = make([]float32, c.FFNDim), make([]float32, c.FFNDim)
	d.scores, d.acc = make([]float64, window), make([]float64, hd)
	return d
}

// Len is the number of tokens in the cache; Cap its capacity.
func (d *Decoder) Len() int { return d.n }

// Cap is the cache capacity in tokens.
func (d *Decoder) Cap() int { return d.cap }

// Reset empties the cache.
func (d *Decoder) Reset() { d.n, d.doc = 0, 0 }

// Step appends token tok to the cache and writes the logits for the next
// token into logits (len Vocab; nil skips the output layer, for prompt
// tokens whose logits are not needed). The cache must not be full.
func (d *Decoder) Step(tok int32, logits []float32) error {
	c := d.c
	if d.n >= d.cap {
		return fmt.Errorf("model: decoder cache full (%d tokens)", d.cap)
	}
	if tok < 0 || int(tok) >= c.Vocab {
		return fmt.Errorf("model: token %d outside the vocabulary %d", tok, c.Vocab)
	}
	if logits != nil && len(logits) != c.Vocab {
		return fmt.Errorf("model: %d logits for vocabulary %d", len(logits), c.Vocab)
	}
	hd, dim := c.HeadDim(), c.Dim
	kvd := c.KVHeads * hd
	pos := d.n - d.doc
	copy(d.x, d.emb[int(tok)*dim:(int(tok)+1)*dim])
	for l, w := range d.lw {
		rmsnorm(d.xn, d.x, w.ln1, c.NormEps)
		kc, vc := d.k[l][d.n*kvd:(d.n+1)*kvd], d.v[l][d.n*kvd:(d.n+1)*kvd]
		matvec(d.q, w.q, d.xn)
		matvec(kc, w.k, d.xn)
		matvec(vc, w.v, d.xn)
		d.ropeAt(d.q, c.Heads, pos)
		d.ropeAt(kc, c.KVHeads, pos)
		group := c.Heads / c.KVHeads
		scale := 1 / math.Sqrt(float64(hd))
		for h := 0; h < c.Heads; h++ {
			q := d.q[h*hd : (h+1)*hd]
			kvh := h / group
			mx := math.Inf(-1)
			sc := d.scores[:d.n-d.doc+1]
			for s := d.doc; s <= d.n; s++ {
				kk := d.k[l][s*kvd+kvh*hd : s*kvd+(kvh+1)*hd]
				var dot float64
				for j, qv := range q {
					dot += float64(qv) * float64(kk[j])
				}
				sc[s-d.doc] = dot * scale
				mx = math.Max(mx, dot*scale)
			}
			var sum float64
			for i := range sc {
				sc[i] = math.Exp(sc[i] - mx)
				sum += sc[i]
			}
			out := d.att[h*hd : (h+1)*hd]
			acc := d.acc
			clear(acc)
			for s := d.doc; s <= d.n; s++ {
				p := sc[s-d.doc] / sum
				vv := d.v[l][s*kvd+kvh*hd : s*kvd+(kvh+1)*hd]
				for j := range acc {
					acc[j] += p * float64(vv[j])
				}
			}
			for j := range out {
				out[j] = float32(acc[j])
			}
		}
		matvec(d.o, w.o, d.att)
		for i := range d.x {
			d.x[i] += d.o[i]
		}
		rmsnorm(d.xn, d.x, w.ln2, c.NormEps)
		matvec(d.g, w.gate, d.xn)
		matvec(d.u, w.up, d.xn)
		for i, g := range d.g {
			d.g[i] = float32(float64(g) / (1 + math.Exp(-float64(g))) * float64(d.u[i]))
		}
		matvec(d.o, w.down, d.g)
		for i := range d.x {
			d.x[i] += d.o[i]
		}
	}
	d.n++
	if int(tok) == c.EOS {
		d.doc = d.n // the next token starts a new document
	}
	if logits != nil {
		rmsnorm(d.xn, d.x, d.norm, c.NormEps)
		matvecPar(logits, d.head, d.xn)
	}
	return nil
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
			x[j] = float32(a*co - b*s)
			x[j+half] = float32(b*co + a*s)
		}
	}
}

func rmsnorm(out, x, w []float32, eps float64) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	for i, v := range x {
		out[i] = float32(float64(v) * r * float64(w[i]))
	}
}

// matvec: out[r] = Σ_c w[r·len(x)+c]·x[c], accumulated in float32 over four
// lanes.
func matvec(out, w, x []float32) {
	n := len(x)
	for r := range out {
		row := w[r*n : (r+1)*n]
		var s0, s1, s2, s3 float32
		c := 0
		for ; c+4 <= n; c += 4 {
			s0 += row[c] * x[c]
			s1 += row[c+1] * x[c+1]
			s2 += row[c+2] * x[c+2]
			s3 += row[c+3] * x[c+3]
		}
		for ; c < n; c++ {
			s0 += row[c] * x[c]
		}
		out[r] = (s0 + s1) + (s2 + s3)
	}
}

// matvecPar splits the rows of a large product (the output layer) across
// the CPUs; every row is computed as matvec does, so the result does not
// depend on the split.
func matvecPar(out, w, x []float32) {
	parts := min(runtime.GOMAXPROCS(0), max(1, len(out)/2048))
	if parts <= 1 {
		matvec(out, w, x)
		return
	}
	var wg sync.WaitGroup
	n := len(x)
	step := (len(out) + parts - 1) / parts
	for lo := 0; lo < len(out); lo += step {
		hi := min(lo+step, len(out))
		wg.Add(1)
		go func() {
			defer wg.Done()
			matvec(out[lo:hi], w[lo*n:hi*n], x)
		}()
	}
	wg.Wait()
}
