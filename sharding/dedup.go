package sharding

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"strings"
	"unicode"
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
type Deduper struct {
	threshold float64
	exact     map[[32]byte]struct{}
	bands     []map[uint64][]int32 // band hash → kept signatures
	sigs      [][numHashes]uint32
	seeds     [numHashes]uint64
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
	d.bands = make([]map[uint64][]int32, numBands)
	for i := range d.bands {
		d.bands[i] = map[uint64][]int32{}
	}
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

// Check reports ReasonExactDup or ReasonNearDup for a duplicate of a
// document kept before, or "" after remembering text as kept.
func (d *Deduper) Check(text string) string {
	norm := strings.Join(strings.FieldsFunc(text, unicode.IsSpace), " ")
	key := sha256.Sum256([]byte(norm))
	if _, ok := d.exact[key]; ok {
		return ReasonExactDup
	}
	if d.threshold <= 0 {
		d.exact[key] = struct{}{}
		return ""
	}
	sig := d.signature(norm)
	id := int32(len(d.sigs))
	var bandKeys [numBands]uint64
	for b := 0; b < numBands; b++ {
		var buf [bandRows * 4]byte
		for r := 0; r < bandRows; r++ {
			binary.LittleEndian.PutUint32(buf[4*r:], sig[b*bandRows+r])
		}
		bandKeys[b] = maphashBytes(buf[:], uint64(b))
		for _, other := range d.bands[b][bandKeys[b]] {
			if similarity(&sig, &d.sigs[other]) >= d.threshold {
				return ReasonNearDup
			}
		}
	}
	d.exact[key] = struct{}{}
	d.sigs = append(d.sigs, sig)
	for b, k := range bandKeys {
		d.bands[b][k] = append(d.bands[b][k], id)
	}
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
func (d *Deduper) signature(s string) [numHashes]uint32 {
	var sig [numHashes]uint32
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
func similarity(a, b *[numHashes]uint32) float64 {
	n := 0
	for i := range a {
		if a[i] == b[i] {
			n++
		}
	}
	return float64(n) / numHashes
}
