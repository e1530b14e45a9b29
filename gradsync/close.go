package gradsync

import (
	"math"
	"slices"
	"time"
)

// CloseRule is when a round stops waiting for contributions, so that a
// straggler is left out by rule and not by the luck of a timeout: the round
// waits for every expected contribution, but once Core of them (a share,
// rounded up) are in — at time t since the round opened, training
// included — it waits at most Slack·t longer, and never more than
// Deadline. Should fewer than Core ever arrive, it waits Deadline after
// the first. A contribution later than that is a straggler's and is
// discarded: the tokens it trained are not counted, and its author goes on
// with the next round like everyone.
//
// Relative slack makes the rule the same at every scale: with Core 3/4 and
// Slack 1/4, a peer whose round takes a quarter longer than three peers in
// four is dropped, whether rounds last seconds or hours.
//
// The simulator of rounds at scale (node/swarmsim) decides with it, and
// the node in runs whose Config sets CloseCore (each node on the arrival
// times it saw, its own included: a straggler leaves itself out).
type CloseRule struct {
	Core     float64       `json:"core"`
	Slack    float64       `json:"slack"`
	Deadline time.Duration `json:"deadline_ns"`
}

// DefaultCloseRule waits for three in four, then a quarter of their time.
func DefaultCloseRule() CloseRule {
	return CloseRule{Core: 0.75, Slack: 0.25, Deadline: 2 * time.Minute}
}

// Close returns when a round that expects expected contributions closes,
// given the arrival times of those that arrive (since the round opened, in
// any order; those that never arrive are absent), and how many arrived by
// then.
func (c CloseRule) Close(arrivals []time.Duration, expected int) (at time.Duration, admitted int) {
	a := slices.Clone(arrivals)
	slices.Sort(a)
	if len(a) == 0 {
		return c.Deadline, 0
	}
	core := min(max(1, int(math.Ceil(c.Core*float64(expected)))), expected)
	until := a[0] + c.Deadline
	if len(a) >= core {
		tc := a[core-1]
		until = tc + min(time.Duration(c.Slack*float64(tc)), c.Deadline)
	}
	if len(a) >= expected && a[expected-1] <= until {
		until = a[expected-1]
	}
	n, _ := slices.BinarySearch(a, until+1)
	return until, n
}

// LinkFloor is the download rate below which a peer is not among a
// round's first reducers: half the median of the rates known (those > 0;
// the upper median of an even count), 0 with none. A reducer fetches every
// contribution before it can announce an aggregate, so a slow downlink
// would hold up everyone waiting on it; half the median keeps most peers
// eligible, and a minority claiming fast links cannot move the median past
// the honest rates. The simulator (node/swarmsim) and the node both choose
// with it.
func LinkFloor(rates []float64) float64 {
	known := slices.DeleteFunc(slices.Clone(rates), func(r float64) bool { return !(r > 0) })
	if len(known) == 0 {
		return 0
	}
	slices.Sort(known)
	return known[len(known)/2] / 2
}
