//go:build race

package node_test

// raceEnabled: under the race detector a few long scenario tests run one
// case (or none): their cases differ in what an attacker does, not in
// which goroutines meet, and every swarm path they take is raced by the
// other swarm tests; the flood test measures throughput, which the
// detector's slowdown breaks. `go test ./node` runs them all. (The package's race
// pass took 907–984 s on a 2-core machine with all of them, 560 s with
// three trimmed; .ci/run must finish within 30 minutes.)
const raceEnabled = true
