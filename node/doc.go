// Package node is a fomnet node: its home directory (config.toml, identity
// key, content store), the libp2p host and content store started from it,
// and the local HTTP API through which fomnet commands drive a running
// daemon.
//
//	n, err := node.Open(ctx, home, node.Options{API: true})
//	defer n.Close()
//	c, err := n.Add(ctx, "checkpoint/", true, nil)
//
// API is the set of operations the CLI uses; *Node performs them in
// process and *Client through a daemon, so each command is written once.
// Package nodetest starts clusters of real nodes on loopback for tests.
//
// Runs: a RunSpec (dag-json; its CID is the run ID) names the model, the
// dataset and the recipe; OpenRun joins a run as a Participant, whose
// RunRounds trains H inner steps per round, publishes its compressed
// pseudo-gradient by CID, reduces the partitions it is first in line for,
// applies the outer step and writes the round's checkpoint, which every
// honest node computes identically; in a run with overlapped rounds it
// trains each round while the one before closes (overlap.go); a run
// may close rounds by rule, leaving stragglers out (closing.go); reducers
// and deadlines follow the download rates nodes measure (link.go). Every
// contribution binds the inputs of its work, so anyone can re-execute it
// (reexec.go): members spot-check each other's work (spotcheck.go), fraud
// proofs exclude cheaters (fraud.go), and Node.Audit re-checks a whole
// lineage. RunDemo is `fomnet demo`.
package node
