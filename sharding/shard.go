package sharding

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/ipfs/go-cid"
)

// Shard file format, versions 1 and 2 (all integers little-endian):
//
//	offset size  field
//	0      8     magic "FOMSHARD"
//	8      2     version (1; 2 with a loss mask; 3 with a loss mask, rows
//	             in preference pairs)
//	10     2     token dtype: 1 = uint16, 2 = uint32
//	12     4     vocabulary size
//	16     4     sequence length T (each row holds T+1 tokens: inputs and
//	             the next-token targets of T positions)
//	20     4     rows
//	24     32    SHA-256 of the payload (tokens, then the mask)
//	56     2     tokenizer CID length L (bytes, binary CID)
//	58     L     tokenizer CID
//	58+L   …     rows × (T+1) tokens
//	…      …     version 2: the loss mask, one bit per token in the same
//	             order (bit i%8 of byte i/8), ⌈rows × (T+1) / 8⌉ bytes; a
//	             token is a training target where its bit is 1 (version 1:
//	             every token is)
//
// Documents are packed back to back, each followed by EOS, so attention can
// be masked within documents; a document may continue into the next row,
// a conversation never does (it starts a row when it would not fit the
// rest of one). The last row of a shard is completed with PAD tokens (not
// targets, in version 2).
//
// Version 3 holds preference pairs: rows 2k and 2k+1 are one prompt
// answered two ways, chosen then rejected, each a single conversation
// padded to the row, whose mask marks the answer's tokens.

const (
	shardMagic   = "FOMSHARD"
	shardVersion = 1 // without a mask
	maskVersion  = 2 // with one
	pairVersion  = 3 // with one, rows in preference pairs
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
	Pairs     bool // rows are preference pairs (version 3)
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

// EncodeShard writes a shard of rows (each SeqLen+1 tokens) to w; with
// masks (one per row, as long), a version-2 shard that trains only the
// tokens whose mask is set.
func EncodeShard(w io.Writer, vocab, seqLen int, tok cid.Cid, rows [][]int32, masks ...[]bool) error {
	version := shardVersion
	if masks != nil {
		version = maskVersion
	}
	return encodeShard(w, vocab, seqLen, tok, rows, masks, version)
}

// EncodePairShard writes a version-3 shard of preference pairs: rows 2k
// (chosen) and 2k+1 (rejected), each with a mask that marks its answer.
func EncodePairShard(w io.Writer, vocab, seqLen int, tok cid.Cid, rows [][]int32, masks [][]bool) error {
	if len(rows)%2 != 0 || masks == nil {
		return fmt.Errorf("%w: %d rows with masks %v: pairs need an even number of masked rows", ErrShard, len(rows), masks != nil)
	}
	return encodeShard(w, vocab, seqLen, tok, rows, masks, pairVersion)
}

func encodeShard(w io.Writer, vocab, seqLen int, tok cid.Cid, rows [][]int32, masks [][]bool, version int) error {
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
	if masks != nil {
		if len(masks) != len(rows) {
			return fmt.Errorf("%w: %d masks for %d rows", ErrShard, len(masks), len(rows))
		}
		bits := make([]byte, (len(rows)*h.RowLen()+7)/8)
		for i, m := range masks {
			if len(m) != h.RowLen() {
				return fmt.Errorf("%w: mask of row %d has %d entries, want %d", ErrShard, i, len(m), h.RowLen())
			}
			for j, on := range m {
				if on {
					k := i*h.RowLen() + j
					bits[k/8] |= 1 << (k % 8)
				}
			}
		}
		payload = append(payload, bits...)
	}
	h.Checksum = sha256.Sum256(payload)
	cb := tok.Bytes()
	if !tok.Defined() {
		cb = nil
	}
	hdr := make([]byte, 0, headerFixed+len(cb))
	hdr = append(hdr, shardMagic...)
	hdr = binary.LittleEndian.AppendUint16(hdr, uint16(version))
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

// Shard is a decoded shard: its header and tokens (row-major), and which
// of them are training targets (nil: all, a version-1 shard).
type Shard struct {
	ShardHeader
	Tokens []int32
	Mask   []bool
}

// Row returns row i.
func (s *Shard) Row(i int) []int32 { return s.Tokens[i*s.RowLen() : (i+1)*s.RowLen()] }

// RowMask returns row i's mask (nil: every token is a target).
func (s *Shard) RowMask(i int) []bool {
	if s.Mask == nil {
		return nil
	}
	return s.Mask[i*s.RowLen() : (i+1)*s.RowLen()]
}

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
	version := binary.LittleEndian.Uint16(b[8:])
	if version < shardVersion || version > pairVersion {
		return nil, fmt.Errorf("%w: version %d; this fomnet reads versions %d to %d (upgrade fomnet?)", ErrShard, version, shardVersion, pairVersion)
	}
	s := &Shard{}
	s.Pairs = version == pairVersion
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
	n := int64(s.Rows) * int64(s.RowLen())
	want, maskBytes := n*int64(tb), int64(0)
	if version >= maskVersion {
		maskBytes = (n + 7) / 8
	}
	if s.Pairs && s.Rows%2 != 0 {
		return nil, fmt.Errorf("%w: a shard of preference pairs with %d rows", ErrShard, s.Rows)
	}
	if int64(len(payload)) != want+maskBytes {
		return nil, fmt.Errorf("%w: payload is %d bytes; %d rows of %d tokens of %d bytes (and a mask of %d) need %d (truncated or padded file)",
			ErrShard, len(payload), s.Rows, s.RowLen(), tb, maskBytes, want+maskBytes)
	}
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], s.Checksum[:]) {
		return nil, fmt.Errorf("%w: checksum mismatch: the token payload is corrupt", ErrShard)
	}
	if version >= maskVersion {
		bits := payload[want:]
		s.Mask = make([]bool, n)
		for i := range s.Mask {
			s.Mask[i] = bits[i/8]&(1<<(i%8)) != 0
		}
		if rest := n % 8; rest != 0 && bits[len(bits)-1]>>rest != 0 {
			return nil, fmt.Errorf("%w: mask bits set past the last token", ErrShard)
		}
		payload = payload[:want]
		for i := 0; s.Pairs && i < s.Rows; i++ {
			if !slices.Contains(s.RowMask(i), true) {
				return nil, fmt.Errorf("%w: row %d of a preference pair has no answer (no target)", ErrShard, i)
			}
		}
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
