//go:build race

package node_test

// raceEnabled: under the race detector a few long scenario tests run one
// case (or none): their cases differ in what an attacker does, not in
// which goroutines meet, and every swarm path they take is raced by the
// other swarm tests. `go test ./node` runs them all.
const raceEnabled = true
