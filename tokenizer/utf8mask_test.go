package tokenizer

import (
	"math"
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// Against an independent check: for every split of a few strings (valid
// and not) at every byte, validPrefix agrees with "some continuation makes
// it valid UTF-8", which for a prefix p of a valid string is always true,
// and for bytes that utf8.Valid refuses even when completed is false.
func TestValidPrefix(t *testing.T) {
	for _, s := range []string{"한국어 abc", "été €", "𝄞 music", "ascii"} {
		b := []byte(s)
		for i := 0; i <= len(b); i++ {
			if !validPrefix(nil, b[:i]) {
				t.Errorf("%q: prefix %x refused", s, b[:i])
			}
			for j := i; j <= len(b); j++ {
				if !validPrefix(b[:i], b[i:j]) {
					t.Errorf("%q: %x + %x refused", s, b[:i], b[i:j])
				}
			}
		}
	}
	for _, bad := range [][]byte{{0xEC, ' '}, {0xC0, 0x80}, {0xED, 0xA0}, {0xE0, 0x80}, {0xF4, 0x90}, {0xFF}, {0x80}, {0xEC, 0x95, 0x95, 0x95}} {
		if validPrefix(nil, bad) {
			t.Errorf("%x accepted", bad)
		}
	}
}

// Greedy decoding of random logits over a byte vocabulary (plus a few
// multi-byte tokens) through the mask always yields valid UTF-8 — and
// without it, it does not.
func TestUTF8MaskKeepsOutputValid(t *testing.T) {
	vocab := make([][]byte, 0, 300)
	for c := range 256 {
		vocab = append(vocab, []byte{byte(c)})
	}
	for _, s := range []string{"한", "국어", "\x95\x9c", " 나", "é"} {
		vocab = append(vocab, []byte(s))
	}
	bytesOf := func(id int32) []byte { return vocab[id] }
	mask := UTF8Mask(bytesOf)
	r := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, len(vocab))
	for trial := range 200 {
		var out []int32
		var text []byte
		masked := trial%2 == 0
		for range 40 {
			for i := range logits {
				logits[i] = float32(r.NormFloat64())
			}
			if masked {
				mask(out, logits)
			}
			best := 0
			for i, v := range logits {
				if v > logits[best] {
					best = i
				}
			}
			if math.IsInf(float64(logits[best]), -1) {
				t.Fatal("every token masked")
			}
			out = append(out, int32(best))
			text = append(text, vocab[best]...)
		}
		// Drop a final incomplete character, which a longer run would finish.
		text = text[:len(text)-len(incompleteTail(text))]
		if masked && !utf8.Valid(text) {
			t.Fatalf("trial %d: invalid UTF-8 %x", trial, text)
		}
		if !masked && trial == 1 && utf8.Valid(text) {
			t.Fatalf("random bytes without the mask were valid UTF-8; the test would not notice a broken mask")
		}
	}
}

// A model's vocabulary may exceed its tokenizer's: the tokenizer's mask
// never lets an id past the tokenizer's be chosen (it decodes to nothing).
func TestUTF8MaskBeyondTheTokenizer(t *testing.T) {
	tk, err := ByteLevel(nil)
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, tk.Vocab()+40)
	tk.UTF8Mask()(nil, logits)
	for id, v := range logits {
		if id >= tk.Vocab() && !math.IsInf(float64(v), -1) || id == 'a' && v != 0 {
			t.Fatalf("id %d (tokenizer vocabulary %d): logit %v", id, tk.Vocab(), v)
		}
	}
}
