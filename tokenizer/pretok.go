package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Pattern is the pre-tokenisation regular expression, written so that Go's
// regexp (RE2) and Oniguruma (used by Hugging Face tokenizers) read it the
// same way: leftmost-first alternation, no look-around, no \s (ASCII-only in
// Go). Alternatives, tried in order at each position:
//
//	 ?\p{Hangul}+   a Hangul run, with at most one leading space
//	 ?\p{Latin}+    a Latin word
//	 ?[^…]+         a run of letters and marks of any other script
//	\p{N}           one digit (numbers are spelled digit by digit)
//	 ?[\p{P}\p{S}]+ punctuation and symbols
//	[…\p{Z}…]+      whitespace (Unicode spaces, tab, newlines, U+0085)
//	\p{C}           one control or format character
//
// Text that no alternative matches (only unassigned code points, in Go)
// becomes a piece of its own, as Hugging Face's Split(Isolated) does.
const Pattern = ` ?\p{Hangul}+| ?\p{Latin}+| ?[^\p{Hangul}\p{Latin}\p{N}\p{P}\p{S}\p{Z}\p{C}]+|\p{N}| ?[\p{P}\p{S}]+|[\t\n\v\f\r\p{Z}\x{85}]+|\p{C}`

// The hand-written splitter below implements Pattern exactly (a fuzz test
// holds it to Go's regexp on the same pattern) at several times the speed.

// Character classes. ASCII and the Hangul syllable block, by far the most
// common runes, are answered from a table or a range check; the rest from
// Go's Unicode tables.
const (
	cH = 1 << iota
	cL
	cN
	cPS
	cZ
	cC
	cWS
)

var asciiClass [128]uint8

func init() {
	for r := rune(0); r < 128; r++ {
		asciiClass[r] = slowClass(r)
	}
}

func slowClass(r rune) uint8 {
	var c uint8
	if unicode.Is(unicode.Hangul, r) {
		c |= cH
	}
	if unicode.Is(unicode.Latin, r) {
		c |= cL
	}
	if unicode.IsNumber(r) {
		c |= cN
	}
	if unicode.IsPunct(r) || unicode.IsSymbol(r) {
		c |= cPS
	}
	if unicode.Is(unicode.Z, r) {
		c |= cZ
	}
	if unicode.Is(unicode.C, r) {
		c |= cC
	}
	switch r {
	case '\t', '\n', '\v', '\f', '\r', 0x85:
		c |= cWS
	}
	if c&cZ != 0 {
		c |= cWS
	}
	return c
}

func class(r rune) uint8 {
	if r < 128 {
		return asciiClass[r]
	}
	if r >= 0xAC00 && r <= 0xD7A3 { // Hangul syllables: script Hangul, category Lo
		return cH
	}
	return slowClass(r)
}

func isH(r rune) bool  { return class(r)&cH != 0 }
func isL(r rune) bool  { return class(r)&cL != 0 }
func isN(r rune) bool  { return class(r)&cN != 0 }
func isPS(r rune) bool { return class(r)&cPS != 0 }
func isC(r rune) bool  { return class(r)&cC != 0 }
func isWS(r rune) bool { return class(r)&cWS != 0 }
func isO(r rune) bool  { return class(r)&(cH|cL|cN|cPS|cZ|cC) == 0 }

// decode reads one rune the way Go's regexp does: an invalid byte is
// U+FFFD of width 1.
func decode(s string, i int) (rune, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// run returns the end of the longest run of runes from i satisfying in.
func run(s string, i int, in func(rune) bool) int {
	for i < len(s) {
		r, w := decode(s, i)
		if !in(r) {
			break
		}
		i += w
	}
	return i
}

// matchAt returns the end of Pattern's match starting at i, or -1.
func matchAt(s string, i int) int {
	r, w := decode(s, i)
	for _, in := range [...]func(rune) bool{isH, isL, isO} {
		if in(r) {
			return run(s, i, in)
		}
		if r == ' ' && i+1 < len(s) {
			if r2, _ := decode(s, i+1); in(r2) {
				return run(s, i+1, in)
			}
		}
	}
	if isN(r) {
		return i + w
	}
	if isPS(r) {
		return run(s, i, isPS)
	}
	if r == ' ' && i+1 < len(s) {
		if r2, _ := decode(s, i+1); isPS(r2) {
			return run(s, i+1, isPS)
		}
	}
	if isWS(r) {
		return run(s, i, isWS)
	}
	if isC(r) {
		return i + w
	}
	return -1
}

// Split calls f with each pre-token of s, in order; the pieces cover s
// exactly.
func Split(s string, f func(piece string)) {
	gap := -1 // start of unmatched text
	for i := 0; i < len(s); {
		// ASCII fast path for the common letters-and-space cases.
		end := matchAt(s, i)
		if end < 0 {
			if gap < 0 {
				gap = i
			}
			_, w := decode(s, i)
			i += w
			continue
		}
		if gap >= 0 {
			f(s[gap:i])
			gap = -1
		}
		f(s[i:end])
		i = end
	}
	if gap >= 0 {
		f(s[gap:])
	}
}
