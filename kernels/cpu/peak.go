package cpu

import (
	"math"
	"runtime"
	"sync"
	"time"
)

// flopsPerFMALoop is what one iteration of fmaLoop computes: 12 chains of
// 8-lane fused multiply-adds, 2 flops each.
const flopsPerFMALoop = 12 * 8 * 2

// PeakGFLOPS measures the fp32 FMA throughput of this machine with the given
// number of threads, on the widest vector path this package uses, as the best
// of five trials lasting d/5 each (the best, because a shared machine only
// ever slows a trial down). It is what MFU figures are measured against.
func PeakGFLOPS(threads int, d time.Duration) float64 {
	best := 0.0
	for i := 0; i < 5; i++ {
		best = max(best, peakTrial(threads, d/5))
	}
	return best
}

func peakTrial(threads int, d time.Duration) float64 {
	if threads < 1 {
		threads = runtime.GOMAXPROCS(0)
	}
	loop, flops := fmaLoop, float64(flopsPerFMALoop)
	switch {
	case hasAVX512:
		loop, flops = fmaLoop512, 2*flopsPerFMALoop // 16 lanes instead of 8
	case !hasAVX2FMA:
		loop = peakGeneric
	}
	const iters = 1 << 16
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total float64
	)
	for i := 0; i < threads; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			loop(iters) // warm up clocks and caches
			n := 0
			start := time.Now()
			for time.Since(start) < d {
				loop(iters)
				n++
			}
			rate := float64(n) * iters * flops / time.Since(start).Seconds()
			mu.Lock()
			total += rate
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total / 1e9
}

var peakSink float32

// peakGeneric is the portable stand-in for fmaLoop: the same number of fused
// multiply-adds, one lane at a time.
func peakGeneric(n int) {
	var acc [12 * 8]float64
	for it := 0; it < n; it++ {
		for i := range acc {
			acc[i] = math.FMA(1.0000001, acc[i], 1e-9)
		}
	}
	peakSink = float32(acc[0])
}
