package node

import (
	"time"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/libp2p/go-libp2p/core/peer"
)

// closing applies a run's gradsync.CloseRule to one round as this node
// sees it: a contribution arrives when its announcement reached this node
// (its own when it published it), counted from when this node's steps for
// the round began. A straggler sees the others' announcements come in
// while it still trains, so it leaves its own late contribution out, as
// the others do: every node that saw the same arrivals closes on the
// same contributions.
type closing struct {
	rule     gradsync.CloseRule
	began    time.Time
	expected int
	arrived  map[peer.ID]time.Duration
	fetching int // fetches of arrived contributions not yet done (closed by rule or not)
}

// arrive records id's announcement, received at t (the first counts).
func (c *closing) arrive(id peer.ID, t time.Time) {
	if _, ok := c.arrived[id]; !ok {
		c.arrived[id] = max(t.Sub(c.began), 0)
	}
}

// close returns when the round closes as the arrivals stand now, and
// whether it has: every expected contribution in by then, or now past it.
func (c *closing) close(now time.Time) (at time.Duration, closed bool) {
	ts := make([]time.Duration, 0, len(c.arrived))
	for _, t := range c.arrived {
		ts = append(ts, t)
	}
	at, n := c.rule.Close(ts, c.expected)
	return at, n >= c.expected || now.Sub(c.began) >= at
}

// late returns the authors in admitted whose contributions arrived after
// the close at.
func (c *closing) late(admitted map[peer.ID]*input, at time.Duration) []peer.ID {
	var out []peer.ID
	for id := range admitted {
		if t, ok := c.arrived[id]; !ok || t > at {
			out = append(out, id)
		}
	}
	return out
}
