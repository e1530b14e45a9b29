package sharding

import (
	"bytes"
	"errors"
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
	})
}

func contentstoreUndef() (c cid.Cid) { return }
