package tokenizer

import (
	"regexp"
	"strings"
	"testing"
)

var patternRE = regexp.MustCompile(Pattern)

// splitRE is the specification: Go's regexp on Pattern, with unmatched
// stretches kept as pieces (Split behaviour "Isolated").
func splitRE(s string) []string {
	var out []string
	last := 0
	for _, m := range patternRE.FindAllStringIndex(s, -1) {
		if m[0] > last {
			out = append(out, s[last:m[0]])
		}
		out = append(out, s[m[0]:m[1]])
		last = m[1]
	}
	if last < len(s) {
		out = append(out, s[last:])
	}
	return out
}

func splitFast(s string) []string {
	var out []string
	Split(s, func(p string) { out = append(out, p) })
	return out
}

func TestSplitExamples(t *testing.T) {
	for in, want := range map[string]string{
		"Hello, world!":      "Hello|,| world|!",
		"안녕하세요 세계":           "안녕하세요| 세계",
		"Go언어는 2024년에":       "Go|언어는| |2|0|2|4|년에",
		"a  b\n\nc":          "a|  |b|\n\n|c",
		"漢字abc 한글":           "漢字|abc| 한글",
		"it's":               "it|'|s",
		"x\u200by":           "x|\u200b|y",
		"  (test)":           "  |(|test|)",
		"tab\there":          "tab|\t|here",
		"\u00a0non-breaking": "\u00a0|non|-|breaking",
	} {
		got := strings.Join(splitFast(in), "|")
		if got != want {
			t.Errorf("Split(%q) = %q, want %q", in, got, want)
		}
		if re := strings.Join(splitRE(in), "|"); re != got {
			t.Errorf("Split(%q) = %q, regexp gives %q", in, got, re)
		}
	}
}

// FuzzSplit holds the hand-written splitter to the regexp definition and
// checks that pieces cover the input.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{"Hello, world!", "안녕 하세요", "  x\t\ty", "12.5%", "\xff\xfeab", "é́", "\u2028\u0085", "Ⅻ apples", "㉠㈀"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, want := splitFast(s), splitRE(s)
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("Split(%q) = %q, regexp gives %q", s, got, want)
		}
		if strings.Join(got, "") != s {
			t.Fatalf("pieces of %q do not cover it", s)
		}
	})
}
