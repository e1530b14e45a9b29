package sharding

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"

	"github.com/fomnet/fomnet/tokenizer"
)

// InstructGenerator names the built-in post-training generator in
// provenance.
const InstructGenerator = "fomnet-instruct/v1"

// Instruction is one generated exchange for post-training: a question in
// Lang, the answer expected (in AnswerLang: the question's, or a
// translation's target) and a verifiably worse answer with what is wrong
// with it (WrongKind: "wrong" result, the other "language", "unfinished").
type Instruction struct {
	Kind       string // arithmetic, translation, definition
	Lang       string
	AnswerLang string
	Prompt     string
	Answer     string
	Wrong      string
	WrongKind  string
}

// Messages is the exchange as a conversation with the expected answer.
func (in Instruction) Messages() []tokenizer.Message {
	return []tokenizer.Message{{Role: tokenizer.RoleUser, Content: in.Prompt}, {Role: tokenizer.RoleAssistant, Content: in.Answer}}
}

// HeldOut says whether an instruction belongs to the evaluation split: a
// tenth of the prompts, by hash, which training never sees.
func (in Instruction) HeldOut() bool {
	h := fnv.New32a()
	h.Write([]byte(in.Prompt))
	return h.Sum32()%10 == 0
}

// Instructions generates n instructions from seed, bilingual, from the
// training split (heldOut false) or the evaluation split (true): sums,
// translations of the lexicon's words in both directions, and definitions,
// asked in Korean and in English in turn, no prompt twice (the lexicon's run out
// first: then only sums). Same arguments, same instructions.
func Instructions(seed uint64, n int, heldOut bool) []Instruction {
	r := rand.New(rand.NewPCG(seed, 0x1257))
	out := make([]Instruction, 0, n)
	seen := map[string]bool{}
	for tries := 0; len(out) < n && tries < 100*n+1000; tries++ {
		var in Instruction
		ko := len(out)%2 == 0 // Korean and English alike
		switch r.IntN(3) {
		case 0:
			in = sumInstruction(r, ko)
		case 1:
			in = translationInstruction(r, ko)
		default:
			in = definitionInstruction(r, ko)
		}
		if in.HeldOut() != heldOut || seen[in.Prompt] {
			continue
		}
		seen[in.Prompt] = true
		in.Wrong, in.WrongKind = worse(r, in)
		out = append(out, in)
	}
	return out
}

func sumInstruction(r *rand.Rand, ko bool) Instruction {
	a, b := r.IntN(50), r.IntN(50)
	if ko {
		return Instruction{Kind: "arithmetic", Lang: "ko", AnswerLang: "ko",
			Prompt: fmt.Sprintf("%d 더하기 %d는 얼마예요?", a, b), Answer: fmt.Sprintf("%d 더하기 %d는 %d입니다.", a, b, a+b)}
	}
	return Instruction{Kind: "arithmetic", Lang: "en", AnswerLang: "en",
		Prompt: fmt.Sprintf("What is %d plus %d?", a, b), Answer: fmt.Sprintf("%d plus %d is %d.", a, b, a+b)}
}

func translationInstruction(r *rand.Rand, ko bool) Instruction {
	w := lexicon[r.IntN(len(lexicon))]
	if ko { // asked in Korean for the English word
		return Instruction{Kind: "translation", Lang: "ko", AnswerLang: "en",
			Prompt: fmt.Sprintf("'%s'를 영어로 번역해 주세요.", w.ko), Answer: w.en}
	}
	return Instruction{Kind: "translation", Lang: "en", AnswerLang: "ko",
		Prompt: fmt.Sprintf("Translate '%s' into Korean.", w.en), Answer: w.ko}
}

func definitionInstruction(r *rand.Rand, ko bool) Instruction {
	w := lexicon[r.IntN(len(lexicon))]
	if ko {
		return Instruction{Kind: "definition", Lang: "ko", AnswerLang: "ko",
			Prompt: fmt.Sprintf("%s(이)란 무엇인가요?", w.ko), Answer: fmt.Sprintf("%s(은)는 %s입니다.", w.ko, w.koDef)}
	}
	return Instruction{Kind: "definition", Lang: "en", AnswerLang: "en",
		Prompt: fmt.Sprintf("What is a %s?", w.en), Answer: fmt.Sprintf("A %s is %s.", w.en, w.enDef)}
}

// worse gives an answer that is verifiably worse than in's and why: a
// wrong sum or word, the answer in the other language, or the answer cut
// short.
func worse(r *rand.Rand, in Instruction) (string, string) {
	switch r.IntN(3) {
	case 0: // the other language
		if other := otherLanguage(in); other != "" {
			return other, "language"
		}
		fallthrough
	case 1: // wrong
		return wrongAnswer(r, in), "wrong"
	}
	words := strings.Fields(in.Answer) // unfinished
	if len(words) > 1 {
		return strings.Join(words[:len(words)/2], " "), "unfinished"
	}
	return wrongAnswer(r, in), "wrong"
}

func otherLanguage(in Instruction) string {
	for _, w := range lexicon {
		switch {
		case in.Kind == "translation" && in.Answer == w.en:
			return w.ko
		case in.Kind == "translation" && in.Answer == w.ko:
			return w.en
		case in.Kind == "definition" && in.Lang == "ko" && strings.HasPrefix(in.Answer, w.ko+"("):
			return fmt.Sprintf("A %s is %s.", w.en, w.enDef)
		case in.Kind == "definition" && in.Lang == "en" && strings.HasPrefix(in.Answer, "A "+w.en+" "):
			return fmt.Sprintf("%s(은)는 %s입니다.", w.ko, w.koDef)
		}
	}
	var a, b int
	if in.Lang == "ko" {
		fmt.Sscanf(in.Prompt, "%d 더하기 %d", &a, &b)
		return fmt.Sprintf("%d plus %d is %d.", a, b, a+b)
	}
	fmt.Sscanf(in.Prompt, "What is %d plus %d", &a, &b)
	return fmt.Sprintf("%d 더하기 %d는 %d입니다.", a, b, a+b)
}

func wrongAnswer(r *rand.Rand, in Instruction) string {
	switch in.Kind {
	case "arithmetic":
		var a, b int
		if in.Lang == "ko" {
			fmt.Sscanf(in.Prompt, "%d 더하기 %d", &a, &b)
			return fmt.Sprintf("%d 더하기 %d는 %d입니다.", a, b, a+b+1+r.IntN(9))
		}
		fmt.Sscanf(in.Prompt, "What is %d plus %d", &a, &b)
		return fmt.Sprintf("%d plus %d is %d.", a, b, a+b+1+r.IntN(9))
	}
	for { // another word of the lexicon, in the answer's form
		w := lexicon[r.IntN(len(lexicon))]
		var s string
		switch {
		case in.Kind == "translation" && in.AnswerLang == "en":
			s = w.en
		case in.Kind == "translation":
			s = w.ko
		case in.Lang == "ko":
			s = fmt.Sprintf("%s(은)는 %s입니다.", strings.SplitN(in.Answer, "(", 2)[0], w.koDef)
		default:
			s = strings.SplitN(in.Answer, " is ", 2)[0] + " is " + w.enDef + "."
		}
		if s != in.Answer {
			return s
		}
	}
}
