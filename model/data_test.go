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
			mx := math.Inf(-1)
			for _, v := range logits {
				mx = math.Max(mx, float64(v))
			}
			var z float64
			for _, v := range logits {
				z += math.Exp(float64(v) - mx)
			}
			sum += mx + math.Log(z) - float64(logits[tg])
			n++
		}
	}
	if ref := sum / float64(n); math.Abs(float64(loss)-ref) > 1e-5*ref {
		t.Fatalf("masked loss %v, float64 reference %v over %d targets", loss, ref, n)
	}
}
