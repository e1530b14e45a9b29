package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// selfTest512 runs the AVX-512 micro-kernel once against the Go definition
// before it is used. The machines this project is built and tested on have
// no AVX-512, so this check is the kernel's test where it runs: a kernel that
// disagrees by a single bit is not used, and Backend.Note says why.
func selfTest512() error {
	const mr, nr, k, ldc = 12, 32, 37, 40
	r := rand.New(rand.NewPCG(512, 512))
	ap, bp := make([]float32, k*mr), make([]float32, k*nr)
	for i := range ap {
		ap[i] = float32(r.NormFloat64())
	}
	for i := range bp {
		bp[i] = float32(r.NormFloat64())
	}
	for _, load := range []bool{false, true} {
		c0 := make([]float32, mr*ldc)
		for i := range c0 {
			c0[i] = float32(r.NormFloat64())
		}
		got, want := append([]float32(nil), c0...), append([]float32(nil), c0...)
		kernel512(k, ap, bp, got, ldc, load)
		kernelGeneric(k, mr, nr, ap, bp, want, ldc, load)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				return fmt.Errorf("cpu: AVX-512 kernel self-test failed at %d (load=%v): %v, want %v; using AVX2", i, load, got[i], want[i])
			}
		}
	}
	return nil
}
