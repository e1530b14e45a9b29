package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

// peakHeapProfile, when FOMNET_MEMPROFILE names a file, writes a heap
// profile there each time the heap in use reaches a new peak (sampled every
// 500 ms), so that the file ends up describing the command's peak; the
// returned function (called once) stops it and says what the peak was. A tool for
// finding where memory goes (docs/BENCHMARKS.md), not for users.
func peakHeapProfile(stderr io.Writer) func() {
	path := os.Getenv("FOMNET_MEMPROFILE")
	if path == "" {
		return func() {}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	var peak, sys uint64
	go func() {
		defer close(done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			sys = max(sys, ms.Sys)
			if ms.HeapInuse > peak {
				peak = ms.HeapInuse
				if f, err := os.Create(path); err == nil {
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(stderr, "fomnet: peak heap in use %.1f MiB, memory from the OS %.1f MiB, %.0f MiB allocated in all, %d GCs; profile at the peak: %s\n",
			float64(peak)/(1<<20), float64(sys)/(1<<20), float64(ms.TotalAlloc)/(1<<20), ms.NumGC, path)
	}
}

// cpuProfile, when FOMNET_CPUPROFILE names a file, profiles the command's
// CPU time into it; the returned function (called once) stops it. A tool
// for finding where time goes (docs/BENCHMARKS.md), not for users.
func cpuProfile(stderr io.Writer) func() {
	path := os.Getenv("FOMNET_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "fomnet: FOMNET_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		fmt.Fprintf(stderr, "fomnet: CPU profile: %s\n", path)
	}
}
