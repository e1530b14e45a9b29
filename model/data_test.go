package model

import (
	"math"
	"slices"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
)

// A corpus of masked rows cuts each sequence at a row's start and leaves
// the tokens its mask does not mark out of the targets; it refuses
// sequences longer than a row and mixing with a stream of documents.
func TestCorpusMaskedRows(t *testing.T) {
	c := &Corpus{}
	rows := [][]int32{{10, 11, 12, 13, 14}, {20, 21, 22, 23, 24}}
	masks := [][]bool{{false, false, true, true, false}, {false, true, true, false, true}}
	if err := c.AddMaskedRows(rows, masks, 258, 256, 300); err != nil {
		t.Fatal(err)
	}
	tokens, targets := make([]int32, 2*4), make([]int32, 2*4)
	if err := c.Batch(7, 0, 2, 4, tokens, targets); err != nil {
		t.Fatal(err)
	}
	I := kernels.IgnoreIndex
	want := map[int32][]int32{10: {I, 12, 13, I}, 20: {21, 22, I, 24}}
	for i := range 2 {
		if tokens[i*4] != 10 && tokens[i*4] != 20 {
			t.Fatalf("sequence %d starts at %d, not a row's start", i, tokens[i*4])
		}
		if got := targets[i*4 : i*4+4]; !slices.Equal(got, want[tokens[i*4]]) {
			t.Fatalf("row %d's targets %v, want %v", tokens[i*4], got, want[tokens[i*4]])
		}
	}
	var seen []int32
	c.Windows(4, 4, func(tk, tg []int32, n int) error {
		seen = append(seen, tk[0], tk[4])
		if !slices.Equal(tg[:4], want[10]) || !slices.Equal(tg[4:8], want[20]) {
			t.Fatalf("windows' targets %v", tg)
		}
		return nil
	})
	if !slices.Equal(seen, []int32{10, 20}) {
		t.Fatalf("windows start at %v", seen)
	}
	if err := c.Batch(1, 0, 1, 5, make([]int32, 5), make([]int32, 5)); err == nil {
		t.Fatal("a sequence longer than a row was cut")
	}
	if err := (&Corpus{Tokens: []int32{1, 2}}).AddMaskedRows(rows, masks, 258, 256, 300); err == nil {
		t.Fatal("masked rows added to a stream")
	}
}

// The loss over a batch with ignored targets is the mean, over the others
// only, of −log softmax computed in float64 from the model's logits.
func TestMaskedLossReference(t *testing.T) {
	m := newTiny(t, backend(t, cpu.Options{Threads: 1}))
	const b, T = 2, 8
	tokens, targets := make([]int32, b*T), make([]int32, b*T)
	for i := range tokens {
		tokens[i] = int32((i*37 + 5) % 250)
		targets[i] = int32((i*53 + 11) % 250)
		if i%3 == 1 {
			targets[i] = kernels.IgnoreIndex
		}
	}
	loss, err := m.Forward(tokens, targets, b, T, false)
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, m.Config.Vocab)
	var sum float64
	n := 0
	for bi := range b {
		for ti := range T {
			tg := targets[bi*T+ti]
			if tg == kernels.IgnoreIndex {
				continue
			}
			if err := m.Logits(logits, bi, ti); err != nil {
				t.Fatal(err)
			}
			sum += nll64(logits, tg)
			n++
		}
	}
	if ref := sum / float64(n); math.Abs(float64(loss)-ref) > 1e-5*ref {
		t.Fatalf("masked loss %v, float64 reference %v over %d targets", loss, ref, n)
	}
}

// A corpus of preference pairs cuts whole pairs into batches, chosen rows
// first, and splits at a pair's start.
func TestCorpusPairs(t *testing.T) {
	const row, pad, eos = 5, 0, 1
	var rows [][]int32
	var masks [][]bool
	for k := range 6 { // pair k/2: chosen 10k+…, rejected 10k+…+5
		base := int32(10 * (k / 2))
		r := []int32{base + 2, base + 3, int32(k%2)*5 + base + 4, eos, pad}
		rows = append(rows, r)
		masks = append(masks, []bool{false, false, true, false, false})
	}
	c := &Corpus{}
	if err := c.AddPairRows(rows, masks, pad, eos, 100); err != nil {
		t.Fatal(err)
	}
	if err := c.AddPairRows(rows[:1], masks[:1], pad, eos, 100); err == nil {
		t.Fatal("half a pair was added")
	}
	const b, T = 4, 4
	tokens, targets := make([]int32, b*T), make([]int32, b*T)
	for step := range 20 {
		if err := c.Batch(3, step, b, T, tokens, targets); err != nil {
			t.Fatal(err)
		}
		for i := range b / 2 {
			ch, rj := tokens[i*T:(i+1)*T], tokens[(b/2+i)*T:(b/2+i+1)*T]
			if ch[0] != rj[0] || ch[1] != rj[1] || targets[(b/2+i)*T+1] != ch[2]+5 {
				t.Fatalf("step %d slot %d: chosen %v rejected %v (targets %v) are not one pair", step, i, ch, rj, targets)
			}
		}
	}
	if err := c.Batch(3, 0, 3, T, tokens, targets); err == nil {
		t.Fatal("a batch of 3 rows of pairs")
	}
	seen := 0
	c.Windows(4, T, func(tokens, targets []int32, rows int) error {
		seen += rows
		if tokens[0] != tokens[2*T] || targets[2*T+1] != targets[1]+5 {
			t.Fatalf("window: %v / %v", tokens, targets)
		}
		return nil
	})
	if seen != 4 {
		t.Fatalf("windows covered %d rows, want 4 (two whole batches of 2 pairs do not fit 3 pairs)", seen)
	}
	train, val := c.Split(0.4, eos)
	if len(val.Tokens)%(2*row) != 0 || !val.Pairs || !train.Pairs || len(val.Tokens) == 0 {
		t.Fatalf("split: %d train, %d val tokens", len(train.Tokens), len(val.Tokens))
	}
	if err := (&Corpus{Tokens: []int32{2, 3, eos}}).Append(c); err == nil {
		t.Fatal("pairs appended to a stream")
	}
}

// nll64 is −log softmax(logits)[tg], in float64.
func nll64(logits []float32, tg int32) float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(z) - float64(logits[tg])
}
