package tokenizer

import (
	"math"
	"unicode/utf8"
)

// UTF8Mask returns a mask for model.SampleConfig.Mask: given the tokens
// generated so far, it sets to −Inf the logit of every token whose bytes
// would make the output invalid UTF-8 — neither complete characters nor
// the start of one. A byte-level vocabulary splits Korean syllables (three
// bytes each) across tokens; a small model otherwise happily emits a lead
// byte followed by a space, and the text shows U+FFFD. Special tokens are
// left to the caller's sampling (their text is ASCII).
func (t *Tokenizer) UTF8Mask() func(out []int32, logits []float32) {
	mask := UTF8Mask(func(id int32) []byte {
		b, _ := t.Token(id)
		return b
	})
	return func(out []int32, logits []float32) {
		mask(out, logits)
		// A model's vocabulary may be larger than its tokenizer's (a
		// preset's size): ids past the tokenizer's decode to nothing.
		for id := t.Vocab(); id < len(logits); id++ {
			logits[id] = float32(math.Inf(-1))
		}
	}
}

// UTF8Mask is Tokenizer.UTF8Mask for any id → bytes mapping (nil: no
// bytes; such tokens are always allowed). The mask keeps no state: several
// goroutines may call it at once.
func UTF8Mask(bytesOf func(id int32) []byte) func(out []int32, logits []float32) {
	return func(out []int32, logits []float32) {
		// The bytes after the last complete character (at most 3).
		var buf []byte
		for i := len(out) - 1; i >= 0 && len(buf) < 8; i-- {
			buf = append(append([]byte(nil), bytesOf(out[i])...), buf...)
		}
		pending := incompleteTail(buf)
		for id := range logits {
			b := bytesOf(int32(id))
			if len(b) == 0 {
				continue
			}
			if !validPrefix(pending, b) {
				logits[id] = float32(math.Inf(-1))
			}
		}
	}
}

// incompleteTail returns the trailing bytes of b that start a UTF-8
// character not yet complete ("" when b ends on a character boundary or in
// invalid bytes, which no later token can repair).
func incompleteTail(b []byte) []byte {
	for k := 1; k <= min(3, len(b)); k++ {
		c := b[len(b)-k]
		if c < 0x80 {
			return nil
		}
		if c >= 0xC0 { // a lead byte k−1 bytes from the end
			tail := b[len(b)-k:]
			if !utf8.FullRune(tail) && validPrefix(nil, tail) {
				return tail
			}
			return nil
		}
	}
	return nil
}

// validPrefix reports whether pending+b is valid UTF-8 up to a final,
// possibly incomplete, character that could still be completed.
func validPrefix(pending, b []byte) bool {
	s := make([]byte, 0, len(pending)+len(b))
	s = append(append(s, pending...), b...)
	for len(s) > 0 {
		if s[0] < utf8.RuneSelf {
			s = s[1:]
			continue
		}
		if utf8.FullRune(s) {
			r, n := utf8.DecodeRune(s)
			if r == utf8.RuneError && n == 1 {
				return false
			}
			s = s[n:]
			continue
		}
		// An incomplete final character: lead byte and continuation bytes
		// must be able to start a valid encoding.
		return startsRune(s)
	}
	return true
}

// startsRune reports whether s (shorter than its lead byte announces) is
// the beginning of some valid UTF-8 encoding.
func startsRune(s []byte) bool {
	lo, hi := byte(0x80), byte(0xBF) // allowed range of the second byte
	switch c := s[0]; {
	case c >= 0xC2 && c <= 0xDF:
	case c == 0xE0:
		lo = 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
	case c == 0xED:
		hi = 0x9F
	case c == 0xF0:
		lo = 0x90
	case c >= 0xF1 && c <= 0xF3:
	case c == 0xF4:
		hi = 0x8F
	default:
		return false
	}
	for i, c := range s[1:] {
		if i == 0 && (c < lo || c > hi) || i > 0 && (c < 0x80 || c > 0xBF) {
			return false
		}
	}
	return true
}
