//go:build !amd64

package cpu

const hasAVX2FMA = false

func kernelFMA(k int, ap, bp, c []float32, ldc int, load bool) {
	kernelGeneric(k, ap, bp, c, ldc, load)
}

func fmaLoop(n int) { peakGeneric(n) }
