package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/p2p"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// CreateRun stores a run spec and pins it; the returned CID is the run ID.
// The spec's tokenizer link is set from the dataset's manifest (fetched if
// needed) when empty, and must match it otherwise.
func (n *Node) CreateRun(ctx context.Context, spec *RunSpec) (cid.Cid, error) {
	ds, err := spec.Dataset.Cid()
	if err != nil {
		return cid.Undef, err
	}
	mb, err := n.Store.Block(ctx, ds)
	if err != nil {
		return cid.Undef, fmt.Errorf("run: dataset %s: %w", ds, err)
	}
	man, err := sharding.DecodeManifest(mb.RawData())
	if err != nil {
		return cid.Undef, fmt.Errorf("run: dataset %s: %w", ds, err)
	}
	if spec.Tokenizer == nil {
		t := man.Tokenizer
		spec.Tokenizer = &t
	} else if spec.Tokenizer.CID != man.Tokenizer.CID {
		return cid.Undef, fmt.Errorf("run: tokenizer %s is not the dataset's (%s)", spec.Tokenizer.CID, man.Tokenizer.CID)
	}
	b, id, err := EncodeRunSpec(spec)
	if err != nil {
		return cid.Undef, err
	}
	if err := n.Store.PutBlock(ctx, id, b); err != nil {
		return cid.Undef, err
	}
	// Pinning the spec keeps the dataset it links too (when stored here).
	if rep, _ := n.Store.Verify(ctx, id); rep.OK() {
		if err := n.Store.Pin(ctx, id, "run "+spec.Name); err != nil {
			return cid.Undef, err
		}
	}
	return id, nil
}

// LoadRun fetches and decodes a run spec.
func (n *Node) LoadRun(ctx context.Context, id cid.Cid) (*RunSpec, error) {
	b, err := n.Store.Block(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", id, err)
	}
	return DecodeRunSpec(b.RawData())
}

// RoundEvent reports a participant's progress.
type RoundEvent struct {
	Peer  string
	Round int
	// Phase: "train" (Step/Steps, Loss), "contributed", "aggregated"
	// (Partitions this node reduced), "checkpoint" (CID), "adopted" (CID
	// of the majority's checkpoint, replacing ours).
	Phase      string
	Step       int
	Steps      int
	Loss       float32
	CID        string
	Partitions int
	// Contributions included in the round's aggregates (checkpoint).
	Contributions int
	// Bytes of this participant's encoded Δ, and of the same Δ in fp32.
	EncodedBytes, RawBytes int
}

// RunOptions configure a Participant.
type RunOptions struct {
	// Backend computes the inner steps (required).
	Backend kernels.Backend
	// Dir holds the checkpoints this node writes (default
	// HOME/runs/<run id>).
	Dir string
	// Expect, if > 0, is how many contributions a round waits for before
	// closing early (the swarm's size when known); otherwise the round
	// waits for every peer subscribed to the run's topic.
	Expect int
	// Events receives progress (nil: none).
	Events func(RoundEvent)
	// Logf receives log lines (nil: the node's).
	Logf func(string, ...any)
}

// Participant trains one node's share of a run, round by round.
type Participant struct {
	n     *Node
	id    cid.Cid
	spec  *RunSpec
	cfg   model.Config
	sync  gradsync.Config
	codec gradsync.Codec
	opts  RunOptions
	self  peer.ID

	m       *model.Model
	global  []float32
	outer   *gradsync.OuterOptimizer
	parts   []gradsync.Range
	efs     []*gradsync.ErrorFeedback
	shards  []*model.Corpus // each shard's training rows
	sched   *sharding.Schedule
	man     *sharding.Manifest
	val     map[string]*model.Corpus
	tokJSON []byte

	// members are the authors of the contributions the base checkpoint
	// included (from its round.json): every honest node agrees on them,
	// so they order the next round's reducers. Empty after genesis.
	members []peer.ID

	base  cid.Cid // checkpoint the current round starts from
	round int     // current round (rounds are numbered from 1)
	// loadedBase is the base named by the round.json loadCheckpointDir
	// read last.
	loadedBase cid.Cid

	topic *p2p.Topic
	sub   *p2p.Subscription
	inbox chan inMsg
	sent  [][]byte // this round's published messages, repeated while waiting

	mu         sync.Mutex // guards round, base and catchingUp for the validator
	catchingUp bool
	// checkedBehind: since it opened the run, this node has asked its
	// peers whether it is behind them.
	checkedBehind bool
	wg            sync.WaitGroup
	ctx           context.Context
	cancel        context.CancelFunc
}

type inMsg struct {
	from peer.ID
	m    RoundMsg
}

// OpenRun prepares this node to take part in run id: it fetches the spec
// and the dataset, builds the genesis checkpoint (deterministic from the
// seed, so every node gets the same CID) and joins the run's topic.
func (n *Node) OpenRun(ctx context.Context, id cid.Cid, o RunOptions) (*Participant, error) {
	if n.Host == nil {
		return nil, ErrOffline
	}
	if o.Backend == nil {
		return nil, errors.New("run: RunOptions.Backend is required")
	}
	if o.Logf == nil {
		o.Logf = n.logf
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(n.Home, "runs", id.String())
	}
	spec, err := n.LoadRun(ctx, id)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(o.Dir)
	wasHere := statErr == nil // this node took part in the run before
	cfg, _ := spec.ModelConfig()
	sc := spec.Sync
	codec, err := sc.NewCodec()
	if err != nil {
		return nil, err
	}
	dsCID, _ := spec.Dataset.Cid()
	ds, err := n.LoadDataset(ctx, dsCID, nil)
	if err != nil {
		return nil, err
	}
	if spec.Tokenizer != nil && spec.Tokenizer.CID != ds.Manifest.Tokenizer.CID {
		return nil, fmt.Errorf("run %s: its tokenizer %s is not its dataset's (%s)", id, spec.Tokenizer.CID, ds.Manifest.Tokenizer.CID)
	}
	p := &Participant{n: n, id: id, spec: spec, cfg: cfg, sync: sc, codec: codec, opts: o, self: n.Host.ID(),
		tokJSON: ds.Tokenizer, inbox: make(chan inMsg, 4096)}
	if err := p.loadData(ds); err != nil {
		return nil, err
	}
	p.m, err = model.New(o.Backend, cfg)
	if err != nil {
		return nil, err
	}
	p.m.Init(spec.Seed)
	nParams := p.m.Layout.Size
	p.global = make([]float32, nParams)
	o.Backend.Download(p.global, p.m.Params)
	p.outer = gradsync.NewOuterOptimizer(sc, nParams)
	p.parts = gradsync.Partitions(nParams, sc.Partitions)
	for _, r := range p.parts {
		p.efs = append(p.efs, gradsync.NewErrorFeedback(codec, r.Size))
	}
	p.base, err = p.writeCheckpoint(ctx, 0, cid.Undef, nil, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	n.settled.set(id, 0, p.base, cid.Undef)
	p.round = 1
	if r, err := p.resume(); err != nil {
		return nil, err
	} else if r > 0 {
		o.Logf("run %s: resumed from this node's checkpoint of round %d (%s)", id, r, p.base)
	}
	if wasHere {
		// Back in the run (a restart?): let the peers' gossip caches
		// forget this peer ID's earlier messages before rejoining.
		if err := n.Host.WaitGossipCachesExpired(ctx); err != nil {
			return nil, err
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if p.topic, err = n.Host.Join(RunTopic(id), p.validate); err != nil {
		return nil, err
	}
	if p.sub, err = p.topic.Subscribe(); err != nil {
		p.topic.Close()
		return nil, err
	}
	p.wg.Add(2)
	go p.readLoop()
	go p.discoverLoop()
	return p, nil
}

// discoverLoop finds the run's other participants: it provides the run
// ID on the DHT (so others find this node) and connects to the providers
// it finds, so that gossip on the run's topic reaches every participant
// even when they only share a bootstrap node that is not in the run.
func (p *Participant) discoverLoop() {
	defer p.wg.Done()
	h := p.n.Host
	wait := time.Duration(0)
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(wait):
		}
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		if err := h.DHT.Provide(ctx, p.id, true); err != nil && p.ctx.Err() == nil {
			p.opts.Logf("run %s: announcing on the DHT: %v", p.id, err)
		}
		for ai := range h.DHT.FindProvidersAsync(ctx, p.id, 64) {
			if ai.ID == h.ID() || h.Network().Connectedness(ai.ID) == network.Connected || len(ai.Addrs) == 0 {
				continue
			}
			if err := h.Connect(ctx, ai); err != nil && p.ctx.Err() == nil {
				p.opts.Logf("run %s: participant %s: %v", p.id, ai.ID, err)
			}
		}
		cancel()
		wait = 5 * time.Second
	}
}

// Genesis returns the CID of the run's round-0 checkpoint.
func (p *Participant) Base() cid.Cid { return p.base }

// Close leaves the run's topic and stops the reader. Idempotent.
func (p *Participant) Close() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.sub.Cancel()
	p.wg.Wait()
	p.topic.Close()
	p.cancel = nil
}

func (p *Participant) readLoop() {
	defer p.wg.Done()
	for {
		m, err := p.sub.Next(p.ctx)
		if err != nil {
			return
		}
		rm, err := DecodeRoundMsg(m.Data)
		if err != nil {
			continue
		}
		select {
		case p.inbox <- inMsg{from: m.From, m: rm}:
		case <-p.ctx.Done():
			return
		}
	}
}

// validate runs for every message on the run's topic before it is
// delivered or forwarded.
func (p *Participant) validate(_ context.Context, from peer.ID, data []byte) error {
	m, err := DecodeRoundMsg(data)
	if err != nil {
		return err
	}
	if m.Run != p.id.String() {
		return fmt.Errorf("wrong run %s", m.Run)
	}
	p.mu.Lock()
	round, base, catchingUp := p.round, p.base, p.catchingUp
	p.mu.Unlock()
	switch {
	case catchingUp && m.Round >= round-1:
		return nil // kept for when this node knows which round it is in
	case m.Round < round-1 || m.Round > round+1:
		return p2p.ErrIgnore // another round: late, or from a node ahead of us
	case m.Round == round && m.Type == MsgContribution && m.Base != base.String():
		return fmt.Errorf("contribution for round %d on base %s, not %s", m.Round, m.Base, base)
	}
	return nil
}

// loadData splits the dataset's rows: every tenth row of each shard (the
// first row of a shard of fewer than ten) is held out for validation, by
// the shard's language ("ko", "en") and by language and source
// ("ko/natural", "ko/synthetic", …).
func (p *Participant) loadData(ds *Dataset) error {
	tk, err := tokenizer.Parse(ds.Tokenizer)
	if err != nil {
		return fmt.Errorf("run: tokenizer: %w", err)
	}
	pad, _ := tk.SpecialID(tokenizer.PAD)
	eos := int32(p.cfg.EOS)
	if ds.Manifest.Vocab > p.cfg.Vocab {
		return fmt.Errorf("run: dataset vocabulary %d exceeds the model's %d", ds.Manifest.Vocab, p.cfg.Vocab)
	}
	p.man = ds.Manifest
	p.val = map[string]*model.Corpus{}
	for i, sh := range ds.Shards {
		lang := ds.Manifest.Shards[i].Language
		var tr, va [][]int32
		for r := 0; r < sh.Rows; r++ {
			// Every tenth row, or the first row of a shard too small to
			// have a tenth (the last row may be padded short).
			if r%10 == 9 || (sh.Rows >= 2 && sh.Rows < 10 && r == 0) {
				va = append(va, sh.Row(r))
			} else {
				tr = append(tr, sh.Row(r))
			}
		}
		c := &model.Corpus{}
		if err := c.AddRows(tr, pad, eos, p.cfg.Vocab); err != nil {
			return err
		}
		p.shards = append(p.shards, c)
		if lang == "ko" || lang == "en" {
			// Per language, and per language and source.
			for _, k := range []string{lang, lang + "/" + ds.Manifest.Shards[i].Source} {
				if p.val[k] == nil {
					p.val[k] = &model.Corpus{}
				}
				if err := p.val[k].AddRows(va, pad, eos, p.cfg.Vocab); err != nil {
					return err
				}
			}
		}
	}
	p.sched, err = sharding.NewSchedule(p.id.String(), ds.Manifest.Shards, sharding.Mixture{Stage: p.spec.Stage, Default: 1}, p.spec.Inner.ShardsPerRound)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// roundData returns the training rows of the shards the data pipeline's
// schedule assigns this node in round r (among the peers it sees on the
// run's topic), and those shards' links. A node assigned nothing, or too
// little to fill one sequence, trains on every shard.
func (p *Participant) roundData(r int) (*model.Corpus, []sharding.Link) {
	view := []string{p.self.String()}
	for _, id := range p.topic.Peers() {
		view = append(view, id.String())
	}
	items := p.sched.Assign(r-1, view)[p.self.String()]
	pick := map[int]bool{}
	for _, it := range items {
		pick[it.Shard] = true
	}
	c := &model.Corpus{}
	var links []sharding.Link
	for i, sc := range p.shards {
		if pick[i] {
			c.Tokens = append(c.Tokens, sc.Tokens...)
			links = append(links, p.man.Shards[i].CID)
		}
	}
	if len(c.Tokens) < p.spec.Inner.Seq+1 {
		c, links = &model.Corpus{}, nil
		for i, sc := range p.shards {
			c.Tokens = append(c.Tokens, sc.Tokens...)
			links = append(links, p.man.Shards[i].CID)
		}
	}
	sort.Slice(links, func(i, j int) bool { return links[i].CID < links[j].CID })
	return c, links
}

// ValLoss evaluates the current global weights on the held-out rows of
// each language, and of each language and source (keys "ko",
// "ko/natural", …; a split shorter than one sequence is left out).
func (p *Participant) ValLoss() (map[string]float64, error) {
	p.opts.Backend.Upload(p.m.Params, p.global)
	out := map[string]float64{}
	for lang, c := range p.val {
		if len(c.Tokens) < p.spec.Inner.Seq+1 {
			continue
		}
		l, err := model.Evaluate(p.m, c, p.spec.Inner.Batch, p.spec.Inner.Seq, 8)
		if err != nil {
			return nil, err
		}
		out[lang] = float64(l)
	}
	return out, nil
}

// Model returns the participant's model loaded with the current global
// weights (for sampling).
func (p *Participant) Model() *model.Model {
	p.opts.Backend.Upload(p.m.Params, p.global)
	return p.m
}

// CatchUp brings a node that joins a run in progress (or restarts after
// the swarm moved on) to the swarm's newest checkpoint: it waits up to
// wait for checkpoint announcements of rounds this node has not done,
// gathers them for a moment, fetches the checkpoint most peers announced
// for the newest round, adopts it and continues from the round after. It
// reports whether it moved; with no announcement in time (a new run, or
// this node is current) it stays where it is.
func (p *Participant) CatchUp(ctx context.Context, wait time.Duration) (bool, error) {
	p.mu.Lock()
	p.catchingUp = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.catchingUp = false
		p.mu.Unlock()
	}()
	votes := map[int]map[string]int{}
	newest := -1
	var keep []inMsg
	timer := time.NewTimer(wait)
	defer timer.Stop()
	gathering := false
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-timer.C:
			if !gathering {
				p.requeue(keep)
				return false, nil
			}
			best, n := "", 0
			for c, v := range votes[newest] {
				if v > n || (v == n && c < best) {
					best, n = c, v
				}
			}
			ck, err := cid.Decode(best)
			if err != nil {
				return false, err
			}
			p.opts.Logf("run %s: catching up: adopting the checkpoint of round %d, %s (%d announcements)", p.id, newest, ck, n)
			if err := p.adopt(ctx, newest, ck); err != nil {
				return false, err
			}
			p.mu.Lock()
			p.base, p.round = ck, newest+1
			p.mu.Unlock()
			p.n.settled.set(p.id, newest, ck, p.loadedBase)
			for _, e := range p.efs {
				clear(e.Residual) // the residual belonged to another base
			}
			var later []inMsg
			for _, im := range keep {
				if im.m.Round > newest {
					later = append(later, im)
				}
			}
			p.requeue(later)
			p.event(RoundEvent{Phase: "adopted", CID: ck.String()})
			return true, nil
		case im := <-p.inbox:
			m := im.m
			if m.Type != MsgCheckpoint || m.Round < p.round {
				keep = append(keep, im)
				continue
			}
			if votes[m.Round] == nil {
				votes[m.Round] = map[string]int{}
			}
			votes[m.Round][m.CID]++
			newest = max(newest, m.Round)
			if !gathering {
				// Give the round's other announcements a moment to arrive.
				gathering = true
				timer.Reset(500 * time.Millisecond)
			}
		}
	}
}

// requeue puts messages back into the inbox (dropping them if it is full).
func (p *Participant) requeue(ms []inMsg) {
	for _, im := range ms {
		select {
		case p.inbox <- im:
		default:
		}
	}
}

// Round is the number of the next round to run.
func (p *Participant) Round() int { return p.round }

// RunRounds runs rounds until the run's last round or ctx ends.
func (p *Participant) RunRounds(ctx context.Context, upto int) error {
	// Gossipsub delivers only to peers whose subscription it knows; right
	// after (re)joining, wait (up to a round deadline) until the expected
	// peers are known, so the first round's messages are not lost.
	if p.opts.Expect > 1 {
		wctx, cancel := context.WithTimeout(ctx, p.sync.RoundDeadline)
		if err := p.topic.WaitPeers(wctx, p.opts.Expect-1); err != nil && ctx.Err() == nil {
			p.opts.Logf("run %s: %v; starting anyway", p.id, err)
		}
		cancel()
	}
	for p.round <= min(upto, p.spec.Rounds) {
		// A node that (re)started may be behind: ask before training.
		if !p.checkedBehind {
			moved, err := p.adoptSettled(ctx, p.round)
			if err != nil {
				return fmt.Errorf("round %d: %w", p.round, err)
			}
			p.checkedBehind = !moved
			continue
		}
		if err := p.runRound(ctx); err != nil {
			return fmt.Errorf("round %d: %w", p.round, err)
		}
	}
	return nil
}

func (p *Participant) event(e RoundEvent) {
	if p.opts.Events != nil {
		e.Peer = p.self.String()
		if e.Round == 0 {
			e.Round = p.round
		}
		p.opts.Events(e)
	}
}

func peerSeed(seed uint64, id peer.ID) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return seed ^ h.Sum64()
}

// quorumWaits is how many more round deadlines a round without a quorum
// of contributions waits before it fails.
const quorumWaits = 5

// runRound: train H inner steps, publish the contribution, reduce the
// partitions this node is first in line for, apply the aggregates, write
// and announce the checkpoint, and follow the majority's.
func (p *Participant) runRound(ctx context.Context) error {
	r := p.round
	H, first := p.sync.RoundH(r-1), p.sync.RoundStart(r-1)
	// Gossipsub does not replay: a peer that was away (restarting, joining)
	// when a message went out never gets it. While this node waits in a
	// round, it repeats what it published in it; receivers are idempotent.
	p.sent = p.sent[:0]
	w := p.newRoundWait(r)
	defer w.stop()
	tc := p.spec.TrainConfig()
	be := p.opts.Backend
	be.Upload(p.m.Params, p.global)
	B, T := p.spec.Inner.Batch, p.spec.Inner.Seq
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	seed := peerSeed(p.spec.Seed, p.self)
	train, shards := p.roundData(r)
	var loss float32
	for s := 0; s < H; s++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		step := first + s
		if err := train.Batch(seed, step, B, T, tokens, targets); err != nil {
			return err
		}
		p.m.ZeroGrad()
		l, err := p.m.Forward(tokens, targets, B, T, true)
		if err != nil {
			return err
		}
		if err := p.m.Backward(); err != nil {
			return err
		}
		if _, err := p.m.Step(tc.Schedule.LR(step), tc.Optim); err != nil {
			return err
		}
		loss = l
		p.event(RoundEvent{Phase: "train", Step: s + 1, Steps: H, Loss: l})
	}
	_ = loss

	// Contribution: Δ = global − local, each partition encoded with error
	// feedback as a raw block, under a dag-json root.
	local := make([]float32, len(p.global))
	be.Download(local, p.m.Params)
	delta := make([]float32, len(p.global))
	gradsync.PseudoGradient(delta, p.global, local)
	contrib := &Contribution{Format: ContributionFormat, Run: sharding.LinkTo(p.id), Round: r, Base: sharding.LinkTo(p.base),
		Peer: p.self.String(), Tokens: int64(H * B * T), Codec: p.sync.Codec, Params: len(p.global), Shards: shards}
	encBytes := 0
	for i, pr := range p.parts {
		enc := p.efs[i].Encode(nil, delta[pr.Offset:pr.Offset+pr.Size])
		encBytes += len(enc)
		k, err := contentstore.BlockCID(contentstore.CodecRaw, enc)
		if err != nil {
			return err
		}
		if err := p.n.Store.PutBlock(ctx, k, enc); err != nil {
			return err
		}
		contrib.Partitions = append(contrib.Partitions, sharding.LinkTo(k))
	}
	cb, ccid, err := EncodeContribution(contrib)
	if err != nil {
		return err
	}
	if err := p.n.Store.PutBlock(ctx, ccid, cb); err != nil {
		return err
	}
	if err := p.publish(ctx, RoundMsg{Type: MsgContribution, Run: p.id.String(), Round: r, Base: p.base.String(), CID: ccid.String(), Tokens: contrib.Tokens}); err != nil {
		return err
	}
	if err := p.saveEF(r); err != nil {
		return fmt.Errorf("saving error-feedback state: %w", err)
	}
	p.event(RoundEvent{Phase: "contributed", CID: ccid.String(), EncodedBytes: encBytes, RawBytes: 4 * len(p.global)})

	// Collect the round's contributions.
	contribs := map[peer.ID]RoundMsg{p.self: {Type: MsgContribution, CID: ccid.String(), Tokens: contrib.Tokens}}
	expect := p.opts.Expect
	switch {
	case expect > 0:
	case len(p.members) > 0:
		expect = len(p.members)
	default:
		expect = len(p.topic.Peers()) + 1
	}
	// The round closes once it has every member's contribution and at
	// least expect in all, or at the deadline with a quorum.
	complete := func() bool {
		if len(contribs) < expect {
			return false
		}
		for _, id := range p.members {
			if _, ok := contribs[id]; !ok {
				return false
			}
		}
		return true
	}
	collect := func(im inMsg) bool {
		if im.m.Round != r || im.m.Type != MsgContribution {
			return false
		}
		if im.m.Base == p.base.String() {
			contribs[im.from] = im.m
		}
		return true
	}
	// Past the deadline without a quorum (peers restarting, say), the
	// round waits a few more deadlines before it fails.
	for wait := 0; ; wait++ {
		closed, err := w.until(ctx, complete, collect)
		if err != nil {
			return err
		}
		if closed {
			break
		}
		// The others may have closed the round without this node.
		if moved, err := p.adoptSettled(ctx, r); err != nil || moved {
			return err
		}
		if len(contribs) >= p.sync.Quorum {
			break
		}
		if wait == quorumWaits {
			return fmt.Errorf("%d contributions after %d deadlines, quorum %d", len(contribs), wait+1, p.sync.Quorum)
		}
		p.opts.Logf("round %d: %d contributions by the deadline, quorum %d; waiting", r, len(contribs), p.sync.Quorum)
	}
	participants := make([]peer.ID, 0, len(contribs))
	for id := range contribs {
		participants = append(participants, id)
	}
	sort.Slice(participants, func(i, j int) bool { return participants[i] < participants[j] })
	// Reducer order per partition: the members (agreed through the base
	// checkpoint) first, then the other contributors this node saw.
	isMember := map[peer.ID]bool{}
	for _, id := range p.members {
		isMember[id] = true
	}
	var others []peer.ID
	for _, id := range participants {
		if !isMember[id] {
			others = append(others, id)
		}
	}
	order := make([][]peer.ID, len(p.parts))
	for pi := range p.parts {
		order[pi] = append(Reducers(p.id, r, pi, p.members), Reducers(p.id, r, pi, others)...)
	}

	// Reduce the partitions this node is first in line for.
	reduced := 0
	for pi := range p.parts {
		if order[pi][0] != p.self {
			continue
		}
		if err := p.reduce(ctx, r, pi, contribs); err != nil {
			return err
		}
		reduced++
	}
	p.event(RoundEvent{Phase: "aggregated", Partitions: reduced})

	// Gather one aggregate per partition: from the first reducer in line,
	// or (after the deadline) from the best-placed one that published.
	aggs := make([]*RoundMsg, len(p.parts))
	rank := make([]int, len(p.parts))
	missing := len(p.parts)
	for pi := range p.parts {
		rank[pi] = len(order[pi])
	}
	take := func(im inMsg) bool {
		m := im.m
		if m.Round != r || m.Type != MsgAggregate {
			return false
		}
		if m.Base != p.base.String() || m.Partition >= len(p.parts) {
			return true
		}
		for k, id := range order[m.Partition] {
			if id == im.from && k < rank[m.Partition] {
				if aggs[m.Partition] == nil {
					missing--
				}
				mm := m
				aggs[m.Partition], rank[m.Partition] = &mm, k
			}
		}
		return true
	}
	// Level k of the wait accepts aggregates from reducers up to place k in
	// each partition's order. When a deadline passes with partitions
	// missing, the next reducer in line for each (possibly this node)
	// computes it.
	level := 0
	settled := func() bool {
		for pi := range p.parts {
			if aggs[pi] == nil || rank[pi] > level {
				return false
			}
		}
		return true
	}
	for {
		ok, err := w.until(ctx, settled, take)
		if err != nil {
			return err
		}
		if ok || missing == 0 {
			break
		}
		if moved, err := p.adoptSettled(ctx, r); err != nil || moved {
			return err
		}
		level++
		if level >= len(order[0]) {
			return fmt.Errorf("%d of %d partitions have no aggregate after every reducer's deadline", missing, len(p.parts))
		}
		for pi := range p.parts {
			if aggs[pi] == nil && order[pi][level] == p.self {
				p.opts.Logf("round %d: reducer %s of partition %d is silent; reducing it", r, order[pi][level-1], pi)
				if err := p.reduce(ctx, r, pi, contribs); err != nil {
					return err
				}
			}
		}
	}
	// Apply: decode every aggregate partition, one outer step.
	agg := make([]float32, len(p.global))
	included := map[string]bool{}
	var aggCIDs []string
	for pi, pr := range p.parts {
		k, _ := cid.Decode(aggs[pi].CID)
		b, err := p.n.Store.Block(ctx, k)
		if err != nil {
			return fmt.Errorf("aggregate of partition %d: %w", pi, err)
		}
		if err := p.codec.Decode(agg[pr.Offset:pr.Offset+pr.Size], b.RawData()); err != nil {
			return fmt.Errorf("aggregate of partition %d from %s: %w", pi, order[pi][rank[pi]], err)
		}
		for _, c := range aggs[pi].Included {
			included[c] = true
		}
		aggCIDs = append(aggCIDs, aggs[pi].CID)
	}
	p.outer.Step(p.global, agg)
	inc := make([]string, 0, len(included))
	for c := range included {
		inc = append(inc, c)
	}
	sort.Strings(inc)
	usedShards, authors, err := p.describe(ctx, inc)
	if err != nil {
		return err
	}
	ck, err := p.writeCheckpoint(ctx, r, p.base, inc, aggCIDs, usedShards, authors)
	if err != nil {
		return err
	}
	p.event(RoundEvent{Phase: "checkpoint", CID: ck.String(), Contributions: len(inc)})
	if err := p.publish(ctx, RoundMsg{Type: MsgCheckpoint, Run: p.id.String(), Round: r, Base: p.base.String(), CID: ck.String()}); err != nil {
		return err
	}

	// Follow the majority: wait (briefly) for the participants' checkpoint
	// announcements; if most honest nodes computed another checkpoint, take
	// theirs.
	votes := map[string]int{ck.String(): 1}
	voted := map[peer.ID]bool{p.self: true}
	count := func(im inMsg) bool {
		if im.m.Round != r || im.m.Type != MsgCheckpoint {
			return false
		}
		if im.m.Base == p.base.String() && !voted[im.from] && contribs[im.from].CID != "" {
			voted[im.from] = true
			votes[im.m.CID]++
		}
		return true
	}
	// Not every participant may vote (one may have crashed): the deadline
	// ends the wait.
	if _, err := w.until(ctx, func() bool { return len(voted) >= len(participants) }, count); err != nil {
		return err
	}
	if len(voted) < len(participants) {
		// Gossip does not repeat a vote published while this node was
		// away: ask those who did not vote.
		var ask []peer.ID
		for _, id := range participants {
			if !voted[id] {
				ask = append(ask, id)
			}
		}
		for id, a := range p.n.askAll(ctx, ask, p.id, r) {
			if a.Checkpoint != "" && a.Base == p.base.String() {
				voted[id] = true
				votes[a.Checkpoint]++
			}
		}
	}
	best, adopted := ck.String(), false
	for c, v := range votes {
		if v > votes[best] || (v == votes[best] && c < best) {
			best = c
		}
	}
	if best != ck.String() {
		p.opts.Logf("WARNING: round %d: my checkpoint %s is in the minority (%d of %d votes); adopting %s (%d votes)",
			r, ck, votes[ck.String()], len(voted), best, votes[best])
		bk, _ := cid.Decode(best)
		if err := p.adopt(ctx, r, bk); err != nil {
			return fmt.Errorf("adopting the majority checkpoint %s: %w", best, err)
		}
		ck, adopted = bk, true
		p.event(RoundEvent{Phase: "adopted", CID: best})
	}
	// Messages of later rounds go back to the inbox.
	w.finish()
	if !adopted {
		p.members = toPeerIDs(authors) // adopt loaded the majority's
	}
	p.n.settled.set(p.id, r, ck, p.base)
	p.mu.Lock()
	p.base, p.round = ck, r+1
	p.mu.Unlock()
	return nil
}

// runPeers are the peers to ask about the run: its members and the peers
// on its topic.
func (p *Participant) runPeers() []peer.ID {
	set := map[peer.ID]bool{}
	for _, id := range p.members {
		set[id] = true
	}
	for _, id := range p.topic.Peers() {
		set[id] = true
	}
	delete(set, p.self)
	out := make([]peer.ID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// adoptSettled asks the run's peers whether they have settled round r. If
// most of those taking part settled it from this node's base, this node is
// behind — it restarted, or the others closed the round without it — and
// gossip will not repeat what it missed: it adopts their checkpoint (or,
// when most agree on a newer one, that) and reports that it moved.
func (p *Participant) adoptSettled(ctx context.Context, r int) (bool, error) {
	as := p.n.askAll(ctx, p.runPeers(), p.id, r)
	peers := inRun(as)
	need := peers/2 + 1
	best, votes := majority(as, func(a StatusResponse) string {
		if a.Checkpoint != "" && a.Base == p.base.String() {
			return a.Checkpoint
		}
		return ""
	})
	if peers == 0 || votes < need {
		return false, nil
	}
	round := r
	if nr, nk, nv := newestMajority(as, r); nv >= need {
		round, best, votes = nr, nk, nv
	}
	ck, err := cid.Decode(best)
	if err != nil {
		return false, err
	}
	p.opts.Logf("run %s: %d of %d peers in the run settled round %d on %s; this node is behind and adopts it", p.id, votes, peers, round, ck)
	if err := p.adopt(ctx, round, ck); err != nil {
		return false, fmt.Errorf("adopting %s, round %d of the peers: %w", ck, round, err)
	}
	if err := p.saveEF(round); err != nil {
		return false, fmt.Errorf("saving error-feedback state: %w", err)
	}
	p.n.settled.set(p.id, round, ck, p.loadedBase)
	p.event(RoundEvent{Phase: "adopted", Round: round, CID: ck.String()})
	p.mu.Lock()
	p.base, p.round = ck, round+1
	p.mu.Unlock()
	return true, nil
}

func toPeerIDs(ss []string) []peer.ID {
	out := make([]peer.ID, 0, len(ss))
	for _, s := range ss {
		if id, err := peer.Decode(s); err == nil {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// roundWait pumps one round's messages through its phases: a message a
// phase does not use stays pending for the next phase, and at the end of
// the round those of later rounds go back to the inbox. While it waits it
// repeats what this node published in the round (gossipsub does not replay
// to a peer that was away; receivers are idempotent).
type roundWait struct {
	p        *Participant
	r        int
	pending  []inMsg
	deadline *time.Timer
	resend   *time.Ticker
}

func (p *Participant) newRoundWait(r int) *roundWait {
	return &roundWait{p: p, r: r, deadline: time.NewTimer(p.sync.RoundDeadline),
		resend: time.NewTicker(min(max(p.sync.RoundDeadline/4, 250*time.Millisecond), 5*time.Second))}
}

// until restarts the round deadline and feeds messages (pending ones
// first) to handle, which reports whether it used one, until done holds
// (true) or the deadline passes (false).
func (w *roundWait) until(ctx context.Context, done func() bool, handle func(inMsg) bool) (bool, error) {
	w.deadline.Reset(w.p.sync.RoundDeadline)
	keep := w.pending[:0]
	for _, im := range w.pending {
		if !handle(im) {
			keep = append(keep, im)
		}
	}
	w.pending = keep
	for !done() {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-w.resend.C:
			w.p.resend(ctx)
		case <-w.deadline.C:
			return false, nil
		case im := <-w.p.inbox:
			if !handle(im) && im.m.Round >= w.r {
				w.pending = append(w.pending, im)
			}
		}
	}
	return true, nil
}

// finish returns the pending messages of later rounds to the inbox.
func (w *roundWait) finish() {
	var later []inMsg
	for _, im := range w.pending {
		if im.m.Round > w.r {
			later = append(later, im)
		}
	}
	w.p.requeue(later)
	w.pending = nil
}

func (w *roundWait) stop() {
	w.deadline.Stop()
	w.resend.Stop()
}

func (p *Participant) publish(ctx context.Context, m RoundMsg) error {
	b, err := EncodeRoundMsg(m)
	if err != nil {
		return err
	}
	p.sent = append(p.sent, b)
	return p.topic.Publish(ctx, b, 0)
}

// resend publishes again what this node published in the current round.
func (p *Participant) resend(ctx context.Context) {
	for _, b := range p.sent {
		if err := p.topic.Publish(ctx, b, 0); err != nil && ctx.Err() == nil {
			p.opts.Logf("run %s: %v", p.id, err)
		}
	}
}

// reduce fetches partition pi of every contribution, aggregates, stores
// the result (encoded with the run's codec, as it travels) and publishes it.
func (p *Participant) reduce(ctx context.Context, r, pi int, contribs map[peer.ID]RoundMsg) error {
	pr := p.parts[pi]
	var cs []gradsync.Contribution
	for from, m := range contribs {
		k, _ := cid.Decode(m.CID)
		b, err := p.n.Store.Block(ctx, k)
		if err != nil {
			p.opts.Logf("round %d: contribution %s from %s: %v", r, m.CID, from, err)
			continue
		}
		c, err := DecodeContribution(b.RawData())
		if err != nil || c.Peer != from.String() || c.Round != r || c.Base.CID != p.base.String() ||
			c.Run.CID != p.id.String() || c.Params != len(p.global) || len(c.Partitions) != len(p.parts) || c.Codec != p.sync.Codec {
			p.opts.Logf("round %d: contribution %s from %s refused: does not match the round (%v)", r, m.CID, from, err)
			continue
		}
		pk, _ := c.Partitions[pi].Cid()
		pb, err := p.n.Store.Block(ctx, pk)
		if err != nil {
			p.opts.Logf("round %d: partition %d of %s: %v", r, pi, m.CID, err)
			continue
		}
		d := make([]float32, pr.Size)
		if err := p.codec.Decode(d, pb.RawData()); err != nil {
			p.opts.Logf("round %d: partition %d of %s refused: %v", r, pi, m.CID, err)
			continue
		}
		cs = append(cs, gradsync.Contribution{ID: m.CID, Tokens: c.Tokens, Delta: d})
	}
	out := make([]float32, pr.Size)
	rep, ok := gradsync.Aggregate(p.sync, out, cs)
	if !ok {
		return fmt.Errorf("partition %d: no quorum among %d contributions", pi, len(cs))
	}
	var inc []string
	for _, c := range cs {
		if _, bad := rep.Rejected[c.ID]; !bad {
			inc = append(inc, c.ID)
		}
	}
	sort.Strings(inc)
	enc := p.codec.Encode(nil, out)
	k, err := contentstore.BlockCID(contentstore.CodecRaw, enc)
	if err != nil {
		return err
	}
	if err := p.n.Store.PutBlock(ctx, k, enc); err != nil {
		return err
	}
	return p.publish(ctx, RoundMsg{Type: MsgAggregate, Run: p.id.String(), Round: r, Base: p.base.String(), CID: k.String(), Partition: pi, Included: inc})
}

// roundRecord is a checkpoint's round.json.
type roundRecord struct {
	Run           sharding.Link   `json:"run"`
	Round         int             `json:"round"`
	Base          *sharding.Link  `json:"base,omitempty"`
	Contributions []sharding.Link `json:"contributions"`
	Aggregates    []sharding.Link `json:"aggregates"`
	// Shards the included contributions trained on.
	Shards []sharding.Link `json:"shards"`
	// Participants are the included contributions' authors, sorted: the
	// members who order the next round's reducers.
	Participants []string `json:"participants"`
}

// describe returns the sorted union of the shards the given contributions
// trained on and their sorted authors (fetching root blocks where needed).
func (p *Participant) describe(ctx context.Context, contribs []string) (shards, authors []string, err error) {
	set, who := map[string]bool{}, map[string]bool{}
	for _, c := range contribs {
		k, err := cid.Decode(c)
		if err != nil {
			return nil, nil, err
		}
		b, err := p.n.Store.Block(ctx, k)
		if err != nil {
			return nil, nil, fmt.Errorf("contribution %s: %w", c, err)
		}
		con, err := DecodeContribution(b.RawData())
		if err != nil {
			return nil, nil, err
		}
		for _, l := range con.Shards {
			set[l.CID] = true
		}
		who[con.Peer] = true
	}
	keys := func(m map[string]bool) []string {
		out := make([]string, 0, len(m))
		for s := range m {
			out = append(out, s)
		}
		sort.Strings(out)
		return out
	}
	return keys(set), keys(who), nil
}

// writeCheckpoint writes the current global weights and outer state as
// the checkpoint directory of round r, adds and pins it, and returns its
// CID. Every byte depends only on the run and the aggregates applied, so
// honest nodes get the same CID.
func (p *Participant) writeCheckpoint(ctx context.Context, r int, base cid.Cid, contribs, aggs, shards, authors []string) (cid.Cid, error) {
	rec := roundRecord{Run: sharding.LinkTo(p.id), Round: r, Contributions: []sharding.Link{}, Aggregates: []sharding.Link{},
		Shards: []sharding.Link{}, Participants: append([]string{}, authors...)}
	for _, c := range shards {
		rec.Shards = append(rec.Shards, sharding.Link{CID: c})
	}
	if base.Defined() {
		l := sharding.LinkTo(base)
		rec.Base = &l
	}
	for _, c := range contribs {
		rec.Contributions = append(rec.Contributions, sharding.Link{CID: c})
	}
	for _, c := range aggs {
		rec.Aggregates = append(rec.Aggregates, sharding.Link{CID: c})
	}
	rj, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return cid.Undef, err
	}
	outer, err := p.outer.MarshalBinary()
	if err != nil {
		return cid.Undef, err
	}
	dir := filepath.Join(p.opts.Dir, fmt.Sprintf("round-%06d", r))
	if _, err := os.Stat(dir); err == nil {
		if err := os.RemoveAll(dir); err != nil {
			return cid.Undef, err
		}
	}
	meta := map[string]string{"run": p.id.String(), "round": fmt.Sprint(r)}
	if err := model.SaveWeights(dir, p.cfg, p.global, meta,
		model.File{Name: "tokenizer.json", Data: p.tokJSON},
		model.File{Name: "outer.bin", Data: outer},
		model.File{Name: "round.json", Data: append(rj, '\n')}); err != nil {
		return cid.Undef, err
	}
	return p.n.Store.Add(ctx, dir, contentstore.AddOptions{Pin: true, Name: fmt.Sprintf("run %s round %d", p.id, r)})
}

// adopt replaces the global weights and outer state with checkpoint ck's,
// which becomes this node's copy of round r.
func (p *Participant) adopt(ctx context.Context, r int, ck cid.Cid) error {
	dir := filepath.Join(p.opts.Dir, "adopt-"+ck.String())
	os.RemoveAll(dir)
	if err := p.n.Store.Get(ctx, ck, dir, nil); err != nil {
		return err
	}
	if err := p.n.Store.Pin(ctx, ck, fmt.Sprintf("run %s round %d", p.id, r)); err != nil {
		return err
	}
	if err := p.loadCheckpointDir(dir); err != nil {
		return fmt.Errorf("checkpoint %s: %w", ck, err)
	}
	final := filepath.Join(p.opts.Dir, fmt.Sprintf("round-%06d", r))
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	return os.Rename(dir, final)
}
