package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
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

// demoModel is the demo preset, initialised, on one compute thread.
func demoModel(b *testing.B) (*Model, Config) { return presetModel(b, "demo") }

// presetModel is a preset with random weights.
func presetModel(b *testing.B, preset string) (*Model, Config) {
	c, _ := Preset(preset)
	m, err := New(backend(b, cpu.Options{}), c) // the decoder takes the backend's threads: all
	if err != nil {
		b.Fatal(err)
	}
	m.Init(1)
	return m, c
}

// go test -run X -bench Generate ./model: tokens per second of cached
// decoding for the demo preset (prompt of 16 tokens, 128 new tokens).
func BenchmarkGenerateDemo(b *testing.B) {
	m, c := demoModel(b)
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

// go test -run X -bench GenerateBatch ./model: tokens per second of
// batched decoding for the demo preset: 64 prompts of 16 tokens, 128 new
// tokens each, batch sequences at a time, sampled (temperature 0.8, top-p
// 0.95) as a generation job would.
func BenchmarkGenerateBatch(b *testing.B) {
	benchGenerateBatch(b, "demo", []int{1, 8, 64}, []float64{0, 0.8}, 128)
}

// BenchmarkGenerateBatchGPT2: the same for the gpt2-small-like preset
// (124M parameters), greedy, 32 new tokens.
func BenchmarkGenerateBatchGPT2(b *testing.B) {
	benchGenerateBatch(b, "gpt2-small-like", []int{1, 64}, []float64{0}, 32)
}

// benchGenerateBatch decodes requests of 16-token prompts, batch at a time
// (at least 8 requests), and reports tokens per second.
func benchGenerateBatch(b *testing.B, preset string, batches []int, temps []float64, maxTokens int) {
	m, c := presetModel(b, preset)
	reqs := make([]GenRequest, 64)
	for i := range reqs {
		reqs[i].Seed = uint64(i)
		for j := range 16 {
			reqs[i].Prompt = append(reqs[i].Prompt, int32('a'+(i*7+j)%26))
		}
	}
	noEOS := func(_ []int32, l []float32) { l[c.EOS] = float32(math.Inf(-1)) }
	for _, batch := range batches {
		for _, temp := range temps {
			b.Run(fmt.Sprintf("batch=%d/temp=%g", batch, temp), func(b *testing.B) {
				n := 0
				for range b.N {
					outs, err := GenerateBatch(m, reqs[:max(batch, 8)], SampleConfig{MaxTokens: maxTokens, Window: 512, Temperature: temp, TopP: 0.95, Mask: noEOS}, batch, nil)
					if err != nil {
						b.Fatal(err)
					}
					for _, o := range outs {
						n += len(o)
					}
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

// pickRef is pick's definition with the whole vocabulary sorted.
func pickRef(logits []float32, sc SampleConfig, r *rand.Rand) int32 {
	mx := slices.Max(logits)
	p := make([]float64, len(logits))
	var total float64
	for i, v := range logits {
		p[i] = math.Exp((float64(v) - float64(mx)) / sc.Temperature)
		total += p[i]
	}
	walk := func(set []int, mass float64) int32 {
		u := r.Float64() * mass
		last := set[0]
		for _, i := range set {
			if p[i] > 0 {
				last = i
			}
			if u -= p[i]; u <= 0 && p[i] > 0 {
				return int32(i)
			}
		}
		return int32(last)
	}
	order := make([]int, len(p))
	for i := range order {
		order[i] = i
	}
	if (sc.TopK <= 0 || sc.TopK >= len(p)) && (sc.TopP <= 0 || sc.TopP >= 1) {
		return walk(order, total)
	}
	sort.SliceStable(order, func(a, b int) bool { return p[order[a]] > p[order[b]] })
	set, mass := order, total
	if sc.TopK > 0 && sc.TopK < len(p) {
		set = order[:sc.TopK]
		byIndex := slices.Sorted(slices.Values(set))
		mass = 0
		for _, i := range byIndex {
			mass += p[i]
		}
	}
	if sc.TopP > 0 && sc.TopP < 1 {
		var cum float64
		for n, i := range set {
			if cum += p[i]; cum >= sc.TopP*mass {
				set = set[:n+1]
				break
			}
		}
	}
	var m float64
	for _, i := range set {
		m += p[i]
	}
	return walk(set, m)
}

// TestPickMatchesDefinition: pick, sorting only the tokens above a falling
// threshold, draws what the whole-vocabulary definition draws, on peaked,
// flat, tied and masked logits.
func TestPickMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 3000 {
		logits := make([]float32, 1+rng.IntN(600))
		spread := []float64{0.01, 1, 8, 40}[trial%4]
		for i := range logits {
			logits[i] = float32(math.Round(rng.NormFloat64()*spread*4) / 4) // ties
			if rng.IntN(10) == 0 {
				logits[i] = float32(math.Inf(-1))
			}
		}
		logits[rng.IntN(len(logits))] = 3
		sc := SampleConfig{Temperature: []float64{0.3, 0.8, 1.5}[trial%3], TopK: []int{0, 1, 5, 50, 1000}[trial%5], TopP: []float64{0, 0.5, 0.9, 0.999}[trial/5%4]}
		seed := uint64(trial)
		got := pick(logits, sc, rand.New(rand.NewPCG(seed, 1)))
		want := pickRef(logits, sc, rand.New(rand.NewPCG(seed, 1)))
		if got != want {
			t.Fatalf("trial %d (%+v, %d tokens): pick %d, definition %d", trial, sc, len(logits), got, want)
		}
	}
}

// TestGenerateBatchMatchesAlone: every output of a batch is the bits
// Generate gives for its prompt and seed alone, whatever the batch size —
// sampled (temperature, top-k, top-p), prompts of different lengths, one
// holding an EOS (two documents), one empty, with a window small enough
// that caches are rebuilt mid-way, and a mask.
func TestGenerateBatchMatchesAlone(t *testing.T) {
	m := newTiny(t, backend(t, cpu.Options{Threads: 2}))
	c := m.Config
	var reqs []GenRequest
	for i := range 7 {
		var p []int32
		for j := range 1 + 5*i%11 {
			p = append(p, int32((i*31+j*7)%(c.Vocab-2)+1))
		}
		if i == 3 {
			p[1] = int32(c.EOS)
		}
		if i == 5 {
			p = nil
		}
		reqs = append(reqs, GenRequest{Prompt: p, Seed: uint64(100 + i)})
	}
	sc := SampleConfig{MaxTokens: 30, Temperature: 0.9, TopK: 40, TopP: 0.9, Window: 24,
		Mask: func(out []int32, l []float32) { l[len(out)%c.Vocab] = float32(math.Inf(-1)) }}
	var alone [][]int32
	for _, r := range reqs {
		sc := sc
		sc.Seed = r.Seed
		out, err := Generate(m, r.Prompt, sc, nil)
		if err != nil {
			t.Fatal(err)
		}
		alone = append(alone, out)
	}
	refilled := false
	for _, o := range alone {
		refilled = refilled || len(o) > 20
	}
	if !refilled {
		t.Fatalf("no output outgrew the window: %v", alone)
	}
	one := newTiny(t, backend(t, cpu.Options{Threads: 1})) // the decoder on one thread
	for _, batch := range []int{2, 3, 7, 16} {
		mb := m
		if batch == 7 {
			mb = one
		}
		got, err := GenerateBatch(mb, reqs, sc, batch, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range reqs {
			if !slices.Equal(got[i], alone[i]) {
				t.Fatalf("batch %d, request %d: %v, alone %v", batch, i, got[i], alone[i])
			}
		}
	}
}

// TestDecoderOnDevice: the decoder's device path (weights left on the
// model's backend, each step's rows uploaded and multiplied there), run
// here over the CPU backend, gives the host path's logits bit for bit —
// several slots at once, across a document boundary.
func TestDecoderOnDevice(t *testing.T) {
	c, _ := Preset("tiny")
	c.Tied = false
	m, err := New(backend(t, cpu.Options{Threads: 2}), c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(5)
	host, dev := newBatchDecoder(m, 64, 3, false), newBatchDecoder(m, 64, 3, true)
	defer host.Close()
	defer dev.Close()
	toks := []int32{'a', 'b', int32(c.EOS), 'c', 'd', 'e'}
	for step, tok := range toks {
		slots := []int{0, 1, 2}[:1+step%3]
		in := make([]int32, len(slots))
		a, b := make([][]float32, len(slots)), make([][]float32, len(slots))
		for i := range slots {
			in[i] = tok + int32(i)
			if tok == int32(c.EOS) {
				in[i] = tok
			}
			a[i], b[i] = make([]float32, c.Vocab), make([]float32, c.Vocab)
		}
		if err := host.StepRows(slots, in, a); err != nil {
			t.Fatal(err)
		}
		if err := dev.StepRows(slots, in, b); err != nil {
			t.Fatal(err)
		}
		for i := range slots {
			if !slices.Equal(a[i], b[i]) {
				t.Fatalf("step %d, slot %d: the device path's logits differ", step, slots[i])
			}
		}
	}
}
