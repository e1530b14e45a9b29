package eval

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

// Item is one multiple-choice question, a line of a task file (JSONL):
//
//	{"context": "…", "choices": ["…", "…"], "answer": 0, "language": "ko"}
//
// Each choice is scored by the log-likelihood of its tokens after the
// context's (tokenised separately, so a choice starts on a token boundary;
// begin choices with the space or newline that would separate them).
// language is that of the answer ("ko", "en", …); KMMLU-style tasks fit
// this form with the question and options in context and the answer
// letters or texts as choices.
type Item struct {
	Context  string   `json:"context"`
	Choices  []string `json:"choices"`
	Answer   int      `json:"answer"`
	Language string   `json:"language"`
}

// maxItemLine bounds one JSONL line.
const maxItemLine = 1 << 20

// DecodeItems reads a JSONL task file: one Item per non-blank line, every
// field checked; errors name the line.
func DecodeItems(r io.Reader) ([]Item, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxItemLine)
	var out []Item
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var it Item
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(&it); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if d.More() {
			return nil, fmt.Errorf("line %d: more than one JSON value", line)
		}
		switch {
		case it.Context == "":
			return nil, fmt.Errorf("line %d: empty context", line)
		case len(it.Choices) < 2:
			return nil, fmt.Errorf("line %d: %d choices (at least 2)", line, len(it.Choices))
		case it.Answer < 0 || it.Answer >= len(it.Choices):
			return nil, fmt.Errorf("line %d: answer %d outside the %d choices", line, it.Answer, len(it.Choices))
		case it.Language == "":
			return nil, fmt.Errorf("line %d: no language", line)
		}
		for i, c := range it.Choices {
			if c == "" {
				return nil, fmt.Errorf("line %d: choice %d is empty", line, i)
			}
		}
		out = append(out, it)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// TaskResult is the accuracy on one task in one language: acc picks the
// choice of highest log-likelihood, acc_norm the highest per byte of the
// choice.
type TaskResult struct {
	Task     string  `json:"task"`
	Language string  `json:"language"`
	N        int     `json:"n"`
	Acc      float64 `json:"acc"`
	AccNorm  float64 `json:"acc_norm"`
}

// MultipleChoice scores items and returns the accuracy per language.
func MultipleChoice(m *model.Model, tk *tokenizer.Tokenizer, task string, items []Item) ([]TaskResult, error) {
	type tally struct{ n, acc, norm int }
	by := map[string]*tally{}
	for i, it := range items {
		ctx := tk.Encode(it.Context)
		best, bestNorm := -1, -1
		var bestLL, bestLLNorm float64
		for ci, ch := range it.Choices {
			ll, err := logLikelihood(m, ctx, tk.Encode(ch))
			if err != nil {
				return nil, fmt.Errorf("%s item %d choice %d: %w", task, i, ci, err)
			}
			norm := ll / float64(len(ch))
			if best < 0 || ll > bestLL {
				best, bestLL = ci, ll
			}
			if bestNorm < 0 || norm > bestLLNorm {
				bestNorm, bestLLNorm = ci, norm
			}
		}
		t := by[it.Language]
		if t == nil {
			t = &tally{}
			by[it.Language] = t
		}
		t.n++
		if best == it.Answer {
			t.acc++
		}
		if bestNorm == it.Answer {
			t.norm++
		}
	}
	var out []TaskResult
	for lang, t := range by {
		out = append(out, TaskResult{Task: task, Language: lang, N: t.n, Acc: float64(t.acc) / float64(t.n), AccNorm: float64(t.norm) / float64(t.n)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Language < out[j].Language })
	return out, nil
}

// logLikelihood is Σ log p(choice token | everything before it), in nats.
func logLikelihood(m *model.Model, ctx, choice []int32) (float64, error) {
	if len(choice) == 0 {
		return 0, fmt.Errorf("choice has no tokens")
	}
	if len(ctx) == 0 {
		ctx = []int32{int32(m.Config.BOS)}
	}
	seq := append(append([]int32(nil), ctx...), choice...)
	return spanLogLikelihood(m, seq, len(ctx))
}

// spanLogLikelihood is Σ log p(seq[k] | seq[:k]) over k ≥ first (first ≥
// 1). Sequences longer than the model's window are scored in windows that
// give each target at least half a window of context (all of it when the
// sequence is shorter).
func spanLogLikelihood(m *model.Model, seq []int32, first int) (float64, error) {
	W := m.Config.MaxSeq
	var ll float64
	for i := first; i < len(seq); {
		j := min(len(seq), i+max(1, W/2)) // targets [i, j) in this window
		lo := max(0, j-1-W)
		T := j - 1 - lo
		tokens := seq[lo : j-1]
		targets := make([]int32, T)
		n := 0
		for p := range targets {
			targets[p] = kernels.IgnoreIndex
			if k := lo + p + 1; k >= i {
				targets[p] = seq[k]
				n++
			}
		}
		l, err := m.Forward(tokens, targets, 1, T, false)
		if err != nil {
			return 0, err
		}
		ll -= float64(l) * float64(n)
		i = j
	}
	return ll, nil
}

// TranslationTask builds the built-in bilingual task from aligned
// {Korean, English} paragraph pairs (sharding.BuiltinPairs): given a
// paragraph in one language, pick its translation among four (three
// distractors drawn, with seed, from the other pairs). Items whose answer
// is English are "en", Korean "ko".
func TranslationTask(kopairs [][2]string, seed uint64) []Item {
	type pair struct{ ko, en string }
	pairs := make([]pair, len(kopairs))
	for i, p := range kopairs {
		pairs[i] = pair{p[0], p[1]}
	}
	r := rand.New(rand.NewPCG(seed, 0x7a5c))
	var out []Item
	for i, p := range pairs {
		for _, toEN := range []bool{true, false} {
			// three distinct other pairs
			others := r.Perm(len(pairs))
			var ds []pair
			for _, j := range others {
				if j != i && len(ds) < 3 {
					ds = append(ds, pairs[j])
				}
			}
			ans := r.IntN(len(ds) + 1)
			it := Item{Answer: ans}
			pick := func(q pair) string {
				if toEN {
					return " " + q.en
				}
				return " " + q.ko
			}
			if toEN {
				it.Context, it.Language = "한국어: "+p.ko+"\nEnglish:", "en"
			} else {
				it.Context, it.Language = "English: "+p.en+"\n한국어:", "ko"
			}
			k := 0
			for c := 0; c <= len(ds); c++ {
				if c == ans {
					it.Choices = append(it.Choices, pick(p))
				} else {
					it.Choices = append(it.Choices, pick(ds[k]))
					k++
				}
			}
			out = append(out, it)
		}
	}
	return out
}
