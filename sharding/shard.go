package sharding

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
)

// Shard file format, version 1 (all integers little-endian):
//
//	offset size  field
//	0      8     magic "FOMSHARD"
//	8      2     version (1)
//	10     2     token dtype: 1 = uint16, 2 = uint32
//	12     4     vocabulary size
//	16     4     sequence length T (each row holds T+1 tokens: inputs and
//	             the next-token targets of T positions)
//	20     4     rows
//	24     32    SHA-256 of the token payload
//	56     2     tokenizer CID length L (bytes, binary CID)
//	58     L     tokenizer CID
//	58+L   …     rows × (T+1) tokens
//
// Documents are packed back to back, each followed by EOS, so attention can
// be masked within documents; a document may continue into the next row.
// The last row of a shard is completed with PAD tokens.

const (
	shardMagic   = "FOMSHARD"
	shardVersion = 1
	headerFixed  = 58
	maxCIDLen    = 128
)

// Token dtypes.
const (
	DTypeU16 = 1
	DTypeU32 = 2
)

// ErrShard reports a malformed shard file.
var ErrShard = errors.New("shard")

// ShardHeader describes a shard.
type ShardHeader struct {
	DType     int
	Vocab     int
	SeqLen    int
	Rows      int
	Checksum  [32]byte
	Tokenizer cid.Cid
}

// RowLen is the number of tokens per row: SeqLen+1.
func (h ShardHeader) RowLen() int { return h.SeqLen + 1 }

// dtypeFor picks the narrowest dtype for a vocabulary.
func dtypeFor(vocab int) int {
	if vocab <= 1<<16 {
		return DTypeU16
	}
	return DTypeU32
}

func tokenBytes(dtype int) int {
	if dtype == DTypeU16 {
		return 2
	}
	return 4
}

// EncodeShard writes a shard of rows (each SeqLen+1 tokens) to w.
func EncodeShard(w io.Writer, vocab, seqLen int, tok cid.Cid, rows [][]int32) error {
	if vocab <= 0 || seqLen <= 0 {
		return fmt.Errorf("%w: vocab %d and seq len %d must be positive", ErrShard, vocab, seqLen)
	}
	h := ShardHeader{DType: dtypeFor(vocab), Vocab: vocab, SeqLen: seqLen, Rows: len(rows), Tokenizer: tok}
	tb := tokenBytes(h.DType)
	payload := make([]byte, 0, len(rows)*h.RowLen()*tb)
	for i, r := range rows {
		if len(r) != h.RowLen() {
			return fmt.Errorf("%w: row %d has %d tokens, want %d", ErrShard, i, len(r), h.RowLen())
		}
		for _, t := range r {
			if t < 0 || int(t) >= vocab {
				return fmt.Errorf("%w: row %d: token %d outside vocabulary %d", ErrShard, i, t, vocab)
			}
			if tb == 2 {
				payload = binary.LittleEndian.AppendUint16(payload, uint16(t))
			} else {
				payload = binary.LittleEndian.AppendUint32(payload, uint32(t))
			}
		}
	}
	h.Checksum = sha256.Sum256(payload)
	cb := tok.Bytes()
	if !tok.Defined() {
		cb = nil
	}
	hdr := make([]byte, 0, headerFixed+len(cb))
	hdr = append(hdr, shardMagic...)
	hdr = binary.LittleEndian.AppendUint16(hdr, shardVersion)
	hdr = binary.LittleEndian.AppendUint16(hdr, uint16(h.DType))
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(vocab))
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(seqLen))
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(rows)))
	hdr = append(hdr, h.Checksum[:]...)
	hdr = binary.LittleEndian.AppendUint16(hdr, uint16(len(cb)))
	hdr = append(hdr, cb...)
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// Shard is a decoded shard: its header and tokens (row-major).
type Shard struct {
	ShardHeader
	Tokens []int32
}

// Row returns row i.
func (s *Shard) Row(i int) []int32 { return s.Tokens[i*s.RowLen() : (i+1)*s.RowLen()] }

// DecodeShard parses and validates a whole shard: magic, version, dtype,
// sizes, tokenizer CID, exact length, checksum and every token id. Errors
// say what was expected.
func DecodeShard(b []byte) (*Shard, error) {
	if len(b) < headerFixed {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrShard, len(b), headerFixed)
	}
	if string(b[:8]) != shardMagic {
		return nil, fmt.Errorf("%w: bad magic %q (want %q): not a fomnet shard", ErrShard, b[:8], shardMagic)
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != shardVersion {
		return nil, fmt.Errorf("%w: version %d; this fomnet reads version %d (upgrade fomnet?)", ErrShard, v, shardVersion)
	}
	s := &Shard{}
	s.DType = int(binary.LittleEndian.Uint16(b[10:]))
	s.Vocab = int(binary.LittleEndian.Uint32(b[12:]))
	s.SeqLen = int(binary.LittleEndian.Uint32(b[16:]))
	s.Rows = int(binary.LittleEndian.Uint32(b[20:]))
	copy(s.Checksum[:], b[24:56])
	cl := int(binary.LittleEndian.Uint16(b[56:]))
	switch {
	case s.DType != DTypeU16 && s.DType != DTypeU32:
		return nil, fmt.Errorf("%w: token dtype %d (want 1 = uint16 or 2 = uint32)", ErrShard, s.DType)
	case s.Vocab <= 0 || s.Vocab > 1<<31-1:
		return nil, fmt.Errorf("%w: vocabulary %d must be positive", ErrShard, s.Vocab)
	case s.DType == DTypeU16 && s.Vocab > 1<<16:
		return nil, fmt.Errorf("%w: vocabulary %d does not fit uint16 tokens", ErrShard, s.Vocab)
	case s.SeqLen <= 0 || s.SeqLen > 1<<24:
		return nil, fmt.Errorf("%w: sequence length %d out of range", ErrShard, s.SeqLen)
	case cl > maxCIDLen || headerFixed+cl > len(b):
		return nil, fmt.Errorf("%w: tokenizer CID of %d bytes does not fit", ErrShard, cl)
	}
	if cl > 0 {
		c, err := cid.Cast(b[headerFixed : headerFixed+cl])
		if err != nil {
			return nil, fmt.Errorf("%w: tokenizer CID: %v", ErrShard, err)
		}
		s.Tokenizer = c
	}
	payload := b[headerFixed+cl:]
	tb := tokenBytes(s.DType)
	want := int64(s.Rows) * int64(s.RowLen()) * int64(tb)
	if int64(len(payload)) != want {
		return nil, fmt.Errorf("%w: payload is %d bytes; %d rows of %d tokens of %d bytes need %d (truncated or padded file)", ErrShard, len(payload), s.Rows, s.RowLen(), tb, want)
	}
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], s.Checksum[:]) {
		return nil, fmt.Errorf("%w: checksum mismatch: the token payload is corrupt", ErrShard)
	}
	s.Tokens = make([]int32, len(payload)/tb)
	for i := range s.Tokens {
		var v uint32
		if tb == 2 {
			v = uint32(binary.LittleEndian.Uint16(payload[2*i:]))
		} else {
			v = binary.LittleEndian.Uint32(payload[4*i:])
		}
		if v >= uint32(s.Vocab) {
			return nil, fmt.Errorf("%w: token %d at row %d, position %d is outside the vocabulary %d", ErrShard, v, i/s.RowLen(), i%s.RowLen(), s.Vocab)
		}
		s.Tokens[i] = int32(v)
	}
	return s, nil
}
