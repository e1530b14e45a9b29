package eval

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

// Instruction scores agree with what the model does: an item whose
// expected answer is the model's own greedy answer is an exact match (in
// its script's language), another is not, and the preference accuracy
// follows the log-likelihoods of the two answers computed independently.
func TestInstructions(t *testing.T) {
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	text := strings.Repeat("오늘 아침에는 비가 조금 내렸다. It rained a little this morning. ", 20)
	tk, err := tokenizer.Train(context.Background(), slices.Values([]string{text}), tokenizer.TrainConfig{Vocab: 300})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := model.Preset("tiny")
	c.Vocab = tk.Vocab()
	c.EOS, c.BOS = specialIDs(tk)
	m, err := model.New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(5)
	end, _ := tk.SpecialID(tokenizer.EndTurn)
	prompt, _ := tk.EncodeChat([]tokenizer.Message{{Role: tokenizer.RoleUser, Content: "비가 왔어요?"}}, true)
	out, err := model.Generate(m, prompt, model.SampleConfig{MaxTokens: 6, Stop: []int32{end}, Mask: tk.UTF8Mask()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := tk.Decode(out)
	items := []Instruction{
		{Lang: "ko", AnswerLang: ScriptLanguage(string(own)), Prompt: "비가 왔어요?", Answer: string(own), Wrong: "It rained."},
		{Lang: "ko", AnswerLang: "ko", Prompt: "비가 왔어요?", Answer: string(own) + " 네", Wrong: "비가"},
	}
	rs, err := Instructions(m, tk, items, 6)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].N != 2 || rs[0].ExactMatch != 0.5 || rs[0].Pairs != 2 {
		t.Fatalf("results %+v (own answer %q)", rs, own)
	}
	want := 0.0
	for _, it := range items {
		ll := func(s string) float64 {
			ids := append(tk.Encode(s), end)
			seq := append(append([]int32(nil), prompt...), ids...)
			lp := logProbs(t, m, seq[:len(seq)-1])
			var sum float64
			for k := range ids {
				p := len(prompt) - 1 + k
				sum += lp[p][seq[p+1]]
			}
			return sum
		}
		if ll(it.Answer) > ll(it.Wrong) {
			want += 0.5
		}
	}
	if math.Abs(rs[0].PrefAccuracy-want) > 1e-9 {
		t.Fatalf("preference accuracy %v, independently %v", rs[0].PrefAccuracy, want)
	}
	for s, lang := range map[string]string{"사과": "ko", "apple.": "en", "42.": "", "A 사과": "ko"} {
		if got := ScriptLanguage(s); got != lang {
			t.Errorf("ScriptLanguage(%q) = %q, want %q", s, got, lang)
		}
	}
}

func specialIDs(tk *tokenizer.Tokenizer) (eos, bos int) {
	e, _ := tk.SpecialID(tokenizer.EOS)
	b, _ := tk.SpecialID(tokenizer.BOS)
	return int(e), int(b)
}
