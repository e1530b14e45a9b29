package gen

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
)

// FraudProof shows that a shard is not the job's output: a record that
// generating again does not give, or bytes that are not the shard's
// records at all. Anyone with the checkpoint and the prompts can check it
// by generating record Index (or parsing the shard) themselves.
type FraudProof struct {
	Shard       int    `json:"shard"`
	Index       int    `json:"index"` // the prompt's index in the set; −1: the shard is malformed
	Reason      string `json:"reason"`
	Claimed     string `json:"claimed,omitempty"`
	Regenerated string `json:"regenerated,omitempty"`
}

func (f *FraudProof) Error() string {
	if f.Claimed != "" || f.Regenerated != "" {
		return fmt.Sprintf("gen: shard %d, record %d: %s: claimed %q, generated again %q", f.Shard, f.Index, f.Reason, clip(f.Claimed), clip(f.Regenerated))
	}
	return fmt.Sprintf("gen: shard %d: %s", f.Shard, f.Reason)
}

func clip(s string) string {
	if r := []rune(s); len(r) > 60 {
		return string(r[:60]) + "…"
	}
	return s
}

// ParseShard reads shard k of the job strictly: one record a line for each
// of its prompts, in order, each in the canonical encoding, with the
// prompt and language of the set and text made of prompt and completion as
// the spec says. A shard that is not so gets a FraudProof as its error.
func (g *Generator) ParseShard(k int, b []byte) ([]Record, error) {
	if k < 0 || k >= g.Spec.Shards() {
		return nil, fmt.Errorf("gen: shard %d of %d", k, g.Spec.Shards())
	}
	lo, hi := g.Spec.Range(k)
	bad := func(format string, args ...any) error {
		return &FraudProof{Shard: k, Index: -1, Reason: "malformed: " + fmt.Sprintf(format, args...)}
	}
	var recs []Record
	for len(b) > 0 {
		n := bytes.IndexByte(b, '\n')
		if n < 0 {
			return nil, bad("the last line has no newline")
		}
		line := b[:n+1]
		b = b[n+1:]
		i := lo + len(recs)
		if i >= hi {
			return nil, bad("more than the %d records of prompts %d–%d", hi-lo, lo, hi)
		}
		var r Record
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return nil, bad("record %d: %v", i, err)
		}
		p := g.Prompts[i]
		text := r.Prompt + r.Completion
		if g.Spec.Chat {
			text = r.Completion
		}
		switch {
		case r.I != i || r.Prompt != p.Prompt || r.Lang != p.Lang:
			return nil, bad("record %d is not prompt %d's", r.I, i)
		case r.Text != text:
			return nil, bad("record %d: text is not made of its prompt and completion", i)
		case !bytes.Equal(r.encode(), line):
			return nil, bad("record %d is not in the canonical encoding", i)
		}
		recs = append(recs, r)
	}
	if len(recs) != hi-lo {
		return nil, bad("%d records for the %d prompts %d–%d", len(recs), hi-lo, lo, hi)
	}
	return recs, nil
}

// Verify checks shard k's bytes: it parses them, then generates sample of
// its records again (which ones: drawn from seed and the shard's hash, so a
// contributor cannot know them beforehand) and compares. It returns nil for
// a shard that passes, a *FraudProof for one that does not, or another
// error when it could not check. One record changed among n escapes a
// check of s records with probability 1 − s/n.
func (g *Generator) Verify(k int, b []byte, sample int, seed uint64) error {
	lo, hi := g.Spec.Range(k)
	h := sha256.Sum256(b)
	r := rand.New(rand.NewPCG(seed, binary.LittleEndian.Uint64(h[:])))
	picks := r.Perm(max(hi-lo, 0))[:min(max(sample, 1), max(hi-lo, 0))]
	for j := range picks {
		picks[j] += lo
	}
	return g.Check(k, b, picks)
}

// Check parses shard k's bytes and generates the records of prompts idx
// (each in the shard's range) again: nil when they match, a *FraudProof
// naming the first that does not (or the shard's malformation), another
// error when it could not check.
func (g *Generator) Check(k int, b []byte, idx []int) error {
	recs, err := g.ParseShard(k, b)
	if err != nil {
		return err
	}
	lo, hi := g.Spec.Range(k)
	idx = slices.Sorted(slices.Values(idx))
	for _, i := range idx {
		if i < lo || i >= hi {
			return fmt.Errorf("gen: prompt %d is not in shard %d (prompts %d–%d)", i, k, lo, hi)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	again, err := g.records(idx, nil)
	if err != nil {
		return err
	}
	for j, i := range idx {
		if want := recs[i-lo]; again[j].Completion != want.Completion {
			return &FraudProof{Shard: k, Index: i, Reason: "generated again, the completion differs",
				Claimed: want.Completion, Regenerated: again[j].Completion}
		}
	}
	return nil
}

// FirstDifference is the prompt index of the first record where two
// versions of shard k differ, or −1 when their records are the same (or
// one is malformed: ParseShard tells which).
func (g *Generator) FirstDifference(k int, a, b []byte) int {
	ra, errA := g.ParseShard(k, a)
	rb, errB := g.ParseShard(k, b)
	if errA != nil || errB != nil {
		return -1
	}
	for j := range ra {
		if ra[j] != rb[j] {
			return ra[j].I
		}
	}
	return -1
}
