//go:build !amd64

package cpu

const (
	hasAVX2FMA = false
	hasAVX512  = false
)

func kernelFMA(k int, ap, bp, c []float32, ldc int, load bool) { panic("unreachable") }
func kernel512(k int, ap, bp, c []float32, ldc int, load bool) { panic("unreachable") }
func fmaLoop512(n int)                                         { panic("unreachable") }

func fmaLoop(n int) { panic("unreachable") }

func expShiftAVX(x *float32, n int, scale, shift float32) { panic("unreachable") }
func swigluFwdAVX(h, g, u *float32, n int)                { panic("unreachable") }
func swigluBwdAVX(dg, du, dh, g, u *float32, n int)       { panic("unreachable") }

func adamwAVX(p, g, m, v *float32, n int, c *adamConst) { panic("unreachable") }
func sumsqAVX(x *float32, n int, acc *[16]float64)      { panic("unreachable") }
func sumAVX(x *float32, n int, acc *[16]float64)        { panic("unreachable") }
func scaleAVX(x *float32, n int, s float32)             { panic("unreachable") }
func maxAVX(x *float32, n int) float32                  { panic("unreachable") }

func adam8DecodeAVX(m, v *float32, mq, vq *uint8, n int, ms, vs float32, k *adam8Consts) {
	panic("unreachable")
}
func adam8RootsAVX(v *float32, n int) float32 { panic("unreachable") }
func adam8EncodeVAVX(w, m *float32, vq *uint8, n int, s float32, base, stepMix uint32, k *adam8Consts) float32 {
	panic("unreachable")
}
func adam8EncodeMAVX(m *float32, mq *uint8, n int, s float32, base, stepMix uint32, k *adam8Consts) {
	panic("unreachable")
}
