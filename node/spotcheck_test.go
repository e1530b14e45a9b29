package node_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
	"github.com/ipfs/go-cid"
)

// spotRun runs a 4-node run on loopback with every contribution
// spot-checked, node 3 set up by dishonest, a fifth node that is not in
// the run and a sixth that follows it; it returns the cluster, the
// participants and their log once the honest nodes (0–2) have finished
// and the follower has mirrored their last checkpoint (re-checking every
// proof its lineage lists). overlap is the run's gradsync.Config.Overlap.
func spotRun(t *testing.T, ctx context.Context, rounds int, overlap string, dishonest func(p *node.Participant)) (*nodetest.Cluster, []*node.Participant, *checkpointLog) {
	t.Helper()
	const n = 6
	c := nodetest.New(t, n, nodetest.Options{})
	c.ConnectAll()
	spec := smallRun(t, c, rounds)
	spec.Sync.Overlap = overlap
	all := 1.0
	spec.SpotCheck = &all
	spec.Sync.RoundDeadline = 15 * time.Second
	runID, err := c.Nodes[0].CreateRun(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	outsider, follower := c.Nodes[4], c.Nodes[5]
	c.Nodes[4], c.Nodes[5] = nil, nil
	log := &checkpointLog{}
	ps := openAll(t, c, runID, 4, func(_ int, e node.RoundEvent) { log.record(e) })[:4]
	c.Nodes[4], c.Nodes[5] = outsider, follower
	fctx, fstop := context.WithCancel(ctx)
	mirrored := make(chan cid.Cid, 64)
	followed := make(chan error, 1)
	go func() {
		followed <- follower.FollowRun(fctx, runID, node.FollowOptions{Interval: 300 * time.Millisecond, Logf: t.Logf,
			Mirrored: func(r int, ck cid.Cid) {
				if r == rounds {
					mirrored <- ck
				}
			}})
	}()
	defer func() {
		fstop()
		if err := <-followed; err != nil {
			t.Errorf("follow: %v", err)
		}
	}()
	dishonest(ps[3])
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	errs := runAll(ps, func(i int, p *node.Participant) error {
		if i == 3 {
			p.RunRounds(rctx, rounds) // the cheater's own fate is not the test's
			return nil
		}
		return p.RunRounds(ctx, rounds)
	})
	for i, err := range errs[:3] {
		if err != nil {
			t.Fatalf("honest node %d: %v", i, err)
		}
	}
	sameBase(t, ps[:3])
	select {
	case ck := <-mirrored:
		if !ck.Equals(ps[0].Base()) {
			t.Fatalf("the follower mirrored %s, the honest nodes ended on %s", ck, ps[0].Base())
		}
	case <-time.After(time.Minute):
		t.Fatalf("the follower did not mirror round %d", rounds)
	}
	return c, ps, log
}

// A worker that cheats — trains fewer steps, on other rows than the
// shards it lists, with another seed, or sends a rescaled copy of
// another's work — is caught by the spot checks of the round after (the
// check probability forced to 1), proven, and excluded from the rounds
// after that; the honest nodes end on one checkpoint whose lineage
// records the exclusion and includes nothing of the cheater's after it;
// the proof re-checks, to the cheater, on a node that was not in the run;
// an audit of the lineage names the rounds the cheats got into. The lazy
// worker's run overlaps rounds: its work is trained ahead and re-executed
// from its start (the other cheats' runs are sequential).
func TestSpotChecksCatchCheats(t *testing.T) {
	const rounds = 4
	kinds := []string{"steps/overlap", "shards", "seed", "copy"}
	if raceEnabled {
		kinds = kinds[2:3] // see raceEnabled
	}
	for _, name := range kinds {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			kind, overlap, _ := strings.Cut(name, "/")
			if overlap != "" {
				overlap = "local"
			}
			c, ps, _ := spotRun(t, ctx, rounds, overlap, func(p *node.Participant) { node.Cheat(p, kind, 2) })
			cheater := c.Nodes[3].Host.ID().String()
			lin := lineageOf(t, ctx, c.Nodes[0], ps[0].Base(), rounds) // newest first
			slices.Reverse(lin)
			excludedIn := 0
			var proof string
			for _, rec := range lin {
				t.Logf("round %d: participants %d, excluded %v", rec.Round, len(rec.Participants), rec.Excluded)
				if excludedIn > 0 && rec.Round > excludedIn && slices.Contains(rec.Participants, cheater) {
					t.Fatalf("round %d includes the cheater's work after its exclusion in round %d", rec.Round, excludedIn)
				}
				for _, e := range rec.Excluded {
					if e.Peer != cheater {
						t.Fatalf("round %d excludes %s, an honest node", rec.Round, e.Peer)
					}
					if excludedIn == 0 {
						excludedIn, proof = rec.Round, e.Proof.CID
					}
				}
			}
			// It cheats from round 2; round 3 checks round 2's work.
			if excludedIn != 3 {
				t.Fatalf("the cheater was excluded in round %d, want 3 (it cheated in round 2)", excludedIn)
			}
			k, _ := cid.Decode(proof)
			fc, err := c.Nodes[4].CheckFraud(ctx, k)
			if err != nil || fc.Author != cheater {
				t.Fatalf("the proof re-checked on a node outside the run: %+v, %v", fc, err)
			}
			t.Logf("proof %s: %+v", k, fc)
			// An audit re-executing every contribution names the
			// rounds the cheats got into (2 and 3: the exclusion counts
			// from round 4) and the cheater's contributions.
			rep, err := c.Nodes[0].Audit(ctx, ps[0].Base(), node.AuditOptions{Sample: 1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rep.Rounds {
				cheated := r.Round == 2 || r.Round == 3
				if cheated != (r.Result == "mismatch") || (cheated && !strings.Contains(r.Detail, cheater)) || (!cheated && r.Result != "ok") {
					t.Fatalf("audit: round %d %s: %s", r.Round, r.Result, r.Detail)
				}
			}
		})
	}
}

// A member that publishes a fraud proof against honest work is not
// believed: every other node re-executes the contribution, finds it
// honest, counts the proof against its sender, and nobody is excluded.
func TestFalseFraudProof(t *testing.T) {
	if raceEnabled {
		t.Skip("a scenario test; see raceEnabled")
	}
	const rounds = 3
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, ps, _ := spotRun(t, ctx, rounds, "", node.FalseAccuser)
	for _, rec := range lineageOf(t, ctx, c.Nodes[0], ps[0].Base(), rounds) {
		if len(rec.Excluded) > 0 {
			t.Fatalf("round %d excludes %v on a false proof", rec.Round, rec.Excluded)
		}
	}
	liar := c.Nodes[3].Host.ID().String()
	for i, p := range ps[:3] {
		if got := node.ProofsAgainst(p); len(got) > 0 {
			t.Errorf("honest node %d holds proofs %v", i, got)
		}
		if p.Rejections()[node.RejectFalseProof] == 0 {
			t.Errorf("honest node %d counted no false proof (from %s): %v", i, liar, p.Rejections())
		}
	}
}

// How many rounds the default spot checks take to catch a worker that
// cheats every round (trains one step), measured over repeated 4-node
// runs: FOMNET_SPOT_TRIALS=N go test ./node -run TestSpotCheckDefaultRate
// -v -timeout 2h. Each run trains up to 40 rounds and stops once an honest
// node holds a proof. Expected: geometric with the share q = 0.1 (the
// cheater is caught in a round with probability q), mean 1/q = 10 rounds
// after the first it cheats in, 90% within 22, 99% within 44.
func TestSpotCheckDefaultRate(t *testing.T) {
	trials, _ := strconv.Atoi(os.Getenv("FOMNET_SPOT_TRIALS"))
	if trials <= 0 {
		t.Skip("a measurement: set FOMNET_SPOT_TRIALS")
	}
	const maxRounds = 40
	var caught []int
	for trial := range trials {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		c := nodetest.New(t, 4, nodetest.Options{})
		c.ConnectAll()
		spec := smallRun(t, c, maxRounds)
		spec.Seed = uint64(100 + trial) // another run, other draws
		runID, err := c.Nodes[0].CreateRun(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		ps := openAll(t, c, runID, 4, func(int, node.RoundEvent) {})
		node.Cheat(ps[3], "steps", 1)
		cheater := c.Nodes[3].Host.ID().String()
		rctx, stop := context.WithCancel(ctx)
		round, watched := 0, make(chan struct{})
		go func() {
			defer close(watched)
			for rctx.Err() == nil {
				if _, ok := node.ProofsAgainst(ps[0])[cheater]; ok {
					round = ps[0].Round() - 1 // proven while in this round, of the round before
					stop()
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		runAll(ps, func(_ int, p *node.Participant) error { return p.RunRounds(rctx, maxRounds) })
		stop()
		<-watched
		cancel()
		for _, p := range ps {
			p.Close()
		}
		t.Logf("trial %d: caught cheating in round %d (0: not within %d rounds)", trial, round, maxRounds)
		caught = append(caught, round)
	}
	sum, n := 0, 0
	for _, r := range caught {
		if r > 0 {
			sum += r
			n++
		}
	}
	t.Logf("caught in %d of %d runs, mean round %.1f (expected 10)", n, len(caught), float64(sum)/float64(max(n, 1)))
}

// A spot check of a contribution whose author has gone (crashed with the
// only copy of its prior worker state) gives up after the run's fetch
// wait, and the round goes on: with every contribution checked, a node
// crashes in round 3, whose checks re-execute its round-2 work.
func TestSpotCheckOfAGoneAuthor(t *testing.T) {
	const n, rounds = 3, 4
	c := nodetest.New(t, n, nodetest.Options{Logf: t.Logf})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := smallRun(t, c, rounds)
	all := 1.0
	spec.SpotCheck = &all
	spec.Sync.RoundDeadline, spec.Sync.Quorum = 2*time.Second, 2
	runID, err := c.Nodes[0].CreateRun(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	crashCtx, crash := context.WithCancel(ctx)
	var log checkpointLog
	checks := map[int]int{}
	var mu sync.Mutex
	ps := openAll(t, c, runID, n, func(i int, e node.RoundEvent) {
		if i == 2 && e.Round == 3 && e.Phase == "train" && e.Step == 1 {
			crash()
		}
		if e.Phase == "spot-check" {
			mu.Lock()
			checks[e.Round]++
			mu.Unlock()
		}
		log.record(e)
	})
	errs := runAll(ps, func(i int, p *node.Participant) error {
		if i != 2 {
			return p.RunRounds(ctx, rounds)
		}
		err := p.RunRounds(crashCtx, rounds)
		p.Close()
		c.Stop(2)
		return err
	})
	for i := 0; i < 2; i++ {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
	}
	sameBase(t, ps[:2])
	log.agreed(t, rounds)
	if checks[3] == 0 {
		t.Fatalf("no spot check in round 3: %v", checks)
	}
}
