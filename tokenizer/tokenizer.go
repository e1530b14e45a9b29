package tokenizer

import (
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Special tokens. Their ids follow the 256 byte tokens in this order, so a
// trained tokenizer keeps the byte-level ids of package model (EOS 256,
// BOS 257, PAD 258).
const (
	EOS       = "<|eos|>"
	BOS       = "<|bos|>"
	PAD       = "<|pad|>"
	System    = "<|system|>"
	User      = "<|user|>"
	Assistant = "<|assistant|>"
	EndTurn   = "<|end|>"
)

// DefaultSpecials are the special tokens of a new tokenizer.
var DefaultSpecials = []string{EOS, BOS, PAD, System, User, Assistant, EndTurn}

// Errors.
var (
	ErrFormat = errors.New("tokenizer: bad tokenizer.json")
	ErrID     = errors.New("tokenizer: id out of range")
)

type pair struct{ a, b int32 }

type merge struct {
	rank int32
	id   int32
}

// Tokenizer is a byte-level BPE tokenizer. It is safe for concurrent use.
//
// Ids: 0–255 are the bytes, then the special tokens, then one id per merge
// in rank order. Encoding splits out special tokens, pre-tokenises the rest
// with Pattern, and applies merges lowest rank first (leftmost on ties)
// within each piece: exactly what Hugging Face tokenizers does with the
// tokenizer.json this package writes. Encoding does not normalise: Decode
// returns the input bytes for any input. Training and the data pipeline
// apply NFC before text reaches Encode.
type Tokenizer struct {
	tokens   [][]byte // id → bytes (specials: their text)
	specials []string // in id order, from id 256
	merges   map[pair]merge
	mergeSeq []pair // rank → pair

	encoders sync.Pool // of *encoder: per-goroutine piece caches
}

// encoder caches the ids of pieces it has seen. One goroutine uses it at a
// time (Tokenizer hands them out from a pool), so lookups take no lock.
type encoder struct {
	cache map[string][]int32
}

// Vocab is the vocabulary size.
func (t *Tokenizer) Vocab() int { return len(t.tokens) }

// Specials lists the special tokens in id order (from id 256).
func (t *Tokenizer) Specials() []string { return append([]string(nil), t.specials...) }

// SpecialID returns the id of a special token.
func (t *Tokenizer) SpecialID(s string) (int32, bool) {
	for i, sp := range t.specials {
		if sp == s {
			return int32(256 + i), true
		}
	}
	return 0, false
}

// IsSpecial reports whether id is a special token.
func (t *Tokenizer) IsSpecial(id int32) bool { return id >= 256 && int(id) < 256+len(t.specials) }

// ByteLevel is the tokenizer of byte-level token ids — byte b is id b,
// then the specials from id 256 — with no merges: what a model trained on
// raw bytes (fomnet train FILE…) reads and writes, so that its
// checkpoints export like any other.
func ByteLevel(specials []string) (*Tokenizer, error) { return newTokenizer(specials) }

func newTokenizer(specials []string) (*Tokenizer, error) {
	t := &Tokenizer{merges: map[pair]merge{}}
	for b := 0; b < 256; b++ {
		t.tokens = append(t.tokens, []byte{byte(b)})
	}
	seen := map[string]bool{}
	for _, s := range specials {
		if s == "" || seen[s] {
			return nil, fmt.Errorf("tokenizer: special token %q is empty or repeated", s)
		}
		seen[s] = true
		t.specials = append(t.specials, s)
		t.tokens = append(t.tokens, []byte(s))
	}
	return t, nil
}

// addMerge records the merge a+b with the next rank and returns the id of
// its result: a new id, or the existing one when another merge path already
// produced the same bytes (the vocabulary maps strings to ids, so each byte
// string has one id).
func (t *Tokenizer) addMerge(a, b int32, byBytes map[string]int32) int32 {
	tok := append(append([]byte(nil), t.tokens[a]...), t.tokens[b]...)
	id, ok := byBytes[string(tok)]
	if !ok {
		id = int32(len(t.tokens))
		t.tokens = append(t.tokens, tok)
		byBytes[string(tok)] = id
	}
	t.merges[pair{a, b}] = merge{rank: int32(len(t.mergeSeq)), id: id}
	t.mergeSeq = append(t.mergeSeq, pair{a, b})
	return id
}

// Encode tokenises text.
func (t *Tokenizer) Encode(text string) []int32 {
	return t.AppendEncode(nil, text)
}

// AppendEncode appends text's ids to dst.
func (t *Tokenizer) AppendEncode(dst []int32, text string) []int32 {
	e := t.encoder()
	defer t.encoders.Put(e)
	for len(text) > 0 {
		at, sp := t.nextSpecial(text)
		t.encodeOrdinary(e, &dst, text[:at])
		if sp < 0 {
			break
		}
		dst = append(dst, int32(256+sp))
		text = text[at+len(t.specials[sp]):]
	}
	return dst
}

// encoder takes an encoder from the pool (Put it back).
func (t *Tokenizer) encoder() *encoder {
	e, _ := t.encoders.Get().(*encoder)
	if e == nil {
		e = &encoder{cache: map[string][]int32{}}
	}
	return e
}

// nextSpecial finds the leftmost special token in s (longest on ties) and
// returns its offset and index, or len(s) and -1.
func (t *Tokenizer) nextSpecial(s string) (int, int) {
	best, which := len(s), -1
	for i, sp := range t.specials {
		j := strings.Index(s[:min(len(s), best+len(sp))], sp)
		if j < 0 {
			continue
		}
		if j < best || (j == best && which >= 0 && len(sp) > len(t.specials[which])) {
			best, which = j, i
		}
	}
	return best, which
}

func (t *Tokenizer) encodeOrdinary(e *encoder, dst *[]int32, s string) {
	Split(s, func(piece string) {
		if len(piece) == 1 {
			*dst = append(*dst, int32(piece[0]))
			return
		}
		ids, ok := e.cache[piece]
		if !ok {
			ids = t.bpe(piece)
			if len(e.cache) >= cacheMax {
				clear(e.cache)
			}
			e.cache[piece] = ids
		}
		*dst = append(*dst, ids...)
	})
}

const cacheMax = 1 << 16

// bpe merges the bytes of one piece: repeatedly the lowest-rank adjacent
// pair, leftmost first.
func (t *Tokenizer) bpe(piece string) []int32 {
	sym := make([]int32, len(piece))
	for i := 0; i < len(piece); i++ {
		sym[i] = int32(piece[i])
	}
	for len(sym) > 1 {
		best, at := merge{rank: -1}, -1
		for i := 0; i+1 < len(sym); i++ {
			if m, ok := t.merges[pair{sym[i], sym[i+1]}]; ok && (at < 0 || m.rank < best.rank) {
				best, at = m, i
			}
		}
		if at < 0 {
			break
		}
		sym[at] = best.id
		sym = append(sym[:at+1], sym[at+2:]...)
	}
	return sym
}

// Decode returns the bytes of ids; special tokens decode to their text.
func (t *Tokenizer) Decode(ids []int32) ([]byte, error) {
	var out []byte
	for i, id := range ids {
		if id < 0 || int(id) >= len(t.tokens) {
			return out, fmt.Errorf("%w: id %d at %d (vocabulary %d)", ErrID, id, i, len(t.tokens))
		}
		out = append(out, t.tokens[id]...)
	}
	return out, nil
}

// Token returns the bytes of one id.
func (t *Tokenizer) Token(id int32) ([]byte, bool) {
	if id < 0 || int(id) >= len(t.tokens) {
		return nil, false
	}
	return t.tokens[id], true
}
