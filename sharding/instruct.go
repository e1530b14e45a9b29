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
const InstructGenerator = "fomnet-instruct/v3"

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
// training split (heldOut false) or the evaluation split (true): sums of
// numbers below sumBelow, translations of the lexicon's words in both directions,
// and definitions, asked in Korean and in English in turn, each in one of
// several phrasings, no prompt twice (the lexicon's run out first: then
// only sums). A held-out prompt is new; what it asks was asked in training
// in another phrasing: the split measures following an instruction, not
// knowing a fact. Same arguments, same instructions.
func Instructions(seed uint64, n int, heldOut bool) []Instruction {
	r := rand.New(rand.NewPCG(seed, 0x1257))
	out := make([]Instruction, 0, n)
	seen := map[string]bool{}
	for tries := 0; len(out) < n && tries < 100*n+1000; tries++ {
		ko := len(out)%2 == 0 // Korean and English alike
		var g generated
		switch r.IntN(3) {
		case 0:
			g = sumInstruction(r, ko)
		case 1:
			g = translationInstruction(r, ko)
		default:
			g = definitionInstruction(r, ko)
		}
		in := g.in
		if in.HeldOut() != heldOut || seen[in.Prompt] {
			continue
		}
		seen[in.Prompt] = true
		in.Wrong, in.WrongKind = g.worse(r)
		out = append(out, in)
	}
	return out
}

// generated is an instruction with the makings of worse answers: a wrong
// one and the right one in the other language.
type generated struct {
	in           Instruction
	wrong, other string
}

// worse picks a verifiably worse answer and says how it is worse: wrong,
// in the other language, or cut short.
func (g generated) worse(r *rand.Rand) (string, string) {
	switch r.IntN(3) {
	case 0:
		return g.other, "language"
	case 1:
		if words := strings.Fields(g.in.Answer); len(words) > 1 {
			return strings.Join(words[:len(words)/2], " "), "unfinished"
		}
	}
	return g.wrong, "wrong"
}

func pick(r *rand.Rand, forms []string) string { return forms[r.IntN(len(forms))] }

// sumBelow bounds the numbers summed: one hundred sums, each asked in
// many phrasings, a fact a demo-sized model can learn in minutes.
const sumBelow = 10

func sumInstruction(r *rand.Rand, ko bool) generated {
	a, b := r.IntN(sumBelow), r.IntN(sumBelow)
	off := 1 + r.IntN(5)
	return sumOf(ko, a, b, off, "arithmetic", sumPrompt(r, ko, a, b))
}

// sumOf is the instruction prompt asking a+b, its worse answer off too
// high.
func sumOf(ko bool, a, b, off int, kind, prompt string) generated {
	en, kr := fmt.Sprintf("The answer is %d.", a+b), fmt.Sprintf("답은 %d입니다.", a+b)
	in := Instruction{Kind: kind, Lang: "en", AnswerLang: "en", Answer: en, Prompt: prompt}
	if ko {
		in.Lang, in.AnswerLang, in.Answer = "ko", "ko", kr
		return generated{in, fmt.Sprintf("답은 %d입니다.", a+b+off), en}
	}
	return generated{in, fmt.Sprintf("The answer is %d.", a+b+off), kr}
}

// sumPrompt asks for a+b in one of four phrasings.
func sumPrompt(r *rand.Rand, ko bool, a, b int) string {
	if ko {
		return fmt.Sprintf(pick(r, []string{"%d 더하기 %d는 얼마예요?", "%d와 %d를 더하면 얼마예요?", "%d에 %d를 더하면?", "%d 더하기 %d를 계산해 주세요."}), a, b)
	}
	return fmt.Sprintf(pick(r, []string{"What is %d plus %d?", "How much is %d plus %d?", "Add %d and %d.", "Please add %d and %d."}), a, b)
}

// another is a lexicon word other than w.
func another(r *rand.Rand, w int) int {
	o := r.IntN(len(lexicon) - 1)
	if o >= w {
		o++
	}
	return o
}

func translationInstruction(r *rand.Rand, ko bool) generated {
	i := r.IntN(len(lexicon))
	w, o := lexicon[i], lexicon[another(r, i)]
	if ko { // asked in Korean for the English word
		return generated{Instruction{Kind: "translation", Lang: "ko", AnswerLang: "en", Answer: w.en,
			Prompt: fmt.Sprintf(pick(r, []string{"'%s'를 영어로 번역해 주세요.", "'%s'는 영어로 뭐예요?", "'%s'를 영어로 하면?"}), w.ko)}, o.en, w.ko}
	}
	return generated{Instruction{Kind: "translation", Lang: "en", AnswerLang: "ko", Answer: w.ko,
		Prompt: fmt.Sprintf(pick(r, []string{"Translate '%s' into Korean.", "What is '%s' in Korean?", "How do you say '%s' in Korean?"}), w.en)}, o.ko, w.en}
}

func definitionInstruction(r *rand.Rand, ko bool) generated {
	i := r.IntN(len(lexicon))
	w, o := lexicon[i], lexicon[another(r, i)]
	kr := func(def string) string { return fmt.Sprintf("%s(은)는 %s입니다.", w.ko, def) }
	en := func(def string) string { return fmt.Sprintf("A %s is %s.", w.en, def) }
	if ko {
		return generated{Instruction{Kind: "definition", Lang: "ko", AnswerLang: "ko", Answer: kr(w.koDef),
			Prompt: fmt.Sprintf(pick(r, []string{"%s(이)란 무엇인가요?", "'%s'의 뜻은 뭐예요?", "%s를 설명해 주세요."}), w.ko)}, kr(o.koDef), en(w.enDef)}
	}
	return generated{Instruction{Kind: "definition", Lang: "en", AnswerLang: "en", Answer: en(w.enDef),
		Prompt: fmt.Sprintf(pick(r, []string{"What is a %s?", "Define '%s'.", "What does '%s' mean?"}), w.en)}, en(o.enDef), kr(w.koDef)}
}

// Conversation is a generated multi-turn exchange: user and assistant
// turns alternating, every assistant turn checkable (Answers: the
// assistant turns' texts, in order).
type Conversation struct {
	Kind     string // what its first question asks: arithmetic, word problem, definition
	Lang     string // the first question's language
	Messages []tokenizer.Message
}

// HeldOut says whether a conversation belongs to the evaluation split: by
// its first question, as Instruction.HeldOut.
func (c Conversation) HeldOut() bool {
	return Instruction{Prompt: c.Messages[0].Content}.HeldOut()
}

// Conversations generates n multi-turn conversations from seed, from the
// training split (heldOut false) or the evaluation split (true): a
// question (a sum, an arithmetic word problem or a definition, in Korean
// or English in turn), its answer, then a request for the same answer in
// the other language ("영어로 다시 말해 주세요." / "Now say it in Korean.")
// answered in that language; every second conversation goes on with an
// unrelated question asked in the other language, answered in it. No
// first question twice; same arguments, same conversations.
func Conversations(seed uint64, n int, heldOut bool) []Conversation {
	r := rand.New(rand.NewPCG(seed, 0x7e57))
	out := make([]Conversation, 0, n)
	seen := map[string]bool{}
	for tries := 0; len(out) < n && tries < 100*n+1000; tries++ {
		ko := len(out)%2 == 0
		first := followable(r, ko)
		c := Conversation{Kind: first.in.Kind, Lang: first.in.Lang, Messages: first.in.Messages()}
		if c.HeldOut() != heldOut || seen[first.in.Prompt] {
			continue
		}
		seen[first.in.Prompt] = true
		again := pick(r, []string{"Now say it in Korean.", "Please answer in Korean."})
		if ko {
			again = pick(r, []string{"영어로 다시 말해 주세요.", "영어로 대답해 주세요."})
		}
		c.Messages = append(c.Messages, tokenizer.Message{Role: tokenizer.RoleUser, Content: again},
			tokenizer.Message{Role: tokenizer.RoleAssistant, Content: first.other})
		if len(out)%4 < 2 { // half go on, in the other language
			c.Messages = append(c.Messages, followable(r, !ko).in.Messages()...)
		}
		out = append(out, c)
	}
	return out
}

// followable is a question whose answer can be asked for again in the
// other language: a sum, a word problem or a definition.
func followable(r *rand.Rand, ko bool) generated {
	switch r.IntN(3) {
	case 0:
		return sumInstruction(r, ko)
	case 1:
		return wordProblem(r, ko)
	}
	return definitionInstruction(r, ko)
}

// wordProblem asks a sum as a short story: someone has a things and gets
// b more. The Korean names end in a vowel, so 는 always fits.
func wordProblem(r *rand.Rand, ko bool) generated {
	a, b := r.IntN(sumBelow), r.IntN(sumBelow)
	off := 1 + r.IntN(5)
	things := [][2]string{{"사과", "apples"}, {"사탕", "sweets"}, {"공책", "notebooks"}, {"연필", "pencils"}}
	who := [][2]string{{"민수", "Minsu"}, {"수지", "Suji"}, {"하나", "Hana"}, {"지우", "Jiwoo"}}
	th, nm := things[r.IntN(len(things))], who[r.IntN(len(who))]
	prompt := fmt.Sprintf("%s has %d %s and gets %d more. How many %s does %s have now?", nm[1], a, th[1], b, th[1], nm[1])
	if ko {
		prompt = fmt.Sprintf("%s는 %s %d개를 가지고 있어요. %s %d개를 더 받으면 모두 몇 개예요?", nm[0], th[0], a, th[0], b)
	}
	return sumOf(ko, a, b, off, "word problem", prompt)
}
