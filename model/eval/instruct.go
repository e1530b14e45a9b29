package eval

import (
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

// Instruction is one held-out post-training item: a user prompt, the
// expected answer and its language, and (for preference) a worse answer.
type Instruction struct {
	Lang, AnswerLang string
	Prompt, Answer   string
	Wrong            string // "" when there is none
}

// InstructResult scores a chat model on instructions asked in one
// language: how often the greedy answer is exactly the expected one, how
// often it is in the expected language, and — over the items with a worse
// answer — how often the model gives the expected answer the higher
// log-likelihood, with the mean margin in nats per answer token.
type InstructResult struct {
	Language      string  `json:"language"`
	N             int     `json:"n"`
	ExactMatch    float64 `json:"exact_match"`
	LanguageMatch float64 `json:"language_match"`
	Pairs         int     `json:"pairs"`
	PrefAccuracy  float64 `json:"preference_accuracy"`
	PrefMargin    float64 `json:"preference_margin"`
}

// Instructions answers each item greedily in the chat format (at most
// maxNew tokens, stopping at <|end|>) and scores the answers; items with
// Wrong are also scored as preference pairs. Results are per question
// language, sorted.
func Instructions(m *model.Model, tk *tokenizer.Tokenizer, items []Instruction, maxNew int) ([]InstructResult, error) {
	end, ok := tk.SpecialID(tokenizer.EndTurn)
	if !ok {
		return nil, fmt.Errorf("eval: the tokenizer has no %s: not a chat model", tokenizer.EndTurn)
	}
	by := map[string]*InstructResult{}
	for i, it := range items {
		r := by[it.Lang]
		if r == nil {
			r = &InstructResult{Language: it.Lang}
			by[it.Lang] = r
		}
		prompt, err := tk.EncodeChat([]tokenizer.Message{{Role: tokenizer.RoleUser, Content: it.Prompt}}, true)
		if err != nil {
			return nil, fmt.Errorf("eval: instruction %d: %w", i, err)
		}
		out, err := model.Generate(m, prompt, model.SampleConfig{MaxTokens: maxNew, Stop: []int32{end}, Mask: tk.UTF8Mask()}, nil)
		if err != nil {
			return nil, fmt.Errorf("eval: instruction %d: %w", i, err)
		}
		b, err := tk.Decode(out)
		if err != nil {
			return nil, fmt.Errorf("eval: instruction %d: %w", i, err)
		}
		got := strings.TrimSpace(string(b))
		r.N++
		if got == strings.TrimSpace(it.Answer) {
			r.ExactMatch++
		}
		if ScriptLanguage(got) == it.AnswerLang {
			r.LanguageMatch++
		}
		if it.Wrong == "" {
			continue
		}
		answer := func(s string) []int32 { return append(tk.Encode(s), end) }
		lc, err := logLikelihood(m, prompt, answer(it.Answer))
		if err != nil {
			return nil, err
		}
		lr, err := logLikelihood(m, prompt, answer(it.Wrong))
		if err != nil {
			return nil, err
		}
		r.Pairs++
		if lc > lr {
			r.PrefAccuracy++
		}
		r.PrefMargin += lc/float64(len(answer(it.Answer))) - lr/float64(len(answer(it.Wrong)))
	}
	var out []InstructResult
	for _, r := range by {
		n := float64(r.N)
		r.ExactMatch, r.LanguageMatch = r.ExactMatch/n, r.LanguageMatch/n
		if r.Pairs > 0 {
			r.PrefAccuracy, r.PrefMargin = r.PrefAccuracy/float64(r.Pairs), r.PrefMargin/float64(r.Pairs)
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Language < out[j].Language })
	return out, nil
}

// ScriptLanguage is the language a short answer is written in, by script:
// "ko" with any Hangul, "en" with Latin letters and none, else "".
func ScriptLanguage(s string) string {
	latin := false
	for _, r := range s {
		switch {
		case unicode.Is(unicode.Hangul, r):
			return "ko"
		case unicode.Is(unicode.Latin, r):
			latin = true
		}
	}
	if latin {
		return "en"
	}
	return ""
}
