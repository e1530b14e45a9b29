package model

import (
	"math"
	"slices"
	"testing"

	"github.com/fomnet/fomnet/kernels/cpu"
)

// The decoder, one token at a time through its cache, gives Forward's
// logits at every position — across documents (EOS inside the sequence),
// with weights scaled up so attention is sharp.
func TestDecoderMatchesForward(t *testing.T) {
	m := newTiny(t, backend(t, cpu.Options{Threads: 2}))
	c := m.Config
	w := make([]float32, m.Layout.Size)
	m.be.Download(w, m.Params)
	for i := range w {
		w[i] *= 3
	}
	m.be.Upload(m.Params, w)
	const T = 48
	tokens, _ := batch(5, c, 1, T)
	if _, err := m.Forward(tokens, nil, 1, T, false); err != nil {
		t.Fatal(err)
	}
	d := NewDecoder(m, T)
	want, got := make([]float32, c.Vocab), make([]float32, c.Vocab)
	eos := 0
	for p, tok := range tokens {
		if tok == int32(c.EOS) {
			eos++
		}
		if err := d.Step(tok, got); err != nil {
			t.Fatal(err)
		}
		if err := m.Logits(want, 0, p); err != nil {
			t.Fatal(err)
		}
		lo, hi, worst := math.Inf(1), math.Inf(-1), 0.0
		for i := range want {
			lo, hi = math.Min(lo, float64(want[i])), math.Max(hi, float64(want[i]))
			worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
		}
		if worst > 1e-4*(hi-lo) {
			t.Fatalf("position %d: logits differ by %g (range %g)", p, worst, hi-lo)
		}
	}
	if eos == 0 {
		t.Fatal("the sequence has no EOS; documents are not exercised")
	}
	if err := d.Step(1, got); err == nil {
		t.Fatal("a step into a full cache succeeded")
	}
}

// Generate with the cache continues as a full forward pass over the context
// would choose: greedy tokens agree with argmax of Forward's logits over the
// growing sequence (short enough to stay in one window).
func TestGenerateMatchesForwardArgmax(t *testing.T) {
	m := newTiny(t, backend(t, cpu.Options{Threads: 1}))
	prompt := []int32{'T', 'h', 'e', ' '}
	out, err := Generate(m, prompt, SampleConfig{MaxTokens: 20, Window: 64}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seq := append([]int32(nil), prompt...)
	logits := make([]float32, m.Config.Vocab)
	for _, tok := range out {
		if _, err := m.Forward(seq, nil, 1, len(seq), false); err != nil {
			t.Fatal(err)
		}
		m.Logits(logits, 0, len(seq)-1)
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		if int32(best) != tok {
			t.Fatalf("after %d tokens: generated %d, forward's argmax %d", len(seq), tok, best)
		}
		seq = append(seq, tok)
	}
	// Past the window the cache is rebuilt; generation goes on.
	long, err := Generate(m, prompt, SampleConfig{MaxTokens: 40, Window: 16}, nil)
	if err != nil || len(long) <= 16 {
		t.Fatalf("%d tokens, %v", len(long), err)
	}
	for i := range 12 { // before the 16-token window filled
		if long[i] != out[i] {
			t.Fatalf("token %d: %d with a 16-token window, %d with 64", i, long[i], out[i])
		}
	}
	// A stop token ends the text where it is drawn, unreturned.
	stopped, err := Generate(m, prompt, SampleConfig{MaxTokens: 20, Window: 64, Stop: []int32{out[5]}}, nil)
	first := slices.Index(out, out[5])
	if err != nil || !slices.Equal(stopped, out[:first]) {
		t.Fatalf("stopping at %d: %v, %v; without the stop %v", out[5], stopped, err, out)
	}
}

// go test -run X -bench Generate ./model: tokens per second of cached
// decoding for the demo preset (prompt of 16 tokens, 128 new tokens).
func BenchmarkGenerateDemo(b *testing.B) {
	be := backend(b, cpu.Options{Threads: 1})
	c, _ := Preset("demo")
	m, err := New(be, c)
	if err != nil {
		b.Fatal(err)
	}
	m.Init(1)
	prompt := make([]int32, 16)
	for i := range prompt {
		prompt[i] = int32('a' + i)
	}
	b.ResetTimer()
	n := 0
	for range b.N {
		out, err := Generate(m, prompt, SampleConfig{MaxTokens: 128, Window: 512, Mask: func(_ []int32, l []float32) {
			l[c.EOS] = float32(math.Inf(-1)) // run the full 128 tokens
		}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		n += len(out)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tokens/s")
}
