package gradsync

import (
	"math"
	"sort"
)

// Contribution is one worker's decoded pseudo-gradient for one partition.
type Contribution struct {
	ID     string    // content ID of the contribution (or the worker's, in simulation)
	Tokens int64     // tokens the worker trained on this round (its weight)
	Delta  []float32 // decoded partition
}

// Rejection reasons.
const (
	RejectLength    = "wrong_length"
	RejectNonFinite = "non_finite"
	RejectNorm      = "norm_outlier"
	RejectTokens    = "bad_token_count"
	RejectDup       = "duplicate"
	// RejectCopy: a delta that is a scaled copy (any factor, either sign)
	// of another's, or the original of one (see dropCopies).
	RejectCopy = "copied_delta"
	// RejectZero: an all-zero delta where another is not.
	RejectZero = "zero_delta"
)

// AggReport says which contributions an aggregate includes and why others
// were left out. Included is sorted by ID.
type AggReport struct {
	Included []string
	Rejected map[string]string // ID → reason
	Clipped  int               // contributions whose norm was clipped
}

// Aggregate combines the contributions of one partition into dst (length
// n) with cfg.Aggregation. Contributions are first sorted by ID, so the
// result does not depend on arrival order; sums run in float64 in that
// order. It returns false when fewer than cfg.Quorum contributions remain.
func Aggregate(cfg Config, dst []float32, contribs []Contribution) (AggReport, bool) {
	rep := AggReport{Rejected: map[string]string{}}
	cs := append([]Contribution(nil), contribs...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	var ok []Contribution
	norms := map[string]float64{}
	for i, c := range cs {
		switch {
		case i > 0 && c.ID == cs[i-1].ID:
			rep.Rejected[c.ID] = RejectDup
			continue
		case len(c.Delta) != len(dst):
			rep.Rejected[c.ID] = RejectLength
			continue
		case c.Tokens <= 0:
			rep.Rejected[c.ID] = RejectTokens
			continue
		}
		var ss float64
		finite := true
		for _, v := range c.Delta {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				finite = false
				break
			}
			ss += float64(v) * float64(v)
		}
		if !finite || math.IsInf(ss, 0) {
			rep.Rejected[c.ID] = RejectNonFinite
			continue
		}
		norms[c.ID] = math.Sqrt(ss)
		ok = append(ok, c)
	}
	// The plain mean is the undefended yardstick: it keeps everything.
	if cfg.Aggregation != "mean" {
		ok = dropCopies(ok, norms, rep.Rejected)
	}
	// Reject far outliers against the median norm (only with enough peers
	// for a median to mean something).
	if len(ok) >= 3 && cfg.Aggregation != "mean" {
		med := medianNorm(ok, norms)
		kept := ok[:0]
		for _, c := range ok {
			if med > 0 && norms[c.ID] > cfg.RejectMultiple*med {
				rep.Rejected[c.ID] = RejectNorm
				continue
			}
			kept = append(kept, c)
		}
		ok = kept
	}
	if len(ok) < max(1, cfg.Quorum) {
		clear(dst)
		return rep, false
	}
	for _, c := range ok {
		rep.Included = append(rep.Included, c.ID)
	}
	switch cfg.Aggregation {
	case "trimmed-mean":
		trimmedMean(dst, ok, cfg.TrimFrac)
	case "centered-clip":
		rep.Clipped = centeredClip(dst, ok, norms, cfg.ClipMultiple)
	case "mean":
		meanClip(dst, ok, norms, math.Inf(1))
	default:
		rep.Clipped = meanClip(dst, ok, norms, cfg.ClipMultiple)
	}
	return rep, true
}

// copyResidual bounds, for a copy, the part of its delta that the delta it
// copies does not explain (relative to its norm): a scaled float32 or int8
// copy leaves rounding of about 1e-7; independent training, even on the
// same data, leaves orders of magnitude more.
const copyResidual = 1e-3

// dropCopies leaves out (in rejected) the contributions of cs, sorted by
// ID, that add no work of their own. An all-zero delta is left out unless
// every delta is zero. Deltas that are scaled copies of one another — the
// same pattern of signs up to one flip, and each within copyResidual of
// the first's direction — form a group of which one counts: the smallest
// in norm (the earliest in ID order among equals), so a copy can replace
// its original only by a smaller step in the same direction; a group with
// deltas of both signs (a copy turned against its original) counts none.
// Only deltas with the same sign pattern are compared: one pass over each
// when nobody copies.
func dropCopies(cs []Contribution, norms map[string]float64, rejected map[string]string) []Contribution {
	nonzero := false
	for _, c := range cs {
		nonzero = nonzero || norms[c.ID] > 0
	}
	type group struct {
		members []int
		twoWays bool
	}
	var groups []*group
	bySigns := map[uint64][]*group{}
	out := map[int]bool{}
	for i, c := range cs {
		if norms[c.ID] == 0 {
			if nonzero {
				rejected[c.ID], out[i] = RejectZero, true
			}
			continue
		}
		key := signKey(c.Delta)
		var g *group
		for _, o := range bySigns[key] {
			first := cs[o.members[0]]
			cos := cosine(first.Delta, c.Delta, norms[first.ID], norms[c.ID])
			if 1-cos*cos <= copyResidual*copyResidual {
				g = o
				g.twoWays = g.twoWays || cos < 0
				break
			}
		}
		if g == nil {
			g = &group{}
			groups = append(groups, g)
			bySigns[key] = append(bySigns[key], g)
		}
		g.members = append(g.members, i)
	}
	for _, g := range groups {
		keep := -1
		if !g.twoWays {
			keep = g.members[0]
			for _, i := range g.members {
				if norms[cs[i].ID] < norms[cs[keep].ID] {
					keep = i
				}
			}
		}
		for _, i := range g.members {
			if i != keep {
				rejected[cs[i].ID], out[i] = RejectCopy, true
			}
		}
	}
	kept := cs[:0]
	for i, c := range cs {
		if !out[i] {
			kept = append(kept, c)
		}
	}
	return kept
}

// signKey hashes d's pattern of signs (negative, zero, positive), flipped
// so that its first non-zero value counts as positive.
func signKey(d []float32) uint64 {
	flip := false
	for _, v := range d {
		if v != 0 {
			flip = v < 0
			break
		}
	}
	const prime = 0x100000001b3
	h, word := uint64(0xcbf29ce484222325), uint64(0)
	for i, v := range d {
		s := uint64(0)
		if v != 0 {
			s = 1
			if (v < 0) != flip {
				s = 2
			}
		}
		word = word<<2 | s
		if i%32 == 31 || i == len(d)-1 {
			h = (h ^ word) * prime
			word = 0
		}
	}
	return h
}

// cosine is the cosine of the angle between a and b (norms na, nb).
// Products of float32 values are exact in float64, so the sum is the same
// on every machine.
func cosine(a, b []float32, na, nb float64) float64 {
	var dot float64
	for i, v := range a {
		dot += float64(v) * float64(b[i])
	}
	return dot / (na * nb)
}

func medianNorm(cs []Contribution, norms map[string]float64) float64 {
	ns := make([]float64, 0, len(cs))
	for _, c := range cs {
		ns = append(ns, norms[c.ID])
	}
	sort.Float64s(ns)
	if len(ns)%2 == 1 {
		return ns[len(ns)/2]
	}
	return (ns[len(ns)/2-1] + ns[len(ns)/2]) / 2
}

// meanClip: token-weighted mean, each contribution first scaled down to at
// most clip × the median norm.
func meanClip(dst []float32, cs []Contribution, norms map[string]float64, clip float64) int {
	limit := clip * medianNorm(cs, norms)
	var wsum float64
	for _, c := range cs {
		wsum += float64(c.Tokens)
	}
	acc := make([]float64, len(dst))
	clipped := 0
	for _, c := range cs {
		s := float64(c.Tokens) / wsum
		if n := norms[c.ID]; len(cs) > 1 && n > limit && limit > 0 && !math.IsInf(limit, 1) {
			s *= limit / n
			clipped++
		}
		for i, v := range c.Delta {
			acc[i] += float64(s * float64(v))
		}
	}
	for i, v := range acc {
		dst[i] = float32(v)
	}
	return clipped
}

// trimmedMean: per coordinate, drop the lowest and highest ⌈trim·n⌉ values
// (keeping at least one) and average the rest (unweighted).
func trimmedMean(dst []float32, cs []Contribution, trim float64) {
	k := int(math.Ceil(trim*float64(len(cs)) - 1e-9)) // 4 peers at 0.2: trim one each side
	if 2*k >= len(cs) {
		k = (len(cs) - 1) / 2
	}
	if len(cs) <= 2 { // nothing trimmed, and a sum of two is the same either way round
		for i := range dst {
			var s float64
			for _, c := range cs {
				s += float64(c.Delta[i])
			}
			dst[i] = float32(s / float64(len(cs)))
		}
		return
	}
	col := make([]float64, len(cs))
	for i := range dst {
		for j, c := range cs {
			col[j] = float64(c.Delta[i])
		}
		sort.Float64s(col)
		var s float64
		for _, v := range col[k : len(cs)-k] {
			s += v
		}
		dst[i] = float32(s / float64(len(cs)-2*k))
	}
}

// centeredClip: start from the coordinate-wise median and move towards each
// contribution by at most clip × the median distance (three iterations), a
// robust mean in the sense of Karimireddy et al.
func centeredClip(dst []float32, cs []Contribution, norms map[string]float64, clip float64) int {
	v := make([]float64, len(dst))
	col := make([]float64, len(cs))
	for i := range dst {
		for j, c := range cs {
			col[j] = float64(c.Delta[i])
		}
		sort.Float64s(col)
		if len(col)%2 == 1 {
			v[i] = col[len(col)/2]
		} else {
			v[i] = (col[len(col)/2-1] + col[len(col)/2]) / 2
		}
	}
	clipped := 0
	dist := make([]float64, len(cs))
	for it := 0; it < 3; it++ {
		for j, c := range cs {
			var ss float64
			for i, x := range c.Delta {
				d := float64(x) - v[i]
				ss += float64(d * d)
			}
			dist[j] = math.Sqrt(ss)
		}
		sorted := append([]float64(nil), dist...)
		sort.Float64s(sorted)
		tau := clip * sorted[len(sorted)/2]
		step := make([]float64, len(dst))
		for j, c := range cs {
			s := 1.0
			if dist[j] > tau && tau > 0 {
				s = tau / dist[j]
				if it == 2 {
					clipped++
				}
			}
			for i, x := range c.Delta {
				step[i] += float64(s * (float64(x) - v[i]))
			}
		}
		for i := range v {
			v[i] += step[i] / float64(len(cs))
		}
	}
	for i, x := range v {
		dst[i] = float32(x)
	}
	return clipped
}
