package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
)

// Three nodes train with overlapped rounds: each trains round r+1 while
// round r closes, from round r's base less its own round-r contribution.
// Every node computes the same checkpoint CID every round; every
// contribution after round 1 names its base's base as its start and is
// re-executed from it — by a spot check in the next round, beside that
// round's steps, and by an audit that replays the whole run.
func TestSwarmOverlappedRounds(t *testing.T) {
	const n, rounds = 3, 4
	c := nodetest.New(t, n, nodetest.Options{})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := smallRun(t, c, rounds)
	spec.Sync.Overlap = "local"
	all := 1.0
	spec.SpotCheck = &all
	runID, err := c.Nodes[0].CreateRun(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var log checkpointLog
	var mu sync.Mutex
	checks, frauds := 0, 0
	parts := openAll(t, c, runID, n, func(_ int, e node.RoundEvent) {
		log.record(e)
		if e.Phase == "spot-check" {
			mu.Lock()
			checks++
			if e.Fraud {
				frauds++
			}
			mu.Unlock()
		}
	})
	start, _ := parts[0].ValLoss()
	for i, err := range runAll(parts, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, rounds) }) {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	log.agreed(t, rounds)
	sameBase(t, parts)
	if log.adopted != 0 {
		t.Fatalf("%d adoptions: honest nodes disagreed", log.adopted)
	}
	final := parts[0].Base()
	recs := lineageOf(t, ctx, c.Nodes[0], final, rounds) // newest first
	for i, rec := range recs {
		if len(rec.Contributions) != n {
			t.Fatalf("round %d included %d contributions, want %d", rec.Round, len(rec.Contributions), n)
		}
		for peer, con := range contributionsOf(t, ctx, c.Nodes[0], rec) {
			switch {
			case rec.Round == 1 && con.Start != nil:
				t.Fatalf("round 1: %s's contribution starts from %s", peer, con.Start.CID)
			case rec.Round == 1:
			case con.Start == nil || con.Prior == nil:
				t.Fatalf("round %d: %s's contribution was not trained ahead (start %v, prior %v)", rec.Round, peer, con.Start, con.Prior)
			case con.Start.CID != recs[i+1].Base.CID:
				t.Fatalf("round %d: %s's contribution starts from %s, its base's base is %s", rec.Round, peer, con.Start.CID, recs[i+1].Base.CID)
			}
		}
	}
	mu.Lock()
	if checks < (rounds-1)*n || frauds != 0 {
		t.Fatalf("%d spot checks (%d frauds), want at least %d and none", checks, frauds, (rounds-1)*n)
	}
	mu.Unlock()
	rep, err := c.Nodes[1].Audit(ctx, final, node.AuditOptions{Sample: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Rounds) != rounds {
		t.Fatalf("audit of an overlapped run: %+v", rep)
	}
	for _, r := range rep.Rounds {
		if r.Reexecuted != n {
			t.Fatalf("audit: round %d: %d of %d contributions re-executed (%s)", r.Round, r.Reexecuted, n, r.Detail)
		}
	}
	end, _ := parts[0].ValLoss()
	t.Logf("val loss %v → %v", start, end)
	if end["en"] >= start["en"] {
		t.Fatalf("English validation loss did not drop: %v → %v", start, end)
	}
}
