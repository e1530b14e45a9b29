package sharding

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
)

func sampleShard(t testing.TB, vocab int) []byte {
	tok, _ := contentstore.BlockCID(contentstore.CodecRaw, []byte("tokenizer"))
	rows := [][]int32{{1, 2, 3, 4, 5}, {int32(vocab - 1), 0, 7, 8, 9}}
	var b bytes.Buffer
	if err := EncodeShard(&b, vocab, 4, tok, rows); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestShardRoundTrip(t *testing.T) {
	for _, vocab := range []int{300, 70000} {
		b := sampleShard(t, vocab)
		s, err := DecodeShard(b)
		if err != nil {
			t.Fatal(err)
		}
		if s.Rows != 2 || s.SeqLen != 4 || s.Vocab != vocab || s.Row(1)[0] != int32(vocab-1) || !s.Tokenizer.Defined() {
			t.Fatalf("decoded %+v", s.ShardHeader)
		}
		if want := map[int]int{300: DTypeU16, 70000: DTypeU32}[vocab]; s.DType != want {
			t.Fatalf("dtype %d for vocab %d", s.DType, vocab)
		}
	}
}

func maskedShard(t testing.TB) []byte {
	tok, _ := contentstore.BlockCID(contentstore.CodecRaw, []byte("tokenizer"))
	rows := [][]int32{{1, 2, 3, 4, 5}, {6, 0, 7, 8, 9}}
	masks := [][]bool{{false, false, true, true, false}, {true, false, false, false, true}}
	var b bytes.Buffer
	if err := EncodeShard(&b, 300, 4, tok, rows, masks...); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func pairShard(t testing.TB) []byte {
	tok, _ := contentstore.BlockCID(contentstore.CodecRaw, []byte("tokenizer"))
	rows := [][]int32{{1, 2, 3, 4, 5}, {1, 2, 7, 8, 9}}
	masks := [][]bool{{false, false, true, true, false}, {false, false, true, false, false}}
	var b bytes.Buffer
	if err := EncodePairShard(&b, 300, 4, tok, rows, masks); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A shard of preference pairs (version 3) reads back as pairs; an odd
// number of rows, or a row without an answer, cannot be written or read.
func TestPairShard(t *testing.T) {
	b := pairShard(t)
	s, err := DecodeShard(b)
	if err != nil || !s.Pairs || b[8] != 3 {
		t.Fatalf("%v, pairs %v, version %d", err, s != nil && s.Pairs, b[8])
	}
	tok, _ := contentstore.BlockCID(contentstore.CodecRaw, []byte("tokenizer"))
	var w bytes.Buffer
	if err := EncodePairShard(&w, 300, 4, tok, [][]int32{{1, 2, 3, 4, 5}}, [][]bool{{true, true, true, true, true}}); err == nil {
		t.Fatal("half a pair written")
	}
	w.Reset()
	if err := EncodePairShard(&w, 300, 4, tok, [][]int32{{1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}}, [][]bool{{false, true, false, false, false}, make([]bool, 5)}); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeShard(w.Bytes()); err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("a pair row without a target: %v", err)
	}
}

// A shard with a loss mask (version 2) reads back with it, covered by the
// checksum; a shard without (version 1) is all targets, as before.
func TestShardMask(t *testing.T) {
	b := maskedShard(t)
	s, err := DecodeShard(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, false, false, true}; !slices.Equal(s.RowMask(1), want) || s.RowMask(0)[2] != true || b[8] != 2 {
		t.Fatalf("mask %v, version %d", s.Mask, b[8])
	}
	if v1, _ := DecodeShard(sampleShard(t, 300)); v1.Mask != nil || v1.RowMask(0) != nil {
		t.Fatalf("version 1 shard has a mask %v", v1.Mask)
	}
	flip := append([]byte(nil), b...)
	flip[len(flip)-1] ^= 1 // a mask bit
	if _, err := DecodeShard(flip); !errors.Is(err, ErrShard) {
		t.Fatalf("altered mask: %v", err)
	}
	if err := EncodeShard(&bytes.Buffer{}, 300, 4, contentstoreUndef(), [][]int32{{1, 2, 3, 4, 5}}, []bool{true}); err == nil {
		t.Fatal("a mask shorter than its row encoded")
	}
}

func TestShardRejects(t *testing.T) {
	good := sampleShard(t, 300)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, b := range map[string][]byte{
		"empty":      nil,
		"magic":      mut(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version":    mut(func(b []byte) []byte { b[8] = 9; return b }),
		"dtype":      mut(func(b []byte) []byte { b[10] = 7; return b }),
		"truncated":  mut(func(b []byte) []byte { return b[:len(b)-1] }),
		"extra":      mut(func(b []byte) []byte { return append(b, 0, 0) }),
		"checksum":   mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }),
		"rows":       mut(func(b []byte) []byte { b[20] = 3; return b }),
		"cid length": mut(func(b []byte) []byte { b[56] = 200; return b }),
	} {
		if _, err := DecodeShard(b); !errors.Is(err, ErrShard) {
			t.Errorf("%s: error %v, want ErrShard", name, err)
		}
	}
	if err := EncodeShard(&bytes.Buffer{}, 10, 2, contentstoreUndef(), [][]int32{{1, 2, 11}}); err == nil {
		t.Error("token outside vocabulary encoded")
	}
}

// FuzzDecodeShard: any bytes are decoded into a consistent shard or
// rejected; never a panic.
func FuzzDecodeShard(f *testing.F) {
	f.Add(sampleShard(f, 300))
	f.Add(sampleShard(f, 70000))
	f.Add(maskedShard(f))
	f.Add(pairShard(f))
	f.Add([]byte("FOMSHARD"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeShard(b)
		if err != nil {
			return
		}
		if len(s.Tokens) != s.Rows*s.RowLen() {
			t.Fatalf("%d tokens for %d rows of %d", len(s.Tokens), s.Rows, s.RowLen())
		}
		for _, v := range s.Tokens {
			if v < 0 || int(v) >= s.Vocab {
				t.Fatalf("token %d outside vocabulary %d", v, s.Vocab)
			}
		}
		if s.Mask != nil && len(s.Mask) != len(s.Tokens) {
			t.Fatalf("%d mask bits for %d tokens", len(s.Mask), len(s.Tokens))
		}
		if s.Pairs && (s.Mask == nil || s.Rows%2 != 0) {
			t.Fatalf("pairs with mask %v and %d rows", s.Mask != nil, s.Rows)
		}
	})
}

func contentstoreUndef() (c cid.Cid) { return }
