package eval

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

func setup(t testing.TB) (*model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	c, _ := model.Preset("tiny")
	m, err := model.New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	text := strings.Repeat("오늘 아침에는 비가 조금 내렸다. It rained a little this morning. ", 20)
	tk, err := tokenizer.Train(context.Background(), slices.Values([]string{text}), tokenizer.TrainConfig{Vocab: 300})
	if err != nil {
		t.Fatal(err)
	}
	return m, tk
}

// logProbs is an independent float64 log-softmax of the model's logits at
// every position of seq (one forward pass without targets).
func logProbs(t *testing.T, m *model.Model, seq []int32) [][]float64 {
	t.Helper()
	if _, err := m.Forward(seq, nil, 1, len(seq), false); err != nil {
		t.Fatal(err)
	}
	out := make([][]float64, len(seq))
	l := make([]float32, m.Config.Vocab)
	for p := range seq {
		m.Logits(l, 0, p)
		mx := math.Inf(-1)
		for _, v := range l {
			mx = math.Max(mx, float64(v))
		}
		var s float64
		for _, v := range l {
			s += math.Exp(float64(v) - mx)
		}
		out[p] = make([]float64, len(l))
		for i, v := range l {
			out[p][i] = float64(v) - mx - math.Log(s)
		}
	}
	return out
}

func TestLossAgainstLogSoftmax(t *testing.T) {
	m, tk := setup(t)
	eos, _ := tk.SpecialID(tokenizer.EOS)
	pad, _ := tk.SpecialID(tokenizer.PAD)
	docs := [][]int32{append(tk.Encode("오늘 아침에는 비가 조금 내렸다."), eos), append(tk.Encode("It rained a little."), eos)}
	rows := Rows(docs, 8, pad)
	rs, err := Loss(m, tk, []Group{{Language: "mixed", Source: "natural", Rows: rows}}, 2, pad)
	if err != nil {
		t.Fatal(err)
	}
	var nll float64
	var n, nb int64
	for _, row := range rows {
		lp := logProbs(t, m, row[:len(row)-1])
		for i := 0; i+1 < len(row); i++ {
			if row[i+1] == pad {
				continue
			}
			nll -= lp[i][row[i+1]]
			n++
			if !tk.IsSpecial(row[i+1]) {
				b, _ := tk.Token(row[i+1])
				nb += int64(len(b))
			}
		}
	}
	// Every token but the first of the stream is a target exactly once.
	total := len(docs[0]) + len(docs[1])
	if n != int64(total-1) || len(rs) != 1 || rs[0].Tokens != n || rs[0].Bytes != nb {
		t.Fatalf("targets %d (stream %d), result %+v, bytes %d", n, total, rs, nb)
	}
	want := nll / float64(n)
	if math.Abs(rs[0].Loss-want) > 1e-5*want {
		t.Fatalf("loss %g, log-softmax gives %g", rs[0].Loss, want)
	}
	if math.Abs(rs[0].BPB-nll/math.Ln2/float64(nb)) > 1e-5 || math.Abs(rs[0].PPL-math.Exp(want)) > 1e-3*math.Exp(want) {
		t.Fatalf("bpb %g ppl %g", rs[0].BPB, rs[0].PPL)
	}
}

func TestMultipleChoice(t *testing.T) {
	m, tk := setup(t)
	ctx := tk.Encode("오늘 아침에는")
	choices := []string{" 비가", " rained", " a little", " 조금"}
	// The independent score of each choice.
	ll := make([]float64, len(choices))
	for i, ch := range choices {
		ids := tk.Encode(ch)
		seq := append(append([]int32(nil), ctx...), ids...)
		lp := logProbs(t, m, seq[:len(seq)-1])
		for k := range ids {
			p := len(ctx) - 1 + k
			ll[i] += lp[p][seq[p+1]]
		}
		got, err := logLikelihood(m, ctx, ids)
		if err != nil || math.Abs(got-ll[i]) > 1e-4*math.Abs(ll[i]) {
			t.Fatalf("choice %q: %g, want %g (%v)", ch, got, ll[i], err)
		}
	}
	best := 0
	for i := range ll {
		if ll[i] > ll[best] {
			best = i
		}
	}
	items := []Item{{Context: "오늘 아침에는", Choices: choices, Answer: best, Language: "ko"},
		{Context: "오늘 아침에는", Choices: choices, Answer: (best + 1) % 4, Language: "en"}}
	rs, err := MultipleChoice(m, tk, "t", items)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Language != "en" || rs[0].Acc != 0 || rs[1].Acc != 1 || rs[1].N != 1 {
		t.Fatalf("%+v", rs)
	}
}

func testPairs() [][2]string {
	var ps [][2]string
	for i := range 30 {
		ps = append(ps, [2]string{fmt.Sprintf("문장 %d번입니다.", i), fmt.Sprintf("This is sentence %d.", i)})
	}
	return ps
}

func TestTranslationTask(t *testing.T) {
	items := TranslationTask(testPairs(), 1)
	if len(items) != 60 {
		t.Fatalf("%d items from 30 pairs", len(items))
	}
	langs := map[string]int{}
	for i, it := range items {
		langs[it.Language]++
		seen := map[string]bool{}
		for _, c := range it.Choices {
			if seen[c] {
				t.Fatalf("item %d repeats a choice", i)
			}
			seen[c] = true
		}
		if len(it.Choices) != 4 {
			t.Fatalf("item %d: %d choices", i, len(it.Choices))
		}
		ans := strings.TrimSpace(it.Choices[it.Answer])
		if it.Language == "en" && !strings.Contains(it.Context, "\nEnglish:") || strings.Contains(it.Context, ans) {
			t.Fatalf("item %d: %+v", i, it)
		}
	}
	if langs["ko"] != langs["en"] {
		t.Fatalf("%v", langs)
	}
	if !slices.EqualFunc(items, TranslationTask(testPairs(), 1), func(a, b Item) bool { return a.Answer == b.Answer && a.Context == b.Context }) {
		t.Fatal("same seed, different task")
	}
}

func TestDecodeItems(t *testing.T) {
	good := `{"context":"a","choices":["x","y"],"answer":1,"language":"en"}` + "\n\n" +
		`{"context":"b","choices":["x","y","z"],"answer":0,"language":"ko"}`
	items, err := DecodeItems(strings.NewReader(good))
	if err != nil || len(items) != 2 || items[1].Language != "ko" {
		t.Fatalf("%+v %v", items, err)
	}
	for _, c := range []struct{ in, want string }{
		{`{"context":"a","choices":["x"],"answer":0,"language":"en"}`, "line 1: 1 choices"},
		{"\n" + `{"context":"a","choices":["x","y"],"answer":2,"language":"en"}`, "line 2: answer 2"},
		{`{"context":"","choices":["x","y"],"answer":0,"language":"en"}`, "empty context"},
		{`{"context":"a","choices":["x",""],"answer":0,"language":"en"}`, "choice 1 is empty"},
		{`{"context":"a","choices":["x","y"],"answer":0}`, "no language"},
		{`{"context":"a","choices":["x","y"],"answer":0,"language":"en","extra":1}`, "unknown field"},
		{`{"context":"a"`, "line 1"},
	} {
		if _, err := DecodeItems(strings.NewReader(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
	}
}

func FuzzDecodeItems(f *testing.F) {
	f.Add([]byte(`{"context":"a","choices":["x","y"],"answer":1,"language":"en"}`))
	f.Add([]byte("{}\n{\"context\":1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := DecodeItems(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for _, it := range items {
			if it.Answer < 0 || it.Answer >= len(it.Choices) || len(it.Choices) < 2 {
				t.Fatalf("accepted %+v", it)
			}
		}
	})
}

// Past the model's window, scores come from overlapping windows: each
// target once, with at least half a window of context; within one window
// the result equals a single pass.
func TestSpanLogLikelihoodWindows(t *testing.T) {
	m, tk := setup(t)
	seq := tk.Encode(strings.Repeat("오늘 아침에는 비가 조금 내렸다. ", 30))
	if len(seq) < 3*m.Config.MaxSeq {
		t.Fatalf("only %d tokens", len(seq))
	}
	long, err := spanLogLikelihood(m, seq, 5)
	if err != nil {
		t.Fatal(err)
	}
	// Independent: every target scored with the same context the windows give.
	W := m.Config.MaxSeq
	var want float64
	for i := 5; i < len(seq); {
		j := min(len(seq), i+W/2)
		lo := max(0, j-1-W)
		lp := logProbs(t, m, seq[lo:j-1])
		for k := i; k < j; k++ {
			want += lp[k-1-lo][seq[k]]
		}
		i = j
	}
	if math.Abs(long-want) > 1e-4*math.Abs(want) {
		t.Fatalf("windows: %g, want %g", long, want)
	}
	short := seq[:40]
	one, _ := spanLogLikelihood(m, short, 10)
	lp := logProbs(t, m, short[:39])
	var w1 float64
	for k := 10; k < 40; k++ {
		w1 += lp[k-1][short[k]]
	}
	if math.Abs(one-w1) > 1e-4*math.Abs(w1) {
		t.Fatalf("one window: %g, want %g", one, w1)
	}
}
