package sharding

import (
	"crypto/sha256"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode"
)

// The filters' and the deduper's ASCII fast paths against the plain
// definitions they replace, on the built-in corpus, the shared corpus when
// present, and random strings of ASCII, Hangul, Latin-1, Unicode spaces,
// control and format characters and invalid bytes.

func languageRef(text string, share float64) string {
	var h, l int
	for _, r := range text {
		switch {
		case r >= 0xAC00 && r <= 0xD7A3, unicode.Is(unicode.Hangul, r) && unicode.IsLetter(r):
			h++
		case unicode.Is(unicode.Latin, r) && unicode.IsLetter(r):
			l++
		}
	}
	return scriptCount{hangul: h, latin: l}.language(share)
}

func controlsRef(text string) int {
	n := 0
	for _, r := range text {
		if r != '\t' && r != '\n' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r)) {
			n++
		}
	}
	return n
}

func dupKeyRef(text string) [32]byte {
	return sha256.Sum256([]byte(strings.Join(strings.FieldsFunc(text, unicode.IsSpace), " ")))
}

func fastPathTexts(t *testing.T) []string {
	var out []string
	for _, f := range Builtin() {
		out = append(out, splitParagraphs(string(f.Text))...)
	}
	alphabet := []string{"a", "Z", " ", "\t", "\n", "\r", "\v", "\f", "\u0085", "\u00a0", "\u3000", "\u2028",
		"é", "ß", "한", "ㄱ", "ᄀ", "\x00", "\x7f", "\u200b", "\ufeff", "\u00ad", "\xff", "\xe2\x80", "!", "7", "Ω", "ａ"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(24) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		out = append(out, b.String())
	}
	return out
}

func TestFastPathsMatchDefinitions(t *testing.T) {
	for _, s := range fastPathTexts(t) {
		if got, want := Language(s, 0.7), languageRef(s, 0.7); got != want {
			t.Fatalf("Language(%q) = %s, want %s", s, got, want)
		}
		n := 0
		for _, r := range s {
			if isControl(r) {
				n++
			}
		}
		if want := controlsRef(s); n != want {
			t.Fatalf("%q: %d control characters, want %d", s, n, want)
		}
		if got, _ := DupKey(s, nil); got != dupKeyRef(s) {
			t.Fatalf("DupKey(%q) differs from the whitespace-collapsed SHA-256", s)
		}
	}
}
