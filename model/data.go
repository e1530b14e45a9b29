package model

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/fomnet/fomnet/kernels"
)

// Corpus is a token stream of documents, each followed by EOS, from which
// training batches are cut. It is the single-node stand-in for the data
// pipeline's shards: byte-level text or raw token files.
//
// A corpus of rows (Row > 0: shards with a loss mask, conversations kept
// whole within a row) is cut row by row instead: each sequence is the start
// of one row, and only the tokens Mask marks are targets (the others are
// kernels.IgnoreIndex in the batch).
type Corpus struct {
	Tokens []int32
	Docs   int
	// Row is the length of each row (0: a stream); Mask, as long as
	// Tokens, says which tokens are targets (nil: all).
	Row  int
	Mask []bool
	// Pairs: rows 2k and 2k+1 are a preference pair (chosen, rejected),
	// and batches hold pairs: their first half the chosen rows, their
	// second half the rejected ones, pair by pair (PreferenceForward).
	Pairs bool
}

// ErrCorpus reports unusable training input.
var ErrCorpus = errors.New("corpus")

// TokenFileExt marks a file of little-endian uint32 token ids (one document
// per file) rather than text.
const TokenFileExt = ".tok"

// LoadCorpus reads files into one stream. Text files (valid UTF-8) become
// byte-level tokens with blank-line-separated paragraphs as documents; files
// ending in TokenFileExt hold token ids that must be below vocab.
func LoadCorpus(paths []string, vocab int, eos int32) (*Corpus, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: no input files", ErrCorpus)
	}
	c := &Corpus{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorpus, err)
		}
		if strings.EqualFold(filepath.Ext(p), TokenFileExt) {
			if len(b)%4 != 0 {
				return nil, fmt.Errorf("%w: %s: %d bytes is not a whole number of uint32 tokens", ErrCorpus, p, len(b))
			}
			for i := 0; i < len(b); i += 4 {
				v := binary.LittleEndian.Uint32(b[i:])
				if v >= uint32(vocab) {
					return nil, fmt.Errorf("%w: %s: token %d at index %d is outside the model's vocabulary [0, %d)", ErrCorpus, p, v, i/4, vocab)
				}
				c.Tokens = append(c.Tokens, int32(v))
			}
			c.Tokens = append(c.Tokens, eos)
			c.Docs++
			continue
		}
		if err := c.AddText(p, b, vocab, eos); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// AddText appends text as byte-level tokens, one document per paragraph
// (paragraphs are separated by blank lines). name is used in errors.
func (c *Corpus) AddText(name string, b []byte, vocab int, eos int32) error {
	if vocab < ByteVocab {
		return fmt.Errorf("%w: byte-level text needs a vocabulary of at least %d, the model has %d", ErrCorpus, ByteVocab, vocab)
	}
	if !utf8.Valid(b) {
		off := 0
		for off < len(b) {
			r, n := utf8.DecodeRune(b[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		line := 1 + bytes.Count(b[:off], []byte{'\n'})
		return fmt.Errorf("%w: %s:%d: invalid UTF-8 at byte %d (binary file? token files must end in %s)", ErrCorpus, name, line, off, TokenFileExt)
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	for _, para := range bytes.Split(b, []byte("\n\n")) {
		para = bytes.TrimSpace(para)
		if len(para) == 0 {
			continue
		}
		for _, x := range para {
			c.Tokens = append(c.Tokens, int32(x))
		}
		c.Tokens = append(c.Tokens, eos)
		c.Docs++
	}
	return nil
}

// AddRows appends packed rows of T+1 tokens (as stored in shards: rows of
// one shard are consecutive pieces of one token stream) to the corpus,
// dropping the pad tokens that complete a shard's last row, and counts the
// documents (EOS tokens) they hold.
func (c *Corpus) AddRows(rows [][]int32, pad, eos int32, vocab int) error {
	var stream []int32
	for _, r := range rows {
		stream = append(stream, r...)
	}
	end := len(stream)
	for end > 0 && stream[end-1] == pad {
		end--
	}
	for i, v := range stream[:end] {
		if v < 0 || int(v) >= vocab {
			return fmt.Errorf("%w: token %d at %d outside the model's vocabulary %d", ErrCorpus, v, i, vocab)
		}
		if v == pad {
			return fmt.Errorf("%w: pad token inside a shard at %d", ErrCorpus, i)
		}
		if v == eos {
			c.Docs++
		}
	}
	c.Tokens = append(c.Tokens, stream[:end]...)
	return nil
}

// AddMaskedRows appends rows (each the same length, PAD allowed) whose
// masks say which tokens are targets (a nil mask: every token but PAD),
// making c a corpus of rows.
func (c *Corpus) AddMaskedRows(rows [][]int32, masks [][]bool, pad, eos int32, vocab int) error {
	if len(c.Tokens) > 0 && c.Row == 0 {
		return fmt.Errorf("%w: rows with a loss mask added to a stream of documents (a dataset mixes shards with and without masks)", ErrCorpus)
	}
	for i, r := range rows {
		if c.Row == 0 {
			c.Row = len(r)
		}
		mask := masks[i]
		if mask == nil {
			mask = make([]bool, len(r))
			for j, v := range r {
				mask[j] = v != pad
			}
		}
		if len(r) != c.Row || len(mask) != len(r) {
			return fmt.Errorf("%w: row %d of %d tokens (mask %d), the corpus's rows have %d", ErrCorpus, i, len(r), len(mask), c.Row)
		}
		for j, v := range r {
			if v < 0 || int(v) >= vocab {
				return fmt.Errorf("%w: token %d at row %d, %d outside the model's vocabulary %d", ErrCorpus, v, i, j, vocab)
			}
			if v == eos {
				c.Docs++
			}
		}
		c.Tokens = append(c.Tokens, r...)
		c.Mask = append(c.Mask, mask...)
	}
	return nil
}

// AddPairRows appends preference pairs (rows 2k chosen, 2k+1 rejected,
// with masks), making c a corpus of pairs.
func (c *Corpus) AddPairRows(rows [][]int32, masks [][]bool, pad, eos int32, vocab int) error {
	if len(c.Tokens) > 0 && !c.Pairs {
		return fmt.Errorf("%w: preference pairs added to rows or documents (a dataset mixes pair shards with others)", ErrCorpus)
	}
	if len(rows)%2 != 0 {
		return fmt.Errorf("%w: %d rows are not whole pairs", ErrCorpus, len(rows))
	}
	if err := c.AddMaskedRows(rows, masks, pad, eos, vocab); err != nil {
		return err
	}
	c.Pairs = true
	return nil
}

// Append adds o's tokens to c (both streams, or both rows of one length).
func (c *Corpus) Append(o *Corpus) error {
	if len(c.Tokens) > 0 && len(o.Tokens) > 0 && (c.Row != o.Row || c.Pairs != o.Pairs) {
		return fmt.Errorf("%w: rows of %d tokens (pairs %v) appended to rows of %d (pairs %v; 0: a stream)", ErrCorpus, o.Row, o.Pairs, c.Row, c.Pairs)
	}
	if len(o.Tokens) > 0 {
		c.Row, c.Pairs = o.Row, o.Pairs
	}
	if o.Mask != nil {
		c.Mask = append(c.Mask[:len(c.Tokens):len(c.Tokens)], o.Mask...)
	}
	c.Tokens = append(c.Tokens, o.Tokens...)
	c.Docs += o.Docs
	return nil
}

// Split holds out the last frac of the stream (at a document boundary when
// one is near) for validation.
func (c *Corpus) Split(frac float64, eos int32) (train, val *Corpus) {
	cut := len(c.Tokens) - int(frac*float64(len(c.Tokens)))
	if c.Row > 0 { // at a row's start (a pair's)
		unit := c.Row
		if c.Pairs {
			unit *= 2
		}
		cut -= cut % unit
		return &Corpus{Tokens: c.Tokens[:cut], Row: c.Row, Mask: c.Mask[:cut], Pairs: c.Pairs},
			&Corpus{Tokens: c.Tokens[cut:], Row: c.Row, Mask: c.Mask[cut:], Pairs: c.Pairs}
	}
	for i := cut; i < len(c.Tokens) && i < cut+512; i++ {
		if c.Tokens[i] == eos {
			cut = i + 1
			break
		}
	}
	return &Corpus{Tokens: c.Tokens[:cut]}, &Corpus{Tokens: c.Tokens[cut:]}
}

// Batch cuts b windows of t+1 tokens at offsets drawn from a PCG stream keyed
// by (seed, step): the same arguments always give the same batch. It fills
// tokens and targets (each b·t; targets are the next tokens).
func (c *Corpus) Batch(seed uint64, step, b, t int, tokens, targets []int32) error {
	if len(c.Tokens) < t+1 {
		return fmt.Errorf("%w: %d tokens cannot fill one sequence of %d (+1 target)", ErrCorpus, len(c.Tokens), t)
	}
	if c.Row > 0 && t+1 > c.Row {
		return fmt.Errorf("%w: sequences of %d (+1 target) are longer than the corpus's rows of %d", ErrCorpus, t, c.Row)
	}
	r := rand.New(rand.NewPCG(seed, uint64(step)))
	if c.Pairs {
		if b%2 != 0 {
			return fmt.Errorf("%w: a batch of pairs needs an even number of rows, not %d", ErrCorpus, b)
		}
		for i := range b / 2 {
			o := r.IntN(len(c.Tokens)/(2*c.Row)) * 2 * c.Row
			c.cutPair(o, i, b/2, t, tokens, targets)
		}
		return nil
	}
	for i := 0; i < b; i++ {
		var o int
		if c.Row > 0 {
			o = r.IntN(len(c.Tokens)/c.Row) * c.Row
		} else {
			o = r.IntN(len(c.Tokens) - t)
		}
		c.cut(o, t, tokens[i*t:(i+1)*t], targets[i*t:(i+1)*t])
	}
	return nil
}

// cut copies the sequence of t tokens at offset o and its targets (those
// the mask leaves out: kernels.IgnoreIndex).
func (c *Corpus) cut(o, t int, tokens, targets []int32) {
	copy(tokens, c.Tokens[o:o+t])
	copy(targets, c.Tokens[o+1:o+t+1])
	if c.Mask != nil {
		for j := range targets {
			if !c.Mask[o+1+j] {
				targets[j] = kernels.IgnoreIndex
			}
		}
	}
}

// cutPair cuts the pair at offset o into slot i of a batch of P pairs:
// its chosen row into row i, its rejected row into row P+i.
func (c *Corpus) cutPair(o, i, P, t int, tokens, targets []int32) {
	c.cut(o, t, tokens[i*t:(i+1)*t], targets[i*t:(i+1)*t])
	c.cut(o+c.Row, t, tokens[(P+i)*t:(P+i+1)*t], targets[(P+i)*t:(P+i+1)*t])
}

// Windows cuts the stream into consecutive non-overlapping windows for
// evaluation and calls f with batches of min(b, windows) of them; windows
// that do not fill a last batch are left out, so every batch has one shape.
func (c *Corpus) Windows(b, t int, f func(tokens, targets []int32, rows int) error) error {
	n, stride := (len(c.Tokens)-1)/t, t
	if c.Row > 0 { // one window at the start of each row
		n, stride = len(c.Tokens)/c.Row, c.Row
		if t+1 > c.Row {
			return fmt.Errorf("%w: windows of %d (+1 target) are longer than the corpus's rows of %d", ErrCorpus, t, c.Row)
		}
	}
	rows := min(b, n) // every call has the same shape; a remainder is dropped
	tokens, targets := make([]int32, rows*t), make([]int32, rows*t)
	if c.Pairs { // whole pairs, chosen rows first
		rows -= rows % 2
		for w := 0; rows > 0 && w+rows <= n; w += rows {
			for i := range rows / 2 {
				c.cutPair((w+2*i)*stride, i, rows/2, t, tokens, targets)
			}
			if err := f(tokens[:rows*t], targets[:rows*t], rows); err != nil {
				return err
			}
		}
		return nil
	}
	for w := 0; rows > 0 && w+rows <= n; w += rows {
		for i := 0; i < rows; i++ {
			c.cut((w+i)*stride, t, tokens[i*t:(i+1)*t], targets[i*t:(i+1)*t])
		}
		if err := f(tokens[:rows*t], targets[:rows*t], rows); err != nil {
			return err
		}
	}
	return nil
}
