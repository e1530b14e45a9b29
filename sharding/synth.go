package sharding

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// SynthGenerator names the built-in synthetic generator in provenance.
const SynthGenerator = "fomnet-synth/v2"

// SynthDoc is one generated document.
type SynthDoc struct {
	Text string
	Kind string // arithmetic, translation, dialogue, definition
}

// lexicon is a small bilingual word list written for this project.
var lexicon = []struct{ ko, en, kind, koDef, enDef string }{
	{"사과", "apple", "과일", "빨갛거나 초록색인 둥근 과일", "a round fruit that is red or green"},
	{"배", "pear", "과일", "달고 물이 많은 과일", "a sweet and juicy fruit"},
	{"물", "water", "마실 것", "목이 마를 때 마시는 맑은 액체", "the clear liquid we drink when thirsty"},
	{"책", "book", "물건", "글과 그림이 담긴 종이 묶음", "a bound set of pages with words and pictures"},
	{"학교", "school", "장소", "학생들이 배우는 곳", "a place where students learn"},
	{"기차", "train", "탈것", "철길 위를 달리는 긴 차", "a long vehicle that runs on rails"},
	{"바다", "sea", "자연", "지구를 덮은 넓고 짠 물", "the wide salty water that covers the earth"},
	{"컴퓨터", "computer", "기계", "계산하고 정보를 처리하는 기계", "a machine that computes and processes information"},
	{"친구", "friend", "사람", "서로 아끼고 가깝게 지내는 사람", "a person you care about and spend time with"},
	{"시장", "market", "장소", "물건을 사고파는 곳", "a place where things are bought and sold"},
	{"꽃", "flower", "식물", "식물에서 피어나는 아름다운 부분", "the colourful part of a plant that blooms"},
	{"모델", "model", "도구", "데이터에서 배운 규칙을 담은 프로그램", "a program that holds rules learned from data"},
}

var names = []struct{ ko, en string }{{"민수", "Minsu"}, {"지영", "Jiyoung"}, {"서준", "Seojun"}, {"하나", "Hana"}, {"Alex", "Alex"}, {"Sam", "Sam"}}

var weather = []struct{ ko, en string }{{"맑고 따뜻해요", "sunny and warm"}, {"비가 조금 와요", "a little rainy"}, {"흐리고 쌀쌀해요", "cloudy and chilly"}, {"눈이 와요", "snowing"}}

// Synthetic generates n documents from seed: arithmetic exercises,
// translation and definition items from a small lexicon, and short
// dialogues. Translation items are bilingual; the others come as a Korean
// document, an English one, or both languages in one (a third each), so
// that each language has monolingual text to learn from and be measured
// on. Same seed, same documents.
func Synthetic(seed uint64, n int) []SynthDoc {
	r := rand.New(rand.NewPCG(seed, 0x5e7))
	out := make([]SynthDoc, 0, n)
	// pick keeps the Korean text, the English or both.
	pick := func(ko, en, sep, kind string) SynthDoc {
		switch r.IntN(3) {
		case 0:
			return SynthDoc{ko, kind}
		case 1:
			return SynthDoc{en, kind}
		}
		return SynthDoc{ko + sep + en, kind}
	}
	for len(out) < n {
		switch r.IntN(4) {
		case 0:
			a, b := r.IntN(100), r.IntN(100)
			op := r.IntN(3)
			var ko, en string
			switch op {
			case 0:
				ko = fmt.Sprintf("문제: %d 더하기 %d는 얼마입니까?\n풀이: %d에 %d를 더하면 %d입니다. 답은 %d입니다.", a, b, a, b, a+b, a+b)
				en = fmt.Sprintf("Question: what is %d plus %d?\nAnswer: adding %d to %d gives %d. The answer is %d.", a, b, b, a, a+b, a+b)
			case 1:
				a, b = max(a, b), min(a, b)
				ko = fmt.Sprintf("문제: %d 빼기 %d는 얼마입니까?\n풀이: %d에서 %d를 빼면 %d입니다.", a, b, a, b, a-b)
				en = fmt.Sprintf("Question: what is %d minus %d?\nAnswer: taking %d from %d leaves %d.", a, b, b, a, a-b)
			default:
				a, b = a%13, b%13
				ko = fmt.Sprintf("문제: %d 곱하기 %d는 얼마입니까?\n풀이: %d을(를) %d번 더하면 %d입니다.", a, b, a, b, a*b)
				en = fmt.Sprintf("Question: what is %d times %d?\nAnswer: adding %d to itself %d times gives %d.", a, b, a, b, a*b)
			}
			out = append(out, pick(ko, en, "\n", "arithmetic"))
		case 1:
			w := lexicon[r.IntN(len(lexicon))]
			if r.IntN(2) == 0 {
				out = append(out, SynthDoc{fmt.Sprintf("한국어 '%s'은(는) 영어로 '%s'입니다.\nThe Korean word '%s' means '%s' in English.", w.ko, w.en, w.ko, w.en), "translation"})
			} else {
				out = append(out, SynthDoc{fmt.Sprintf("English: I see a %s.\n한국어: 나는 %s을(를) 봅니다.", w.en, w.ko), "translation"})
			}
		case 2:
			w := lexicon[r.IntN(len(lexicon))]
			out = append(out, pick(fmt.Sprintf("%s: %s. %s은(는) %s의 하나입니다.", w.ko, w.koDef, w.ko, w.kind),
				fmt.Sprintf("%s: %s.", strings.ToUpper(w.en[:1])+w.en[1:], w.enDef), "\n", "definition"))
		default:
			a, b := names[r.IntN(len(names))], names[r.IntN(len(names))]
			wt := weather[r.IntN(len(weather))]
			w := lexicon[r.IntN(len(lexicon))]
			ko := fmt.Sprintf("%s: 안녕하세요, %s 씨. 오늘 날씨가 어때요?\n%s: 오늘은 %s. 저는 %s에 가요.\n%s: 좋네요. 나중에 봐요!", a.ko, b.ko, b.ko, wt.ko, w.ko, a.ko)
			en := fmt.Sprintf("%s: Hello, %s. How is the weather today?\n%s: Today it is %s. I am going to the %s.\n%s: Nice. See you later!", a.en, b.en, b.en, wt.en, w.en, a.en)
			out = append(out, pick(ko, en, "\n\n", "dialogue"))
		}
	}
	return out
}
