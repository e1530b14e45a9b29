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
)

// Corpus is a token stream of documents, each followed by EOS, from which
// training batches are cut. It is the single-node stand-in for the data
// pipeline's shards: byte-level text or raw token files.
type Corpus struct {
	Tokens []int32
	Docs   int
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

// Split holds out the last frac of the stream (at a document boundary when
// one is near) for validation.
func (c *Corpus) Split(frac float64, eos int32) (train, val *Corpus) {
	cut := len(c.Tokens) - int(frac*float64(len(c.Tokens)))
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
	r := rand.New(rand.NewPCG(seed, uint64(step)))
	for i := 0; i < b; i++ {
		o := r.IntN(len(c.Tokens) - t)
		copy(tokens[i*t:(i+1)*t], c.Tokens[o:o+t])
		copy(targets[i*t:(i+1)*t], c.Tokens[o+1:o+t+1])
	}
	return nil
}

// Windows cuts the stream into consecutive non-overlapping windows for
// evaluation and calls f with batches of min(b, windows) of them; windows
// that do not fill a last batch are left out, so every batch has one shape.
func (c *Corpus) Windows(b, t int, f func(tokens, targets []int32, rows int) error) error {
	n := (len(c.Tokens) - 1) / t
	rows := min(b, n) // every call has the same shape; a remainder is dropped
	tokens, targets := make([]int32, rows*t), make([]int32, rows*t)
	for w := 0; rows > 0 && w+rows <= n; w += rows {
		for i := 0; i < rows; i++ {
			o := (w + i) * t
			copy(tokens[i*t:], c.Tokens[o:o+t])
			copy(targets[i*t:], c.Tokens[o+1:o+t+1])
		}
		if err := f(tokens[:rows*t], targets[:rows*t], rows); err != nil {
			return err
		}
	}
	return nil
}
