package swarmsim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/node"
)

// Config is a simulated swarm.
type Config struct {
	Peers  int    `json:"peers"`
	Params int64  `json:"params"`
	Codec  string `json:"codec"`
	H      int    `json:"h"`
	Rounds int    `json:"rounds"`
	// StepSeconds is the median inner-step time; StepSpread the σ of its
	// log across peers (0: all alike); Jitter the σ of its log from round
	// to round on one peer.
	StepSeconds float64 `json:"step_seconds"`
	StepSpread  float64 `json:"step_spread"`
	Jitter      float64 `json:"jitter"`
	// UpMbps and DownMbps are the median link rates (Mbit/s); LinkSpread
	// the σ of their log across peers, clamped to [MinMbps, MaxMbps].
	UpMbps     float64 `json:"up_mbps"`
	DownMbps   float64 `json:"down_mbps"`
	LinkSpread float64 `json:"link_spread"`
	MinMbps    float64 `json:"min_mbps"`
	MaxMbps    float64 `json:"max_mbps"`
	// Latency is added once per exchange (a fetch, an announcement).
	Latency float64 `json:"latency_seconds"`
	// ChurnPerHour is the share of peers that crash per hour; a crashed
	// peer comes back after Downtime seconds on average (exponential),
	// fetches the checkpoint and joins the next round.
	ChurnPerHour float64 `json:"churn_per_hour"`
	Downtime     float64 `json:"downtime_seconds"`
	Overlap      bool    `json:"overlap"`
	// Adaptive gives each peer as many inner steps as land its
	// contribution by the round's target (a median peer's H steps and
	// upload; with overlap, a cadence of one round's steps), in place of
	// H for everyone: slow or late peers train fewer steps, and a round
	// weighs contributions by their tokens. The node's rounds do not do
	// this yet (every contribution trains H).
	Adaptive   bool   `json:"adaptive"`
	Protocol   string `json:"protocol"` // "all" or "scatter"
	Partitions int    `json:"partitions"`
	Verify     int    `json:"verify"` // scatter: partitions each node recomputes
	// SpotShare is the share of contributions re-executed by a spot
	// checker (the node's default: node.DefaultSpotCheck); Overhead the
	// seconds of fixed work a round costs each node (checkpoint, vote);
	// AggregateNs the cost of aggregating one element of one contribution.
	SpotShare   float64            `json:"spot_share"`
	Overhead    float64            `json:"overhead_seconds"`
	AggregateNs float64            `json:"aggregate_ns"`
	Close       gradsync.CloseRule `json:"close"`
	Seed        uint64             `json:"seed"`
}

// DefaultConfig is a 1B-parameter model on 64 peers: int4, H 500 steps of
// 1 s, 100 Mbit/s median uplinks (spread ×/÷ 2), 10% churn an hour; the
// node's spot-check share; aggregation at 16 ns per element and
// contribution (trimmed-mean, BenchmarkAggregate on a 2-core guest:
// 138 ms for 2²⁰ elements of 8 contributions).
func DefaultConfig() Config {
	return Config{Peers: 64, Params: 1e9, Codec: "int4", H: 500, Rounds: 20, StepSeconds: 1, StepSpread: 0.1, Jitter: 0.02,
		UpMbps: 100, DownMbps: 300, LinkSpread: 0.7, MinMbps: 20, MaxMbps: 10000, Latency: 0.05,
		ChurnPerHour: 0.1, Downtime: 600, Overlap: true, Protocol: "scatter", Partitions: 16, Verify: 2,
		SpotShare: node.DefaultSpotCheck, Overhead: 5, AggregateNs: 16, Close: gradsync.DefaultCloseRule(), Seed: 1}
}

// Validate reports a setting out of range.
func (c Config) Validate() error {
	switch {
	case c.Peers < 1 || c.Peers > maxPeers || c.Params < 1 || c.H < 1 || c.Rounds < 2 || c.Rounds > maxRounds:
		return fmt.Errorf("swarmsim: peers %d (at most %d), params %d, h %d must be positive, rounds %d from 2 to %d", c.Peers, maxPeers, c.Params, c.H, c.Rounds, maxRounds)
	case !finite(c.StepSeconds, c.UpMbps, c.DownMbps, c.MinMbps, c.MaxMbps) || c.StepSeconds == 0 || c.UpMbps == 0 || c.DownMbps == 0 || c.MinMbps == 0 || c.MaxMbps < c.MinMbps:
		return fmt.Errorf("swarmsim: step time %v, links %v/%v Mbit/s (clamped to [%v, %v]) must be positive", c.StepSeconds, c.UpMbps, c.DownMbps, c.MinMbps, c.MaxMbps)
	case !finite(c.StepSpread, c.Jitter, c.LinkSpread, c.Latency, c.ChurnPerHour, c.Downtime, c.SpotShare, c.Overhead, c.AggregateNs) || c.SpotShare > 1:
		return fmt.Errorf("swarmsim: spreads, latency, churn, downtime, overhead and aggregation cost must be finite and not negative, spot share in [0, 1]")
	case c.Protocol != "all" && c.Protocol != "scatter":
		return fmt.Errorf("swarmsim: protocol %q (want all or scatter)", c.Protocol)
	case c.Partitions < 1 || c.Verify < 0:
		return fmt.Errorf("swarmsim: partitions %d must be positive, verify %d not negative", c.Partitions, c.Verify)
	case !(c.Close.Core > 0 && c.Close.Core <= 1) || c.Close.Slack < 0 || c.Close.Deadline <= 0:
		return fmt.Errorf("swarmsim: close rule core %v must lie in (0, 1], slack %v not negative, deadline %v positive", c.Close.Core, c.Close.Slack, c.Close.Deadline)
	}
	_, err := gradsync.NewCodec(c.Codec, 256, 4096, 1.0/32)
	return err
}

// Bounds on a simulation's size (memory and time grow with both).
const (
	maxPeers  = 1_000_000
	maxRounds = 10_000
)

// finite says whether every x is finite and not negative.
func finite(xs ...float64) bool {
	for _, x := range xs {
		if !(x >= 0) || math.IsInf(x, 1) {
			return false
		}
	}
	return true
}

// Report is what a simulation measured, rounds after the first.
type Report struct {
	Config
	// Utilization is the seconds peers computed inner steps — their own,
	// and those of the contributions they re-executed as spot checkers —
	// over the seconds they were up, all peers together: how busy the
	// accelerators were. Useful counts only the inner steps of
	// contributions a round included.
	Utilization  float64 `json:"utilization"`
	Useful       float64 `json:"useful"`
	RoundSeconds float64 `json:"round_seconds"` // mean, between checkpoints
	// SentPerRound and ReceivedPerRound are a node's bytes a round, the
	// mean over nodes and rounds.
	SentPerRound     float64 `json:"sent_bytes_per_round"`
	ReceivedPerRound float64 `json:"received_bytes_per_round"`
	Contributions    float64 `json:"contributions_per_round"` // included, mean
	Stragglers       int     `json:"stragglers"`              // contributions left out by the close rule
	Crashes          int     `json:"crashes"`
	Lost             int     `json:"lost"` // contributions lost to a crash
}

// peer is one simulated node.
type peer struct {
	step, up, down float64 // seconds a step; bytes a second
	ready          float64 // when it can start its next round's inner steps
	crash          float64 // when it next crashes
	upSince        float64
	isDown         bool
	rejoining      bool    // back, and not yet in a round
	back           float64 // when a peer down is back
	upTime, useful float64
	busy           float64
	settled        float64 // when it settled the last round it took part in
	spot           float64 // seconds of spot checks drawn for its next round
	sent, received float64
}

// Run simulates c and reports.
func Run(c Config) (Report, error) { return runWith(c, nil) }

// runWith is Run with each peer passed to tweak once drawn (tests).
func runWith(c Config, tweak func(i int, p *peer)) (Report, error) {
	if err := c.Validate(); err != nil {
		return Report{}, err
	}
	// Time counts between the checkpoints of the first and the last
	// round: a first pass finds them (the same seed gives the same run),
	// a second counts each peer's time up, busy and useful inside them,
	// with one more round simulated so that the steps overlapping the last
	// checkpoint are there.
	s := newSim(c, tweak)
	var cks []float64
	for r := 0; r < c.Rounds; r++ {
		cks = append(cks, s.round().checkpoint)
	}
	s = newSim(c, tweak)
	s.w0, s.w1 = cks[0], cks[len(cks)-1]
	rep := Report{Config: c}
	var included, rounds, sent, received float64
	for r := 1; r <= c.Rounds+1; r++ {
		res := s.round()
		if r == 1 {
			for _, p := range s.peers {
				p.sent, p.received = 0, 0
			}
			continue
		}
		if r > c.Rounds {
			break
		}
		if r == c.Rounds { // bytes of rounds 2 to the last
			for _, p := range s.peers {
				sent += p.sent
				received += p.received
			}
		}
		included += float64(res.included)
		rep.Stragglers += res.stragglers
		rep.Crashes += res.crashes
		rep.Lost += res.lost
		rounds++
	}
	var up, useful, busy float64
	for _, p := range s.peers {
		if !p.isDown {
			s.count(&p.upTime, p.upSince, s.w1)
		}
		up += p.upTime
		useful += p.useful
		busy += p.busy
	}
	rep.Utilization, rep.Useful = busy/up, useful/up
	rep.RoundSeconds = (s.w1 - s.w0) / rounds
	rep.SentPerRound = sent / float64(c.Peers) / rounds
	rep.ReceivedPerRound = received / float64(c.Peers) / rounds
	rep.Contributions = included / rounds
	return rep, nil
}

// newSim draws c's peers (each passed to tweak, if set).
func newSim(c Config, tweak func(i int, p *peer)) *sim {
	codec, _ := gradsync.NewCodec(c.Codec, 256, 4096, 1.0/32)
	s := &sim{c: c, rng: rand.New(rand.NewPCG(c.Seed, 0x5eed)), contrib: float64(codec.EncodedLen(int(c.Params)))}
	s.agg = s.contrib // an aggregate is encoded like a contribution
	s.peers = make([]*peer, c.Peers)
	for i := range s.peers {
		p := &peer{step: c.StepSeconds * math.Exp(c.StepSpread*s.rng.NormFloat64()),
			up: s.link(c.UpMbps), down: s.link(c.DownMbps)}
		p.crash = s.nextCrash(0)
		if tweak != nil {
			tweak(i, p)
		}
		s.peers[i] = p
	}
	return s
}

type sim struct {
	c          Config
	rng        *rand.Rand
	peers      []*peer
	contrib    float64 // bytes of one encoded contribution
	agg        float64 // bytes of all aggregate partitions, encoded
	checkpoint float64 // when the last round's checkpoint settled everywhere
	w0, w1     float64 // the time counted: the first and last rounds' checkpoints
	target     float64 // when this round's contributions are due (Adaptive)
}

// count adds to x the part of [a, b] inside the time counted.
func (s *sim) count(x *float64, a, b float64) {
	if s.w1 > s.w0 {
		*x += max(0, min(b, s.w1)-max(a, s.w0))
	}
}

// link draws a peer's link rate around median Mbit/s, in bytes a second.
func (s *sim) link(median float64) float64 {
	mbps := median * math.Exp(s.c.LinkSpread*s.rng.NormFloat64())
	return min(max(mbps, s.c.MinMbps), s.c.MaxMbps) * 1e6 / 8
}

// nextCrash is when a peer up from t next crashes (+Inf without churn).
func (s *sim) nextCrash(t float64) float64 {
	if s.c.ChurnPerHour == 0 {
		return math.Inf(1)
	}
	return t + s.rng.ExpFloat64()*3600/s.c.ChurnPerHour
}

// down takes p down at its crash time until it is back, after the
// downtime.
func (s *sim) down(p *peer) {
	s.count(&p.upTime, p.upSince, p.crash)
	p.isDown, p.spot = true, 0
	p.back = p.crash + s.rng.ExpFloat64()*s.c.Downtime
	p.crash = math.Inf(1)
}

// rejoin brings p back if it is back by the checkpoint at time ck: it
// fetches that checkpoint (weights and outer momentum, fp32) and is ready
// once it has.
func (s *sim) rejoin(p *peer, ck float64) {
	if !p.isDown || p.back > ck {
		return
	}
	fetch := 8 * float64(s.c.Params)
	p.received += fetch
	p.isDown, p.rejoining = false, true
	p.upSince = p.back
	p.ready = ck + s.c.Latency + fetch/p.down
	p.settled = p.ready
	p.crash = s.nextCrash(p.back)
}

type roundResult struct {
	checkpoint                          float64
	included, stragglers, crashes, lost int
}

// entrant is a peer's part in one round.
type entrant struct {
	*peer
	start, end, avail, settle float64
	steps, train              float64 // inner steps it trains, and their seconds
	spotDue                   float64 // seconds of re-execution it owes this round
	admitted                  bool
}

// round simulates one round and moves every peer to the next: those up
// train from when they are ready (sequential: once they settled the last
// checkpoint; overlapped: once their last contribution is out and the
// checkpoint before it settled), the close rule decides which
// contributions the round includes, and the exchange sets when each
// settles the round's checkpoint.
func (s *sim) round() roundResult {
	c := s.c
	var res roundResult
	prev := s.checkpoint
	for _, p := range s.peers {
		s.rejoin(p, prev)
	}
	open := math.Inf(1)
	for _, p := range s.peers {
		if !p.isDown && !p.rejoining {
			open = min(open, p.ready)
		}
	}
	if math.IsInf(open, 1) { // only peers coming back: the earliest opens
		for _, p := range s.peers {
			if !p.isDown {
				open = min(open, p.ready)
			}
		}
	}
	s.setTarget(open)
	var es []*entrant
	for _, p := range s.peers {
		if p.isDown {
			continue
		}
		if p.rejoining && p.ready > open+c.Close.Slack*float64(c.H)*p.step {
			continue // back too late for this round: it joins a later one
		}
		p.rejoining = false
		e := &entrant{peer: p, start: p.ready, spotDue: p.spot}
		p.spot = 0
		e.steps = s.steps(p, e.start, e.spotDue)
		e.train = e.steps * p.step * math.Exp(c.Jitter*s.rng.NormFloat64())
		e.end = e.start + e.train
		if c.Overlap { // the spot check it owes comes before its own steps
			e.end += e.spotDue
		}
		e.avail = e.end + c.Latency + s.contrib/p.up
		if p.crash < e.avail {
			s.count(&p.busy, e.start, min(p.crash, e.end))
			res.crashes++
			res.lost++
			s.down(p)
			continue
		}
		es = append(es, e)
	}
	if math.IsInf(open, 1) || len(es) == 0 { // nobody up, or every contribution lost
		s.checkpoint = max(prev, open) + c.Close.Deadline.Seconds()
		if math.IsInf(open, 1) {
			s.checkpoint = s.nextBack()
		}
		res.checkpoint = s.checkpoint
		return res
	}
	var arrivals []time.Duration
	for _, e := range es {
		arrivals = append(arrivals, seconds(e.avail-open))
	}
	closeAt, _ := c.Close.Close(arrivals, len(es))
	var in []*entrant
	supply := 0.0
	for _, e := range es {
		if seconds(e.avail-open) <= closeAt {
			e.admitted = true
			in = append(in, e)
			supply += e.up
		} else {
			res.stragglers++
		}
	}
	res.included = len(in)
	determined := s.exchange(es, in, supply, open+closeAt.Seconds())
	// A checkpoint follows the one before it: it is determined once every
	// aggregate is out; each peer settles it in its own time.
	ck := max(prev, determined) + c.Overhead
	for _, e := range es {
		e.settle = max(e.settle, e.settled+c.Overhead)
	}
	for _, e := range es {
		// Its spot check and its own steps, in the order it runs them.
		spot, steps := e.avail, e.start
		if c.Overlap {
			spot, steps = e.start, e.start+e.spotDue
		}
		s.count(&e.busy, spot, spot+e.spotDue)
		s.count(&e.busy, steps, steps+e.train)
		if e.admitted {
			s.count(&e.useful, steps, steps+e.train)
		}
		if e.crash < e.settle {
			res.crashes++
			s.down(e.peer)
			continue
		}
		if c.Overlap { // it needs the checkpoint before this round's
			e.ready = max(e.end, e.settled)
		} else {
			e.ready = e.settle
		}
		e.settled = e.settle
	}
	s.drawSpotChecks(in)
	s.checkpoint = ck
	res.checkpoint = ck
	return res
}

// drawSpotChecks picks, for each included contribution, with probability
// SpotShare, another participant to re-execute it in the next round (as
// the node does: after its own inner steps, before it collects; with
// overlap, before its next inner steps).
func (s *sim) drawSpotChecks(in []*entrant) {
	if len(in) < 2 {
		return
	}
	for i, e := range in {
		if s.rng.Float64() >= s.c.SpotShare {
			continue
		}
		j := s.rng.IntN(len(in) - 1)
		if j >= i {
			j++
		}
		v := in[j]
		v.spot += e.steps * v.step
	}
}

// steps is how many inner steps p, starting at start and owing spot
// seconds of re-execution, trains a round: H, or with Adaptive as many as
// land its contribution by the round's target (at least one).
func (s *sim) steps(p *peer, start, spot float64) float64 {
	if !s.c.Adaptive {
		return float64(s.c.H)
	}
	return max(1, math.Floor((s.target-start-spot-s.contrib/p.up)/p.step))
}

// setTarget sets when a round's contributions are due (Adaptive): a median
// peer's H steps and upload after the round opens, or with overlap one
// round's steps after the last target — a cadence that late starters keep
// by training fewer steps.
func (s *sim) setTarget(open float64) {
	c := s.c
	round := float64(c.H) * c.StepSeconds
	first := open + round + s.contrib/(c.UpMbps*1e6/8)
	if !c.Overlap || s.target == 0 {
		s.target = first
		return
	}
	s.target = max(s.target+round, open+s.contrib/(c.UpMbps*1e6/8)+round/2)
}

// nextBack is when the first peer down is back.
func (s *sim) nextBack() float64 {
	t := math.Inf(1)
	for _, p := range s.peers {
		if p.isDown {
			t = min(t, p.back)
		}
	}
	return t
}

func seconds(x float64) time.Duration { return time.Duration(x * float64(time.Second)) }

// exchange moves a round's bytes — contributions to whoever fetches them,
// aggregates to everyone — sets each entrant's settle time and returns
// when the last aggregate was out (the checkpoint determined).
//
// Scatter chooses its reducers by downlink: the admitted peers whose
// downlink is at least half the admitted median reduce one partition each
// (a slow link does not hold up a round's aggregate); everyone recomputes
// Verify partitions drawn at random.
func (s *sim) exchange(es, in []*entrant, supply, closed float64) float64 {
	c := s.c
	k := float64(len(in))
	all := c.Protocol == "all"
	reducer := map[*entrant]bool{}
	parts := float64(c.Partitions)
	if all {
		for _, e := range in {
			reducer[e] = true
		}
	} else {
		downs := make([]float64, len(in))
		for i, e := range in {
			downs[i] = e.down
		}
		floor := gradsync.LinkFloor(downs)
		for _, e := range in {
			if e.down >= floor {
				reducer[e] = true
			}
		}
		parts = float64(len(reducer))
	}
	// What each entrant fetches of the contributions, and what reducing
	// and checking costs it.
	bytes, work := make([]float64, len(es)), make([]float64, len(es))
	demand := 0.0
	for i, e := range es {
		if all { // every other admitted contribution; every aggregate recomputed
			others := k
			if e.admitted {
				others--
			}
			bytes[i], work[i] = others*s.contrib, k*float64(c.Params)*c.AggregateNs*1e-9
		} else {
			n := float64(c.Verify) // partitions fetched from every contributor
			if reducer[e] {
				n++
			}
			bytes[i], work[i] = n*(k-1)*s.contrib/parts, n*k*float64(c.Params)/parts*c.AggregateNs*1e-9
		}
		demand += bytes[i]
	}
	// Contributions: each entrant's fetch runs at its downlink, or at its
	// share of the swarm's upload, whichever is slower.
	collected := make([]float64, len(es))
	for i, e := range es {
		begin := closed
		if !c.Overlap { // its spot check comes first, after its own steps
			begin = max(closed, e.avail+e.spotDue)
		}
		collected[i] = begin + c.Latency + max(bytes[i]/e.down, demand/supply)
		e.received += bytes[i]
	}
	for _, e := range in {
		e.sent += demand * e.up / supply
	}
	// Aggregates. All: the reducers announce their partitions' CIDs and
	// every node compares them with its own recomputation from the
	// contributions it holds — no aggregate travels. Scatter: each reducer
	// publishes its partition, and everyone fetches the partitions it does
	// not recompute (about all of them).
	published := 0.0
	for i, e := range es {
		if !reducer[e] {
			continue
		}
		if all {
			share := math.Ceil(parts / k) // partitions this reducer announces, at most
			published = max(published, collected[i]+work[i]*share/parts+c.Latency)
		} else {
			published = max(published, collected[i]+work[i]/(float64(c.Verify)+1)+c.Latency+s.agg/parts/e.up)
		}
	}
	aggDemand := 0.0
	if !all {
		aggDemand = float64(len(es)) * s.agg
	}
	for i, e := range es {
		got := published
		if !all {
			got += c.Latency + max(s.agg/e.down, aggDemand/supply)
			e.received += s.agg
		}
		e.settle = max(got, collected[i]+work[i]) + c.Overhead + c.Latency
	}
	for _, e := range in {
		e.sent += aggDemand * e.up / supply
	}
	return published
}
