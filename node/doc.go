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
// Not yet here: training runs over the swarm (issue "Rounds over the
// swarm"); single-node training is package model's Train.
package node
