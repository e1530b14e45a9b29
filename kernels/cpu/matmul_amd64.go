//go:build amd64

package cpu

import "golang.org/x/sys/cpu"

var (
	hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	hasAVX512  = hasAVX2FMA && cpu.X86.HasAVX512F
)

//go:noescape
func kern6x16(k int, a, b, c *float32, ldc int, load bool)

//go:noescape
func fmaLoop(n int)

// kernelFMA runs the assembly micro-kernel after checking that every slice
// covers what the kernel touches.
func kernelFMA(k int, ap, bp, c []float32, ldc int, load bool) {
	_ = ap[k*6-1]
	_ = bp[k*16-1]
	_ = c[5*ldc+15]
	kern6x16(k, &ap[0], &bp[0], &c[0], ldc, load)
}

//go:noescape
func kern12x32(k int, a, b, c *float32, ldc int, load bool)

//go:noescape
func fmaLoop512(n int)

// kernel512 runs the AVX-512 micro-kernel after the same checks.
func kernel512(k int, ap, bp, c []float32, ldc int, load bool) {
	_ = ap[k*12-1]
	_ = bp[k*32-1]
	_ = c[11*ldc+31]
	kern12x32(k, &ap[0], &bp[0], &c[0], ldc, load)
}

//go:noescape
func expShiftAVX(x *float32, n int, scale, shift float32)

//go:noescape
func swigluFwdAVX(h, gate, u *float32, n int)

//go:noescape
func swigluBwdAVX(dg, du, dh, gate, u *float32, n int)

//go:noescape
func adamwAVX(p, grad, m, v *float32, n int, c *adamConst)

//go:noescape
func sumsqAVX(x *float32, n int, acc *[16]float64)

//go:noescape
func sumAVX(x *float32, n int, acc *[16]float64)

//go:noescape
func scaleAVX(x *float32, n int, s float32)

//go:noescape
func maxAVX(x *float32, n int) float32

//go:noescape
func adam8DecodeAVX(m, v *float32, mq, vq *uint8, n int, ms, vs float32, k *adam8Consts)

//go:noescape
func adam8RootsAVX(v *float32, n int) float32

//go:noescape
func adam8EncodeVAVX(w, m *float32, vq *uint8, n int, s float32, base, stepMix uint32, k *adam8Consts) float32

//go:noescape
func adam8EncodeMAVX(m *float32, mq *uint8, n int, s float32, base, stepMix uint32, k *adam8Consts)
