package node

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/sharding"
)

// A follower mirrors a run's whole lineage, not only its checkpoints: for
// each settled round it pins one block, the round's lineage root, that
// links the checkpoint and everything its round record links — the
// contributions (which link their partitions, shards, base and the run:
// spec, dataset, tokenizer) and the aggregates. Pinning makes the store
// hold the whole DAG below it, so after the trainers are gone anyone can
// still fetch and recompute every round from the follower alone.

// LineageFormat names the lineage root's schema.
const LineageFormat = "fomnet-lineage/1"

// lineageRoot is a round's lineage root (dag-json). It is this node's
// pin, not part of the round: nothing else links it.
type lineageRoot struct {
	Format        string          `json:"format"`
	Run           sharding.Link   `json:"run"`
	Round         int             `json:"round"`
	Checkpoint    sharding.Link   `json:"checkpoint"`
	Contributions []sharding.Link `json:"contributions"`
	Aggregates    []sharding.Link `json:"aggregates"`
}

// lineageRetry is how long a round whose lineage could not be had waits
// before the next try.
const lineageRetry = time.Minute

// fetchStall bounds how long a fetch that nobody waits on (a follower's
// lineage, an audit) goes without a block when its context sets no wait
// of its own (contentstore.WithWait: the CLI's --timeout).
const fetchStall = time.Minute

// withStall returns ctx with its fetch wait, or with fetchStall.
func withStall(ctx context.Context) context.Context {
	if contentstore.WaitOf(ctx).Stall > 0 {
		return ctx
	}
	return contentstore.WithWait(ctx, contentstore.Wait{Stall: fetchStall})
}

// pinLineage fetches what the checkpoint this node settled on for round r
// links that this node lacks and pins the round's lineage root, which it
// returns with whether the pin is new.
func (p *Participant) pinLineage(ctx context.Context, r int) (cid.Cid, bool, error) {
	ck, err := p.settledCID(r)
	if err != nil {
		return cid.Undef, false, err
	}
	rec, err := p.n.readRoundRecord(ctx, ck)
	if err != nil {
		return cid.Undef, false, fmt.Errorf("round record: %w", err)
	}
	root := lineageRoot{Format: LineageFormat, Run: sharding.LinkTo(p.id), Round: r, Checkpoint: sharding.LinkTo(ck),
		Contributions: rec.Contributions, Aggregates: []sharding.Link{}}
	for _, a := range rec.Aggregates {
		root.Aggregates = append(root.Aggregates, a.CID)
	}
	b, k, err := dagJSONBlock(root, "lineage root")
	if err != nil {
		return cid.Undef, false, err
	}
	if p.n.Store.IsPinned(k) {
		return k, false, nil
	}
	if err := p.n.Store.PutBlock(ctx, k, b); err != nil {
		return cid.Undef, false, err
	}
	if err := p.n.Store.Fetch(withStall(ctx), k, nil); err != nil {
		return cid.Undef, false, err
	}
	return k, true, p.n.Store.Pin(ctx, k, fmt.Sprintf("run %s round %d lineage", p.id, r))
}

// mirrorLineage pins the lineage of every round this node has settled
// (from 1), each as soon as it can, until ctx ends; a round whose content
// cannot be had yet is tried again lineageRetry later. held hears of each
// round pinned.
func (p *Participant) mirrorLineage(ctx context.Context, every time.Duration, held func(r int, root cid.Cid), logf func(string, ...any)) {
	done := map[int]bool{}
	next := map[int]time.Time{}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		for r := 1; r < p.Round() && ctx.Err() == nil; r++ {
			if done[r] || time.Now().Before(next[r]) {
				continue
			}
			root, fresh, err := p.pinLineage(ctx, r)
			switch {
			case err == nil:
				done[r] = true
				if fresh {
					logf("follow %s: holding round %d's whole lineage, pinned as %s", p.id, r, root)
				}
				if held != nil {
					held(r, root)
				}
			case ctx.Err() == nil:
				logf("follow %s: round %d's lineage: %v (will try again in %s)", p.id, r, err, lineageRetry)
				next[r] = time.Now().Add(lineageRetry)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// settledCID is the CID of the checkpoint this node settled on for round r.
func (p *Participant) settledCID(r int) (cid.Cid, error) {
	b, err := os.ReadFile(p.roundDir(r) + ".cid")
	if err != nil {
		return cid.Undef, err
	}
	return cid.Decode(strings.TrimSpace(string(b)))
}
