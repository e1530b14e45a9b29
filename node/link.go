package node

import (
	"time"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/p2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Bandwidth-aware rounds. Each node times what it downloads
// (p2p.LinkMeter: bitswap's reads over the time they took to arrive, idle
// gaps left out) and keeps a running estimate of its download rate,
// updated at the end of every round that moved enough bytes to tell. It
// says that estimate in its contribution's announcement (RoundMsg.Down),
// and the round's reducers are ordered by what was said: a member whose
// rate is under gradsync.LinkFloor (half the median of the members'
// rates) comes after the others in every partition's line. In today's
// protocol a reducer fetches every contribution before it announces its
// aggregate, which every node recomputes rather than downloads: what
// makes a reducer slow is its downlink, not its uplink. The estimate also
// stretches a round's deadline, once, for contributions still arriving
// when it passes (transferTime).
//
// The rates are claims: a peer may say anything. The order they set needs
// no trust: an aggregate is taken only once recomputed, so a liar who puts
// itself first and does not deliver costs the others one deadline — as any
// reducer that goes silent does — and cannot be first for more than its
// hash-ordered share of the partitions among the fast members. Nodes that
// admitted the same contributions saw the same announcements and agree on
// the order; one that did not waits at most a deadline more.

// minLinkBytes: a round that timed fewer downloaded bytes leaves the
// estimate as it was (a few blocks say little about a link).
const minLinkBytes = 256 << 10

// maxDown bounds an announced download rate (1 TiB/s).
const maxDown = 1 << 40

// linkStats is the node's download so far (zero without a host).
func (p *Participant) linkStats() p2p.LinkStats {
	if p.n.Host == nil || p.n.Host.Link == nil {
		return p2p.LinkStats{}
	}
	return p.n.Host.Link.Down()
}

// noteLink folds the downloads timed in round r (since: the stats when it
// began) into the node's estimate: the mean of the round's rate and the
// estimate before it. It reports the round's rate in a "link" event.
func (p *Participant) noteLink(r int, since p2p.LinkStats) {
	d := p.linkStats().Sub(since)
	if d.Bytes < minLinkBytes || d.Seconds <= 0 {
		return
	}
	rate := d.Rate()
	if p.down > 0 {
		rate = (p.down + rate) / 2
	}
	p.down = min(rate, maxDown)
	p.n.Metrics.down.WithLabelValues(p.id.String()).Set(p.down)
	p.event(RoundEvent{Phase: "link", Round: r, Rate: d.Rate(), Seconds: d.Seconds, EncodedBytes: int(d.Bytes)})
}

// fastFirst orders members for the reducers' lines: those whose claimed
// rate (claims; 0 or absent: unknown) is at least the floor over the
// members' claims first, in the order given, then the slow.
func fastFirst(members []peer.ID, claims map[peer.ID]int64) (fast, slow []peer.ID) {
	rates := make([]float64, len(members))
	for i, id := range members {
		rates[i] = float64(claims[id])
	}
	floor := gradsync.LinkFloor(rates)
	for i, id := range members {
		if rates[i] > 0 && rates[i] < floor {
			slow = append(slow, id)
		} else {
			fast = append(fast, id)
		}
	}
	return fast, slow
}

// transferTime is how long n contributions take to arrive at this node's
// measured download rate, with half again for margin, at most a round
// deadline (0: none, or the rate not measured yet). A round whose
// deadline passes while they arrive waits that much longer for them, once:
// a node on a slower link than the run's deadline assumed then still
// closes on what its peers close on, rather than on the contributions its
// link happened to bring in time.
func (p *Participant) transferTime(n int) time.Duration {
	if p.down <= 0 || n <= 0 {
		return 0
	}
	bytes := 0
	for _, pr := range p.parts {
		bytes += p.codec.EncodedLen(pr.Size)
	}
	t := time.Duration(1.5 * float64(n*bytes) / p.down * float64(time.Second))
	return min(t+time.Second, p.sync.RoundDeadline)
}
