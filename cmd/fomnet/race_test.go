//go:build race

package main

// raceEnabled: the race detector slows the processes of process tests
// beyond their use (they test processes, not goroutines).
const raceEnabled = true
