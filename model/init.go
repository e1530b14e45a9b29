package model

import (
	"math"
	"math/rand/v2"
)

// fillNormal fills dst with N(0, std²) values drawn by Box–Muller from a PCG
// stream keyed by (seed, stream). PCG's output is fixed by its definition, so
// the same seed gives the same parameters in every Go release.
func fillNormal(dst []float32, seed, stream uint64, std float64) {
	r := rand.NewPCG(seed, stream)
	u := func() float64 { // uniform in (0, 1]
		return (float64(r.Uint64()>>11) + 1) / (1 << 53)
	}
	for i := 0; i < len(dst); i += 2 {
		rad := math.Sqrt(-2 * math.Log(u()))
		s, c := math.Sincos(2 * math.Pi * u())
		dst[i] = float32(std * rad * c)
		if i+1 < len(dst) {
			dst[i+1] = float32(std * rad * s)
		}
	}
}
