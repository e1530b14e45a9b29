//go:build unix

package main

import (
	"runtime"
	"syscall"
)

// peakRSS is the most memory this process has held resident, in bytes (0
// where the system does not say).
func peakRSS() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	if runtime.GOOS == "darwin" {
		return ru.Maxrss // bytes there, KiB elsewhere
	}
	return ru.Maxrss << 10
}
