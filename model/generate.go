package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
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
	w := sc.Window
	if w <= 0 || w > m.Config.MaxSeq {
		w = m.Config.MaxSeq
	}
	if len(prompt) == 0 {
		prompt = []int32{int32(m.Config.BOS)}
	}
	d := NewDecoder(m, w)
	ctx := append([]int32(nil), prompt...)
	logits := make([]float32, m.Config.Vocab)
	// feed fills the cache with the newest tokens of ctx (up to keep) and
	// leaves the logits after the last one.
	feed := func(keep int) error {
		d.Reset()
		tail := ctx[max(0, len(ctx)-keep):]
		for i, t := range tail {
			var out []float32
			if i == len(tail)-1 {
				out = logits
			}
			if err := d.Step(t, out); err != nil {
				return err
			}
		}
		return nil
	}
	if err := feed(w); err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(sc.Seed, 0x5eed))
	var out []int32
	for len(out) < sc.MaxTokens {
		if sc.Mask != nil {
			sc.Mask(out, logits)
		}
		tok := pick(logits, sc, r)
		if tok == int32(m.Config.EOS) || slices.Contains(sc.Stop, tok) {
			break
		}
		out = append(out, tok)
		ctx = append(ctx, tok)
		if emit != nil {
			emit(tok)
		}
		if len(out) == sc.MaxTokens {
			break
		}
		var err error
		if d.Len() == d.Cap() {
			err = feed(max(1, w/2))
		} else {
			err = d.Step(tok, logits)
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

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
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	if sc.TopK > 0 && sc.TopK < len(idx) {
		idx = idx[:sc.TopK]
	}
	mx := float64(logits[idx[0]])
	p := make([]float64, len(idx))
	var sum float64
	for i, j := range idx {
		p[i] = math.Exp((float64(logits[j]) - mx) / sc.Temperature)
		sum += p[i]
	}
	if sc.TopP > 0 && sc.TopP < 1 {
		var acc float64
		for i := range p {
			acc += p[i]
			if acc >= sc.TopP*sum {
				idx, p, sum = idx[:i+1], p[:i+1], acc
				break
			}
		}
	}
	u := r.Float64() * sum
	for i, j := range idx {
		u -= p[i]
		if u <= 0 {
			return int32(j)
		}
	}
	return int32(idx[len(idx)-1])
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
