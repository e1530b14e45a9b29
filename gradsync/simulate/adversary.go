package simulate

import (
	"math"
	"math/rand/v2"
)

// moments keeps per-coordinate sums of the honest workers' pseudo-gradients
// in a round; a zero moments (no adversary needs them) keeps nothing.
type moments struct {
	n       int
	sum, sq []float64
}

func newMoments(on bool, size int) *moments {
	if !on {
		return &moments{}
	}
	return &moments{sum: make([]float64, size), sq: make([]float64, size)}
}

func (m *moments) reset() {
	m.n = 0
	clear(m.sum)
	clear(m.sq)
}

func (m *moments) add(d []float32) {
	if m.sum == nil {
		return
	}
	m.n++
	for i, v := range d {
		m.sum[i] += float64(v)
		m.sq[i] += float64(v) * float64(v)
	}
}

// adversary replaces delta, worker 0's honest pseudo-gradient, with the
// named attack's (see Adversaries); honest holds the other workers'
// moments of this round.
func adversary(kind string, delta []float32, honest *moments, rng *rand.Rand) {
	switch kind {
	case "scaled":
		scale(delta, -8)
	case "opposite":
		scale(delta, -1)
	case "inflated":
		scale(delta, 1.5)
	case "zero":
		clear(delta)
	case "random":
		for i := range delta {
			delta[i] = float32(rng.NormFloat64() * 0.05)
		}
	case "alie":
		k := float64(max(honest.n, 1))
		for i := range delta {
			mu := honest.sum[i] / k
			sd := math.Sqrt(max(honest.sq[i]/k-mu*mu, 0))
			delta[i] = float32(mu - sd)
		}
	}
}

func scale(d []float32, s float32) {
	for i := range d {
		d[i] *= s
	}
}
