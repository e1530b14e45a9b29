package swarmsim

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/fomnet/fomnet/gradsync"
)

// plain is a swarm of identical peers with no churn and no latency.
func plain(peers int) Config {
	c := DefaultConfig()
	c.Peers, c.Params, c.H, c.Rounds, c.StepSeconds = peers, 1e6, 10, 6, 1
	c.StepSpread, c.Jitter, c.LinkSpread, c.Latency, c.ChurnPerHour = 0, 0, 0, 0, 0
	c.UpMbps, c.DownMbps, c.MinMbps, c.SpotShare, c.Overhead, c.AggregateNs = 8, 8, 1, 0, 2, 0
	c.Protocol, c.Overlap = "all", false
	return c
}

// The same seed gives the same report; another seed, with churn and
// spread, another one.
func TestDeterministic(t *testing.T) {
	c := DefaultConfig()
	c.Peers, c.Rounds = 200, 8
	a, err := Run(c)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Run(c)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, two reports:\n%+v\n%+v", a, b)
	}
	c.Seed++
	if d, _ := Run(c); reflect.DeepEqual(a, d) || d.Utilization == a.Utilization {
		t.Fatalf("seeds %d and %d gave the same report", c.Seed-1, c.Seed)
	}
}

// With identical peers, a round's time and utilisation are what the
// protocol's bytes take at the link rate, worked out by hand.
func TestSequentialByHand(t *testing.T) {
	c := plain(4)
	rep, err := Run(c)
	if err != nil {
		t.Fatal(err)
	}
	codec, _ := gradsync.NewCodec(c.Codec, 256, 4096, 1.0/32)
	C := float64(codec.EncodedLen(int(c.Params)))
	rate := 1e6 // 8 Mbit/s
	// Train 10 s; the contribution out (C/rate); every peer fetches the
	// 3 others (3C/rate) and recomputes the aggregates (no cost here), so
	// none travels; overhead 2 s.
	round := 10 + C/rate + 3*C/rate + 2
	if math.Abs(rep.RoundSeconds-round) > 1e-6 {
		t.Errorf("round %v s, by hand %v s", rep.RoundSeconds, round)
	}
	if want := 10 / round; math.Abs(rep.Utilization-want) > 1e-9 {
		t.Errorf("utilisation %v, by hand %v", rep.Utilization, want)
	}
	if want := 3 * C; math.Abs(rep.ReceivedPerRound-want) > 1e-6 || math.Abs(rep.SentPerRound-want) > 1e-6 {
		t.Errorf("bytes a round: received %v, sent %v, want %v each", rep.ReceivedPerRound, rep.SentPerRound, want)
	}
	// Scatter, no partition recomputed beyond its own: each reducer
	// fetches its quarter from the 3 others (3C/4), publishes it (C/4),
	// and everyone fetches the 4 aggregate partitions (C).
	sc := c
	sc.Protocol, sc.Verify = "scatter", 0
	if s, _ := Run(sc); math.Abs(s.RoundSeconds-(12+C/rate+3*C/4/rate+C/4/rate+C/rate)) > 1e-6 || math.Abs(s.ReceivedPerRound-(3*C/4+C)) > 1e-6 {
		t.Errorf("scatter: round %v s, received %v; by hand %v s, %v", s.RoundSeconds, s.ReceivedPerRound, 12+C/rate+3*C/4/rate+C/4/rate+C/rate, 3*C/4+C)
	}
	// Overlapped, the exchange hides behind the next inner steps.
	c.Overlap = true
	if o, _ := Run(c); math.Abs(o.Utilization-1) > 1e-9 || math.Abs(o.RoundSeconds-10) > 1e-6 {
		t.Errorf("overlapped: utilisation %v, round %v s; want 1 and 10 s", o.Utilization, o.RoundSeconds)
	}
}

// A peer a quarter slower than the rest is dropped by the close rule every
// round; with slack to spare it is kept.
func TestStragglerDroppedByRule(t *testing.T) {
	c := plain(8)
	c.StepSpread = 0
	c.Rounds = 4
	slow := func(c Config) Report {
		rep, err := runWith(c, func(i int, p *peer) {
			if i == 0 {
				p.step *= 1.5
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := slow(c)
	if rep.Stragglers != c.Rounds-1 || rep.Contributions != 7 {
		t.Errorf("stragglers %d, contributions a round %v; want %d and 7", rep.Stragglers, rep.Contributions, c.Rounds-1)
	}
	// With adaptive steps it trains two thirds as many and lands on time.
	c.Adaptive = true
	if rep := slow(c); rep.Stragglers != 0 || rep.Contributions != 8 {
		t.Errorf("adaptive: stragglers %d, contributions %v; want 0 and 8", rep.Stragglers, rep.Contributions)
	}
	c.Adaptive = false
	c.Close = gradsync.CloseRule{Core: 0.75, Slack: 1, Deadline: time.Hour}
	if rep := slow(c); rep.Stragglers != 0 || rep.Contributions != 8 {
		t.Errorf("with slack 1: stragglers %d, contributions %v; want 0 and 8", rep.Stragglers, rep.Contributions)
	}
}

// Today's protocol moves more bytes per node as the swarm grows; scatter
// does not.
func TestBytesPerNodeWithN(t *testing.T) {
	bytes := func(protocol string, n int) float64 {
		c := plain(n)
		c.Protocol = protocol
		rep, err := Run(c)
		if err != nil {
			t.Fatal(err)
		}
		return rep.ReceivedPerRound
	}
	if a, b := bytes("all", 8), bytes("all", 64); b < 7*a {
		t.Errorf("all: %v bytes a node at 8 peers, %v at 64", a, b)
	}
	if a, b := bytes("scatter", 8), bytes("scatter", 1000); b > 1.2*a {
		t.Errorf("scatter: %v bytes a node at 8 peers, %v at 1000", a, b)
	}
}
