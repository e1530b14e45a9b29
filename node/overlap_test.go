package node_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
)

// Four nodes train with overlapped rounds and a close rule: each trains
// round r+1 while round r closes, from round r's base less its own
// round-r contribution. Node 3 straggles in round 3: it publishes only
// after the others have closed that round, which they do by the rule (3
// of 4 in, then at most as long again as they took), long before the
// round's deadline. The straggler leaves itself out by the same rule (it saw the
// others' contributions arrive while it trained), drops the steps it ran
// ahead on its excluded contribution, and ends on the others' checkpoint.
// Every round has one checkpoint CID on every node; every honest
// contribution after round 1 names its base's base as its start and is
// re-executed from it — by a spot check in the next round, beside that
// round's steps, and by an audit that replays the whole run.
func TestSwarmOverlappedRounds(t *testing.T) {
	const n, rounds, late = 4, 4, 3
	c := nodetest.New(t, n, nodetest.Options{})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := smallRun(t, c, rounds)
	spec.Sync.Overlap = "local"
	spec.Sync.CloseCore, spec.Sync.CloseSlack = 0.75, 1
	spec.Sync.RoundDeadline = time.Minute
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
	if _, err := c.Nodes[0].OpenRun(ctx, runID, node.RunOptions{Backend: be, Lean: true}); err == nil || !strings.Contains(err.Error(), "a lean participant's cannot") {
		t.Fatalf("a lean node opened a run that overlaps rounds: %v", err)
	}
	var log checkpointLog
	var mu sync.Mutex
	checks, frauds, closedLate := 0, 0, 0
	links := make([]int, n)
	release := make(chan struct{})
	parts := openAll(t, c, runID, n, func(i int, e node.RoundEvent) {
		log.record(e)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case e.Phase == "spot-check":
			checks++
			if e.Fraud {
				frauds++
			}
		case e.Phase == "link" && e.Rate > 0 && e.Seconds > 0:
			links[i]++
		case e.Phase == "checkpoint" && e.Round == late && i != 3:
			if closedLate++; closedLate == n-1 {
				close(release)
			}
		}
	})
	straggler := c.Nodes[3].Host.ID().String()
	node.Straggle(parts[3], late, release)
	start, _ := parts[0].ValLoss()
	for i, err := range runAll(parts, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, rounds) }) {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	log.agreed(t, rounds)
	sameBase(t, parts)
	log.mu.Lock()
	for peer, rs := range log.deadlines {
		if rs[late] > 0 {
			t.Fatalf("%s waited out round %d's deadline: the round did not close by the rule", peer, late)
		}
	}
	log.mu.Unlock()
	final := parts[0].Base()
	recs := lineageOf(t, ctx, c.Nodes[0], final, rounds) // newest first
	for i, rec := range recs {
		contribs := contributionsOf(t, ctx, c.Nodes[0], rec)
		if _, ok := contribs[straggler]; ok && rec.Round == late {
			t.Fatalf("round %d included the straggler's contribution", rec.Round)
		}
		if len(contribs) < n-1 {
			t.Fatalf("round %d included %d contributions", rec.Round, len(contribs))
		}
		for peer, con := range contribs {
			switch {
			case rec.Round == 1 && con.Start != nil:
				t.Fatalf("round 1: %s's contribution starts from %s", peer, con.Start.CID)
			case rec.Round == 1 || peer == straggler:
			case con.Start == nil || con.Prior == nil:
				t.Fatalf("round %d: %s's contribution was not trained ahead (start %v, prior %v)", rec.Round, peer, con.Start, con.Prior)
			case con.Start.CID != recs[i+1].Base.CID:
				t.Fatalf("round %d: %s's contribution starts from %s, its base's base is %s", rec.Round, peer, con.Start.CID, recs[i+1].Base.CID)
			}
		}
	}
	mu.Lock()
	if checks < (rounds-1)*(n-1) || frauds != 0 {
		t.Fatalf("%d spot checks (%d frauds), want at least %d and none", checks, frauds, (rounds-1)*(n-1))
	}
	for i, k := range links { // what it fetched of the others' work, timed
		if k == 0 {
			t.Fatalf("node %d measured its download in no round", i)
		}
	}
	mu.Unlock()
	end, _ := parts[0].ValLoss()
	t.Logf("val loss %v → %v", start, end)
	if end["en"] >= start["en"] {
		t.Fatalf("English validation loss did not drop: %v → %v", start, end)
	}
	if raceEnabled {
		return // the audit re-executes on one goroutine; see raceEnabled
	}
	rep, err := c.Nodes[1].Audit(ctx, final, node.AuditOptions{Sample: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Rounds) != rounds {
		t.Fatalf("audit of an overlapped run: %+v", rep)
	}
	for _, r := range rep.Rounds {
		if r.Reexecuted != r.Contributions {
			t.Fatalf("audit: round %d: %d of %d contributions re-executed (%s)", r.Round, r.Reexecuted, r.Contributions, r.Detail)
		}
	}
}
