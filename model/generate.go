package model

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// SampleConfig controls generation.
type SampleConfig struct {
	MaxTokens   int     // new tokens at most
	Temperature float64 // 0 means greedy
	TopK        int     // 0 means no top-k cut
	TopP        float64 // nucleus: keep the smallest set of tokens with this much probability (0 or 1: off)
	Seed        uint64  // sampling stream; same seed, same text
	Window      int     // context length per forward pass (default: max_seq)
	// Mask, when set, may lower logits (to −Inf: never) before each pick,
	// given the tokens generated so far — e.g. tokenizer.UTF8Mask.
	// GenerateBatch calls it from several goroutines at once.
	Mask func(out []int32, logits []float32) `json:"-"`
	// Stop are tokens that end the text besides EOS (not returned): a
	// chat's <|end|>.
	Stop []int32 `json:"stop,omitempty"`
}

// Generate continues prompt and returns the new tokens, stopping at EOS
// (which is not returned). It decodes with a key/value cache (Decoder): the
// prompt is fed once, then each new token costs one token's worth of work.
// The context is the last Window tokens (default max_seq): when the cache
// fills, it is rebuilt from the newest half. emit, when set, sees each
// token as it is produced.
func Generate(m *Model, prompt []int32, sc SampleConfig, emit func(int32)) ([]int32, error) {
	var each func(int, int32)
	if emit != nil {
		each = func(_ int, t int32) { emit(t) }
	}
	outs, err := GenerateBatch(m, []GenRequest{{Prompt: prompt, Seed: sc.Seed}}, sc, 1, each)
	return outs[0], err
}

// GenRequest is one sequence for GenerateBatch: its prompt and the seed of
// its sampling stream.
type GenRequest struct {
	Prompt []int32
	Seed   uint64
}

// GenerateBatch generates a continuation of every request as Generate
// does (sc.Seed aside: each request has its own), batch sequences at a
// time through one Decoder: a finished sequence's slot takes the next
// request. Each output is the same bits as Generate of its prompt and seed
// alone, whatever batch and whatever else is in it (the Decoder's rows are
// independent), so one output can be checked by generating it again. emit,
// when set, sees (request index, token) as they come. On an error the
// outputs so far are returned with it.
func GenerateBatch(m *Model, reqs []GenRequest, sc SampleConfig, batch int, emit func(int, int32)) ([][]int32, error) {
	w := sc.Window
	if w <= 0 || w > m.Config.MaxSeq {
		w = m.Config.MaxSeq
	}
	outs := make([][]int32, len(reqs))
	if len(reqs) == 0 {
		return outs, nil
	}
	d := NewBatchDecoder(m, w, min(max(1, batch), len(reqs)))
	defer d.Close()
	type seq struct {
		req     int
		ctx     []int32 // prompt and output
		pending []int32 // tokens still to feed before the next pick
		r       *rand.Rand
		logits  []float32
	}
	// tail is what a slot is fed after a reset: the newest keep tokens.
	tail := func(ctx []int32, keep int) []int32 { return slices.Clone(ctx[max(0, len(ctx)-keep):]) }
	running := make([]*seq, d.Slots())
	next := 0
	var (
		slots  []int
		toks   []int32
		logits [][]float32
	)
	for {
		for s := range running {
			if running[s] == nil && next < len(reqs) {
				ctx := slices.Clone(reqs[next].Prompt)
				if len(ctx) == 0 {
					ctx = []int32{int32(m.Config.BOS)}
				}
				running[s] = &seq{req: next, ctx: ctx, pending: tail(ctx, w), logits: make([]float32, m.Config.Vocab),
					r: rand.New(rand.NewPCG(reqs[next].Seed, 0x5eed))}
				d.ResetSlot(s)
				next++
			}
		}
		slots, toks, logits = slots[:0], toks[:0], logits[:0]
		for s, q := range running {
			if q == nil {
				continue
			}
			slots, toks = append(slots, s), append(toks, q.pending[0])
			q.pending = q.pending[1:]
			var out []float32
			if len(q.pending) == 0 {
				out = q.logits
			}
			logits = append(logits, out)
		}
		if len(slots) == 0 {
			return outs, nil
		}
		if err := d.StepRows(slots, toks, logits); err != nil {
			return outs, err
		}
		picked := d.pickRows(slots, logits, func(i int) int32 {
			q := running[slots[i]]
			if len(outs[q.req]) >= sc.MaxTokens {
				return int32(m.Config.EOS)
			}
			if sc.Mask != nil {
				sc.Mask(outs[q.req], q.logits)
			}
			return pick(q.logits, sc, q.r)
		})
		for i, s := range slots {
			q := running[s]
			if logits[i] == nil {
				continue
			}
			out, tok := outs[q.req], picked[i]
			if tok == int32(m.Config.EOS) || slices.Contains(sc.Stop, tok) {
				running[s] = nil
				continue
			}
			outs[q.req] = append(out, tok)
			q.ctx = append(q.ctx, tok)
			if emit != nil {
				emit(q.req, tok)
			}
			switch {
			case len(outs[q.req]) == sc.MaxTokens:
				running[s] = nil
			case d.LenOf(s) == d.Cap():
				d.ResetSlot(s)
				q.pending = tail(q.ctx, max(1, w/2))
			default:
				q.pending = append(q.pending, tok)
			}
		}
	}
}

// pickRows runs pick(i) for every row i with logits, rows spread over the
// decoder's attention workers (each row's pick is its own: its logits, its
// stream).
func (d *Decoder) pickRows(slots []int, logits [][]float32, pick func(i int) int32) []int32 {
	out := make([]int32, len(slots))
	d.eachRow(len(slots), func(i, _ int) {
		if logits[i] != nil {
			out[i] = pick(i)
		}
	})
	return out
}

// pick chooses the next token from logits: the argmax (first on ties) when
// greedy; else a draw from p_i = exp((l_i − max)/T) restricted to the top
// TopK tokens (order: p descending, then index) and then to the nucleus,
// the shortest prefix of that order whose mass reaches TopP of the
// restricted mass (summed in index order). Without TopK or TopP the draw
// walks all tokens in index order; with them it walks the prefix in order.
// Only the tokens above a falling threshold are sorted, so a peaked
// distribution costs one pass over the vocabulary.
func pick(logits []float32, sc SampleConfig, r *rand.Rand) int32 {
	if sc.Temperature <= 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return int32(best)
	}
	mx := float32(math.Inf(-1))
	for _, v := range logits {
		mx = max(mx, v)
	}
	p := make([]float64, len(logits))
	var total float64
	for i, v := range logits {
		if !math.IsInf(float64(v), -1) {
			p[i] = math.Exp((float64(v) - float64(mx)) / sc.Temperature)
		}
		total += p[i]
	}
	topK := sc.TopK > 0 && sc.TopK < len(p)
	topP := sc.TopP > 0 && sc.TopP < 1
	if !topK && !topP {
		u := r.Float64() * total
		last := 0
		for i, v := range p {
			if v > 0 {
				last = i
			}
			if u -= v; u <= 0 && v > 0 {
				return int32(i)
			}
		}
		return int32(last) // rounding left some of u
	}
	for t := 1.0 / 256; ; t /= 256 {
		if prefix, ok := nucleus(p, t, total, sc, topK, topP); ok {
			var mass float64
			for _, i := range prefix {
				mass += p[i]
			}
			u := r.Float64() * mass
			for _, i := range prefix {
				if u -= p[i]; u <= 0 {
					return int32(i)
				}
			}
			return int32(prefix[len(prefix)-1])
		}
		if t == 0 {
			panic("unreachable: every token is a candidate")
		}
		if t < 1e-300 {
			t = 0
		}
	}
}

// nucleus sorts the tokens of probability at least t (p descending, then
// index) and returns the sampling prefix if it lies among them.
func nucleus(p []float64, t, total float64, sc SampleConfig, topK, topP bool) ([]int, bool) {
	type tp struct {
		p float64
		i int
	}
	var ts []tp
	for i, v := range p {
		if v >= t && v > 0 {
			ts = append(ts, tp{v, i})
		}
	}
	slices.SortFunc(ts, func(a, b tp) int {
		if c := cmp.Compare(b.p, a.p); c != 0 {
			return c
		}
		return a.i - b.i
	})
	cand := make([]int, len(ts))
	for k, x := range ts {
		cand[k] = x.i
	}
	mass := total
	if topK {
		if len(cand) < sc.TopK && t > 0 {
			return nil, false
		}
		cand = cand[:min(sc.TopK, len(cand))]
		byIndex := slices.Clone(cand)
		slices.Sort(byIndex)
		mass = 0
		for _, i := range byIndex {
			mass += p[i]
		}
	}
	if !topP {
		return cand, true
	}
	var cum float64
	for n, i := range cand {
		if cum += p[i]; cum >= sc.TopP*mass {
			return cand[:n+1], true
		}
	}
	if t > 0 && (!topK || len(cand) < sc.TopK) {
		return nil, false // the nucleus reaches below t
	}
	return cand, true // rounding: the whole restricted set
}

// DecodeBytes turns byte-level tokens into text, dropping special tokens;
// invalid UTF-8 from a half-trained model is kept as the replacement rune.
func DecodeBytes(tokens []int32) string {
	b := make([]byte, 0, len(tokens))
	for _, t := range tokens {
		if t >= 0 && t < 256 {
			b = append(b, byte(t))
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
