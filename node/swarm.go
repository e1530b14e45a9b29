package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/p2p"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
	"github.com/ipfs/go-cid"
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
	mb, err := n.Store.FetchBlock(ctx, ds)
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
	// The schedule draws the shards of the run's stage: there must be some.
	if _, err := sharding.NewSchedule(ds.String(), man.Shards, sharding.Mixture{Stage: spec.Stage, Default: 1}, max(spec.Inner.ShardsPerRound, 1)); err != nil {
		stages := map[string]bool{}
		for _, sh := range man.Shards {
			stages[sh.Stage] = true
		}
		return cid.Undef, fmt.Errorf("run: stage %q on dataset %s, whose shards are of stages %v: %w", spec.Stage, ds, slices.Sorted(maps.Keys(stages)), err)
	}
	if err := spec.fitsData(slices.ContainsFunc(man.Shards, func(sh sharding.ShardEntry) bool { return sh.Pairs })); err != nil {
		return cid.Undef, err
	}
	if spec.From != nil {
		ds, err := n.loadDatasetHead(ctx, ds, nil)
		if err != nil {
			return cid.Undef, err
		}
		if _, err := n.stageBase(ctx, spec, ds.Tokenizer); err != nil {
			return cid.Undef, err
		}
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
	b, err := n.Store.FetchBlock(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", id, err)
	}
	return DecodeRunSpec(b.RawData())
}

// RoundEvent reports a participant's progress.
type RoundEvent struct {
	Peer  string
	Round int
	// Phase: "train" (Step/Steps, Loss), "contributed", "spot-check"
	// (CID, Seconds, Fraud), "aggregated" (Partitions this node
	// reduced), "checkpoint" (CID), "adopted" (CID of a better
	// checkpoint, replacing ours), "deadline" (the round's deadline
	// passed while it waited for Waiting), "timing" (the round's phase
	// Name, PhaseTrain…, ended after Seconds), "busy" (Seconds of the
	// round's wall time — the sum of its phases — in which this node's
	// own inner steps ran: with overlapped rounds, the next round's),
	// "link" (Rate: bytes a second this node downloaded at in the round,
	// EncodedBytes of them over Seconds of arrival; link.go).
	Phase      string
	Name       string
	Waiting    string
	Step       int
	Steps      int
	Loss       float32
	CID        string
	Partitions int
	// Contributions included in the round's aggregates (checkpoint).
	Contributions int
	// Bytes of this participant's encoded Δ, and of the same Δ in fp32.
	EncodedBytes, RawBytes int
	// Seconds "contributed" took to train (or wait for the steps run
	// ahead) and store, or a "spot-check" (of contribution CID) to
	// re-execute; Fraud: it did not follow from its inputs. StepSeconds:
	// how long a contribution's inner steps held the backend.
	Seconds     float64
	Fraud       bool
	StepSeconds float64
	Rate        float64
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
	// KeepRounds, if > 0, keeps the directories of the newest KeepRounds
	// settled rounds (and round 0, the genesis) and removes older ones
	// once a newer round settles. The checkpoints stay pinned in the
	// store, so this node still serves (and verifies from) the whole
	// lineage; a directory is the checkpoint's working copy, as large as
	// the model and its outer state. 0 keeps every directory.
	KeepRounds int
	// Events receives progress (nil: none).
	Events func(RoundEvent)
	// FetchProgress receives the bytes of the run's dataset fetched (nil:
	// none).
	FetchProgress contentstore.Progress
	// Logf receives log lines (nil: the node's).
	Logf func(string, ...any)
	// Recompute and Micro choose how this node holds activations
	// (model.SetRecompute, Model.Accumulate with Micro micro-batches a
	// step; 0: 1): its own choice, as neither changes a bit of its work.
	Recompute bool
	Micro     int
	// OffloadMoments keeps the node's AdamW moments in host memory
	// (model.Options.OffloadMoments: a GPU's backend), the same bits.
	OffloadMoments bool
	// Memory, if > 0, is the memory this node may use: a run whose
	// memory plan (model.MakePlan, a swarm participant's) needs more is
	// refused before its model is allocated, naming settings that fit.
	// With GPU it is the device's, and HostMemory (if > 0) bounds what the
	// node keeps in host memory (its round vectors) apart.
	Memory, HostMemory int64
	GPU                bool
	// Lean keeps each of the node's vectors in memory only in the phase
	// of a round that uses it (model.PlanInput.Lean): the base's weights
	// and outer momentum stay in its checkpoint directory, read a piece at
	// a time where a contribution's steps start and end, whole only while
	// a round closes; after its steps (or a check's) the node stores its
	// worker state and lets go of the residuals and, on the CPU, of its
	// model, rebuilt from the store before the next. The same bytes, for
	// a few more reads and writes a round. Not for runs that overlap
	// rounds.
	Lean bool
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

	m      *model.Model
	global []float32
	outer  *gradsync.OuterOptimizer
	rec    *roundRecord // the base checkpoint's round record
	ru     *rules
	// evidence is what this node found against reducers.
	evidence evidenceLog
	parts    []gradsync.Range
	efs      []*gradsync.ErrorFeedback
	// held is the CID of the worker state the model's moments and efs
	// hold (cid.Undef: a fresh one); see workerstate.go.
	held cid.Cid
	// checker is the model re-executions of others' contributions run on
	// (reexec.go), nil until the first: where rounds are sequential, this
	// node's own, lent — between its rounds' steps the model holds nothing
	// but the worker state, which the store keeps, so the node reloads it
	// (reclaim) before its next steps; else a second model on the same
	// backend (the steps of the round ahead run beside a check).
	checker *model.Model
	lent    bool
	checkMu sync.Mutex // one re-execution at a time
	// ahead: the inner steps of the next round, running in the background
	// in a run with overlapped rounds (overlap.go); upto: the last round
	// RunRounds runs.
	ahead *ahead
	upto  int
	// down is this node's download rate as it estimates it, bytes a
	// second (0: not yet), announced with its contributions (link.go).
	down float64
	// spare is the worker state held last, its buffers for the next
	// (heldState).
	spare *workerState
	// stepNanos adds up the time this node's own inner steps held the
	// backend (the "busy" event: its share of a round's wall time).
	stepNanos atomic.Int64
	conv      convictions
	// signed keeps the signed announcements of the contributions this
	// node admitted in the current and the previous round (by CID): a
	// fraud proof quotes one.
	signed, signedBefore map[string][]byte
	// cheat, set only by tests (export_test.go), changes this node's own
	// work or its spot checks: a lazy or dishonest worker, or a false
	// accuser, built from the node's own code.
	cheat   cheats
	shards  []*model.Corpus // each shard's training rows
	sched   *sharding.Schedule
	man     *sharding.Manifest
	val     map[string]*model.Corpus
	tokJSON []byte

	// members are the authors of the contributions the base checkpoint
	// included (from its round.json): every honest node agrees on them,
	// so they order the next round's reducers. Empty after genesis.
	members []peer.ID
	// followers are the peers on the run's topic that said they follow
	// it (StatusResponse.Follower): a round without members does not wait
	// for them. Used by runRound only.
	followers map[peer.ID]bool

	base  cid.Cid // checkpoint the current round starts from
	round int     // current round (rounds are numbered from 1)
	// verified: the checkpoints this node settled on (CID → round), each
	// computed here; a candidate's lineage must reach one of them.
	verified map[string]int
	// worse: candidates verified here that lost to this node's checkpoint
	// of their round (fork choice is a total order and a node only moves
	// forward on it, so they stay worse); choose does not redo them.
	worse map[string]bool
	// inputs caches this round's fetched contributions (or why not).
	inMu    sync.Mutex
	inputs  map[string]inputResult
	scratch int // names scratch checkpoint directories

	rejMu      sync.Mutex
	rejections map[string]int
	// tamper, set only by tests (export_test.go), rewrites the aggregates
	// this node publishes: a lying reducer built from the node's own code.
	tamper func(partition int, enc []byte) []byte

	topic *p2p.Topic
	sub   *p2p.Subscription
	mail  *mailbox // round messages, queued per sender
	lim   limiter  // each sender's message rate
	sent  [][]byte // this round's published messages, repeated while waiting

	mu         sync.Mutex // guards round, base, catchingUp and standing for the validator
	catchingUp bool
	// standing: the peers whose aggregates and checkpoints of the current
	// round this node takes and forwards — the base's members and the
	// authors of contributions it admitted in the round.
	standing map[peer.ID]bool
	// following: a follower (FollowRun), which trains nothing and takes
	// announcements of any round ahead as candidates.
	following  bool
	ownBackend kernels.Backend // a follower's own backend, closed with it
	// onSettle, if set, is told of each checkpoint this node settles on.
	onSettle func(round int, ck cid.Cid)
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
	raw  p2p.Message // as signed (evidence quotes it)
	at   time.Time   // when this node received it
}

// OpenRun prepares this node to take part in run id: it fetches the spec
// and the dataset, builds the genesis checkpoint (deterministic from the
// seed, so every node gets the same CID) and joins the run's topic.
func (n *Node) OpenRun(ctx context.Context, id cid.Cid, o RunOptions) (*Participant, error) {
	if o.Backend == nil {
		return nil, errors.New("run: RunOptions.Backend is required")
	}
	return n.openRun(ctx, id, o, false)
}

// openRun is OpenRun; a follower (follow) verifies and mirrors rounds
// without training: it fetches the dataset's manifest and tokenizer only
// and computes on a one-thread CPU backend of its own.
func (n *Node) openRun(ctx context.Context, id cid.Cid, o RunOptions, follow bool) (*Participant, error) {
	if n.Host == nil {
		return nil, ErrOffline
	}
	var own kernels.Backend
	if follow {
		be, err := cpu.New(cpu.Options{Threads: 1})
		if err != nil {
			return nil, err
		}
		own, o.Backend = be, be
	}
	p, err := n.openRunWith(ctx, id, o, follow)
	if err != nil {
		if own != nil {
			own.Close()
		}
		return nil, err
	}
	p.ownBackend = own
	return p, nil
}

// newParticipant builds a participant of run id from its spec and dataset,
// at the run's genesis state, without touching its directory or the
// network beyond fetching them.
func (n *Node) newParticipant(ctx context.Context, id cid.Cid, o RunOptions, follow bool) (*Participant, error) {
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
	cfg, _ := spec.ModelConfig()
	sc := spec.Sync
	codec, err := sc.NewCodec()
	if err != nil {
		return nil, err
	}
	dsCID, _ := spec.Dataset.Cid()
	load := n.LoadDataset
	if follow {
		load = n.loadDatasetHead
	}
	ds, err := load(ctx, dsCID, o.FetchProgress)
	if err != nil {
		return nil, err
	}
	if spec.Tokenizer != nil && spec.Tokenizer.CID != ds.Manifest.Tokenizer.CID {
		return nil, fmt.Errorf("run %s: its tokenizer %s is not its dataset's (%s)", id, spec.Tokenizer.CID, ds.Manifest.Tokenizer.CID)
	}
	p := &Participant{n: n, id: id, spec: spec, cfg: cfg, sync: sc, codec: codec, opts: o, self: n.Host.ID(),
		tokJSON: ds.Tokenizer, following: follow}
	p.mail = newMailbox(func(reason string) { p.count(reason, 1) })
	if !follow {
		if err := p.loadData(ds); err != nil {
			return nil, err
		}
	}
	if o.Lean && sc.Overlap != "" {
		return nil, fmt.Errorf("run %s overlaps its rounds; a lean participant's cannot", id)
	}
	if err := p.checkMemory(); err != nil {
		return nil, err
	}
	if p.m, err = p.newModel(); err != nil {
		return nil, err
	}
	nParams := p.m.Layout.Size
	if spec.From != nil {
		if p.global, err = n.stageBase(ctx, spec, ds.Tokenizer); err != nil {
			return nil, fmt.Errorf("run %s: %w", id, err)
		}
	} else {
		p.m.Init(spec.Seed)
		p.global = make([]float32, nParams)
		o.Backend.Download(p.global, p.m.Params)
	}
	p.outer = gradsync.NewOuterOptimizer(sc, nParams)
	p.parts = gradsync.Partitions(nParams, sc.Partitions)
	p.ru = &rules{run: id, spec: spec, sync: sc, codec: codec, parts: p.parts, cfg: cfg, n: nParams, micro: max(1, o.Micro), lean: o.Lean}
	if spec.dpo() {
		p.ru.refWeights = slices.Clone(p.global) // the stage base, frozen
	}
	p.verified, p.worse = map[string]int{}, map[string]bool{}
	p.efs = p.newResiduals()
	p.release() // a lean node holds only the genesis state until its first steps
	return p, nil
}

func (n *Node) openRunWith(ctx context.Context, id cid.Cid, o RunOptions, follow bool) (*Participant, error) {
	p, err := n.newParticipant(ctx, id, o, follow)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(p.opts.Dir)
	wasHere := statErr == nil // this node took part in the run before
	if err := p.removeScratch(); err != nil {
		return nil, err
	}
	if err := p.genesis(ctx); err != nil {
		return nil, err
	}
	if r, err := p.resume(); err != nil {
		return nil, err
	} else if r > 0 {
		o.Logf("run %s: resumed from this node's checkpoint of round %d (%s)", id, r, p.base)
	}
	if wasHere && !follow {
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

// discoverLoop finds the run's other participants (meetProviders).
func (p *Participant) discoverLoop() {
	defer p.wg.Done()
	p.n.meetProviders(p.ctx, p.id, "run "+p.id.String(), p.opts.Logf)
}

// meetProviders finds the other nodes working on key (a run or a job)
// until ctx ends: it provides key on the DHT (so that others find this
// node) and connects to the providers it finds, so that gossip on key's
// topic reaches every node even when they only share a bootstrap node
// that is not on the topic.
func (n *Node) meetProviders(ctx context.Context, key cid.Cid, what string, logf func(string, ...any)) {
	h := n.Host
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := h.DHT.Provide(actx, key, true); err != nil && ctx.Err() == nil {
			logf("%s: announcing on the DHT: %v", what, err)
		}
		for ai := range h.DHT.FindProvidersAsync(actx, key, 64) {
			if ai.ID == h.ID() {
				continue
			}
			if err := h.Meet(actx, ai); err != nil && ctx.Err() == nil {
				logf("%s: peer %s: %v", what, ai.ID, err)
			}
		}
		cancel()
		wait = 5 * time.Second
	}
}

// Base returns the checkpoint this node settled on last (the next round's
// base). Safe to call while the participant runs.
func (p *Participant) Base() cid.Cid {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.base
}

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
	if p.ownBackend != nil {
		p.ownBackend.Close()
	}
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
		p.mail.put(inMsg{from: m.From, m: rm, raw: m, at: time.Now()})
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
	if from != p.self && !p.lim.allow(from) {
		p.count(DropRate, 1)
		return p2p.ErrIgnore
	}
	p.mu.Lock()
	round, catchingUp, standing := p.round, p.catchingUp, p.standing[from]
	p.mu.Unlock()
	switch {
	case (catchingUp || p.following) && m.Round >= round-1:
		return nil // kept for when this node knows which round it is in
	case m.Round < round-1 || m.Round > round+1:
		return p2p.ErrIgnore // another round: late, or from a node ahead of us
	case m.Round == round && (m.Type == MsgAggregate || m.Type == MsgCheckpoint || m.Type == MsgFraud) && from != p.self && !standing:
		// Not yet, perhaps: the sender repeats it while its round lasts.
		p.count(DropStanding, 1)
		return p2p.ErrIgnore
	}
	return nil
}

// grant gives from standing in the current round (its contribution was
// admitted).
func (p *Participant) grant(from peer.ID) {
	p.mu.Lock()
	if p.standing == nil {
		p.standing = map[peer.ID]bool{}
	}
	p.standing[from] = true
	p.mu.Unlock()
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
	// With conversations among them (shards with a loss mask), every shard
	// is cut row by row, those without a mask training every token but PAD.
	masked := slices.ContainsFunc(ds.Shards, func(sh *sharding.Shard) bool { return sh.Mask != nil })
	if masked && p.spec.Inner.Seq > ds.Manifest.SeqLen {
		return fmt.Errorf("run: the dataset's conversations are packed in rows of %d tokens (+1 target); the run's sequences of %d do not fit in one",
			ds.Manifest.SeqLen, p.spec.Inner.Seq)
	}
	pairs := slices.ContainsFunc(ds.Shards, func(sh *sharding.Shard) bool { return sh.Pairs })
	if err := p.spec.fitsData(pairs); err != nil {
		return err
	}
	unit := 1 // rows that stay together: a pair's two
	if pairs {
		unit = 2
	}
	for i, sh := range ds.Shards {
		lang := ds.Manifest.Shards[i].Language
		var tr, va [][]int32
		var trm, vam [][]bool
		for r := 0; r < sh.Rows; r++ {
			// Every tenth row (pair), or the first of a shard too small to
			// have a tenth (the last row may be padded short).
			u, units := r/unit, sh.Rows/unit
			if u%10 == 9 || (units >= 2 && units < 10 && u == 0) {
				va, vam = append(va, sh.Row(r)), append(vam, sh.RowMask(r))
			} else {
				tr, trm = append(tr, sh.Row(r)), append(trm, sh.RowMask(r))
			}
		}
		add := func(c *model.Corpus, rows [][]int32, masks [][]bool) error {
			switch {
			case pairs:
				return c.AddPairRows(rows, masks, pad, eos, p.cfg.Vocab)
			case masked:
				return c.AddMaskedRows(rows, masks, pad, eos, p.cfg.Vocab)
			}
			return c.AddRows(rows, pad, eos, p.cfg.Vocab)
		}
		c := &model.Corpus{}
		if err := add(c, tr, trm); err != nil {
			return fmt.Errorf("run: shard %s: %w", ds.Manifest.Shards[i].CID.CID, err)
		}
		p.shards = append(p.shards, c)
		if lang == "ko" || lang == "en" {
			// Per language, and per language and source.
			for _, k := range []string{lang, lang + "/" + ds.Manifest.Shards[i].Source} {
				if p.val[k] == nil {
					p.val[k] = &model.Corpus{}
				}
				if err := add(p.val[k], va, vam); err != nil {
					return fmt.Errorf("run: shard %s: %w", ds.Manifest.Shards[i].CID.CID, err)
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
// schedule assigns author in round r, and those shards' links, sorted.
// Shards are shared among author and the round's members (the authors of
// the contributions its base included: peers that did work), so a crowd
// of identities that trains nothing cannot thin the data. A round without
// members (the first), and an author assigned too little to fill one
// sequence, train on every shard. It is a function of what the round's
// base says, so anyone re-executing a contribution gets the same rows.
func (p *Participant) roundData(r int, author peer.ID, members []peer.ID) (*model.Corpus, []sharding.Link) {
	pick := map[int]bool{}
	if len(members) > 0 {
		view := []string{author.String()}
		for _, id := range members {
			if id != author {
				view = append(view, id.String())
			}
		}
		for _, it := range p.sched.Assign(r-1, view)[author.String()] {
			pick[it.Shard] = true
		}
	}
	c := &model.Corpus{}
	var links []sharding.Link
	for i, sc := range p.shards {
		if pick[i] {
			c.Append(sc) // one kind per dataset: loadData checked
			links = append(links, p.man.Shards[i].CID)
		}
	}
	if len(c.Tokens) < p.spec.Inner.Seq+1 {
		c, links = &model.Corpus{}, nil
		for i, sc := range p.shards {
			c.Append(sc)
			links = append(links, p.man.Shards[i].CID)
		}
	}
	sort.Slice(links, func(i, j int) bool { return links[i].CID < links[j].CID })
	return c, links
}

// ValLoss evaluates the current global weights on the held-out rows of
// each language, and of each language and source (keys "ko",
// "ko/natural", …; a split shorter than one sequence is left out), and
// sets fomnet_validation_loss.
func (p *Participant) ValLoss() (map[string]float64, error) {
	out, err := p.valLoss(p.current().weights())
	for split, l := range out {
		p.n.Metrics.valLoss.WithLabelValues(p.id.String(), split).Set(l)
	}
	return out, err
}

// valLoss is ValLoss of weights w.
func (p *Participant) valLoss(w weights) (map[string]float64, error) {
	if _, ok := p.spec.Pref(); ok {
		st, err := p.valPreference(w)
		out := map[string]float64{}
		for k, s := range st {
			out[k] = s.Loss
		}
		return out, err
	}
	m, err := p.modelWith(w)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for lang, c := range p.val {
		if len(c.Tokens) < p.spec.Inner.Seq+1 {
			continue
		}
		l, err := model.Evaluate(m, c, p.spec.Inner.Batch, p.spec.Inner.Seq, 8)
		if err != nil {
			return nil, err
		}
		out[lang] = float64(l)
	}
	return out, nil
}

// ValPreference evaluates a preference run's current weights on the
// validation pairs, per language (and language/source): the objective's
// loss, how often the policy prefers the chosen answer, and the margin.
func (p *Participant) ValPreference() (map[string]model.PrefStats, error) {
	return p.valPreference(p.current().weights())
}

// valPreference is ValPreference of weights w.
func (p *Participant) valPreference(w weights) (map[string]model.PrefStats, error) {
	pc, ok := p.spec.Pref()
	if !ok {
		return nil, fmt.Errorf("run %s: no preference objective", p.id)
	}
	var ref *model.Model
	if pc.Objective == model.ObjectiveDPO {
		var err error
		if ref, err = p.ru.reference(p.opts.Backend); err != nil {
			return nil, err
		}
	}
	m, err := p.modelWith(w)
	if err != nil {
		return nil, err
	}
	out := map[string]model.PrefStats{}
	for lang, c := range p.val {
		if len(c.Tokens) < 2*p.spec.Inner.Seq+2 {
			continue
		}
		st, err := model.EvaluatePreference(m, ref, c, p.spec.Inner.Batch, p.spec.Inner.Seq, pc, 8)
		if err != nil {
			return nil, err
		}
		out[lang] = st
	}
	return out, nil
}

// Model returns the participant's model loaded with the current global
// weights (for sampling).
func (p *Participant) Model() (*model.Model, error) { return p.modelWith(p.current().weights()) }

// modelWith is the node's model (built where a lean node let go of it;
// its worker state is then reloaded before its next steps) holding
// weights w.
func (p *Participant) modelWith(w weights) (*model.Model, error) {
	p.ru.drive.Lock()
	defer p.ru.drive.Unlock()
	if err := p.ensureModel(); err != nil {
		return nil, err
	}
	return p.m, p.ru.upload(p.opts.Backend, p.m.Params, w)
}

// CatchUp brings a node that joins a run in progress (or restarts after
// the swarm moved on) to the swarm's newest checkpoint: it waits up to
// wait for checkpoint announcements of rounds this node has not done,
// gathers them for a moment, then verifies the candidates by recomputing
// them from the run's genesis (or the newest checkpoint it holds) and
// adopts the best that verifies (fork choice: see verify.go). It reports
// whether it moved; with no announcement in time (a new run, or this node
// is current) it stays where it is.
func (p *Participant) CatchUp(ctx context.Context, wait time.Duration) (bool, error) {
	p.mu.Lock()
	p.catchingUp = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.catchingUp = false
		p.mu.Unlock()
	}()
	cands := announced{}
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
			moved, err := p.adoptBest(ctx, cands.list(), "catching up")
			if err != nil {
				return false, err
			}
			var later []inMsg
			for _, im := range keep {
				if im.m.Round >= p.round {
					later = append(later, im)
				}
			}
			p.requeue(later)
			return moved, nil
		case <-p.mail.ready:
			for {
				im, ok := p.mail.get()
				if !ok {
					break
				}
				m := im.m
				if m.Type != MsgCheckpoint || m.Round < p.round {
					if len(keep) < maxPending {
						keep = append(keep, im)
					} else {
						p.count(DropPending, 1)
					}
					continue
				}
				cands.add(im.from, m)
				if !gathering {
					// Give the round's other announcements a moment to arrive.
					gathering = true
					timer.Reset(500 * time.Millisecond)
				}
			}
		}
	}
}

// requeue puts messages back into the mailbox.
func (p *Participant) requeue(ms []inMsg) {
	for _, im := range ms {
		p.mail.put(im)
	}
}

// Round is the number of the next round to run. Safe to call while the
// participant runs.
func (p *Participant) Round() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.round
}

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
	p.upto = min(upto, p.spec.Rounds)
	defer p.dropAhead(ctx)
	for p.round <= p.upto {
		p.giveBack()
		// A node that (re)started may be behind: ask before training.
		if !p.checkedBehind {
			moved, err := p.adoptSettled(ctx, p.round)
			if err != nil {
				return fmt.Errorf("round %d: %w", p.round, err)
			}
			p.checkedBehind = !moved
			continue
		}
		before := p.round
		if err := p.runRound(ctx); err != nil {
			return fmt.Errorf("round %d: %w", p.round, err)
		}
		p.n.Metrics.rounds.WithLabelValues(p.id.String()).Add(float64(max(p.round-before, 0)))
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

// quorumWaits is how many more round deadlines a round without a quorum
// of contributions waits before it fails.
const quorumWaits = 5

// runRound: train H inner steps, publish the contribution, reduce the
// partitions this node is first in line for, verify the others'
// aggregates by recomputing them, apply the round's transition, announce
// the checkpoint, and settle on the best verified checkpoint of the round.
func (p *Participant) runRound(ctx context.Context) error {
	r := p.round
	// Gossipsub does not replay: a peer that was away (restarting, joining)
	// when a message went out never gets it. While this node waits in a
	// round, it repeats what it published in it; receivers are idempotent.
	p.sent = p.sent[:0]
	p.resetInputs()
	p.signedBefore, p.signed = p.signed, map[string][]byte{}
	w := p.newRoundWait(ctx, r)
	defer w.stop()
	ph := p.phases()
	defer ph.steps()
	defer p.noteLink(r, p.linkStats())
	ccid, began, err := p.train(ctx, r)
	if err != nil {
		return err
	}
	ph.done(PhaseTrain)
	own, err := p.input(ctx, ccid, r, p.base)
	if err != nil {
		return fmt.Errorf("own contribution: %w", err)
	}
	// With its own work out, this node re-executes the work of the base's
	// round it was picked to check.
	if err := p.spotCheck(ctx, r); err != nil {
		if ctx.Err() != nil {
			return err
		}
		p.opts.Logf("run %s: %v", p.id, err)
	}
	ph.done(PhaseSpotCheck)

	// Collect the round's contributions. Membership costs work: a
	// contribution counts once this node has fetched and admitted it
	// (fetches run beside the wait, one per author).
	admitted := map[peer.ID]*input{p.self: own}
	claims := map[peer.ID]int64{p.self: int64(p.down)} // download rates announced (link.go)
	asked := map[peer.ID]bool{p.self: true}
	collecting := true
	expect := p.opts.Expect
	switch {
	case expect > 0:
	case len(p.members) > 0:
		expect = len(p.members)
	default:
		expect = p.trainersOnTopic(ctx, r) + 1
	}
	// The round closes once it has every member's contribution and at
	// least expect in all, or at the deadline with a quorum — or, in a run
	// with a close rule, when the rule says (closing.go).
	forks := &forkHints{p: p, r: r, from: map[peer.ID]bool{}}
	rule, ruled := p.sync.CloseRule()
	cl := &closing{rule: rule, began: began, expected: expect, arrived: map[peer.ID]time.Duration{}}
	cl.arrive(p.self, time.Now())
	complete := func() bool {
		if len(forks.ready) > 0 {
			return true // to look at another base (below)
		}
		if ruled {
			at, closed := cl.close(time.Now())
			if !closed {
				w.wakeAt(began.Add(at))
			}
			return closed && cl.fetching == 0
		}
		if len(admitted) < expect {
			return false
		}
		for _, id := range p.members {
			if _, ok := admitted[id]; !ok {
				return false
			}
		}
		return true
	}
	base := p.base
	collect := func(im inMsg) bool {
		if im.m.Round != r || im.m.Type != MsgContribution {
			return false
		}
		k, err := cid.Decode(im.m.CID)
		if err == nil && im.m.Base != base.String() {
			// Not admitted on this base; perhaps a sign of a better one.
			p.count(RejectRound, 1)
			forks.hint(w, im)
			return true
		}
		if err != nil || asked[im.from] || len(asked) >= MaxParticipants {
			return true
		}
		from := im.from
		asked[from] = true
		if p.rec.excludes(from.String()) {
			p.refuse(rejected(RejectExcluded, fmt.Errorf("its author is excluded")), fmt.Sprintf("round %d: contribution %s from %s", r, k, from))
			return true
		}
		if ruled {
			if at, closed := cl.close(time.Now()); closed && im.at.Sub(began) > at {
				return true // a straggler's: the round closed without it
			}
			cl.arrive(from, im.at)
		}
		cl.fetching++
		env, _ := im.raw.Signed()
		down := im.m.Down
		w.background(func(ctx context.Context) func() {
			in, err := p.input(ctx, k, r, base)
			if err == nil && in.c.Peer != from.String() {
				err = rejected(RejectRound, fmt.Errorf("contribution %s names peer %s", k, in.c.Peer))
			}
			return func() {
				cl.fetching--
				switch {
				case err != nil:
					p.refuse(err, fmt.Sprintf("round %d: contribution %s from %s", r, k, from))
				case collecting:
					p.n.Metrics.admitted.WithLabelValues(p.id.String()).Inc()
					admitted[from], claims[from] = in, down
					p.signed[k.String()] = env
					p.grant(from)
				}
			}
		})
		return true
	}
	// Past the deadline without a quorum (peers restarting, say), the
	// round waits a few more deadlines before it fails.
	extended := false
	for wait := 0; ; wait++ {
		closed, err := w.until(ctx, "contributions", complete, collect)
		if err != nil {
			return err
		}
		if len(forks.ready) > 0 {
			if moved, err := forks.adopt(ctx); err != nil || moved {
				return err
			}
			if closed { // it stopped for the fork: the same wait goes on
				w.hold, wait = true, wait-1
				continue
			}
		}
		if closed {
			break
		}
		// The others may have closed the round without this node.
		if moved, err := p.adoptSettled(ctx, r); err != nil || moved {
			return err
		}
		if len(admitted) >= p.sync.Quorum {
			// Contributions still arriving: wait once more, as long as this
			// node's measured download rate says they take (link.go).
			if t := p.transferTime(cl.fetching); !extended && t > 0 {
				extended = true
				p.opts.Logf("round %d: deadline passed with %d contributions arriving; waiting %s more for them at %.1f Mbit/s", r, cl.fetching, t.Round(time.Millisecond), p.down*8/1e6)
				w.deadline.Reset(t)
				w.hold, wait = true, wait-1
				continue
			}
			break
		}
		if wait == quorumWaits {
			return fmt.Errorf("%d contributions after %d deadlines, quorum %d", len(admitted), wait+1, p.sync.Quorum)
		}
		p.opts.Logf("round %d: %d contributions by the deadline, quorum %d; waiting", r, len(admitted), p.sync.Quorum)
	}
	collecting = false
	if ruled {
		closeAt, _ := cl.close(time.Now()) // arrivals after it do not move it
		for _, id := range cl.late(admitted, closeAt) {
			p.opts.Logf("round %d: %s's contribution came after the round closed by rule (%.2fs after its steps began here); left out", r, id, closeAt.Seconds())
			delete(admitted, id)
		}
	}
	ph.done(PhaseCollect)
	order := p.reducerOrder(r, admitted, ruled, claims)
	mine := inputList(admitted)

	// Reduce the partitions this node is first in line for.
	reduced := 0
	for pi := range p.parts {
		if order[pi][0] != p.self {
			continue
		}
		if err := p.reduce(ctx, r, pi, mine); err != nil {
			return err
		}
		reduced++
	}
	p.event(RoundEvent{Phase: "aggregated", Partitions: reduced})
	ph.done(PhaseReduce)

	inputs, err := p.gatherAggregates(ctx, w, r, order, mine)
	if err != nil || inputs == nil {
		return err
	}
	ph.done(PhaseAggregates)
	// Apply: the round's transition on a copy of the base state.
	ri := newRoundInput(inputs)
	ri.excluded = p.exclusions(p.rec)
	s, err := p.apply(ctx, p.current().own(), r, ri, "scratch-")
	if err != nil {
		return err
	}
	ck, rec, dir := s.ck, s.rec, s.dir
	p.event(RoundEvent{Phase: "checkpoint", CID: ck.String(), Contributions: rec.includedCount()})
	ph.done(PhaseCheckpoint)
	defer ph.done(PhaseSettle)
	if err := p.publish(ctx, RoundMsg{Type: MsgCheckpoint, Run: p.id.String(), Round: r, Base: p.base.String(), CID: ck.String()}); err != nil {
		return err
	}
	best, err := p.vote(ctx, w, r, s, admitted)
	if err != nil {
		return err
	}
	// Messages of later rounds go back to the mailbox.
	w.finish()
	if best != nil {
		os.RemoveAll(dir)
		return p.adopt(ctx, best, fmt.Sprintf("round %d: better than mine, %s (%d contributions)", r, ck, rec.includedCount()))
	}
	return p.settle(ctx, lineage{s})
}

// train makes this node's contribution to round r: the inner steps run
// ahead for it (overlap.go), or else round r's inner steps from the base;
// then it publishes the contribution (Δ = start − local, each partition
// encoded with error feedback as a raw block, under a dag-json root, with
// the worker state it started from and the one it left) and returns its
// CID and when its steps began.
func (p *Participant) train(ctx context.Context, r int) (cid.Cid, time.Time, error) {
	start := time.Now()
	a, err := p.takeAhead(ctx, r)
	if err != nil {
		return cid.Undef, time.Time{}, err
	}
	if a == nil {
		if err := p.reclaim(ctx); err != nil {
			return cid.Undef, time.Time{}, err
		}
		j := p.ownJob(r)
		a = &ahead{round: r, prior: p.held, j: j, began: start}
		if a.encs, a.sent, a.busy, err = p.ru.work(ctx, p.m, p.efs, p.current().weights(), r, j, p.stepEvents(r)); err != nil {
			return cid.Undef, time.Time{}, err
		}
	}
	encs, sent := a.encs, a.sent
	a.sent = nil
	if p.cheat.encs != nil {
		encs, sent = p.cheat.encs(ctx, r, encs), nil
	}
	if p.sync.Overlap == "" { // Δ is not needed past its encoding: let go of it before the worker state is read out
		p.ru.putVec(sent)
		sent = nil
		p.giveBack()
	}
	// The worker state the steps left, copied before the next round's steps
	// (started at once where rounds overlap) move it on.
	held := p.heldState(r)
	if err := p.trainAhead(ctx, r, encs, sent); err != nil {
		return cid.Undef, time.Time{}, err
	}
	sk, err := p.storeWorkerState(ctx, held, workerStatePin(p.id, r))
	if err != nil {
		return cid.Undef, time.Time{}, fmt.Errorf("storing the worker state: %w", err)
	}
	if p.sync.Overlap != "" {
		p.spare = held
	}
	p.release()
	if p.held = sk; p.ahead != nil {
		p.ahead.prior = sk
	}
	contrib := &Contribution{Format: ContributionFormat, Run: sharding.LinkTo(p.id), Round: r, Base: sharding.LinkTo(p.base),
		Peer: p.self.String(), Tokens: p.spec.RoundTokens(r), Codec: p.sync.Codec, Params: p.ru.n, Shards: a.j.shards}
	if a.prior.Defined() {
		l := sharding.LinkTo(a.prior)
		contrib.Prior = &l
	}
	if a.start.Defined() {
		l := sharding.LinkTo(a.start)
		contrib.Start = &l
	}
	encBytes := 0
	for _, enc := range encs {
		encBytes += len(enc)
		k, err := contentstore.BlockCID(contentstore.CodecRaw, enc)
		if err != nil {
			return cid.Undef, time.Time{}, err
		}
		if err := p.n.Store.PutBlock(ctx, k, enc); err != nil {
			return cid.Undef, time.Time{}, err
		}
		contrib.Partitions = append(contrib.Partitions, sharding.LinkTo(k))
	}
	contrib.State = sharding.LinkTo(sk)
	cb, ccid, err := EncodeContribution(contrib)
	if err != nil {
		return cid.Undef, time.Time{}, err
	}
	if err := p.n.Store.PutBlock(ctx, ccid, cb); err != nil {
		return cid.Undef, time.Time{}, err
	}
	if p.cheat.straggle != nil {
		p.cheat.straggle(ctx, r)
	}
	if err := p.publish(ctx, RoundMsg{Type: MsgContribution, Run: p.id.String(), Round: r, Base: p.base.String(), CID: ccid.String(), Tokens: contrib.Tokens,
		Down: int64(p.down)}); err != nil {
		return cid.Undef, time.Time{}, err
	}
	p.n.Metrics.encoded.WithLabelValues(p.id.String()).Add(float64(encBytes))
	p.event(RoundEvent{Phase: "contributed", CID: ccid.String(), EncodedBytes: encBytes, RawBytes: 4 * p.ru.n,
		Seconds: time.Since(start).Seconds(), StepSeconds: a.busy.Seconds()})
	return ccid, a.began, nil
}

// ownJob is this node's job in round r, on the base's members (a test's
// cheat applied), its steps' time added to stepNanos.
func (p *Participant) ownJob(r int) job {
	j := p.job(r, p.self, p.members)
	if p.cheat.job != nil {
		p.cheat.job(r, &j)
	}
	j.busy = &p.stepNanos
	return j
}

// stepEvents is the per-step hook of this node's inner steps of round r
// (metrics and "train" events); it may run beside the round loop.
func (p *Participant) stepEvents(r int) func(s, H int, l float32) {
	run, mets := p.id.String(), p.n.Metrics
	stepTokens, last := float64(p.spec.Inner.Batch*p.spec.Inner.Seq), time.Now()
	return func(s, H int, l float32) {
		now := time.Now()
		mets.innerStep.Observe(now.Sub(last).Seconds())
		mets.tokens.WithLabelValues(run).Add(stepTokens)
		mets.loss.WithLabelValues(run).Set(float64(l))
		last = now
		p.event(RoundEvent{Round: r, Phase: "train", Step: s, Steps: H, Loss: l})
	}
}

// trainersOnTopic counts the peers on the run's topic that do not follow
// it (see followers), asking those it has not heard from about round r.
// A peer that does not answer counts as a trainer.
func (p *Participant) trainersOnTopic(ctx context.Context, r int) int {
	peers := p.topic.Peers()
	var ask []peer.ID
	for _, id := range peers {
		if !p.followers[id] {
			ask = append(ask, id)
		}
	}
	if p.followers == nil {
		p.followers = map[peer.ID]bool{}
	}
	for id, a := range p.n.askAll(ctx, ask, p.id, r) {
		if a.Follower {
			p.followers[id] = true
		}
	}
	n := 0
	for _, id := range peers {
		if !p.followers[id] {
			n++
		}
	}
	return n
}

// reducerOrder gives each partition's reducers in round r: the members
// (agreed through the base checkpoint) first, then the other authors of
// admitted contributions — less those this node holds evidence against
// (every honest node that checked the same lie leaves the liar out, so
// they stop waiting a deadline for it; one that did not yet waits once).
// In a round closed by rule (ruled), the members it left out come last:
// every node that closed on the same contributions agrees on the order,
// and none waits a deadline for a straggler's aggregates. Members whose
// announced download rate (claims) is under the floor come after the
// other members (link.go).
func (p *Participant) reducerOrder(r int, admitted map[peer.ID]*input, ruled bool, claims map[peer.ID]int64) [][]peer.ID {
	isMember := map[peer.ID]bool{}
	for _, id := range p.members {
		isMember[id] = true
	}
	var members, others, left []peer.ID
	for _, id := range p.members {
		if _, ok := admitted[id]; ok || !ruled {
			members = append(members, id)
		} else {
			left = append(left, id)
		}
	}
	for id := range admitted {
		if !isMember[id] {
			others = append(others, id)
		}
	}
	sort.Slice(others, func(i, j int) bool { return others[i] < others[j] })
	fast, slow := fastFirst(members, claims)
	order := make([][]peer.ID, len(p.parts))
	for pi := range p.parts {
		var all []peer.ID
		for _, g := range [][]peer.ID{fast, slow, others, left} {
			all = append(all, Reducers(p.id, r, pi, g)...)
		}
		order[pi] = slices.DeleteFunc(all, p.proven)
	}
	return order
}

// gatherAggregates waits for one verified aggregate per partition: from
// the first reducer in line, or (after the deadline) from the best-placed
// one whose aggregate this node could recompute. It returns each
// partition's inputs (nil when this node moved to the peers' checkpoint
// meanwhile).
func (p *Participant) gatherAggregates(ctx context.Context, w *roundWait, r int, order [][]peer.ID, mine []*input) ([][]*input, error) {
	inputs := make([][]*input, len(p.parts))
	rank := make([]int, len(p.parts))
	missing := len(p.parts)
	for pi := range p.parts {
		rank[pi] = len(order[pi])
	}
	refused := map[string]bool{} // aggregates found wrong (repeats are not checked again)
	take := func(im inMsg) bool {
		m := im.m
		if m.Round != r || m.Type != MsgAggregate {
			return false
		}
		if m.Base != p.base.String() || m.Partition >= len(p.parts) || refused[m.CID] {
			return true
		}
		for k, id := range order[m.Partition] {
			if id != im.from || k >= rank[m.Partition] {
				continue
			}
			ins, wrong, err := p.checkAggregate(ctx, r, m)
			if err != nil {
				refused[m.CID] = true
				p.refuse(err, fmt.Sprintf("round %d: aggregate of partition %d from %s", r, m.Partition, im.from))
				if wrong.Defined() {
					p.accuse(ctx, im, wrong)
				}
				break
			}
			if inputs[m.Partition] == nil {
				missing--
			}
			inputs[m.Partition], rank[m.Partition] = ins, k
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
			if inputs[pi] == nil || rank[pi] > level {
				return false
			}
		}
		return true
	}
	for {
		ok, err := w.until(ctx, "verified aggregates", settled, take)
		if err != nil {
			return nil, err
		}
		if ok || missing == 0 {
			return inputs, nil
		}
		if moved, err := p.adoptSettled(ctx, r); err != nil || moved {
			return nil, err
		}
		level++
		if level >= len(order[0]) {
			return nil, fmt.Errorf("%d of %d partitions have no verified aggregate after every reducer's deadline", missing, len(p.parts))
		}
		for pi := range p.parts {
			if inputs[pi] == nil && order[pi][level] == p.self {
				p.opts.Logf("round %d: no verified aggregate of partition %d from %s; reducing it", r, pi, order[pi][level-1])
				if err := p.reduce(ctx, r, pi, mine); err != nil {
					return nil, err
				}
			}
		}
	}
}

// vote settles round r: it gathers the checkpoints announced for the round
// on this node's base (asking the participants that did not announce),
// recomputes those that differ from its own, s, and returns the best by
// fork choice if it is not s. Announcements are candidates, never votes.
func (p *Participant) vote(ctx context.Context, w *roundWait, r int, s *state, participants map[peer.ID]*input) (lineage, error) {
	announced := map[peer.ID]cid.Cid{p.self: s.ck}
	count := func(im inMsg) bool {
		if im.m.Round != r || im.m.Type != MsgCheckpoint {
			return false
		}
		// Only the round's admitted contributors have standing here.
		if k, err := cid.Decode(im.m.CID); err == nil && im.m.Base == p.base.String() && participants[im.from] != nil {
			announced[im.from] = k
		}
		return true
	}
	heard := func() bool {
		for id := range participants {
			if _, ok := announced[id]; !ok {
				return false
			}
		}
		return true
	}
	// Not every participant may announce (one may have crashed): the
	// deadline ends the wait.
	if _, err := w.until(ctx, "the participants' checkpoints", heard, count); err != nil {
		return nil, err
	}
	var ask []peer.ID
	for id := range participants {
		if _, ok := announced[id]; !ok {
			ask = append(ask, id)
		}
	}
	for id, a := range p.n.askAll(ctx, ask, p.id, r) {
		if k, err := cid.Decode(a.Checkpoint); err == nil && a.Base == p.base.String() {
			announced[id] = k
		}
	}
	var cs []candidate
	for _, k := range announced {
		if !k.Equals(s.ck) {
			cs = append(cs, candidate{round: r, ck: k})
		}
	}
	return p.choose(ctx, s, cs, fmt.Sprintf("round %d", r))
}

// forkHints gathers, during round r's wait for contributions, the other
// bases that peers' round-r contributions name: each says the sender
// closed round r−1 on another checkpoint (a partition healed, or a node
// that was away). Every base is only a candidate: its round record is
// fetched beside the wait, then adopt verifies it like any other and moves
// this node if it wins the fork choice. One hint per sender a round, at
// most maxForkHints, none for a checkpoint already judged.
type forkHints struct {
	p     *Participant
	r     int
	from  map[peer.ID]bool
	ready []candidate
}

const maxForkHints = 4

func (f *forkHints) hint(w *roundWait, im inMsg) {
	k, err := cid.Decode(im.m.Base)
	p := f.p
	if err != nil || f.from[im.from] || len(f.from) >= maxForkHints || f.r < 2 {
		return
	}
	if _, ok := p.verified[k.String()]; ok || p.worse[k.String()] {
		return
	}
	f.from[im.from] = true
	w.background(func(ctx context.Context) func() {
		rec, err := p.readRecordOf(ctx, k, f.r-1)
		return func() {
			if err != nil {
				p.refuse(err, fmt.Sprintf("round %d: the base %s of %s's contribution", f.r, k, im.from))
				return
			}
			f.ready = append(f.ready, candidate{round: f.r - 1, ck: k, rec: rec})
		}
	})
}

// adopt verifies the hinted bases and adopts the best if it beats this
// node's base; it reports whether the node moved.
func (f *forkHints) adopt(ctx context.Context) (bool, error) {
	cs := f.ready
	f.ready = nil
	return f.p.adoptBest(ctx, cs, fmt.Sprintf("round %d: another base", f.r))
}

// runPeers are the peers to ask about the run: its members and the peers
// on its topic; without either (the run's trainers have stopped, or run
// as daemons that answer for it from their pins), up to 64 of the peers
// this node is connected to.
func (p *Participant) runPeers() []peer.ID {
	set := map[peer.ID]bool{}
	for _, id := range p.members {
		set[id] = true
	}
	for _, id := range p.topic.Peers() {
		set[id] = true
	}
	if len(set) == 0 {
		for _, id := range p.n.Host.Network().Peers() {
			if len(set) < 64 {
				set[id] = true
			}
		}
	}
	delete(set, p.self)
	out := make([]peer.ID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// adoptSettled asks the run's peers where they stand: which checkpoint
// they settled round r on, and their newest. Gossip does not repeat what a
// node missed (it restarted, or the others closed the round without it),
// so it pulls. Every checkpoint named is only a candidate: adoptBest
// recomputes each before taking the best. It reports whether this node
// moved.
func (p *Participant) adoptSettled(ctx context.Context, r int) (bool, error) {
	as := p.n.askAll(ctx, p.runPeers(), p.id, r)
	var cs []candidate
	for _, a := range as {
		// One candidate per peer: its newest (else its round r; else, if
		// it stands where this node does on another base, that base: the
		// two forked in round r−1 and ignore each other's round r).
		newest, err := cid.Decode(a.NewestCID)
		if err == nil && a.Newest > r {
			cs = append(cs, candidate{round: a.Newest, ck: newest})
		} else if k, err := cid.Decode(a.Checkpoint); err == nil {
			cs = append(cs, candidate{round: r, ck: k})
		} else if err == nil && a.Newest == r-1 && newest != p.base {
			cs = append(cs, candidate{round: r - 1, ck: newest})
		}
	}
	return p.adoptBest(ctx, cs, "the run's peers")
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
// the round those of later rounds go back to the mailbox. While it waits it
// repeats what this node published in the round (gossipsub does not replay
// to a peer that was away; receivers are idempotent).
type roundWait struct {
	p        *Participant
	r        int
	pending  []inMsg
	deadline *time.Timer
	resend   *time.Ticker
	hold     bool        // the next until keeps the running (not yet fired) deadline
	wake     *time.Timer // wakeAt's: done is asked again when it fires
	// Fetches run beside the wait; their results come back as functions
	// run on the waiting goroutine. stop cancels and waits for them.
	ctx     context.Context
	cancel  context.CancelFunc
	results chan func()
	wg      sync.WaitGroup
}

func (p *Participant) newRoundWait(ctx context.Context, r int) *roundWait {
	w := &roundWait{p: p, r: r, deadline: time.NewTimer(p.sync.RoundDeadline),
		resend:  time.NewTicker(min(max(p.sync.RoundDeadline/4, 250*time.Millisecond), 5*time.Second)),
		results: make(chan func(), 64)}
	w.ctx, w.cancel = context.WithCancel(ctx)
	return w
}

// wakeAt has until ask its done again at t (a close rule's time).
func (w *roundWait) wakeAt(t time.Time) {
	if w.wake == nil {
		w.wake = time.NewTimer(time.Until(t))
		return
	}
	w.wake.Reset(time.Until(t))
}

func (w *roundWait) wakeC() <-chan time.Time {
	if w.wake == nil {
		return nil
	}
	return w.wake.C
}

// background runs f beside the wait; the function f returns runs later on
// the waiting goroutine (inside until), so it may touch the round's state.
func (w *roundWait) background(f func(ctx context.Context) func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		done := f(w.ctx)
		select {
		case w.results <- done:
		case <-w.ctx.Done():
		}
	}()
}

// until restarts the round deadline and feeds messages (pending ones
// first) to handle, which reports whether it used one, until done holds
// (true) or the deadline passes (false, and a "deadline" event says what
// the round waited for).
func (w *roundWait) until(ctx context.Context, what string, done func() bool, handle func(inMsg) bool) (bool, error) {
	if !w.hold {
		w.deadline.Reset(w.p.sync.RoundDeadline)
	}
	w.hold = false
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
			w.p.event(RoundEvent{Phase: "deadline", Round: w.r, Waiting: what})
			return false, nil
		case <-w.wakeC():
		case f := <-w.results:
			f()
		case <-w.p.mail.ready:
			for !done() {
				im, ok := w.p.mail.get()
				if !ok {
					break
				}
				if im.m.Type == MsgFraud && im.m.Round >= w.r-1 && im.m.Round <= w.r {
					w.p.takeProof(ctx, im, w.r)
					continue
				}
				if !handle(im) && im.m.Round >= w.r {
					w.keep(im)
				}
			}
		}
	}
	return true, nil
}

// keep holds a message for a later phase of the round (at most
// maxPending; beyond that the oldest go).
func (w *roundWait) keep(im inMsg) {
	if len(w.pending) >= maxPending {
		w.pending = w.pending[1:]
		w.p.count(DropPending, 1)
	}
	w.pending = append(w.pending, im)
}

// finish returns the pending messages of later rounds to the mailbox.
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
	w.cancel()
	w.wg.Wait()
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

// inputResult is a fetched contribution, or why it is not one.
type inputResult struct {
	in  *input
	err error
}

// input fetches and admits contribution k for round r on base, once per
// round (the answer, good or bad, is kept until the round ends). Safe for
// concurrent use.
func (p *Participant) input(ctx context.Context, k cid.Cid, r int, base cid.Cid) (*input, error) {
	key := k.String() + "@" + base.String()
	p.inMu.Lock()
	res, ok := p.inputs[key]
	p.inMu.Unlock()
	if ok {
		return res.in, res.err
	}
	in, err := p.ru.fetchInput(ctx, p.n.Store, k, r, base)
	if ctx.Err() == nil {
		p.inMu.Lock()
		if p.inputs == nil {
			p.inputs = map[string]inputResult{}
		}
		p.inputs[key] = inputResult{in, err}
		p.inMu.Unlock()
	}
	return in, err
}

// resetInputs forgets the previous round's contributions and aggregates.
func (p *Participant) resetInputs() {
	p.inMu.Lock()
	p.inputs = nil
	p.inMu.Unlock()
	p.ru.forget()
}

// inputList returns the admitted contributions sorted by CID.
func inputList(m map[peer.ID]*input) []*input {
	out := make([]*input, 0, len(m))
	for _, in := range m {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].cid.String() < out[j].cid.String() })
	return out
}

// reduce aggregates partition pi over the inputs, stores the result
// (encoded with the run's codec, as it travels) and publishes it with the
// list of its inputs, from which anyone can recompute it.
func (p *Participant) reduce(ctx context.Context, r, pi int, ins []*input) error {
	enc, k, _, err := p.ru.aggregate(pi, ins)
	if err != nil {
		return err
	}
	if p.tamper != nil {
		enc = p.tamper(pi, enc)
		if k, err = contentstore.BlockCID(contentstore.CodecRaw, enc); err != nil {
			return err
		}
	}
	if err := p.n.Store.PutBlock(ctx, k, enc); err != nil {
		return err
	}
	names := make([]string, len(ins))
	for i, in := range ins {
		names[i] = in.cid.String()
	}
	return p.publish(ctx, RoundMsg{Type: MsgAggregate, Run: p.id.String(), Round: r, Base: p.base.String(), CID: k.String(), Partition: pi, Inputs: names})
}

// checkAggregate recomputes an announced aggregate from the inputs it
// lists and returns them if it matches. On a mismatch it also returns what
// the inputs give (defined only then): evidence against the reducer (see
// evidence.go).
func (p *Participant) checkAggregate(ctx context.Context, r int, m RoundMsg) ([]*input, cid.Cid, error) {
	ins, k, err := p.recompute(ctx, m, func(ctx context.Context, c cid.Cid) (*input, error) { return p.input(ctx, c, r, p.base) })
	if err != nil {
		return nil, cid.Undef, rejected(RejectAggregate, err)
	}
	if k.String() != m.CID {
		return nil, k, rejected(RejectAggregate, fmt.Errorf("announced %s; its %d inputs give %s", m.CID, len(ins), k))
	}
	return ins, cid.Undef, nil
}

// recompute fetches and admits the inputs aggregate announcement m lists
// (with fetch) and returns them and the CID of the aggregate they give.
func (p *Participant) recompute(ctx context.Context, m RoundMsg, fetch func(context.Context, cid.Cid) (*input, error)) ([]*input, cid.Cid, error) {
	if m.Partition < 0 || m.Partition >= len(p.parts) {
		return nil, cid.Undef, fmt.Errorf("partition %d of %d", m.Partition, len(p.parts))
	}
	ins := make([]*input, 0, len(m.Inputs))
	for _, s := range m.Inputs {
		k, err := cid.Decode(s)
		if err != nil {
			return nil, cid.Undef, err
		}
		in, err := fetch(ctx, k)
		if err != nil {
			return nil, cid.Undef, fmt.Errorf("input %s: %w", s, err)
		}
		ins = append(ins, in)
	}
	_, k, _, err := p.ru.aggregate(m.Partition, ins)
	return ins, k, err
}

// storeAggregates keeps a round's aggregate blocks (recomputed here), so
// the links of its round record resolve from this node.
func (p *Participant) storeAggregates(ctx context.Context, encs [][]byte) error {
	for _, enc := range encs {
		k, err := contentstore.BlockCID(contentstore.CodecRaw, enc)
		if err != nil {
			return err
		}
		if err := p.n.Store.PutBlock(ctx, k, enc); err != nil {
			return err
		}
	}
	return nil
}

// writeCheckpoint writes a checkpoint directory (weights, outer state,
// tokenizer, round record) under a scratch name starting with prefix, adds
// it to the store unpinned and returns the directory and CID. Every byte
// depends only on the run and the round's inputs, so honest nodes get the
// same CID.
func (p *Participant) writeCheckpoint(ctx context.Context, rec *roundRecord, v vectors, prefix string) (string, cid.Cid, error) {
	rj, err := rec.marshal()
	if err != nil {
		return "", cid.Undef, err
	}
	p.scratch++
	dir := filepath.Join(p.opts.Dir, fmt.Sprintf("%sround-%06d-%d", prefix, rec.Round, p.scratch))
	os.RemoveAll(dir)
	meta := map[string]string{"run": p.id.String(), "round": fmt.Sprint(rec.Round)}
	files := []model.File{{Name: "tokenizer.json", Data: p.tokJSON}, {Name: "outer.bin", Write: v.outer}, {Name: "round.json", Data: rj}}
	if err := model.SaveWeightsFrom(dir, p.cfg, v.fill, meta, files...); err != nil {
		return "", cid.Undef, err
	}
	ck, err := p.n.Store.Add(ctx, dir, contentstore.AddOptions{})
	if err != nil {
		os.RemoveAll(dir)
		return "", cid.Undef, err
	}
	return dir, ck, nil
}

// genesis writes the run's round-0 checkpoint (deterministic from the
// spec) and settles on it.
func (p *Participant) genesis(ctx context.Context) error {
	g, err := p.writeGenesis(ctx)
	if err != nil {
		return err
	}
	return p.settle(ctx, lineage{g})
}

// writeGenesis writes the run's round-0 checkpoint from this participant's
// initial state (the spec's seed) into a scratch directory.
func (p *Participant) writeGenesis(ctx context.Context) (*state, error) {
	if p.global == nil {
		return nil, errors.New("the run's genesis: its initial state is no longer in memory (a lean participant's)")
	}
	rec := newRoundRecord(p.id, 0)
	rec.Base = p.spec.From // a stage's genesis links the checkpoint it starts from
	dir, ck, err := p.writeCheckpoint(ctx, rec, memVectors(p.global, p.outer), "scratch-")
	if err != nil {
		return nil, err
	}
	return &state{round: 0, ck: ck, global: p.global, outer: p.outer, rec: rec, dir: dir}, nil
}

// removeScratch removes the scratch directories a killed process left.
func (p *Participant) removeScratch() error {
	ents, err := os.ReadDir(p.opts.Dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, "scratch-") || strings.HasPrefix(n, "verify-") || strings.HasPrefix(n, "adopt-") {
			if err := os.RemoveAll(filepath.Join(p.opts.Dir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadShards loads the run's dataset, shards and all, into a participant
// opened to follow (which has only its manifest): what re-executing a
// contribution needs.
func (p *Participant) loadShards(ctx context.Context) error {
	if p.sched != nil {
		return nil
	}
	dsCID, _ := p.spec.Dataset.Cid()
	ds, err := p.n.LoadDataset(withStall(ctx), dsCID, nil)
	if err != nil {
		return err
	}
	return p.loadData(ds)
}
