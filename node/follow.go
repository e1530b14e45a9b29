package node

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
)

// FollowOptions configure FollowRun.
type FollowOptions struct {
	// Interval between polls of the run's peers (default 5 s).
	Interval time.Duration
	// Mirrored, when set, is called for each checkpoint newly mirrored.
	Mirrored func(round int, ck cid.Cid)
	// Lineage, when set, is called for each round whose whole lineage
	// (lineage.go) the follower has newly pinned.
	Lineage func(round int, root cid.Cid)
	// Logf receives log lines (nil: the node's).
	Logf func(string, ...any)
}

// FollowRun mirrors the checkpoints of run as they appear, and the whole
// lineage of each (lineage.go), until ctx ends.
// A follower is a participant that trains nothing: it listens on the run's
// topic (and relays it), asks the run's peers where they stand, and takes
// each checkpoint announced only after recomputing it, and every round
// before it that it lacks, from the contributions the round records list
// (adoption by verification, as participants do). Each round's checkpoint
// is kept in HOME/runs/<run>/round-NNNNNN, pinned as "run <id> round <r>"
// and provided. That directory is its state: a restarted follower
// continues where it stopped, pinning again what it had computed.
func (n *Node) FollowRun(ctx context.Context, run cid.Cid, o FollowOptions) error {
	if n.Host == nil {
		return ErrOffline
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Logf == nil {
		o.Logf = n.logf
	}
	_, err := os.Stat(filepath.Join(n.Home, "runs", run.String()))
	fresh := err != nil
	n.settled.follow(run, +1)
	defer n.settled.follow(run, -1)
	p, err := n.openRun(ctx, run, RunOptions{Logf: o.Logf}, true)
	if err != nil {
		return err
	}
	defer p.Close()
	p.onSettle = func(r int, ck cid.Cid) {
		o.Logf("follow %s: mirrored round %d, %s", run, r, ck)
		if o.Mirrored != nil {
			o.Mirrored(r, ck)
		}
	}
	if fresh {
		g, _ := p.settledCID(0)
		p.onSettle(0, g)
	}
	if err := p.repin(ctx); err != nil {
		return err
	}
	lctx, lcancel := context.WithCancel(ctx)
	lineageDone := make(chan struct{})
	go func() {
		defer close(lineageDone)
		p.mirrorLineage(lctx, o.Interval, o.Lineage, o.Logf)
	}()
	defer func() {
		lcancel()
		<-lineageDone
	}()
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for {
		// Announcements since the last look, then the peers' answers.
		cs := announced{}
		for {
			im, ok := p.mail.get()
			if !ok {
				break
			}
			cs.add(im.from, im.m)
		}
		if _, err := p.adoptBest(ctx, cs.list(), "announced"); err != nil && ctx.Err() == nil {
			o.Logf("follow %s: %v (will try again)", run, err)
		}
		if _, err := p.adoptSettled(ctx, p.Round()); err != nil && ctx.Err() == nil {
			o.Logf("follow %s: %v (will try again)", run, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-p.mail.ready:
			p.mail.signal() // still queued: the next drain takes them
			// A round message: give the round's others a moment.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// repin pins again the checkpoints this node settled on (their CIDs are
// in round-NNNNNN.cid beside them) that are no longer pinned — a follower
// stopped in the middle of a walk, or a user's unpin — reporting each
// through onSettle.
func (p *Participant) repin(ctx context.Context) error {
	for r := 0; r < p.Round(); r++ {
		ck, err := p.settledCID(r)
		if err != nil || p.n.Store.IsPinned(ck) {
			continue
		}
		if _, err := os.Stat(p.roundDir(r)); err != nil {
			p.opts.Logf("run %s: round %d's checkpoint %s is neither pinned nor in %s (pruned?): not repinned", p.id, r, ck, p.roundDir(r))
			continue
		}
		got, err := p.n.Store.Add(ctx, p.roundDir(r), contentstore.AddOptions{Pin: true, Name: CheckpointPin(p.id, r)})
		if err != nil {
			return err
		}
		if !got.Equals(ck) {
			return fmt.Errorf("%s holds %s, not %s", p.roundDir(r), got, ck)
		}
		if p.onSettle != nil {
			p.onSettle(r, ck)
		}
	}
	return nil
}

// maxRoundRecord bounds a round.json read from the network: a link per
// contribution (at most MaxParticipants) and shard, indices per partition.
const maxRoundRecord = 4 << 20

// readRoundRecord reads round.json from the checkpoint directory ck. Its
// fetches (the directory's root block, then the file) wait as ctx's
// contentstore.Wait says: a checkpoint nobody serves ends in ErrStalled.
func (n *Node) readRoundRecord(ctx context.Context, ck cid.Cid) (*roundRecord, error) {
	if _, err := n.Store.FetchBlock(ctx, ck); err != nil {
		return nil, err
	}
	f, err := n.Store.Lookup(ctx, ck, "round.json")
	if err != nil {
		return nil, err
	}
	if err := n.Store.Fetch(ctx, f, nil); err != nil {
		return nil, err
	}
	r, err := n.Store.Open(ctx, f)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxRoundRecord+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxRoundRecord {
		return nil, fmt.Errorf("round.json is larger than %d bytes", maxRoundRecord)
	}
	return decodeRoundRecord(b)
}
