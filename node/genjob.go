package node

// A generation job run by the swarm. Every node that takes part loads the
// job (spec, prompts and generator checkpoint, each fetched by CID and
// checked) and joins the job's topic. Shard k is generated first by the
// live peer that rendezvous hashing ranks first for it; a node that has
// generated its own shards waits Patience for the others' and then
// generates what is still missing, best-ranked first, so the job ends
// even if every other node leaves or lies.
//
// A shard is announced in a signed claim (shard, CID). A node accepts a
// peer's shard only after checking it: the records parse as the job's,
// and Sample of them — drawn from this node's own randomness — generated
// again give the same text. A record that does not is a fraud proof: the
// author's signed claim and the record's index, which anyone checks by
// generating that one record. Its finder gossips it; every node that
// checks it convicts the author (its claims are ignored from then on) and
// drops every shard with those bytes. Two claims of one shard with
// different bytes are settled the same way: the first record where they
// differ, generated again, convicts whichever does not match. A proof
// that does not hold convicts its sender. Nothing is taken on a peer's
// word, and no claim or peer is counted as evidence.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gen"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/p2p"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// Gen message types.
const (
	GenMsgClaim = "shard" // the author generated Shard; its bytes are CID
	GenMsgFraud = "fraud" // Claim (signed by its author) is refuted by record Index
)

const (
	maxGenMsg    = 16 << 10  // a claim, or a proof quoting one
	maxGenSpec   = 64 << 10  // a job's spec
	maxGenShard  = 256 << 20 // a shard's bytes
	maxGenQueued = 1024      // messages waiting for the job's loop
)

// GenTopic is the gossip topic of generation job job.
func GenTopic(job cid.Cid) string { return "fomnet/gen/1/" + job.String() }

// GenMsg is a message on a generation job's topic.
type GenMsg struct {
	Type  string `json:"type"`
	Job   string `json:"job"`
	Shard int    `json:"shard"`
	CID   string `json:"cid,omitempty"`   // claim: the shard's bytes
	Claim []byte `json:"claim,omitempty"` // fraud: the refuted claim as its author signed it
	Index int    `json:"index,omitempty"` // fraud: the prompt whose record is wrong; −1: the shard is malformed
}

// DecodeGenMsg reads a gen message from a peer, strictly and bounded.
func DecodeGenMsg(b []byte) (GenMsg, error) {
	var m GenMsg
	if err := decodeStrict(b, maxGenMsg, &m); err != nil {
		return m, fmt.Errorf("gen message: %w", err)
	}
	if _, err := cid.Decode(m.Job); err != nil {
		return m, fmt.Errorf("gen message: job %q: %w", sanitize(m.Job), err)
	}
	switch {
	case m.Shard < 0:
		return m, fmt.Errorf("gen message: shard %d", m.Shard)
	case m.Type == GenMsgClaim:
		if _, err := cid.Decode(m.CID); err != nil || len(m.Claim) > 0 || m.Index != 0 {
			return m, fmt.Errorf("gen message: a claim names a CID (%q) and nothing else", sanitize(m.CID))
		}
	case m.Type == GenMsgFraud:
		if len(m.Claim) == 0 || m.CID != "" || m.Index < -1 {
			return m, errors.New("gen message: a fraud proof quotes a claim and names a record (or −1)")
		}
	default:
		return m, fmt.Errorf("gen message: type %q", sanitize(m.Type))
	}
	return m, nil
}

// GenJobOptions configure a node's part in a generation job.
type GenJobOptions struct {
	Backend kernels.Backend // nil: a CPU backend of Threads threads
	Threads int
	Batch   int // sequences decoded at once (default 64; the output does not depend on it)
	// Sample is how many records of a peer's shard are generated again
	// before it is accepted (default 4): a shard with one wrong record
	// among n passes one node's check with probability 1 − Sample/n, and
	// every node checks every shard it did not generate itself.
	Sample int
	// Expect is how many peers Run waits for on the job's topic (at most
	// Patience) before it ranks shards: a node that sees no peers yet
	// ranks itself first for every shard.
	Expect int
	// Patience is how long a node with none of its own shards left waits
	// without progress before it generates others' (default 10 s).
	Patience time.Duration
	// Timeout bounds each fetch of a peer's shard (default 2 min).
	Timeout time.Duration
	// Resend is how often the node repeats its claims and proofs for
	// peers that joined late (default 3 s).
	Resend time.Duration
	Logf   func(string, ...any)

	tamper func(k int, b []byte) []byte // tests: a node that lies about its shards
}

func (o *GenJobOptions) defaults() {
	if o.Sample <= 0 {
		o.Sample = 4
	}
	if o.Patience <= 0 {
		o.Patience = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Resend <= 0 {
		o.Resend = 3 * time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// GenShard is one shard of a finished job.
type GenShard struct {
	Shard int      `json:"shard"`
	CID   string   `json:"cid"`
	By    []string `json:"by"` // the peers whose claims of these bytes this node accepted (itself included)
}

// GenConviction is a peer a node convicted, and why.
type GenConviction struct {
	Peer string `json:"peer"`
	Why  string `json:"why"`
}

// GenJobResult is a node's view of a finished generation job.
type GenJobResult struct {
	Job       string          `json:"job"`
	Generator string          `json:"generator"`
	Shards    []GenShard      `json:"shards"`
	Generated int             `json:"generated"` // shards this node generated
	Tokens    int             `json:"tokens"`    // tokens it generated
	Checked   int             `json:"checked"`   // records of peers' shards it generated again
	Convicted []GenConviction `json:"convicted"` // peers whose claims it refuted (or whose proofs did not hold)
	Seconds   float64         `json:"seconds"`
	TokensPS  float64         `json:"tokens_per_s"` // Tokens / Seconds
}

// GenJob is a node's part in a generation job, open until Close.
type GenJob struct {
	n    *Node
	id   cid.Cid
	Spec *gen.Spec
	g    *gen.Generator
	o    GenJobOptions
	self peer.ID

	topic  *p2p.Topic
	sub    *p2p.Subscription
	lim    limiter
	in     chan p2p.Message
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closer sync.Once
	own    kernels.Backend // closed by Close when the job made it

	mu        sync.Mutex
	mine      map[int]cid.Cid    // this node's claims, repeated
	proofs    []GenMsg           // the proofs it found, repeated
	convicted map[peer.ID]string // read by the validator

	// Run's alone:
	shards   map[int]*genShard
	res      GenJobResult
	progress time.Time
}

// genShard is an accepted shard: its bytes' CID and who claimed them.
type genShard struct {
	cid cid.Cid
	by  map[peer.ID][]byte // author → signed claim (nil for this node)
}

// LoadGenSpec fetches generation job id's spec and checks it: a spec in
// its canonical encoding, so that its CID is the job's.
func (n *Node) LoadGenSpec(ctx context.Context, id cid.Cid) (*gen.Spec, error) {
	b, err := n.fetchBounded(withStall(ctx), id, maxGenSpec)
	if err != nil {
		return nil, fmt.Errorf("gen job %s: %w", id, err)
	}
	s, err := gen.ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("gen job %s: %w", id, err)
	}
	if c, err := s.Encode(); err != nil || !bytes.Equal(c, b) {
		return nil, fmt.Errorf("gen job %s: not a spec in its canonical encoding", id)
	}
	return s, nil
}

// fetchBounded fetches the UnixFS file c (waiting as ctx says) and reads
// it, refusing one that declares more than limit bytes.
func (n *Node) fetchBounded(ctx context.Context, c cid.Cid, limit int64) ([]byte, error) {
	if err := n.Store.Fetch(ctx, c, nil); err != nil {
		return nil, err
	}
	if _, err := n.Store.DeclaredSize(ctx, c, limit); err != nil {
		return nil, fmt.Errorf("%s: %w (at most %d bytes)", c, err, limit)
	}
	return n.readFile(ctx, c)
}

// OpenGenJob loads generation job id — its spec, prompt set and generator
// checkpoint, fetched from the swarm and checked — and joins its topic.
// Run takes part; Close leaves.
func (n *Node) OpenGenJob(ctx context.Context, id cid.Cid, o GenJobOptions) (*GenJob, error) {
	o.defaults()
	spec, err := n.LoadGenSpec(ctx, id)
	if err != nil {
		return nil, err
	}
	j := &GenJob{n: n, id: id, Spec: spec, o: o, self: n.Host.ID(), in: make(chan p2p.Message, maxGenQueued),
		mine: map[int]cid.Cid{}, convicted: map[peer.ID]string{}, shards: map[int]*genShard{}}
	if j.g, err = j.loadGenerator(ctx); err != nil {
		j.closeBackend()
		return nil, fmt.Errorf("gen job %s: %w", id, err)
	}
	if j.topic, err = n.Host.Join(GenTopic(id), j.validate); err != nil {
		j.closeBackend()
		return nil, err
	}
	if j.sub, err = j.topic.Subscribe(); err != nil {
		j.topic.Close()
		j.closeBackend()
		return nil, err
	}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	j.wg.Add(3)
	go j.readLoop()
	go j.resendLoop()
	go func() {
		defer j.wg.Done()
		n.meetProviders(j.ctx, id, "gen job "+id.String(), o.Logf)
	}()
	return j, nil
}

// loadGenerator fetches the job's prompts and checkpoint and loads them.
func (j *GenJob) loadGenerator(ctx context.Context) (*gen.Generator, error) {
	pc, err := cid.Decode(j.Spec.Prompts)
	if err != nil {
		return nil, fmt.Errorf("prompts %q: %w", j.Spec.Prompts, err)
	}
	pb, err := j.n.fetchBounded(withStall(ctx), pc, 1<<32)
	if err != nil {
		return nil, fmt.Errorf("prompts: %w", err)
	}
	ps, err := gen.ReadPrompts(bytes.NewReader(pb))
	if err != nil {
		return nil, fmt.Errorf("prompts %s: %w", pc, err)
	}
	if len(ps) != j.Spec.PromptCount {
		return nil, fmt.Errorf("prompts %s: %d prompts, the spec says %d", pc, len(ps), j.Spec.PromptCount)
	}
	gc, err := cid.Decode(j.Spec.Generator)
	if err != nil {
		return nil, fmt.Errorf("generator %q: %w", j.Spec.Generator, err)
	}
	dir, cleanup, err := j.n.checkpointDir(ctx, gc)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	tb, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("generator %s has no tokenizer.json", gc)
	}
	tk, err := tokenizer.Parse(tb)
	if err != nil {
		return nil, err
	}
	be := j.o.Backend
	if be == nil {
		if be, err = cpu.New(cpu.Options{Threads: j.o.Threads}); err != nil {
			return nil, err
		}
		j.own = be
	}
	m, _, err := model.Load(be, dir)
	if err != nil {
		return nil, fmt.Errorf("generator %s: %w", gc, err)
	}
	return &gen.Generator{M: m, Tok: tk, Spec: j.Spec, Prompts: ps, Batch: j.o.Batch}, nil
}

// Close leaves the job's topic and stops its goroutines; idempotent.
func (j *GenJob) Close() {
	j.closer.Do(func() {
		j.cancel()
		j.sub.Cancel()
		j.wg.Wait()
		j.topic.Close()
		j.closeBackend()
	})
}

func (j *GenJob) closeBackend() {
	if j.own != nil {
		j.own.Close()
	}
}

// validate runs for every message on the job's topic before it is
// delivered or forwarded: well formed, this job's, within the sender's
// rate, not from a convicted peer.
func (j *GenJob) validate(_ context.Context, from peer.ID, data []byte) error {
	m, err := DecodeGenMsg(data)
	if err != nil {
		return err
	}
	if m.Job != j.id.String() || m.Shard >= j.Spec.Shards() {
		return fmt.Errorf("job %s shard %d: not this job's (%d shards)", sanitize(m.Job), m.Shard, j.Spec.Shards())
	}
	if from != j.self && !j.lim.allow(from) {
		return p2p.ErrIgnore
	}
	if j.isConvicted(from) {
		return p2p.ErrIgnore
	}
	return nil
}

func (j *GenJob) isConvicted(p peer.ID) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.convicted[p]
	return ok
}

// readLoop queues peers' messages for Run; a full queue drops (claims and
// proofs are repeated).
func (j *GenJob) readLoop() {
	defer j.wg.Done()
	for {
		m, err := j.sub.Next(j.ctx)
		if err != nil {
			return
		}
		if m.From == j.self {
			continue
		}
		select {
		case j.in <- m:
		default:
		}
	}
}

// resendLoop repeats this node's claims and proofs for late joiners.
func (j *GenJob) resendLoop() {
	defer j.wg.Done()
	t := time.NewTicker(j.o.Resend)
	defer t.Stop()
	for {
		select {
		case <-j.ctx.Done():
			return
		case <-t.C:
		}
		j.mu.Lock()
		var ms []GenMsg
		for k, c := range j.mine {
			ms = append(ms, GenMsg{Type: GenMsgClaim, Job: j.id.String(), Shard: k, CID: c.String()})
		}
		ms = append(ms, j.proofs...)
		j.mu.Unlock()
		for _, m := range ms {
			j.publish(j.ctx, m)
		}
	}
}

func (j *GenJob) publish(ctx context.Context, m GenMsg) {
	b, err := json.Marshal(m)
	if err == nil {
		err = j.topic.Publish(ctx, b, 0)
	}
	if err != nil && ctx.Err() == nil {
		j.o.Logf("gen job %s: publishing a %s message: %v", j.id, m.Type, err)
	}
}

// Run takes part in the job until this node holds every shard, generated
// here or checked, and returns its view. The node keeps repeating its
// claims until Close, so that peers still working can fetch and check its
// shards.
func (j *GenJob) Run(ctx context.Context) (*GenJobResult, error) {
	start := time.Now()
	j.progress = start
	j.res = GenJobResult{Job: j.id.String(), Generator: j.Spec.Generator, Convicted: []GenConviction{}}
	if j.o.Expect > 0 {
		wctx, cancel := context.WithTimeout(ctx, j.o.Patience)
		if err := j.topic.WaitPeers(wctx, j.o.Expect); err != nil && ctx.Err() == nil {
			j.o.Logf("gen job %s: %v; going on with the peers seen", j.id, err)
		}
		cancel()
		j.progress = time.Now() // the wait was not the peers' delay
	}
	for len(j.shards) < j.Spec.Shards() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if j.drain(ctx) {
			continue
		}
		if k, ok := j.next(); ok {
			if err := j.generate(ctx, k); err != nil {
				return nil, err
			}
			continue
		}
		t := time.NewTimer(max(time.Until(j.progress.Add(j.o.Patience)), time.Millisecond))
		select {
		case m := <-j.in:
			j.handle(ctx, m)
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	return j.result(time.Since(start)), nil
}

// drain handles every queued message; it says whether there were any.
func (j *GenJob) drain(ctx context.Context) bool {
	for handled := false; ; handled = true {
		select {
		case m := <-j.in:
			j.handle(ctx, m)
		default:
			return handled
		}
	}
}

// rank is how many of peers rendezvous hashing puts before p for shard k.
func (j *GenJob) rank(k int, p peer.ID, peers []peer.ID) int {
	score := func(q peer.ID) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "%s/%d/%s", j.id, k, q)) }
	mine, r := score(p), 0
	for _, q := range peers {
		if s := score(q); q != p && bytes.Compare(s[:], mine[:]) > 0 {
			r++
		}
	}
	return r
}

// next is the shard this node generates next: one it ranks first for among
// the live peers, else — once Patience has passed without progress — the
// missing shard it ranks best for.
func (j *GenJob) next() (int, bool) {
	live := []peer.ID{j.self}
	for _, p := range j.topic.Peers() {
		if !j.isConvicted(p) {
			live = append(live, p)
		}
	}
	stealing := time.Since(j.progress) >= j.o.Patience
	best, bestRank := -1, 0
	for k := range j.Spec.Shards() {
		if j.shards[k] != nil {
			continue
		}
		switch r := j.rank(k, j.self, live); {
		case r == 0:
			return k, true
		case stealing && (best < 0 || r < bestRank):
			best, bestRank = k, r
		}
	}
	return best, best >= 0
}

// generate makes shard k, stores and pins it, and claims it.
func (j *GenJob) generate(ctx context.Context, k int) error {
	var tokens int
	t0 := time.Now()
	b, err := j.g.Shard(k, func(n int) { tokens = n })
	if err != nil {
		return err
	}
	if j.o.tamper != nil {
		b = j.o.tamper(k, b)
	}
	c, err := j.n.Store.AddReader(ctx, bytes.NewReader(b), contentstore.AddOptions{Pin: true, Name: j.pinName(k)})
	if err != nil {
		return err
	}
	j.res.Generated++
	j.res.Tokens += tokens
	j.accept(k, c, j.self, nil)
	j.mu.Lock()
	j.mine[k] = c
	j.mu.Unlock()
	j.publish(ctx, GenMsg{Type: GenMsgClaim, Job: j.id.String(), Shard: k, CID: c.String()})
	lo, hi := j.Spec.Range(k)
	j.o.Logf("gen job %s: shard %d (prompts %d–%d) generated here: %d tokens (%.0f tokens/s) → %s",
		j.id, k, lo, hi, tokens, float64(tokens)/max(time.Since(t0).Seconds(), 1e-3), c)
	return nil
}

func (j *GenJob) pinName(k int) string { return fmt.Sprintf("gen %s shard %d", j.id, k) }

func (j *GenJob) accept(k int, c cid.Cid, by peer.ID, claim []byte) {
	s := j.shards[k]
	if s == nil || s.cid != c {
		s = &genShard{cid: c, by: map[peer.ID][]byte{}}
		j.shards[k] = s
		j.progress = time.Now()
	}
	s.by[by] = claim
}

// handle checks one peer's message.
func (j *GenJob) handle(ctx context.Context, m p2p.Message) {
	gm, err := DecodeGenMsg(m.Data)
	if err != nil || j.isConvicted(m.From) {
		return
	}
	signed, err := m.Signed()
	if err != nil {
		return
	}
	switch gm.Type {
	case GenMsgClaim:
		j.checkClaim(ctx, m.From, gm, signed)
	case GenMsgFraud:
		j.checkProof(ctx, m.From, gm)
	}
}

// checkClaim checks author's claim of shard gm.Shard (signed: the claim as
// it was signed) and accepts the shard, convicts the author, or — when the
// shard cannot be had — leaves it for later.
func (j *GenJob) checkClaim(ctx context.Context, author peer.ID, gm GenMsg, signed []byte) {
	k, c := gm.Shard, cid.MustParse(gm.CID)
	held := j.shards[k]
	if held != nil && held.cid == c {
		held.by[author] = signed
		return
	}
	b, err := j.fetch(ctx, c)
	if err != nil {
		j.o.Logf("gen job %s: shard %d from %s: %v (left unchecked; generated here if nobody delivers it)", j.id, k, author, err)
		return
	}
	if held == nil {
		j.res.Checked += min(j.o.Sample, j.records(k))
		j.judge(ctx, k, c, author, signed, j.g.Verify(k, b, j.o.Sample, randomSeed()))
		return
	}
	// Two versions: the first record where they differ tells which is
	// wrong (a shard that does not parse is wrong as it is).
	a, err := j.n.readFile(ctx, held.cid)
	if err != nil {
		j.o.Logf("gen job %s: shard %d: reading the held version: %v", j.id, k, err)
		return
	}
	var idx []int
	if i := j.g.FirstDifference(k, a, b); i >= 0 {
		idx = []int{i}
	}
	j.res.Checked += len(idx)
	if err := j.g.Check(k, a, idx); err != nil {
		j.judge(ctx, k, held.cid, "", nil, err)
	}
	j.judge(ctx, k, c, author, signed, j.g.Check(k, b, idx))
}

// judge acts on the check of claim (author's, signed; author "" for every
// holder of c) of shard k with bytes c: accept, convict, or log.
func (j *GenJob) judge(ctx context.Context, k int, c cid.Cid, author peer.ID, signed []byte, checked error) {
	var fp *gen.FraudProof
	switch {
	case checked == nil && author != "":
		if err := j.n.Store.Pin(ctx, c, j.pinName(k)); err != nil {
			j.o.Logf("gen job %s: pinning shard %d: %v", j.id, k, err)
		}
		j.accept(k, c, author, signed)
		j.o.Logf("gen job %s: shard %d from %s checked (%d of its records generated again) → %s", j.id, k, author, min(j.o.Sample, j.records(k)), c)
	case errors.As(checked, &fp):
		j.refute(ctx, k, c, author, signed, fp)
	case checked != nil:
		j.o.Logf("gen job %s: shard %d: could not check %s: %v", j.id, k, c, checked)
	}
}

// refute acts on proof fp that shard k's bytes c are not the job's: every
// peer that claimed them (author, or each holder when author is "") is
// convicted and the proof gossiped; the shard is dropped.
func (j *GenJob) refute(ctx context.Context, k int, c cid.Cid, author peer.ID, signed []byte, fp *gen.FraudProof) {
	claims := map[peer.ID][]byte{}
	if author != "" {
		claims[author] = signed
	}
	if s := j.shards[k]; s != nil && s.cid == c {
		maps.Copy(claims, s.by)
		delete(j.shards, k)
		j.n.Store.Unpin(c)
	}
	for p, claim := range claims {
		if p == j.self {
			// Only a node that lies to itself (a test's) gets here.
			j.o.Logf("gen job %s: this node's own shard %d is wrong: %v", j.id, k, fp)
			j.mu.Lock()
			delete(j.mine, k)
			j.mu.Unlock()
			continue
		}
		j.convict(p, fp.Error())
		pm := GenMsg{Type: GenMsgFraud, Job: j.id.String(), Shard: k, Claim: claim, Index: fp.Index}
		j.mu.Lock()
		j.proofs = append(j.proofs, pm)
		j.mu.Unlock()
		j.publish(ctx, pm)
	}
}

func (j *GenJob) convict(p peer.ID, why string) {
	j.mu.Lock()
	_, was := j.convicted[p]
	j.convicted[p] = why
	j.mu.Unlock()
	if !was {
		j.res.Convicted = append(j.res.Convicted, GenConviction{Peer: p.String(), Why: why})
		j.o.Logf("gen job %s: convicted %s: %s", j.id, p, sanitize(why))
	}
}

// checkProof checks sender's proof gm against the claim it quotes: the
// claim's author is convicted when generating the record again (or
// parsing the shard) refutes it, the sender when it does not.
func (j *GenJob) checkProof(ctx context.Context, sender peer.ID, gm GenMsg) {
	author, topic, data, err := p2p.OpenSigned(gm.Claim)
	var cm GenMsg
	if err == nil {
		cm, err = DecodeGenMsg(data)
	}
	lo, hi := j.Spec.Range(min(gm.Shard, j.Spec.Shards()-1))
	switch {
	case err != nil:
	case topic != GenTopic(j.id) || cm.Type != GenMsgClaim || cm.Job != j.id.String() || cm.Shard != gm.Shard:
		err = fmt.Errorf("it quotes a %s message of job %s on topic %q", sanitize(cm.Type), sanitize(cm.Job), sanitize(topic))
	case gm.Index != -1 && (gm.Index < lo || gm.Index >= hi):
		err = fmt.Errorf("record %d is not in shard %d", gm.Index, gm.Shard)
	}
	if err != nil {
		j.convict(sender, "a fraud proof that is not one: "+err.Error())
		return
	}
	if j.isConvicted(author) && author != j.self {
		return
	}
	c := cid.MustParse(cm.CID)
	b, err := j.fetch(ctx, c)
	if err != nil {
		j.o.Logf("gen job %s: %s's proof against %s: %v (cannot tell)", j.id, sender, author, err)
		return
	}
	var idx []int
	if gm.Index >= 0 {
		idx = []int{gm.Index}
	}
	j.res.Checked += len(idx)
	checked := j.g.Check(cm.Shard, b, idx)
	var fp *gen.FraudProof
	switch {
	case errors.As(checked, &fp):
		j.refute(ctx, cm.Shard, c, author, gm.Claim, fp)
	case checked == nil:
		j.convict(sender, fmt.Sprintf("its fraud proof against %s's shard %d does not hold", author, cm.Shard))
	default:
		j.o.Logf("gen job %s: %s's proof against %s: %v (cannot tell)", j.id, sender, author, checked)
	}
}

// fetch fetches a peer's shard, bounded in time and size.
func (j *GenJob) fetch(ctx context.Context, c cid.Cid) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, j.o.Timeout)
	defer cancel()
	return j.n.fetchBounded(ctx, c, maxGenShard)
}

func (j *GenJob) records(k int) int {
	lo, hi := j.Spec.Range(k)
	return hi - lo
}

func (j *GenJob) result(took time.Duration) *GenJobResult {
	r := j.res
	r.Seconds = took.Seconds()
	r.TokensPS = float64(r.Tokens) / max(r.Seconds, 1e-9)
	for k := range j.Spec.Shards() {
		s := j.shards[k]
		gs := GenShard{Shard: k, CID: s.cid.String()}
		for p := range s.by {
			gs.By = append(gs.By, p.String())
		}
		slices.Sort(gs.By)
		r.Shards = append(r.Shards, gs)
	}
	return &r
}

// WriteShards writes the finished job's shards to dir as shard-K.jsonl
// and returns them as inputs of a data prepare recipe: synthetic, their
// generator the job's checkpoint, with the job's stage and licence.
func (j *GenJob) WriteShards(ctx context.Context, r *GenJobResult, dir string) ([]sharding.Input, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var ins []sharding.Input
	for _, s := range r.Shards {
		b, err := j.n.readFile(ctx, cid.MustParse(s.CID))
		if err != nil {
			return nil, err
		}
		path, err := filepath.Abs(filepath.Join(dir, fmt.Sprintf("shard-%d.jsonl", s.Shard)))
		if err != nil {
			return nil, err
		}
		if err := fsutil.WriteFile(path, b); err != nil {
			return nil, err
		}
		ins = append(ins, sharding.Input{Path: path, Format: sharding.FormatJSONL, Field: "text", Source: "synthetic",
			Generator: j.Spec.Generator, Licence: j.Spec.Licence, Stage: j.Spec.Stage})
	}
	return ins, nil
}

// randomSeed is a check's seed: this node's own randomness, so no peer
// knows which records it will generate again.
func randomSeed() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}
