package sharding

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Deduper drops exact duplicates (SHA-256 of the text with whitespace runs
// collapsed) and near duplicates (MinHash of character 5-gram sets with
// banded LSH). It keeps state for every document it has kept, so its memory
// grows with the number of distinct documents (about 300 bytes each), not
// with their size.
//
// Written here because no maintained Go MinHash-LSH library handles short
// documents (UI strings of a few characters) the way we need: a document
// shorter than the shingle is one shingle, and candidate pairs are confirmed
// by their signature agreement, not by the bands alone.
//
// Its methods split the work so that a pipeline can do the costly part in
// parallel: DupKey and Signature are pure (any goroutine), Kept may be
// called from any goroutine, and Decide, which remembers, from one.
type Deduper struct {
	threshold float64
	mu        sync.RWMutex // guards exact: Decide writes, Kept reads
	exact     map[[32]byte]struct{}
	// Kept signatures by band: heads maps a band hash to the last slot
	// (kept document × numBands + band) of that hash, next chains each slot
	// to the slot before it of the same hash (-1: none).
	heads map[uint64]int32
	next  []int32
	sigs  [][]minhash // kept signatures in chunks of sigChunk (appending never copies)
	seeds [numHashes]uint64
}

const (
	shingle   = 5
	numHashes = 64
	numBands  = 16 // 16 bands of 4 rows: pairs above ~0.5 similarity collide
	bandRows  = numHashes / numBands
)

// NewDeduper returns a deduper; threshold 0 turns near-dedup off.
func NewDeduper(threshold float64) *Deduper {
	d := &Deduper{threshold: threshold, exact: map[[32]byte]struct{}{}}
	d.heads = map[uint64]int32{}
	// Fixed seeds (splitmix64 of the index): the same input always gives
	// the same decisions.
	x := uint64(0x9e3779b97f4a7c15)
	for i := range d.seeds {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		d.seeds[i] = z ^ z>>31
	}
	return d
}

// Signature is a document's MinHash signature and the hashes of its LSH
// bands.
type Signature struct {
	hashes minhash
	bands  [numBands]uint64
}

type minhash = [numHashes]uint32

const sigChunk = 4096

// Check reports ReasonExactDup or ReasonNearDup for a duplicate of a
// document kept before, or "" after remembering text as kept.
func (d *Deduper) Check(text string) string {
	key, norm := DupKey(text, nil)
	if d.Kept(key) {
		return ReasonExactDup
	}
	return d.Decide(key, d.Signature(string(norm)))
}

// DupKey returns the exact-duplicate key of text (SHA-256 of text with
// whitespace runs collapsed to one space and trimmed) and that normal form,
// appended to buf.
func DupKey(text string, buf []byte) ([32]byte, []byte) {
	norm := buf[:0]
	start := -1 // of the run of non-space characters being read
	for i := 0; i < len(text); {
		c, size := text[i], 1
		space := c < utf8.RuneSelf && asciiSpace[c]
		if c >= utf8.RuneSelf {
			var r rune
			r, size = utf8.DecodeRuneInString(text[i:])
			space = unicode.IsSpace(r)
		}
		switch {
		case space && start >= 0:
			if len(norm) > 0 {
				norm = append(norm, ' ')
			}
			norm, start = append(norm, text[start:i]...), -1
		case !space && start < 0:
			start = i
		}
		i += size
	}
	if start >= 0 {
		if len(norm) > 0 {
			norm = append(norm, ' ')
		}
		norm = append(norm, text[start:]...)
	}
	return sha256.Sum256(norm), norm
}

var asciiSpace = [utf8.RuneSelf]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

// Kept reports whether a document of this key was kept. Safe for
// concurrent use with Decide.
func (d *Deduper) Kept(key [32]byte) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.exact[key]
	return ok
}

// Signature is the MinHash signature of a normal form (DupKey's), or nil
// when near-dedup is off.
func (d *Deduper) Signature(norm string) *Signature {
	if d.threshold <= 0 {
		return nil
	}
	return d.bandsOf(d.signature(norm))
}

// bandsOf completes a signature with its band hashes.
func (d *Deduper) bandsOf(h minhash) *Signature {
	sig := &Signature{hashes: h}
	for b := range numBands {
		var buf [bandRows * 4]byte
		for r := range bandRows {
			binary.LittleEndian.PutUint32(buf[4*r:], h[b*bandRows+r])
		}
		sig.bands[b] = maphashBytes(buf[:], uint64(b))
	}
	return sig
}

// Decide reports ReasonExactDup or ReasonNearDup for a duplicate of a
// document kept before, or "" after remembering the document as kept. sig
// is the document's Signature; it may be nil only when near-dedup is off or
// Kept(key) holds. One goroutine calls Decide, in document order.
func (d *Deduper) Decide(key [32]byte, sig *Signature) string {
	if _, ok := d.exact[key]; ok {
		return ReasonExactDup
	}
	if d.threshold > 0 {
		for _, k := range sig.bands {
			slot, ok := d.heads[k]
			for ; ok && slot >= 0; slot = d.next[slot] {
				other := slot / numBands
				if similarity(&sig.hashes, &d.sigs[other/sigChunk][other%sigChunk]) >= d.threshold {
					return ReasonNearDup
				}
			}
		}
		n := len(d.sigs)
		if n == 0 || len(d.sigs[n-1]) == sigChunk {
			d.sigs = append(d.sigs, make([]minhash, 0, sigChunk))
			n++
		}
		id := int32((n-1)*sigChunk + len(d.sigs[n-1]))
		d.sigs[n-1] = append(d.sigs[n-1], sig.hashes)
		for b, k := range sig.bands {
			prev, ok := d.heads[k]
			if !ok {
				prev = -1
			}
			d.heads[k] = id*numBands + int32(b)
			d.next = append(d.next, prev)
		}
	}
	d.mu.Lock()
	d.exact[key] = struct{}{}
	d.mu.Unlock()
	return ""
}

var hashSeed = maphash.MakeSeed()

// maphashBytes hashes band contents for bucketing only; bucket identity
// never changes a decision (candidates are confirmed by signatures).
func maphashBytes(b []byte, salt uint64) uint64 {
	var h maphash.Hash
	h.SetSeed(hashSeed)
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], salt)
	h.Write(s[:])
	h.Write(b)
	return h.Sum64()
}

// signature is the MinHash of the set of character 5-grams of s (the whole
// string when shorter), one 64-bit hash per shingle mixed with each seed.
func (d *Deduper) signature(s string) minhash {
	var sig minhash
	for i := range sig {
		sig[i] = ^uint32(0)
	}
	rs := []rune(s)
	add := func(g []rune) {
		h := fnv64(g)
		for i, seed := range d.seeds {
			x := h ^ seed
			x = (x ^ x>>33) * 0xff51afd7ed558ccd
			x = (x ^ x>>33) * 0xc4ceb9fe1a85ec53
			x ^= x >> 33
			if v := uint32(x); v < sig[i] {
				sig[i] = v
			}
		}
	}
	if len(rs) <= shingle {
		add(rs)
		return sig
	}
	for i := 0; i+shingle <= len(rs); i++ {
		add(rs[i : i+shingle])
	}
	return sig
}

func fnv64(rs []rune) uint64 {
	h := uint64(14695981039346656037)
	for _, r := range rs {
		h ^= uint64(r)
		h *= 1099511628211
	}
	return h
}

// similarity estimates Jaccard similarity as the share of agreeing hashes.
func similarity(a, b *minhash) float64 {
	n := 0
	for i := range a {
		if a[i] == b[i] {
			n++
		}
	}
	return float64(n) / numHashes
}
