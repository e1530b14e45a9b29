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
