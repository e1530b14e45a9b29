package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fomnet/fomnet/p2p"
	"github.com/fomnet/fomnet/sharding"
)

// FollowOptions configure FollowRun.
type FollowOptions struct {
	// Interval between polls of the run's peers (default 5 s).
	Interval time.Duration
	// Mirrored, when set, is called for each checkpoint newly mirrored.
	Mirrored func(round int, ck cid.Cid)
	// Logf receives log lines (nil: the node's).
	Logf func(string, ...any)
}

// FollowRun mirrors the checkpoints of run as they appear, until ctx ends.
// It listens on the run's topic (and relays it) for checkpoint
// announcements, finds the run's participants on the DHT, and asks them
// (StatusProtocol) for their newest settled checkpoint; when most of those
// that answer agree on one it has not mirrored, it mirrors it and every
// earlier round it lacks, following round.json's base links: fetch,
// verify, pin as "run <id> round <r>" and provide. Each checkpoint's
// round.json must name the run and the round the peers reported, and link
// the previous round as its base. The pins are its state: a restarted
// follower continues where it stopped.
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
	poke := make(chan struct{}, 1)
	topic, err := n.Host.Join(RunTopic(run), func(_ context.Context, _ peer.ID, data []byte) error {
		m, err := DecodeRoundMsg(data)
		if err != nil {
			return err
		}
		if m.Run != run.String() {
			return fmt.Errorf("wrong run %s", m.Run)
		}
		if m.Type == MsgCheckpoint {
			select {
			case poke <- struct{}{}:
			default:
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer topic.Close()
	sub, err := topic.Subscribe()
	if err != nil {
		return err
	}
	drained := make(chan struct{})
	defer func() {
		sub.Cancel()
		<-drained
	}()
	go func() { // drain: the validator above does the listening
		defer close(drained)
		for {
			if _, err := sub.Next(ctx); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	// complete is the newest checkpoint whose whole chain back to genesis
	// is mirrored (undefined until the first walk, which also fills gaps an
	// interrupted follower left).
	complete := cid.Undef
	for {
		n.findRunPeers(ctx, run)
		round, ck, ok := n.newestAgreed(ctx, run, topic)
		if ok && !ck.Equals(complete) {
			if !n.Store.IsPinned(ck) {
				o.Logf("follow %s: the run's peers settled round %d on %s", run, round, ck)
			}
			if err := n.mirrorChain(ctx, run, round, ck, complete, o); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				o.Logf("follow %s: %v (will try again)", run, err)
			} else {
				complete = ck
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-poke:
			// A checkpoint was announced; give the round's other
			// announcements a moment, then ask.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// findRunPeers connects to the run's participants (DHT providers of the
// run ID) that are not connected yet.
func (n *Node) findRunPeers(ctx context.Context, run cid.Cid) {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h := n.Host
	for ai := range h.DHT.FindProvidersAsync(fctx, run, 64) {
		if ai.ID == h.ID() || h.Network().Connectedness(ai.ID) == network.Connected || len(ai.Addrs) == 0 {
			continue
		}
		_ = h.Connect(fctx, ai)
	}
}

// newestAgreed asks the run's peers (those on its topic, else every
// connected peer) for their newest settled checkpoint and returns the one
// most of those taking part agree on.
func (n *Node) newestAgreed(ctx context.Context, run cid.Cid, topic *p2p.Topic) (int, cid.Cid, bool) {
	ps := topic.Peers()
	if len(ps) == 0 {
		ps = n.Host.Network().Peers()
	}
	as := n.askAll(ctx, ps, run, 0)
	peers := inRun(as)
	r, best, votes := newestMajority(as, -1)
	if peers == 0 || votes < peers/2+1 {
		return 0, cid.Undef, false
	}
	ck, err := cid.Decode(best)
	if err != nil {
		return 0, cid.Undef, false
	}
	return r, ck, true
}

// mirrorChain mirrors ck (round r) and then its bases, back to stop (a
// checkpoint whose chain is known complete) or genesis. Checkpoints already
// pinned are not fetched again; their round.json is read from the store.
func (n *Node) mirrorChain(ctx context.Context, run cid.Cid, r int, ck, stop cid.Cid, o FollowOptions) error {
	for !ck.Equals(stop) {
		fresh := !n.Store.IsPinned(ck)
		if fresh {
			if _, err := n.mirrorAs(ctx, ck, fmt.Sprintf("run %s round %d", run, r), nil); err != nil {
				return fmt.Errorf("round %d checkpoint %s: %w", r, ck, err)
			}
		}
		rec, err := n.readRoundRecord(ctx, ck)
		if err != nil {
			if fresh {
				n.Store.Unpin(ck)
			}
			return fmt.Errorf("round %d checkpoint %s: %w", r, ck, err)
		}
		if rec.Run.CID != run.String() || rec.Round != r {
			if fresh {
				n.Store.Unpin(ck)
			}
			return fmt.Errorf("checkpoint %s: round.json says run %s round %d, the peers said run %s round %d", ck, rec.Run.CID, rec.Round, run, r)
		}
		if fresh {
			o.Logf("follow %s: mirrored round %d, %s", run, r, ck)
			if o.Mirrored != nil {
				o.Mirrored(r, ck)
			}
		}
		if rec.Base == nil {
			return nil
		}
		if ck, err = rec.Base.Cid(); err != nil {
			return fmt.Errorf("checkpoint of round %d: base %q: %w", r, rec.Base.CID, err)
		}
		r--
	}
	return nil
}

// maxRoundRecord bounds a round.json read from the network: a link per
// contribution (at most MaxParticipants) and shard, indices per partition.
const maxRoundRecord = 4 << 20

// readRoundRecord reads round.json from the checkpoint directory ck.
func (n *Node) readRoundRecord(ctx context.Context, ck cid.Cid) (*roundRecord, error) {
	f, err := n.Store.Lookup(ctx, ck, "round.json")
	if err != nil {
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

// decodeRoundRecord parses round.json strictly: known fields only, one
// JSON value, every link a CID, participants peer IDs, rounds from 0.
func decodeRoundRecord(b []byte) (*roundRecord, error) {
	var rec roundRecord
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&rec); err != nil {
		return nil, fmt.Errorf("round.json: %w", err)
	}
	if d.More() {
		return nil, fmt.Errorf("round.json: data after the JSON object")
	}
	if rec.Round < 0 {
		return nil, fmt.Errorf("round.json: round %d", rec.Round)
	}
	if rec.Format != RoundFormat {
		return nil, fmt.Errorf("round.json: format %q, want %q", rec.Format, RoundFormat)
	}
	links := append(append([]sharding.Link{rec.Run}, rec.Contributions...), rec.Shards...)
	for _, a := range rec.Aggregates {
		links = append(links, a.CID)
	}
	if rec.Base != nil {
		links = append(links, *rec.Base)
	}
	for _, l := range links {
		if _, err := l.Cid(); err != nil {
			return nil, fmt.Errorf("round.json: link %q is not a CID", l.CID)
		}
	}
	for _, p := range rec.Participants {
		if _, err := peer.Decode(p); err != nil {
			return nil, fmt.Errorf("round.json: participant %q: %v", p, err)
		}
	}
	return &rec, nil
}
