package tokenizer

// The byte-level alphabet: every byte maps to one printable rune so that
// tokens are readable strings in tokenizer.json. Bytes that are printable
// Latin-1 characters map to themselves; the other 68 bytes map, in byte
// order, to U+0100 upwards. This is the mapping Hugging Face's ByteLevel
// pre-tokenizer and decoder use, so our vocabulary strings mean the same
// bytes there.

var (
	byteRune [256]rune
	runeByte = map[rune]byte{}
)

func init() {
	next := rune(256)
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			byteRune[b] = rune(b)
		} else {
			byteRune[b] = next
			next++
		}
		runeByte[byteRune[b]] = byte(b)
	}
}

// byteString renders raw bytes in the byte-level alphabet.
func byteString(b []byte) string {
	rs := make([]rune, len(b))
	for i, c := range b {
		rs[i] = byteRune[c]
	}
	return string(rs)
}

// stringBytes inverts byteString; ok is false if s has a rune outside the
// alphabet.
func stringBytes(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := runeByte[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}
