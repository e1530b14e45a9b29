package node

// A swarm job: work cut into units whose bytes anyone can make again
// (generation shards, preparation parts), done by whoever takes part.
// Every node that takes part joins the job's topic. Unit k is made first
// by the live peer that rendezvous hashing ranks first for it; a node
// that has made its own units waits Patience for the others' and then
// makes what is still missing, best-ranked first, so the job ends even if
// every other node leaves or lies.
//
// A unit is announced in a signed claim (unit, CID). A node accepts a
// peer's unit only after checking it (work.verify: re-executing a sample
// of its records, drawn from this node's own randomness). A record that
// does not match is a fraud proof: the author's signed claim and the
// record's index, which anyone checks by re-executing that record. Its
// finder gossips it; every node that checks it convicts the author (its
// claims are ignored from then on) and drops every unit with those bytes.
// Two claims of one unit with different bytes are settled the same way. A
// proof that does not hold convicts its sender; a claim whose bytes
// cannot be fetched in time passes its author over. Nothing is taken on a
// peer's word, and no claim or peer is counted as evidence.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gen"
	"github.com/fomnet/fomnet/p2p"
)

// Job message types.
const (
	JobClaim = "claim" // the author made Unit; its bytes are CID
	JobFraud = "fraud" // Claim (signed by its author) is refuted by record Index
)

const (
	maxJobMsg    = 16 << 10 // a claim, or a proof quoting one
	maxJobQueued = 1024     // messages waiting for the job's loop
)

// JobMsg is a message on a job's topic.
type JobMsg struct {
	Type  string `json:"type"`
	Job   string `json:"job"`
	Unit  int    `json:"unit"`
	CID   string `json:"cid,omitempty"`   // claim: the unit's bytes
	Claim []byte `json:"claim,omitempty"` // fraud: the refuted claim as its author signed it
	Index int    `json:"index,omitempty"` // fraud: the record that is wrong; −1: the unit's form
}

// DecodeJobMsg reads a job message from a peer, strictly and bounded.
func DecodeJobMsg(b []byte) (JobMsg, error) {
	var m JobMsg
	if err := decodeStrict(b, maxJobMsg, &m); err != nil {
		return m, fmt.Errorf("job message: %w", err)
	}
	if _, err := cid.Decode(m.Job); err != nil {
		return m, fmt.Errorf("job message: job %q: %w", sanitize(m.Job), err)
	}
	switch {
	case m.Unit < 0:
		return m, fmt.Errorf("job message: unit %d", m.Unit)
	case m.Type == JobClaim:
		if _, err := cid.Decode(m.CID); err != nil || len(m.Claim) > 0 || m.Index != 0 {
			return m, fmt.Errorf("job message: a claim names a CID (%q) and nothing else", sanitize(m.CID))
		}
	case m.Type == JobFraud:
		if len(m.Claim) == 0 || m.CID != "" || m.Index < -1 {
			return m, errors.New("job message: a fraud proof quotes a claim and names a record (or −1)")
		}
	default:
		return m, fmt.Errorf("job message: type %q", sanitize(m.Type))
	}
	return m, nil
}

// errNotProof: a proof that names no record of its unit.
var errNotProof = errors.New("not a record of the unit")

// work is what a job's units are: how to make one, and how to check one
// a peer made. verify, settle and recheck return nil, an error fraud
// recognises (the record it names), or another error when they could not
// check. Units are streamed, never held whole unless the work needs it.
type work interface {
	kind() string // in topics and logs: "gen", "prep"
	units() int
	unitName(k int) string
	maxBytes() int64
	// make writes unit k to w; note says what it made, for the log.
	make(ctx context.Context, k int, w io.Writer) (note string, err error)
	// verify checks unit k with a sample drawn from seed and says how
	// many records it re-executed.
	verify(ctx context.Context, k int, u stored, seed uint64) (int, error)
	// settle checks two versions of unit k against each other.
	settle(ctx context.Context, k int, a, b stored) (errA, errB error)
	// recheck re-executes record index of unit k (−1: its form only).
	recheck(ctx context.Context, k int, u stored, index int) error
	fraud(err error) (index int, ok bool)
}

// stored is a unit's bytes in this node's store (fetched, size checked),
// read as often as a check needs.
type stored struct {
	n *Node
	c cid.Cid
}

func (s stored) open(ctx context.Context) (io.ReadCloser, error) { return s.n.Store.Open(ctx, s.c) }

// bytes reads the unit whole, refusing more than limit bytes.
func (s stored) bytes(ctx context.Context, limit int64) ([]byte, error) {
	r, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("%s: more than %d bytes", s.c, limit)
	}
	return b, err
}

// JobOptions configure a node's part in a job.
type JobOptions struct {
	// Expect is how many peers Run waits for on the job's topic (at most
	// Patience) before it ranks units: a node that sees no peers yet
	// ranks itself first for every unit.
	Expect int
	// Patience is how long a node with none of its own units left waits
	// without progress before it makes others' (default 10 s; at least
	// twice the longest time this node took to make a unit, so that
	// peers as fast as it are not raced).
	Patience time.Duration
	// Timeout gives up a fetch of a peer's unit when nothing arrives for
	// that long (default 30 s). A peer whose claimed unit cannot be had
	// is passed over from then on: its claims are not fetched again and
	// its units are made by others (a claim of bytes nobody serves costs
	// one wait).
	Timeout time.Duration
	// Resend is how often the node repeats its claims and proofs for
	// peers that joined late (default 3 s).
	Resend time.Duration
	Logf   func(string, ...any)

	tamper func(k int, b []byte) []byte // tests: a node that lies about its units
}

func (o *JobOptions) defaults() {
	if o.Patience <= 0 {
		o.Patience = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Resend <= 0 {
		o.Resend = 3 * time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// JobUnit is one unit of a finished job.
type JobUnit struct {
	Unit int      `json:"unit"`
	CID  string   `json:"cid"`
	By   []string `json:"by"` // the peers whose claims of these bytes this node accepted (itself included)
}

// Conviction is a peer a node convicted, and why.
type Conviction struct {
	Peer string `json:"peer"`
	Why  string `json:"why"`
}

// JobResult is a node's view of a finished job.
type JobResult struct {
	Job       string       `json:"job"`
	Units     []JobUnit    `json:"units"`
	Made      int          `json:"made"`        // units this node made
	Resumed   int          `json:"resumed"`     // units it had made or checked before a restart
	Checked   int          `json:"checked"`     // records of peers' units it re-executed
	Convicted []Conviction `json:"convicted"`   // peers whose claims it refuted (or whose proofs did not hold)
	Passed    []string     `json:"passed_over"` // peers whose claimed units it could not fetch
	Seconds   float64      `json:"seconds"`
}

// swarmJob is a node's part in a job, open until close.
type swarmJob struct {
	n    *Node
	id   cid.Cid
	w    work
	o    JobOptions
	self peer.ID

	topic  *p2p.Topic
	sub    *p2p.Subscription
	lim    limiter
	in     chan p2p.Message
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closer sync.Once

	mu        sync.Mutex
	mine      map[int]cid.Cid    // this node's claims, repeated
	proofs    []JobMsg           // the proofs it found, repeated
	convicted map[peer.ID]string // read by the validator

	// Run's alone:
	silent    map[peer.ID]bool // peers whose claimed units could not be had
	unchecked map[cid.Cid]bool // units a check could not settle (not tried again)
	held      map[int]*heldUnit
	res       JobResult
	progress  time.Time
	slowest   time.Duration // the longest this node took to make a unit
}

// heldUnit is an accepted unit: its bytes' CID and who claimed them.
type heldUnit struct {
	cid cid.Cid
	by  map[peer.ID][]byte // author → signed claim (nil for this node)
}

// openJob joins job id's topic; run takes part, close leaves.
func (n *Node) openJob(id cid.Cid, w work, o JobOptions) (*swarmJob, error) {
	o.defaults()
	j := &swarmJob{n: n, id: id, w: w, o: o, self: n.Host.ID(), in: make(chan p2p.Message, maxJobQueued),
		mine: map[int]cid.Cid{}, convicted: map[peer.ID]string{}, silent: map[peer.ID]bool{}, unchecked: map[cid.Cid]bool{}, held: map[int]*heldUnit{}}
	var err error
	if j.topic, err = n.Host.Join(JobTopic(w.kind(), id), j.validate); err != nil {
		return nil, err
	}
	if j.sub, err = j.topic.Subscribe(); err != nil {
		j.topic.Close()
		return nil, err
	}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	j.wg.Add(3)
	go j.readLoop()
	go j.resendLoop()
	go func() {
		defer j.wg.Done()
		n.meetProviders(j.ctx, id, j.name(), o.Logf)
	}()
	return j, nil
}

// JobTopic is the gossip topic of a job of kind ("gen", "prep").
func JobTopic(kind string, id cid.Cid) string { return "fomnet/" + kind + "/1/" + id.String() }

func (j *swarmJob) name() string { return j.w.kind() + " job " + j.id.String() }

// close leaves the job's topic and stops its goroutines; idempotent.
func (j *swarmJob) close() {
	j.closer.Do(func() {
		j.cancel()
		j.sub.Cancel()
		j.wg.Wait()
		j.topic.Close()
	})
}

// validate runs for every message on the job's topic before it is
// delivered or forwarded: well formed, this job's, within the sender's
// rate, not from a convicted peer.
func (j *swarmJob) validate(_ context.Context, from peer.ID, data []byte) error {
	m, err := DecodeJobMsg(data)
	if err != nil {
		return err
	}
	if m.Job != j.id.String() || m.Unit >= j.w.units() {
		return fmt.Errorf("job %s unit %d: not this job's (%d units)", sanitize(m.Job), m.Unit, j.w.units())
	}
	if from != j.self && !j.lim.allow(from) {
		return p2p.ErrIgnore
	}
	if j.isConvicted(from) {
		return p2p.ErrIgnore
	}
	return nil
}

func (j *swarmJob) isConvicted(p peer.ID) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.convicted[p]
	return ok
}

// readLoop queues peers' messages for run; a full queue drops (claims and
// proofs are repeated).
func (j *swarmJob) readLoop() {
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
func (j *swarmJob) resendLoop() {
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
		var ms []JobMsg
		for k, c := range j.mine {
			ms = append(ms, JobMsg{Type: JobClaim, Job: j.id.String(), Unit: k, CID: c.String()})
		}
		ms = append(ms, j.proofs...)
		j.mu.Unlock()
		for _, m := range ms {
			j.publish(j.ctx, m)
		}
	}
}

func (j *swarmJob) publish(ctx context.Context, m JobMsg) {
	b, err := json.Marshal(m)
	if err == nil {
		err = j.topic.Publish(ctx, b, 0)
	}
	if err != nil && ctx.Err() == nil {
		j.o.Logf("%s: publishing a %s message: %v", j.name(), m.Type, err)
	}
}

// run takes part in the job until this node holds every unit, made here
// or checked, and returns its view. The node keeps repeating its claims
// until close, so that peers still working can fetch and check its units.
func (j *swarmJob) run(ctx context.Context) (*JobResult, error) {
	start := time.Now()
	j.res = JobResult{Job: j.id.String(), Convicted: []Conviction{}, Passed: []string{}}
	j.mu.Lock()
	j.resume()
	j.mu.Unlock()
	if j.o.Expect > 0 {
		wctx, cancel := context.WithTimeout(ctx, j.o.Patience)
		if err := j.topic.WaitPeers(wctx, j.o.Expect); err != nil && ctx.Err() == nil {
			j.o.Logf("%s: %v; going on with the peers seen", j.name(), err)
		}
		cancel()
	}
	j.progress = time.Now()
	for len(j.held) < j.w.units() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		j.drain(ctx)
		if len(j.held) == j.w.units() {
			break
		}
		if k, ok := j.next(); ok {
			if err := j.make(ctx, k); err != nil {
				return nil, err
			}
			continue
		}
		t := time.NewTimer(max(time.Until(j.progress.Add(j.patience())), time.Millisecond))
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

// drain handles the messages queued now (not those that arrive
// meanwhile: a stream of them must not keep the node from its own work).
func (j *swarmJob) drain(ctx context.Context) {
	for range len(j.in) {
		j.handle(ctx, <-j.in)
	}
}

// rank is how many of peers rendezvous hashing puts before p for unit k.
func (j *swarmJob) rank(k int, p peer.ID, peers []peer.ID) int {
	score := func(q peer.ID) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "%s/%d/%s", j.id, k, q)) }
	mine, r := score(p), 0
	for _, q := range peers {
		if s := score(q); q != p && bytes.Compare(s[:], mine[:]) > 0 {
			r++
		}
	}
	return r
}

// next is the unit this node makes next: one it ranks first for among the
// live peers, else — once Patience has passed without progress — the
// missing unit it ranks best for.
func (j *swarmJob) next() (int, bool) {
	live := []peer.ID{j.self}
	for _, p := range j.topic.Peers() {
		if !j.isConvicted(p) && !j.silent[p] {
			live = append(live, p)
		}
	}
	stealing := time.Since(j.progress) >= j.patience()
	best, bestRank := -1, 0
	for k := range j.w.units() {
		if j.held[k] != nil {
			continue
		}
		switch r := j.rank(k, j.self, live); {
		case r == 0:
			return k, true
		case stealing && (best < 0 || r < bestRank):
			best, bestRank = k, r
		}
	}
	if best >= 0 {
		j.o.Logf("%s: nothing new for %v: making %s here (%d live peers rank before this node)", j.name(), j.patience().Round(time.Millisecond), j.w.unitName(best), bestRank)
	}
	return best, best >= 0
}

// patience is how long to wait for peers' units (JobOptions.Patience).
func (j *swarmJob) patience() time.Duration { return max(j.o.Patience, 2*j.slowest) }

// make makes unit k, stores and pins it, and claims it.
func (j *swarmJob) make(ctx context.Context, k int) error {
	t0 := time.Now()
	c, size, note, err := j.makeStored(ctx, k)
	if err != nil {
		return err
	}
	j.slowest = max(j.slowest, time.Since(t0))
	j.res.Made++
	j.accept(k, c, j.self, nil)
	j.mu.Lock()
	j.mine[k] = c
	j.mu.Unlock()
	j.publish(ctx, JobMsg{Type: JobClaim, Job: j.id.String(), Unit: k, CID: c.String()})
	j.o.Logf("%s: %s made here in %.1fs (%s, %d bytes) → %s", j.name(), j.w.unitName(k), time.Since(t0).Seconds(), note, size, c)
	return nil
}

// makeStored makes unit k into a scratch file and adds it to the store,
// pinned; it returns the unit's CID and size.
func (j *swarmJob) makeStored(ctx context.Context, k int) (cid.Cid, int64, string, error) {
	f, err := os.CreateTemp(j.n.Home, "job-unit-")
	if err != nil {
		return cid.Undef, 0, "", err
	}
	defer os.Remove(f.Name())
	note, err := j.w.make(ctx, k, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && j.o.tamper != nil {
		b, _ := os.ReadFile(f.Name())
		err = os.WriteFile(f.Name(), j.o.tamper(k, b), 0o644)
	}
	var st os.FileInfo
	if err == nil {
		st, err = os.Stat(f.Name())
	}
	if err != nil {
		return cid.Undef, 0, "", err
	}
	c, err := j.n.Store.Add(ctx, f.Name(), contentstore.AddOptions{Pin: true, Name: j.pinName(k, true)})
	return c, st.Size(), note, err
}

// pinName is the pin of unit k: made here (own) or checked here.
func (j *swarmJob) pinName(k int, own bool) string {
	if own {
		return fmt.Sprintf("%s unit %d, made here", j.name(), k)
	}
	return fmt.Sprintf("%s unit %d, checked", j.name(), k)
}

// resume takes back the units this node made or checked before it was
// stopped (their pins), so a restarted node goes on where it was.
func (j *swarmJob) resume() {
	for _, p := range j.n.Store.Pins() {
		rest, ok := strings.CutPrefix(p.Name, j.name()+" unit ")
		if !ok {
			continue
		}
		ks, how, _ := strings.Cut(rest, ", ")
		k, err := strconv.Atoi(ks)
		if err != nil || k < 0 || k >= j.w.units() || j.held[k] != nil {
			continue
		}
		j.held[k] = &heldUnit{cid: p.CID, by: map[peer.ID][]byte{}}
		if how == "made here" {
			j.held[k].by[j.self] = nil
			j.mine[k] = p.CID
		}
		j.res.Resumed++
	}
	if j.res.Resumed > 0 {
		j.o.Logf("%s: %d units taken back from this node's store (made or checked before it stopped)", j.name(), j.res.Resumed)
	}
}

func (j *swarmJob) accept(k int, c cid.Cid, by peer.ID, claim []byte) {
	u := j.held[k]
	if u == nil || u.cid != c {
		u = &heldUnit{cid: c, by: map[peer.ID][]byte{}}
		j.held[k] = u
		j.progress = time.Now()
	}
	u.by[by] = claim
}

// handle checks one peer's message.
func (j *swarmJob) handle(ctx context.Context, m p2p.Message) {
	jm, err := DecodeJobMsg(m.Data)
	if err != nil || j.isConvicted(m.From) {
		return
	}
	signed, err := m.Signed()
	if err != nil {
		return
	}
	switch jm.Type {
	case JobClaim:
		j.checkClaim(ctx, m.From, jm, signed)
	case JobFraud:
		j.checkProof(ctx, m.From, jm)
	}
}

// checkClaim checks author's claim of unit jm.Unit (signed: the claim as
// it was signed): it accepts the unit, convicts the author, or — when the
// unit cannot be had — passes the author over.
func (j *swarmJob) checkClaim(ctx context.Context, author peer.ID, jm JobMsg, signed []byte) {
	k, c := jm.Unit, cid.MustParse(jm.CID)
	held := j.held[k]
	if held != nil && held.cid == c {
		held.by[author] = signed
		return
	}
	if j.silent[author] || j.unchecked[c] {
		return
	}
	u, err := j.fetch(ctx, c)
	if err != nil {
		j.silent[author] = true
		j.res.Passed = append(j.res.Passed, author.String())
		j.o.Logf("%s: %s from %s: %v (its claims are passed over from now on; others make its units)", j.name(), j.w.unitName(k), author, err)
		return
	}
	if held == nil {
		n, err := j.w.verify(ctx, k, u, randomSeed())
		j.res.Checked += n
		j.judge(ctx, k, c, author, signed, err)
		if err == nil {
			j.o.Logf("%s: %s from %s checked (%d of its records made again) → %s", j.name(), j.w.unitName(k), author, n, c)
		}
		return
	}
	// Two versions: whichever a check refutes is wrong (perhaps both).
	errA, errB := j.w.settle(ctx, k, stored{j.n, held.cid}, u)
	if errA != nil {
		j.judge(ctx, k, held.cid, "", nil, errA)
	}
	j.judge(ctx, k, c, author, signed, errB)
}

// judge acts on the check of claim (author's, signed; author "" for every
// holder of c) of unit k with bytes c: accept, convict, or log.
func (j *swarmJob) judge(ctx context.Context, k int, c cid.Cid, author peer.ID, signed []byte, checked error) {
	index, isFraud := j.w.fraud(checked)
	switch {
	case checked == nil && author != "":
		if err := j.n.Store.Pin(ctx, c, j.pinName(k, false)); err != nil {
			j.o.Logf("%s: pinning %s: %v", j.name(), j.w.unitName(k), err)
		}
		j.accept(k, c, author, signed)
	case isFraud:
		j.refute(ctx, k, c, author, signed, index, checked)
	case checked != nil:
		j.unchecked[c] = true
		j.o.Logf("%s: %s: could not check %s: %v (not tried again; made here if nobody else's passes)", j.name(), j.w.unitName(k), c, checked)
	}
}

// refute acts on proof fraud (of record index) that unit k's bytes c are
// not the job's: every peer that claimed them (author, or each holder when
// author is "") is convicted and the proof gossiped; the unit is dropped.
func (j *swarmJob) refute(ctx context.Context, k int, c cid.Cid, author peer.ID, signed []byte, index int, fraud error) {
	claims := map[peer.ID][]byte{}
	if author != "" {
		claims[author] = signed
	}
	if u := j.held[k]; u != nil && u.cid == c {
		maps.Copy(claims, u.by)
		delete(j.held, k)
		j.n.Store.Unpin(c)
	}
	for p, claim := range claims {
		if p == j.self {
			// Only a node that lies to itself (a test's) gets here.
			j.o.Logf("%s: this node's own %s is wrong: %v", j.name(), j.w.unitName(k), fraud)
			j.mu.Lock()
			delete(j.mine, k)
			j.mu.Unlock()
			continue
		}
		j.convict(p, fraud.Error())
		pm := JobMsg{Type: JobFraud, Job: j.id.String(), Unit: k, Claim: claim, Index: index}
		j.mu.Lock()
		j.proofs = append(j.proofs, pm)
		j.mu.Unlock()
		j.publish(ctx, pm)
	}
}

func (j *swarmJob) convict(p peer.ID, why string) {
	j.mu.Lock()
	_, was := j.convicted[p]
	j.convicted[p] = why
	j.mu.Unlock()
	if !was {
		j.res.Convicted = append(j.res.Convicted, Conviction{Peer: p.String(), Why: why})
		j.o.Logf("%s: convicted %s: %s", j.name(), p, sanitize(why))
	}
}

// checkProof checks sender's proof jm against the claim it quotes: the
// claim's author is convicted when re-executing the record (or reading
// the unit) refutes it, the sender when it does not.
func (j *swarmJob) checkProof(ctx context.Context, sender peer.ID, jm JobMsg) {
	author, topic, data, err := p2p.OpenSigned(jm.Claim)
	var cm JobMsg
	if err == nil {
		cm, err = DecodeJobMsg(data)
	}
	if err == nil && (topic != JobTopic(j.w.kind(), j.id) || cm.Type != JobClaim || cm.Job != j.id.String() || cm.Unit != jm.Unit) {
		err = fmt.Errorf("it quotes a %s message of job %s on topic %q", sanitize(cm.Type), sanitize(cm.Job), sanitize(topic))
	}
	if err != nil {
		j.convict(sender, "a fraud proof that is not one: "+err.Error())
		return
	}
	if j.isConvicted(author) && author != j.self {
		return
	}
	c := cid.MustParse(cm.CID)
	u, err := j.fetch(ctx, c)
	if err != nil {
		j.o.Logf("%s: %s's proof against %s: %v (cannot tell)", j.name(), sender, author, err)
		return
	}
	if jm.Index >= 0 {
		j.res.Checked++
	}
	checked := j.w.recheck(ctx, cm.Unit, u, jm.Index)
	index, isFraud := j.w.fraud(checked)
	switch {
	case errors.Is(checked, errNotProof):
		j.convict(sender, "a fraud proof that is not one: "+checked.Error())
	case isFraud:
		j.refute(ctx, cm.Unit, c, author, jm.Claim, index, checked)
	case checked == nil:
		j.convict(sender, fmt.Sprintf("its fraud proof against %s's %s does not hold", author, j.w.unitName(cm.Unit)))
	default:
		j.o.Logf("%s: %s's proof against %s: %v (cannot tell)", j.name(), sender, author, checked)
	}
}

// fetch fetches a peer's unit into the store, bounded in size and given
// up when nothing arrives for Timeout (a large unit may take longer).
func (j *swarmJob) fetch(ctx context.Context, c cid.Cid) (stored, error) {
	ctx = contentstore.WithWait(ctx, contentstore.Wait{Stall: j.o.Timeout})
	return j.n.fetchSized(ctx, c, j.w.maxBytes())
}

func (j *swarmJob) result(took time.Duration) *JobResult {
	r := j.res
	r.Seconds = took.Seconds()
	for k := range j.w.units() {
		u := j.held[k]
		ju := JobUnit{Unit: k, CID: u.cid.String()}
		for p := range u.by {
			ju.By = append(ju.By, p.String())
		}
		slices.Sort(ju.By)
		r.Units = append(r.Units, ju)
	}
	return &r
}

// fetchBounded fetches the UnixFS file c (waiting as ctx says) and reads
// it, refusing one that declares more than limit bytes.
func (n *Node) fetchBounded(ctx context.Context, c cid.Cid, limit int64) ([]byte, error) {
	u, err := n.fetchSized(ctx, c, limit)
	if err != nil {
		return nil, err
	}
	return u.bytes(ctx, limit)
}

// fetchSized fetches the UnixFS file c (waiting as ctx says), refusing
// one that declares more than limit bytes.
func (n *Node) fetchSized(ctx context.Context, c cid.Cid, limit int64) (stored, error) {
	if err := n.Store.Fetch(ctx, c, nil); err != nil {
		return stored{}, err
	}
	if _, err := n.Store.DeclaredSize(ctx, c, limit); err != nil {
		return stored{}, fmt.Errorf("%s: %w (at most %d bytes)", c, err, limit)
	}
	return stored{n, c}, nil
}

// randomSeed is a check's seed: this node's own randomness, so no peer
// knows which records it will re-execute.
func randomSeed() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// JobKind says what id names, for fomnet join: "run", "recipe", "gen" (a
// generation job) or "prep" (a split preparation's plan directory).
func (n *Node) JobKind(ctx context.Context, id cid.Cid) (string, error) {
	switch id.Prefix().Codec {
	case cid.DagProtobuf:
		return "prep", nil
	case cid.DagJSON:
		blk, err := n.Store.FetchBlock(withStall(ctx), id)
		if err != nil {
			return "", err
		}
		var head struct {
			Format string `json:"format"`
			Fomnet string `json:"fomnet"`
		}
		json.Unmarshal(blk.RawData(), &head)
		switch {
		case head.Fomnet == gen.SpecFormat:
			return "gen", nil
		case head.Format == RecipeFormat:
			return "recipe", nil
		case head.Format == RunFormat:
			return "run", nil
		}
	}
	return "", fmt.Errorf("%s is not a run, a recipe, a generation job or a preparation plan", id)
}
