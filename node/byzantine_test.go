package node_test

// The adversarial suite: real nodes on loopback, an attacker built from
// the project's own node code and message types, each attack as issue 22
// describes it. Every test checks that the honest nodes (and a joiner that
// arrives during the attack) end on one checkpoint made of honest
// contributions, that none adopted a forged checkpoint, and that the
// rejections were counted.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
	"github.com/fomnet/fomnet/p2p"
	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// attacker is a node on the run's topic that is not a participant: it
// reads every round message and publishes what it likes, signed with its
// own key.
type attacker struct {
	nd    *node.Node
	topic *p2p.Topic
	sub   *p2p.Subscription
}

func newAttacker(t *testing.T, nd *node.Node, run cid.Cid) *attacker {
	t.Helper()
	topic, err := nd.Host.Join(node.RunTopic(run), nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Cancel(); topic.Close() })
	return &attacker{nd: nd, topic: topic, sub: sub}
}

func (a *attacker) publish(ctx context.Context, m node.RoundMsg) {
	b, err := node.EncodeRoundMsg(m)
	if err == nil {
		a.topic.Publish(ctx, b, 0)
	}
}

// watch calls f for every round message from another peer (as received,
// and decoded) until ctx ends.
func (a *attacker) watch(ctx context.Context, wg *sync.WaitGroup, f func(msg p2p.Message, m node.RoundMsg)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := a.sub.Next(ctx)
			if err != nil {
				return
			}
			if m, err := node.DecodeRoundMsg(msg.Data); err == nil && msg.From != a.nd.Host.ID() {
				f(msg, m)
			}
		}
	}()
}

// contribution fetches and decodes the contribution an announcement names.
func (a *attacker) contribution(ctx context.Context, m node.RoundMsg) (*node.Contribution, bool) {
	k, err := cid.Decode(m.CID)
	if err != nil {
		return nil, false
	}
	blk, err := a.nd.Store.Block(ctx, k)
	if err != nil {
		return nil, false
	}
	con, err := node.DecodeContribution(blk.RawData())
	return con, err == nil
}

// contribute stores c (as the attacker's) and announces it.
func (a *attacker) contribute(ctx context.Context, c node.Contribution) error {
	c.Peer = a.nd.Host.ID().String()
	raw, k, err := node.EncodeContribution(&c)
	if err != nil {
		return err
	}
	if err := a.nd.Store.PutBlock(ctx, k, raw); err != nil {
		return err
	}
	a.publish(ctx, node.RoundMsg{Type: node.MsgContribution, Run: c.Run.CID, Round: c.Round, Base: c.Base.CID, CID: k.String(), Tokens: c.Tokens})
	return nil
}

// answerStatus makes nd answer every status request with f's answer.
func answerStatus(nd *node.Node, f func(q node.StatusRequest) node.StatusResponse) {
	nd.Host.SetStreamHandler(node.StatusProtocol, func(s network.Stream) {
		defer s.Close()
		b, err := io.ReadAll(io.LimitReader(s, 4096))
		if err != nil {
			s.Reset()
			return
		}
		var q node.StatusRequest
		if json.Unmarshal(b, &q) != nil {
			s.Reset()
			return
		}
		out, _ := json.Marshal(f(q))
		s.Write(out)
	})
}

// forge copies checkpoint ck (fetched as any peer would) with its weights
// negated — a plausible checkpoint of the right shape, not the round's —
// and, when round ≥ 0, round.json's round rewritten; it returns the
// forged checkpoint's CID, pinned in nd's store.
func forge(ctx context.Context, tmp string, nd *node.Node, spec *node.RunSpec, ck cid.Cid, round int) (cid.Cid, error) {
	src := filepath.Join(tmp, "src")
	if err := nd.Store.Get(ctx, ck, src, nil); err != nil {
		return cid.Undef, err
	}
	mc, _ := spec.ModelConfig()
	files := map[string][]byte{}
	for _, name := range []string{"model.safetensors", "tokenizer.json", "outer.bin", "round.json"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return cid.Undef, err
		}
		files[name] = b
	}
	w, meta, err := model.ReadWeights(mc, files["model.safetensors"])
	if err != nil {
		return cid.Undef, err
	}
	for i := range w {
		w[i] = -w[i]
	}
	rj := files["round.json"]
	if round >= 0 {
		var rec map[string]any
		if err := json.Unmarshal(rj, &rec); err != nil {
			return cid.Undef, err
		}
		rec["round"] = round
		rj, _ = json.MarshalIndent(rec, "", "  ")
	}
	dst := filepath.Join(tmp, "forged")
	if err := model.SaveWeights(dst, mc, w, meta, model.File{Name: "tokenizer.json", Data: files["tokenizer.json"]},
		model.File{Name: "outer.bin", Data: files["outer.bin"]}, model.File{Name: "round.json", Data: rj}); err != nil {
		return cid.Undef, err
	}
	return nd.Store.Add(ctx, dst, contentstore.AddOptions{Pin: true, Name: "forged"})
}

// record is what the tests read of a round.json.
type record struct {
	Round int
	Base  struct {
		CID string `json:"/"`
	}
	Participants  []string
	Contributions []sharding.Link
	Rejected      map[string]map[string]string
	Excluded      []struct {
		Peer  string
		Proof struct {
			CID string `json:"/"`
		}
	}
}

// lineageOf reads the round records of the lineage ending at ck (round
// rounds) back to round 1, newest first, as nd holds them.
func lineageOf(t *testing.T, ctx context.Context, nd *node.Node, ck cid.Cid, rounds int) []record {
	t.Helper()
	var out []record
	for r := rounds; r >= 1; r-- {
		f, err := nd.Store.Lookup(ctx, ck, "round.json")
		if err != nil {
			t.Fatal(err)
		}
		rd, err := nd.Store.Open(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var rec record
		err = json.NewDecoder(rd).Decode(&rec)
		rd.Close()
		if err != nil {
			t.Fatal(err)
		}
		if rec.Round != r {
			t.Fatalf("lineage: round %d where %d was expected", rec.Round, r)
		}
		out = append(out, rec)
		if ck, err = cid.Decode(rec.Base.CID); err != nil {
			t.Fatalf("round %d: base %q: %v", r, rec.Base.CID, err)
		}
	}
	return out
}

// honestOnly fails the test unless every round of the lineage ending at
// ck includes honest contributions alone (which of them made each
// round's deadline depends on timing).
func honestOnly(t *testing.T, ctx context.Context, nd *node.Node, ck cid.Cid, rounds int, honest map[string]bool) {
	t.Helper()
	for _, rec := range lineageOf(t, ctx, nd, ck, rounds) {
		if len(rec.Participants) == 0 {
			t.Fatalf("round %d includes no contribution", rec.Round)
		}
		for _, id := range rec.Participants {
			if !honest[id] {
				t.Fatalf("round %d includes %s, not an honest node", rec.Round, id)
			}
		}
	}
}

// byzantineRun is three honest participants, k attacker identities, and a
// joiner and a follower that arrive after round 1.
type byzantineRun struct {
	c                  *nodetest.Cluster
	spec               *node.RunSpec
	run                cid.Cid
	honest             []*node.Participant
	sybils             []*node.Node
	joinerN, followerN *node.Node
	log                checkpointLog
	ids                map[string]bool
	// liar is the lying reducer (byzSetup.liar), on node liarN; expect
	// is how many contributions the honest nodes expect in a round.
	liar   *node.Participant
	liarN  *node.Node
	expect int
	// admitted: attacker identities whose contributions can be admitted
	// (each may stall one level of a round's reducer order).
	admitted int
	// ref is where the same run ended with its attacker identities on
	// the run's topic, silent (idle: this is that run).
	ref       outcome
	idle      bool
	tolerance float64 // see sameAsHonest
	// atks are the attacker identities on the topic, atk the first;
	// what the attack starts runs under actx and wg, stopped and waited
	// for at cleanup.
	atk  *attacker
	atks []*attacker
	actx context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
}

const byzHonest, byzRounds = 3, 3

// byzSetup is what a byzantineRun has besides its honest nodes.
type byzSetup struct {
	sybils   int           // attacker identities on the topic
	deadline time.Duration // the run's round deadline
	// liar adds a participant that trains honestly and, unless the run is
	// idle, publishes every aggregate with one int8 block scale of 2e36
	// (16 partitions: it is first in line for some in almost every round).
	liar bool
	// noSpot turns spot checks off, for a test of what aggregation alone
	// notices (a spot check may exclude the attacker first).
	noSpot bool
}

func newByzantineRun(t *testing.T, ctx context.Context, s byzSetup, idle bool) *byzantineRun {
	t.Helper()
	var ref outcome
	if !idle {
		ref = reference(t, fmt.Sprintf("run (%+v)", s), func(t *testing.T, ctx context.Context) outcome {
			b := newByzantineRun(t, ctx, s, true)
			return outcomeOf(t, ctx, b.c.Nodes[0], b.finish(t, ctx)[0])
		})
	}
	liars := 0
	if s.liar {
		liars = 1
	}
	c := nodetest.New(t, byzHonest+2+s.sybils+liars, nodetest.Options{KeySeed: 22})
	c.ConnectAll()
	spec := smallRun(t, c, byzRounds)
	spec.Sync.RoundDeadline = s.deadline
	if s.noSpot {
		off := 0.0
		spec.SpotCheck = &off
	}
	if s.liar {
		spec.Sync.Codec, spec.Sync.Partitions = "int8", 16
	}
	run, err := c.Nodes[0].CreateRun(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	b := &byzantineRun{c: c, spec: spec, run: run, ids: map[string]bool{}, ref: ref, idle: idle, tolerance: 0.02, expect: byzHonest + liars, admitted: liars}
	b.joinerN, b.followerN = c.Nodes[byzHonest], c.Nodes[byzHonest+1]
	b.ids[b.joinerN.Host.ID().String()] = true
	b.sybils = append([]*node.Node(nil), c.Nodes[byzHonest+2:byzHonest+2+s.sybils]...)
	for i := 0; i < byzHonest; i++ {
		nd := c.Nodes[i]
		b.ids[nd.Host.ID().String()] = true
		b.honest = append(b.honest, openOne(t, nd, run, b.expect, func(e node.RoundEvent) { b.log.record(e) }))
	}
	if s.liar {
		b.liarN = c.Nodes[len(c.Nodes)-1]
		b.liar = openOne(t, b.liarN, run, b.expect, func(e node.RoundEvent) { b.log.record(e) })
		if !idle {
			node.Tamper(b.liar, func(_ int, enc []byte) []byte {
				out := append([]byte(nil), enc...)
				// int8: magic, count, block, then the first block's scale.
				binary.LittleEndian.PutUint32(out[12:], math.Float32bits(2e36))
				return out
			})
		}
	}
	// Every attacker identity is on the topic from the start (silent in
	// the idle run), as round 1's shares of the data count topic peers.
	for _, nd := range b.sybils {
		b.atks = append(b.atks, newAttacker(t, nd, run))
	}
	b.atk = b.atks[0]
	b.actx, b.stop = context.WithCancel(ctx)
	t.Cleanup(func() { b.stop(); b.wg.Wait() })
	return b
}

// finish runs the honest nodes to the end, lets the joiner catch up after
// round 1 and run the rest, starts the follower then too, and checks that
// they all end on the honest nodes' checkpoint.
func (b *byzantineRun) finish(t *testing.T, ctx context.Context) []*node.Participant {
	t.Helper()
	var joiner *node.Participant
	joined := make(chan error, 1)
	var mu sync.Mutex
	mirrored := map[int]cid.Cid{}
	// The honest nodes see every attacker identity (and one another, and
	// the liar) on the topic before round 1 — its data shares count them —
	// in the attacked run as in the reference: an attacker seeing them is
	// not enough (under load a subscription reached an honest node late,
	// and the same authors made other contributions).
	for _, a := range b.atks {
		if err := a.topic.WaitPeers(ctx, byzHonest); err != nil {
			t.Fatal(err)
		}
	}
	want := map[peer.ID]bool{}
	for _, nd := range append(append(append([]*node.Node(nil), b.c.Nodes[:byzHonest]...), b.sybils...), b.liarN) {
		if nd != nil {
			want[nd.Host.ID()] = true
		}
	}
	topic := node.RunTopic(b.run)
	for i, nd := range b.c.Nodes[:byzHonest] {
		for {
			seen := 0
			for _, id := range nd.Host.PubSub.ListPeers(topic) {
				if want[id] {
					seen++
				}
			}
			if seen == len(want)-1 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("honest node %d sees %d of the %d other identities on the topic", i, seen, len(want)-1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	followed := make(chan error, 1)
	go func() {
		// The joiner and the follower start once round 1 is settled.
		for b.honest[0].Round() < 2 && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
		go func() {
			followed <- b.followerN.FollowRun(fctx, b.run, node.FollowOptions{Interval: 300 * time.Millisecond, Logf: t.Logf,
				Mirrored: func(r int, ck cid.Cid) {
					mu.Lock()
					mirrored[r] = ck
					mu.Unlock()
					b.log.record(node.RoundEvent{Phase: "adopted", Round: r, CID: ck.String()})
				}})
		}()
		joiner = openOne(t, b.joinerN, b.run, b.expect+1, func(e node.RoundEvent) { b.log.record(e) })
		if _, err := joiner.CatchUp(ctx, 10*time.Second); err != nil {
			joined <- err
			return
		}
		joined <- joiner.RunRounds(ctx, byzRounds)
	}()
	ps := b.honest
	if b.liar != nil {
		ps = append(slices.Clone(ps), b.liar)
	}
	for i, err := range runAll(ps, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, byzRounds) }) {
		if err != nil && i < byzHonest {
			t.Fatalf("honest node %d: %v", i, err)
		}
	}
	if err := <-joined; err != nil {
		t.Fatalf("joiner: %v", err)
	}
	all := append(append([]*node.Participant(nil), b.honest...), joiner)
	sameBase(t, all)
	if joiner.Round() != byzRounds+1 {
		t.Fatalf("the joiner is at round %d", joiner.Round())
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		got := mirrored[byzRounds]
		mu.Unlock()
		if got.Equals(all[0].Base()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower has %v, not the final %s", mirrored, all[0].Base())
		}
	}
	stopFollow()
	if err := <-followed; err != nil {
		t.Fatalf("follower: %v", err)
	}
	if !b.idle {
		sameAsHonest(t, b.ref, outcomeOf(t, ctx, b.c.Nodes[0], all[0]), b.tolerance)
	}
	b.boundedWaits(t)
	return all
}

// boundedWaits fails the test if an honest participant or the joiner
// waited out more round deadlines in a round than the protocol allows it:
// one collecting contributions (the quorum is one: its own), one per
// reducer in line ahead of an honest one — none but the admitted attackers
// (b.admitted) — plus one, and one for the participants' checkpoints.
func (b *byzantineRun) boundedWaits(t *testing.T) {
	t.Helper()
	limit := 3 + b.admitted
	b.log.mu.Lock()
	defer b.log.mu.Unlock()
	for i, nd := range append(b.c.Nodes[:byzHonest:byzHonest], b.joinerN) {
		waits := b.log.deadlines[nd.Host.ID().String()]
		t.Logf("participant %d: deadlines passed per round %v (at most %d allowed)", i, waits, limit)
		for r, n := range waits {
			if n > limit {
				t.Errorf("participant %d waited out %d deadlines in round %d, more than %d", i, n, r, limit)
			}
		}
	}
}

// outcome is where a run ended: its checkpoint, validation loss and the
// authors each round included (round 1 first).
type outcome struct {
	ck    cid.Cid
	loss  map[string]float64
	parts [][]string // each round's included authors
	// inputs: each round's input contributions (included or left out;
	// the round record lists them all, so they decide its bytes)
	inputs [][]string
}

// outcomeOf reads p's outcome (its lineage as nd holds it).
func outcomeOf(t *testing.T, ctx context.Context, nd *node.Node, p *node.Participant) outcome {
	t.Helper()
	o := outcome{ck: p.Base(), loss: valLoss(t, p)}
	for _, rec := range lineageOf(t, ctx, nd, p.Base(), byzRounds) {
		o.parts = append([][]string{rec.Participants}, o.parts...)
		var in []string
		for _, l := range rec.Contributions {
			in = append(in, l.CID)
		}
		o.inputs = append([][]string{in}, o.inputs...)
	}
	return o
}

// references holds the attacker-free runs' outcomes, each run once for
// the suite.
var references struct {
	mu sync.Mutex
	m  map[string]*outcome
}

// reference returns the outcome of the attacker-free run named key,
// running it (in a subtest, so that its nodes stop before the caller's
// start: both use the same identities) if it has not run yet.
func reference(t *testing.T, key string, run func(*testing.T, context.Context) outcome) outcome {
	t.Helper()
	references.mu.Lock()
	defer references.mu.Unlock()
	o, ok := references.m[key]
	if !ok {
		t.Run("attacker-free "+key, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out := run(t, ctx)
			o = &out
		})
		if references.m == nil {
			references.m = map[string]*outcome{}
		}
		references.m[key] = o // nil if it failed
	}
	if o == nil {
		t.Fatalf("no attacker-free %s to compare with", key)
	}
	return *o
}

// sameAsHonest fails the test unless the run that ended in got ended
// where the attacker-free run ref did: on its checkpoint CID wherever each
// round had the same input contributions (same identities, same shards,
// same contributions: the same bytes; an attacker's input left out still
// shows in the round record); otherwise — timing let a joiner's
// contribution in or out, or the attacker's work was an input — within
// tolerance (0.02: 2%) of its validation loss per language.
func sameAsHonest(t *testing.T, ref, got outcome, tolerance float64) {
	t.Helper()
	t.Logf("final checkpoint %s, validation loss %v; attacker-free run %s, %v", got.ck, got.loss, ref.ck, ref.loss)
	if slices.EqualFunc(got.inputs, ref.inputs, slices.Equal) {
		if !got.ck.Equals(ref.ck) {
			t.Fatalf("the run ended on %s, the attacker-free run on %s, with the same inputs in every round", got.ck, ref.ck)
		}
		return
	}
	t.Logf("rounds included %v; the attacker-free run's %v", got.parts, ref.parts)
	for lang, w := range ref.loss {
		if !(math.Abs(got.loss[lang]-w) <= tolerance*w) { // NaN too
			t.Fatalf("validation loss %s %.4f, attacker-free run %.4f: more than %.0f%% apart", lang, got.loss[lang], w, 100*tolerance)
		}
	}
}

func valLoss(t *testing.T, p *node.Participant) map[string]float64 {
	t.Helper()
	l, err := p.ValLoss()
	if err != nil || len(l) == 0 {
		t.Fatalf("validation loss %v: %v", l, err)
	}
	return l
}

// Forged checkpoints, announced on the topic and given in status answers,
// by one attacker and by twelve Sybil identities: for round 999999 and for
// each round of the run on the honest base (as end-of-round votes). No
// honest node and no joiner adopts one; every round's checkpoint is made
// of the honest contributions; the forgeries are counted.
func TestByzantineForgedCheckpoints(t *testing.T) {
	counts := []int{1, 12}
	if raceEnabled {
		counts = counts[:1] // see raceEnabled
	}
	for _, sybils := range counts {
		t.Run(fmt.Sprintf("%d attackers", sybils), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			b := newByzantineRun(t, ctx, byzSetup{sybils: sybils, deadline: 10 * time.Second}, false)
			var mu sync.Mutex
			seen, fakes := map[string]bool{}, map[string]bool{}
			newest, newestBase := cid.Undef, ""
			atk, actx, stop := b.atk, b.actx, b.stop
			sybil := map[peer.ID]bool{}
			for _, nd := range b.sybils {
				sybil[nd.Host.ID()] = true
			}
			// Every Sybil answers status requests with the newest forgery.
			for _, nd := range b.sybils {
				answerStatus(nd, func(q node.StatusRequest) node.StatusResponse {
					mu.Lock()
					defer mu.Unlock()
					a := node.StatusResponse{Run: q.Run, Round: q.Round, Newest: -1}
					if newest.Defined() {
						a.Checkpoint, a.Base, a.Newest, a.NewestCID = newest.String(), newestBase, 999999, newest.String()
					}
					return a
				})
			}
			tops := b.atks[1:]
			atk.watch(actx, &b.wg, func(msg p2p.Message, m node.RoundMsg) {
				mu.Lock()
				skip := seen[m.CID] || m.Type != node.MsgCheckpoint || sybil[msg.From]
				seen[m.CID] = true
				mu.Unlock()
				if skip {
					return
				}
				ck, _ := cid.Decode(m.CID)
				same, err1 := forge(actx, t.TempDir(), atk.nd, b.spec, ck, -1)
				far, err2 := forge(actx, t.TempDir(), atk.nd, b.spec, ck, 999999)
				if err1 != nil || err2 != nil {
					if actx.Err() == nil {
						t.Errorf("forging %s: %v, %v", ck, err1, err2)
					}
					return
				}
				mu.Lock()
				fakes[same.String()], fakes[far.String()] = true, true
				newest, newestBase = same, m.Base
				mu.Unlock()
				for _, a := range append([]*attacker{atk}, tops...) {
					a.publish(actx, node.RoundMsg{Type: node.MsgCheckpoint, Run: m.Run, Round: m.Round, Base: m.Base, CID: same.String()})
					a.publish(actx, node.RoundMsg{Type: node.MsgCheckpoint, Run: m.Run, Round: 999999, Base: m.Base, CID: far.String()})
				}
			})
			all := b.finish(t, ctx)
			stop()
			mu.Lock()
			defer mu.Unlock()
			if len(fakes) == 0 {
				t.Fatal("the attacker forged nothing")
			}
			b.log.mu.Lock()
			for r, cks := range b.log.cids {
				for ck := range cks {
					if fakes[ck] {
						t.Fatalf("round %d: an honest node took the forged %s", r, ck)
					}
				}
			}
			b.log.mu.Unlock()
			b.log.agreed(t, byzRounds)
			honestOnly(t, ctx, b.c.Nodes[0], all[0].Base(), byzRounds, b.ids)
			refused := 0
			for _, p := range all {
				rj := p.Rejections()
				refused += rj[node.RejectCandidate] + rj[node.RejectLineage] + rj[node.RejectFetch]
			}
			if refused == 0 {
				t.Fatal("no forged checkpoint was counted as refused")
			}
			t.Logf("refusals: %v (joiner)", all[len(all)-1].Rejections())
		})
	}
}

// Contributions that claim more tokens than the spec's round trains — the
// honest Δ copied, declaring 2^40 tokens — are refused with a counted
// reason; every round includes the honest contributions alone.
func TestByzantineTokenClaims(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := newByzantineRun(t, ctx, byzSetup{sybils: 1, deadline: 10 * time.Second}, false)
	atk, actx, stop := b.atk, b.actx, b.stop
	var mu sync.Mutex
	done := map[string]bool{}
	var last *node.Contribution // the newest honest contribution seen
	// claim publishes, once per round and base, the honest Δ of last as
	// the attacker's own, declaring 2^40 tokens.
	claim := func(round int, base string) {
		mu.Lock()
		con := last
		skip := con == nil || done[base] || round > byzRounds
		done[base] = true
		mu.Unlock()
		if skip {
			return
		}
		c := *con
		c.Round, c.Base.CID, c.Tokens = round, base, 1<<40
		if err := atk.contribute(actx, c); err != nil && actx.Err() == nil {
			t.Errorf("forging a contribution: %v", err)
		}
	}
	atk.watch(actx, &b.wg, func(_ p2p.Message, m node.RoundMsg) {
		switch m.Type {
		case node.MsgContribution:
			con, ok := atk.contribution(actx, m)
			if !ok {
				return
			}
			mu.Lock()
			last = con
			mu.Unlock()
			claim(m.Round, m.Base)
		case node.MsgCheckpoint:
			// Early for the next round: before the honest nodes train it.
			claim(m.Round+1, m.CID)
		}
	})
	all := b.finish(t, ctx)
	stop()
	b.log.agreed(t, byzRounds)
	honestOnly(t, ctx, b.c.Nodes[0], all[0].Base(), byzRounds, b.ids)
	n := 0
	for _, p := range b.honest {
		n += p.Rejections()[node.RejectSpecTokens]
	}
	if n == 0 {
		t.Fatal("no contribution was refused for its token count")
	}
}

// A lying reducer — a participant whose every published aggregate has one
// int8 block scale of 2e36 (it decodes; one outer step would make the
// weights infinite) — is caught by recomputation: the honest nodes refuse
// its aggregates, take the next reducer's, and agree on finite weights.
func TestByzantineLyingReducer(t *testing.T) {
	if raceEnabled {
		t.Skip("a scenario test; see raceEnabled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := newByzantineRun(t, ctx, byzSetup{sybils: 1, deadline: 10 * time.Second, liar: true}, false)
	// The attacker identity only watches: it keeps the signed envelope
	// of an honest reducer's aggregate.
	var mu sync.Mutex
	var honest []byte
	b.atk.watch(b.actx, &b.wg, func(msg p2p.Message, m node.RoundMsg) {
		if m.Type != node.MsgAggregate || msg.From == b.liarN.Host.ID() {
			return
		}
		if env, err := msg.Signed(); err == nil {
			mu.Lock()
			honest = env
			mu.Unlock()
		}
	})
	all := b.finish(t, ctx) // the honest nodes, the joiner and the follower agree
	b.stop()
	b.wg.Wait()
	refused := 0
	for _, p := range all {
		refused += p.Rejections()[node.RejectAggregate]
	}
	if refused == 0 {
		t.Fatal("no aggregate of the lying reducer was refused")
	}
	// The liar trained honestly: its contributions count, its lies do not.
	rec := lineageOf(t, ctx, b.c.Nodes[0], all[0].Base(), byzRounds)[0]
	if !slices.Contains(rec.Participants, b.liarN.Host.ID().String()) {
		t.Fatalf("the last round includes %v, not the liar's honest work", rec.Participants)
	}
	checkEvidence(t, ctx, b, all, honest)
}

// checkEvidence: the honest nodes (ps, on b's nodes in order, the joiner
// last) kept evidence against the liar, which another honest node
// re-checks to the liar's identity; the same evidence with its claim or
// its signed message altered, and evidence quoting an honest reducer's
// signed announcement, honest, prove nothing.
func checkEvidence(t *testing.T, ctx context.Context, b *byzantineRun, ps []*node.Participant, honest []byte) {
	t.Helper()
	liar := b.liarN.Host.ID()
	nodes := append(b.c.Nodes[:byzHonest:byzHonest], b.joinerN)
	var ev *node.Evidence
	for i, p := range ps {
		for _, k := range p.Evidence() {
			blk, err := nodes[i].Store.Block(ctx, k)
			if err != nil {
				t.Fatalf("evidence %s: %v", k, err)
			}
			if ev, err = node.DecodeEvidence(blk.RawData()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ev == nil {
		t.Fatal("no evidence against the lying reducer")
	}
	checker := ps[byzHonest-1]
	if who, err := checker.CheckEvidence(ctx, ev); err != nil || who != liar {
		t.Fatalf("evidence re-checked: %s, %v; the liar is %s", who, err, liar)
	}
	_, _, data, _ := p2p.OpenSigned(ev.Message)
	announced, _ := node.DecodeRoundMsg(data)
	claim := *ev
	claim.Recomputed = announced.CID // "its inputs give what it announced"
	cut := *ev
	cut.Message = append([]byte(nil), ev.Message...)
	cut.Message[len(cut.Message)/2] ^= 1
	if honest == nil {
		t.Fatal("the observer saw no honest aggregate")
	}
	framed := node.Evidence{Format: node.EvidenceFormat, Message: honest, Recomputed: ev.Recomputed}
	for name, e := range map[string]*node.Evidence{"altered claim": &claim, "altered message": &cut, "an honest reducer framed": &framed} {
		if who, err := checker.CheckEvidence(ctx, e); err == nil {
			t.Errorf("%s: evidence against %s accepted", name, who)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// A flood — one attacker publishing about 2,000 valid-looking messages a
// second on the run's topic (contributions and checkpoints naming blocks
// nobody holds, aggregates with made-up inputs) for the whole run — is
// absorbed: each sender is held to its rate and its own queue, its
// aggregates and checkpoints are neither taken nor forwarded (none of its
// contributions was admitted: it has no standing), the honest nodes, a
// joiner and a follower end on one honest lineage, and the drops are
// counted.
func TestByzantineFlood(t *testing.T) {
	if raceEnabled {
		// A flood at 2,000 messages a second is sized for nodes at full
		// speed: under the detector's slowdown honest fetches time out
		// behind it (CI, 2026-12-05) and the run ends elsewhere.
		t.Skip("a throughput scenario; see raceEnabled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := newByzantineRun(t, ctx, byzSetup{sybils: 1, deadline: 10 * time.Second}, false)
	atk, actx, stop := b.atk, b.actx, b.stop
	var mu sync.Mutex
	round, base := 1, ""
	atk.watch(actx, &b.wg, func(_ p2p.Message, m node.RoundMsg) {
		mu.Lock()
		defer mu.Unlock()
		if m.Type == node.MsgContribution && m.Round >= round {
			round, base = m.Round, m.Base
		}
	})
	sent := 0
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-actx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			r, bs := round, base
			mu.Unlock()
			if bs == "" {
				continue
			}
			for i := 0; i < 20; i++ {
				junk := binary.BigEndian.AppendUint64(nil, uint64(n*20+i))
				jc, _ := contentstore.BlockCID(contentstore.CodecDagJSON, junk)
				jr, _ := contentstore.BlockCID(contentstore.CodecRaw, junk)
				var m node.RoundMsg
				switch i % 3 {
				case 0:
					m = node.RoundMsg{Type: node.MsgContribution, Tokens: 1, CID: jc.String()}
				case 1:
					m = node.RoundMsg{Type: node.MsgAggregate, Partition: i % 4, CID: jr.String(), Inputs: []string{jc.String()}}
				default:
					m = node.RoundMsg{Type: node.MsgCheckpoint, CID: jc.String()}
				}
				m.Run, m.Round, m.Base = b.run.String(), r, bs
				atk.publish(actx, m)
				sent++
			}
		}
	}()
	all := b.finish(t, ctx)
	stop()
	b.wg.Wait()
	b.log.agreed(t, byzRounds)
	honestOnly(t, ctx, b.c.Nodes[0], all[0].Base(), byzRounds, b.ids)
	drops := map[string]int{}
	for _, p := range all {
		for k, v := range p.Rejections() {
			drops[k] += v
		}
	}
	t.Logf("the attacker sent %d messages; the participants counted %v", sent, drops)
	if drops[node.DropRate]+drops[node.DropQueueFull] == 0 {
		t.Fatal("nothing of the flood was dropped for its rate")
	}
	if drops[node.DropStanding] == 0 {
		t.Fatal("no aggregate or checkpoint of the flood was dropped for want of standing")
	}
}

// A lazy worker republishes another node's contribution as its own —
// an exact copy in round 1, the same scaled by 0.9 in round 2, a zero
// update in round 3 (sent as soon as the round's base is announced, so it
// is in time however fast the round closes) — and a stale one sends a
// contribution on the
// previous round's base: of a copy and its original one counts
// (copied_delta, in the round records), the zero update none
// (zero_delta), the stale one is refused (wrong_round), and the run agrees
// on a lineage within bounds of the attacker-free run's.
func TestByzantineLazyAndStale(t *testing.T) {
	if raceEnabled {
		t.Skip("a scenario test; see raceEnabled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Its copies are admissible, so they count towards closing a round
	// and the attacker is in line to reduce (and stays silent): views of
	// round 1 differ, deadlines pass, and fork choice reconciles.
	// Spot checks off: one that drew the copy would exclude the attacker
	// before its zero update (CI saw it), and this test is about what the
	// aggregation notices; TestSpotChecksCatchCheats covers copies.
	b := newByzantineRun(t, ctx, byzSetup{sybils: 1, deadline: 4 * time.Second, noSpot: true}, false)
	// Bounded, not equal: before a run has members (round 1), the copy
	// counts towards closing the round, which can close without one
	// honest contribution (the threat model's known limit); a smaller
	// copy counts in place of its original.
	b.tolerance = 0.1
	b.admitted = 1
	atk, actx, stop := b.atk, b.actx, b.stop
	codec, err := b.spec.Sync.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	done, prevBase := map[int]bool{}, map[int]string{}
	zeroed := map[string]bool{} // round-3 bases given a zero update
	var last *node.Contribution // the newest honest contribution seen
	start, _ := b.honest[0].ValLoss()
	atk.watch(actx, &b.wg, func(_ p2p.Message, m node.RoundMsg) {
		if m.Type == node.MsgCheckpoint {
			mu.Lock()
			prevBase[m.Round+1] = m.Base
			zero := m.Round == 2 && !zeroed[m.CID] && last != nil
			zeroed[m.CID] = zeroed[m.CID] || zero
			c := last
			mu.Unlock()
			if zero {
				// Round 3's zero update goes out as soon as a base of
				// the round is announced (one for each, views may
				// differ), before any honest work of the round: in time
				// for the round however fast it closes.
				z := *c
				z.Round, z.Base.CID = 3, m.CID
				if err := atk.rescale(actx, &z, codec, 0); err != nil {
					t.Errorf("round 3: %v", err)
					return
				}
				atk.contribute(actx, z)
			}
			return
		}
		mu.Lock()
		skip := done[m.Round] || m.Type != node.MsgContribution
		done[m.Round] = true
		stale := prevBase[m.Round]
		mu.Unlock()
		if skip {
			return
		}
		con, ok := atk.contribution(actx, m)
		if !ok {
			return
		}
		mu.Lock()
		last = con
		mu.Unlock()
		c := *con // round 1: a copy of its work; round 2: scaled by 0.9
		if m.Round == 2 {
			if err := atk.rescale(actx, &c, codec, 0.9); err != nil {
				t.Errorf("round %d: %v", m.Round, err)
				return
			}
		}
		if m.Round <= 2 {
			atk.contribute(actx, c)
		}
		if stale != "" {
			c := *con
			c.Base.CID = stale // the previous round's base
			atk.contribute(actx, c)
		}
	})
	all := b.finish(t, ctx) // every node ends on one checkpoint
	stop()
	left := map[string]int{}
	for _, rec := range lineageOf(t, ctx, b.c.Nodes[0], all[0].Base(), byzRounds) {
		t.Logf("round %d: %d authors, left out %v", rec.Round, len(rec.Participants), rec.Rejected)
		for _, parts := range rec.Rejected {
			for _, why := range parts {
				left[why]++
			}
		}
	}
	stale := 0
	for _, p := range all {
		stale += p.Rejections()[node.RejectRound]
	}
	t.Logf("partitions left out: %v; stale contributions refused: %d", left, stale)
	if left[node.RejectCopied] == 0 || left[node.RejectZero] == 0 || stale == 0 {
		t.Fatalf("left out %v, stale %d: a lazy or the stale worker went unnoticed", left, stale)
	}
	end, _ := all[0].ValLoss()
	if !(end["en"] < start["en"]) {
		t.Fatalf("validation loss %v → %v", start["en"], end["en"])
	}
}

// rescale makes c's partitions its own: each decoded with codec, scaled
// by k, encoded and stored.
func (a *attacker) rescale(ctx context.Context, c *node.Contribution, codec gradsync.Codec, k float32) error {
	parts := append([]sharding.Link(nil), c.Partitions...)
	for i, l := range parts {
		pk, err := l.Cid()
		if err != nil {
			return err
		}
		blk, err := a.nd.Store.Block(ctx, pk)
		if err != nil {
			return err
		}
		raw := blk.RawData()
		if len(raw) < 8 {
			return fmt.Errorf("partition %d: %d bytes", i, len(raw))
		}
		d := make([]float32, binary.LittleEndian.Uint32(raw[4:])) // every codec: magic, count
		if err := codec.Decode(d, raw); err != nil {
			return err
		}
		for j := range d {
			d[j] *= k
		}
		enc := codec.Encode(nil, d)
		nk, err := contentstore.BlockCID(contentstore.CodecRaw, enc)
		if err != nil {
			return err
		}
		if err := a.nd.Store.PutBlock(ctx, nk, enc); err != nil {
			return err
		}
		parts[i] = sharding.LinkTo(nk)
	}
	c.Partitions = parts
	return nil
}
