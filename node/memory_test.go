package node_test

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
)

// A run with 8-bit AdamW moments, its nodes holding activations three
// ways — as they come, recomputed, recomputed in two micro-batches: one
// checkpoint CID a round on every node, every contribution spot-checked
// by a node that holds them another way and found honest, and an audit
// that re-executes the whole run agrees. A node whose memory cannot hold
// the run is refused before its model is allocated.
func TestSwarmMemoryOptions(t *testing.T) {
	const n, rounds = 3, 3
	c := nodetest.New(t, n, nodetest.Options{})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := smallRun(t, c, rounds)
	spec.Inner.Optimizer = "adamw8"
	all := 1.0
	spec.SpotCheck = &all
	runID, err := c.Nodes[0].CreateRun(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if _, err := c.Nodes[1].OpenRun(ctx, runID, node.RunOptions{Backend: be, Memory: 1 << 20}); err == nil ||
		!strings.Contains(err.Error(), "nothing fits in 1.00 MiB") {
		t.Fatalf("a node with 1 MiB: %v", err)
	}
	// On a GPU the budget is the device's; the round vectors are the host's.
	if _, err := c.Nodes[1].OpenRun(ctx, runID, node.RunOptions{Backend: be, GPU: true, Memory: 1 << 40, HostMemory: 1 << 20}); err == nil ||
		!strings.Contains(err.Error(), "of host memory beside the GPU's, more than the 1.00 MiB available") {
		t.Fatalf("a GPU node with 1 MiB of host memory: %v", err)
	}
	var log checkpointLog
	var mu sync.Mutex
	checks, frauds := 0, 0
	ps := make([]*node.Participant, n)
	// Node 2 is lean: its base on disk, its model and residuals rebuilt
	// from its stored worker state before its steps and its checks.
	for i, o := range []node.RunOptions{{}, {Recompute: true}, {Recompute: true, Micro: 2, Lean: true}} {
		o.Expect = n
		o.Events = func(e node.RoundEvent) {
			log.record(e)
			if e.Phase == "spot-check" {
				mu.Lock()
				checks++
				if e.Fraud {
					frauds++
				}
				mu.Unlock()
			}
		}
		ps[i] = openWith(t, c.Nodes[i], runID, o)
	}
	for i, err := range runAll(ps, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, rounds) }) {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	log.agreed(t, rounds)
	sameBase(t, ps)
	mu.Lock()
	if checks < (rounds-1)*n || frauds != 0 {
		t.Fatalf("%d spot checks (%d frauds), want at least %d and none", checks, frauds, (rounds-1)*n)
	}
	mu.Unlock()
	rep, err := c.Nodes[0].Audit(ctx, ps[0].Base(), node.AuditOptions{Sample: 1}, nil)
	if err != nil || !rep.OK {
		t.Fatalf("audit: %+v, %v", rep, err)
	}
	// The lean node evaluates the same weights (its model rebuilt).
	want, err := ps[0].ValLoss()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ps[2].ValLoss(); err != nil || !maps.Equal(got, want) {
		t.Fatalf("the lean node's validation loss %v (%v), the others' %v", got, err, want)
	}
}
