package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The round transition. A round's checkpoint is a pure function of its base
// checkpoint and the contributions its round record lists: per partition,
// gradsync.Aggregate over that partition's inputs, encoded with the run's
// codec and decoded back (as an aggregate travels), then one outer step.
// Every role that accepts a checkpoint — the participants closing a round,
// a node catching up, the vote at the end of a round — recomputes it with
// apply (node/apply.go) from a base it has itself verified and compares
// CIDs; none counts who announced it.

// RoundFormat names round.json's schema.
const RoundFormat = "fomnet-round/3"

// roundRecord is a checkpoint's round.json: what its round did, enough for
// anyone holding the base and the contributions to recompute it.
type roundRecord struct {
	Format string         `json:"format"`
	Run    sharding.Link  `json:"run"`
	Round  int            `json:"round"`
	Base   *sharding.Link `json:"base,omitempty"`
	// Contributions are every contribution an aggregate took as input,
	// sorted by CID.
	Contributions []sharding.Link `json:"contributions"`
	// Aggregates: one per partition.
	Aggregates []aggregateRecord `json:"aggregates"`
	// Shards the included contributions trained on, sorted.
	Shards []sharding.Link `json:"shards"`
	// Participants are the included contributions' authors, sorted: the
	// members who order the next round's reducers.
	Participants []string `json:"participants"`
	// Rejected: why inputs were left out of an aggregate (contribution
	// CID → partition → reason), as gradsync.Aggregate decided.
	Rejected map[string]map[int]string `json:"rejected,omitempty"`
	// Excluded are the peers a fraud proof convicted (fraud.go), sorted:
	// the base's, and those proven during the round. Their contributions
	// are not inputs of the rounds after.
	Excluded []exclusion `json:"excluded,omitempty"`
}

// exclusion is a peer convicted of fraud and the proof (a
// fomnet-fraud/1 block) anyone can re-check.
type exclusion struct {
	Peer  string        `json:"peer"`
	Proof sharding.Link `json:"proof"`
}

// excludes says whether rec excludes author from the rounds after it.
func (rec *roundRecord) excludes(author string) bool {
	for _, e := range rec.Excluded {
		if e.Peer == author {
			return true
		}
	}
	return false
}

// members are the peers whose contributions rec's round included, less
// those it excludes: who orders the next round's reducers, shares its data
// and is waited for.
func (rec *roundRecord) members() []peer.ID {
	var out []peer.ID
	for _, id := range toPeerIDs(rec.Participants) {
		if !rec.excludes(id.String()) {
			out = append(out, id)
		}
	}
	return out
}

// newRoundRecord is round r's record of run with nothing in it yet (its
// lists empty, not absent, so every record encodes alike).
func newRoundRecord(run cid.Cid, r int) *roundRecord {
	return &roundRecord{Format: RoundFormat, Run: sharding.LinkTo(run), Round: r, Contributions: []sharding.Link{},
		Aggregates: []aggregateRecord{}, Shards: []sharding.Link{}, Participants: []string{}}
}

// aggregateRecord is one partition's aggregate: its block, and the
// contributions (indices into roundRecord.Contributions, ascending) it
// took as input and included.
type aggregateRecord struct {
	CID      sharding.Link `json:"cid"`
	Inputs   []int         `json:"inputs"`
	Included []int         `json:"included"`
}

// Reasons a node leaves something out, counted per participant
// (Participant.Rejections) beside gradsync's aggregation reasons.
const (
	RejectRound      = "wrong_round"       // a contribution for another run, round or base
	RejectShape      = "wrong_shape"       // params, partitions or codec not the run's
	RejectSpecTokens = "tokens_not_spec"   // a token count other than the spec's for the round
	RejectFetch      = "not_fetched"       // not fetched within its deadline and budget
	RejectAggregate  = "aggregate_wrong"   // an aggregate that does not follow from its inputs
	RejectCandidate  = "checkpoint_wrong"  // a checkpoint that does not follow from its record
	RejectLineage    = "lineage_unknown"   // a checkpoint whose lineage is not this run's
	RejectNonFinite  = "weights_nonfinite" // a round whose outer step left non-finite weights
	RejectCopied     = gradsync.RejectCopy // a partition that (scaled) copies another input's
	RejectZero       = gradsync.RejectZero // an all-zero partition where others are not
	RejectExcluded   = "author_excluded"   // a contribution by a peer a fraud proof convicted
	RejectFalseProof = "fraud_proof_false" // a fraud proof whose contribution follows from its inputs
)

// RoundTokens is the token count every contribution to round r (from 1)
// trains and must declare: the round's H inner steps of batch × seq.
func (s *RunSpec) RoundTokens(r int) int64 {
	return int64(s.Sync.RoundH(r-1)) * int64(s.Inner.Batch) * int64(s.Inner.Seq)
}

// rules are a run's fixed parameters of the round transition.
type rules struct {
	run   cid.Cid
	spec  *RunSpec
	sync  gradsync.Config
	codec gradsync.Codec
	parts []gradsync.Range
	cfg   model.Config
	n     int // parameters
	micro int // micro-batches a step (RunOptions.Micro; at least 1)
	// lean: the node keeps no vector beyond its use (RunOptions.Lean):
	// work encodes Δ a partition at a time (encodeParts), so the vectors
	// of vec and putVec are never a lean node's.
	lean bool
	// memo keeps this round's aggregates by partition and inputs: a
	// reducer's own, then its check of the same and the transition's,
	// are computed once. It changes no result; forget empties it. memoMu
	// guards it (evidence is checked beside the rounds).
	memoMu sync.Mutex
	memo   map[string]aggregated
	// drive: one goroutine drives the backend at a time (work).
	drive sync.Mutex
	// vecs keeps vectors of n parameters for work's Δ and the next start
	// (vec, putVec): between one round's steps and the next's, allocating
	// them afresh cost more than the arithmetic on them.
	vecs sync.Pool
	// refWeights are a DPO run's reference (its stage base's weights);
	// refs the reference model built from them on each backend.
	refWeights []float32
	refMu      sync.Mutex
	refs       map[kernels.Backend]*model.Model
}

// vec is a vector of the run's n parameters, its contents unspecified.
func (ru *rules) vec() []float32 {
	if v, ok := ru.vecs.Get().(*[]float32); ok && len(*v) == ru.n {
		return *v
	}
	return make([]float32, ru.n)
}

// putVec hands v back for vec to give out again; v is not used after.
func (ru *rules) putVec(v []float32) {
	if len(v) == ru.n {
		ru.vecs.Put(&v)
	}
}

// weights are where a contribution's steps start, or the weights a model
// is evaluated with: a vector in memory, or a checkpoint's weights file
// (a lean participant's; a checkpoint in the store, open), read a piece at
// a time each time it is used.
type weights struct {
	v    []float32
	file string
	open *model.WeightsFile
}

// scan hands f w's values a piece at a time, in order, with each piece's
// offset (a vector in memory: one piece; a file: model.ScanWeightsFile's).
func (ru *rules) scan(w weights, f func(off int, v []float32) error) error {
	switch {
	case w.v != nil:
		return f(0, w.v)
	case w.open != nil:
		return w.open.Scan(f)
	}
	return model.ScanWeightsFile(ru.cfg, w.file, f)
}

// upload puts w in buffer dst of m's backend.
func (ru *rules) upload(be kernels.Backend, dst kernels.Buffer, w weights) error {
	return ru.scan(w, func(off int, v []float32) error {
		be.Upload(be.View(dst, off, len(v)), v)
		return nil
	})
}

// pseudoGradient turns local, the weights after a contribution's steps,
// into its Δ = w − local, in place (gradsync.PseudoGradient, a piece at a
// time where w is a file: the same bits).
func (ru *rules) pseudoGradient(local []float32, w weights) error {
	return ru.scan(w, func(off int, v []float32) error {
		d := local[off : off+len(v)]
		gradsync.PseudoGradient(d, v, d)
		return nil
	})
}

// encodeParts is a lean participant's end of work: Δ = start − params,
// downloaded and encoded (each partition with its residuals) a partition
// at a time as start is read, so that no more than one partition's Δ is
// ever held — the same bits as work's whole Δ. Only rounds that overlap
// need the whole Δ, and lean ones never do. download runs on the backend
// (work's drive).
func (ru *rules) encodeParts(be kernels.Backend, params kernels.Buffer, efs []*gradsync.ErrorFeedback, start weights, download func(func() error) error) ([][]byte, error) {
	encs := make([][]byte, len(ru.parts))
	size := 0
	for _, pr := range ru.parts {
		size = max(size, pr.Size)
	}
	d := make([]float32, size)
	pi, next := 0, 0
	err := ru.scan(start, func(off int, v []float32) error {
		if off != next {
			return fmt.Errorf("weights at %d, then at %d", next, off)
		}
		for next = off + len(v); len(v) > 0; {
			pr := ru.parts[pi]
			k := min(len(v), pr.Offset+pr.Size-off)
			local := d[off-pr.Offset : off-pr.Offset+k]
			download(func() error { be.Download(local, be.View(params, off, k)); return nil })
			gradsync.PseudoGradient(local, v[:k], local)
			if off+k == pr.Offset+pr.Size {
				encs[pi] = efs[pi].EncodeSent(make([]byte, 0, ru.codec.EncodedLen(pr.Size)), d[:pr.Size])
				pi++
			}
			off, v = off+k, v[k:]
		}
		return nil
	})
	return encs, err
}

type aggregated struct {
	enc []byte
	k   cid.Cid
	rep gradsync.AggReport
	err error
}

// forget empties the memo (each round, and beyond a bound).
func (ru *rules) forget() {
	ru.memoMu.Lock()
	ru.memo = nil
	ru.memoMu.Unlock()
}

// admit says whether contribution c may be an input of round r on base:
// the run's, for that round and base, in the run's shape and codec,
// declaring the spec's token count, and naming a start other than the base
// only where the run overlaps rounds. It is the one place this rule lives
// (whether the start is the right one, like the prior, is for a
// re-execution to say: overlap.go).
func (ru *rules) admit(c *Contribution, r int, base cid.Cid) (reason string, err error) {
	switch {
	case c.Run.CID != ru.run.String() || c.Round != r || c.Base.CID != base.String():
		return RejectRound, fmt.Errorf("contribution for run %s round %d base %s, not round %d on %s", c.Run.CID, c.Round, c.Base.CID, r, base)
	case c.Params != ru.n || len(c.Partitions) != len(ru.parts) || c.Codec != ru.sync.Codec:
		return RejectShape, fmt.Errorf("contribution of %d parameters in %d partitions (%s), the run has %d in %d (%s)",
			c.Params, len(c.Partitions), c.Codec, ru.n, len(ru.parts), ru.sync.Codec)
	case c.Tokens != ru.spec.RoundTokens(r):
		return RejectSpecTokens, fmt.Errorf("contribution declares %d tokens; round %d trains %d", c.Tokens, r, ru.spec.RoundTokens(r))
	case c.Start != nil && ru.sync.Overlap == "":
		return RejectRound, fmt.Errorf("contribution started from %s, not its base, in a run without overlapped rounds", c.Start.CID)
	}
	return "", nil
}

// peerSeed is the seed of author's batches: a copy of another's
// contribution under one's own name re-executes to other bytes.
func peerSeed(seed uint64, id peer.ID) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return seed ^ h.Sum64()
}

// job is one contribution's work in a round: whose (the seed), on which
// rows (those of shards), how many inner steps.
type job struct {
	author peer.ID
	data   *model.Corpus
	shards []sharding.Link
	steps  int
	// busy, if set, adds up the time the steps hold the backend, as they go.
	busy *atomic.Int64
}

// job is author's job in round r of a run whose base has members.
func (p *Participant) job(r int, author peer.ID, members []peer.ID) job {
	data, shards := p.roundData(r, author, members)
	return job{author: author, data: data, shards: shards, steps: p.sync.RoundH(r - 1)}
}

// work is a contribution's computation, the one every role runs: j's
// inner steps of round r on m from start (m's moments and step, and efs,
// hold the worker state it starts from), on j's rows with its author's
// seed, then Δ = start − local encoded partition by partition with error
// feedback; sent is what the partitions decode to (the caller's, which
// may hand it back with putVec; nil for a lean node). m and efs are left in
// the state after the round. step, if set, hears of each inner step. It drives the backend a step at a time
// (ru.drive), so a contribution trained in the background and a
// re-execution take turns; busy is the time it held it.
func (ru *rules) work(ctx context.Context, m *model.Model, efs []*gradsync.ErrorFeedback, start weights, r int, j job,
	step func(s, H int, loss float32)) (encs [][]byte, sent []float32, busy time.Duration, err error) {
	H, first, data := j.steps, ru.sync.RoundStart(r-1), j.data
	tc := ru.spec.TrainConfig()
	be := m.Backend()
	drive := func(f func() error) error {
		ru.drive.Lock()
		defer ru.drive.Unlock()
		t := time.Now()
		defer func() {
			d := time.Since(t)
			if busy += d; j.busy != nil {
				j.busy.Add(int64(d))
			}
		}()
		return f()
	}
	if err := drive(func() error { return ru.upload(be, m.Params, start) }); err != nil {
		return nil, nil, 0, fmt.Errorf("its start: %w", err)
	}
	B, T := ru.spec.Inner.Batch, ru.spec.Inner.Seq
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	seed := peerSeed(ru.spec.Seed, j.author)
	var loss func(tokens, targets []int32, b, t int) (float32, error)
	if err := drive(func() (err error) { loss, err = ru.objective(m); return err }); err != nil {
		return nil, nil, 0, err
	}
	for s := 0; s < H; s++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, 0, err
		}
		if err := data.Batch(seed, first+s, B, T, tokens, targets); err != nil {
			return nil, nil, 0, err
		}
		var l float32
		if err := drive(func() (err error) {
			m.ZeroGrad()
			if l, err = loss(tokens, targets, B, T); err != nil {
				return err
			}
			_, err = m.Step(tc.Schedule.LR(first+s), tc.Optim)
			return err
		}); err != nil {
			return nil, nil, 0, err
		}
		if step != nil {
			step(s+1, H, l)
		}
	}
	if ru.lean {
		encs, err := ru.encodeParts(be, m.Params, efs, start, drive)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("its start: %w", err)
		}
		return encs, nil, busy, nil
	}
	delta := ru.vec()
	drive(func() error { be.Download(delta, m.Params); return nil })
	if err := ru.pseudoGradient(delta, start); err != nil { // in place: local → Δ
		return nil, nil, 0, fmt.Errorf("its start: %w", err)
	}
	// Partitions encode apart (each with its own residuals): on every core,
	// as the next round's steps wait on them where rounds overlap.
	encs = make([][]byte, len(ru.parts))
	var wg sync.WaitGroup
	for i, pr := range ru.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			encs[i] = efs[i].EncodeSent(make([]byte, 0, ru.codec.EncodedLen(pr.Size)), delta[pr.Offset:pr.Offset+pr.Size])
		}()
	}
	wg.Wait()
	return encs, delta, busy, nil // Δ, encoded, as sent
}

// objective is the run's inner loss on m, its gradient added to m's:
// cross-entropy, in the node's micro-batches (the same bits whatever their
// number), or a preference objective (DPO against the reference: the stage
// base's weights on m's backend).
func (ru *rules) objective(m *model.Model) (func(tokens, targets []int32, b, t int) (float32, error), error) {
	pc, ok := ru.spec.Pref()
	if !ok {
		return func(tokens, targets []int32, b, t int) (float32, error) {
			return m.Accumulate(tokens, targets, b, t, max(1, ru.micro))
		}, nil
	}
	var ref *model.Model
	if pc.Objective == model.ObjectiveDPO {
		var err error
		if ref, err = ru.reference(m.Backend()); err != nil {
			return nil, err
		}
	}
	return func(tokens, targets []int32, b, t int) (float32, error) {
		st, err := m.PreferenceForward(ref, tokens, targets, b, t, pc, true)
		if err != nil {
			return 0, err
		}
		return float32(st.Loss), m.Backward()
	}, nil
}

// reference is the frozen reference model of a DPO run on backend be:
// the stage base's weights, built once per backend.
func (ru *rules) reference(be kernels.Backend) (*model.Model, error) {
	ru.refMu.Lock()
	defer ru.refMu.Unlock()
	if m := ru.refs[be]; m != nil {
		return m, nil
	}
	if ru.refWeights == nil {
		return nil, errors.New("run: DPO without the stage base's weights")
	}
	cfg, err := ru.spec.ModelConfig()
	if err != nil {
		return nil, err
	}
	m, err := model.NewFrozen(be, cfg)
	if err != nil {
		return nil, err
	}
	be.Upload(m.Params, ru.refWeights)
	if ru.refs == nil {
		ru.refs = map[kernels.Backend]*model.Model{}
	}
	ru.refs[be] = m
	return m, nil
}

// input is a contribution admitted to a round: its CID, root and the
// encoded bytes of each partition.
type input struct {
	cid   cid.Cid
	c     *Contribution
	parts [][]byte
}

// errRejected carries a counted reason.
type errRejected struct {
	reason string
	err    error
}

func (e *errRejected) Error() string { return e.err.Error() }
func (e *errRejected) Unwrap() error { return e.err }

func rejected(reason string, err error) error { return &errRejected{reason, err} }

// reasonOf returns the counted reason of err ("" when it has none).
func reasonOf(err error) string {
	var r *errRejected
	if errors.As(err, &r) {
		return r.reason
	}
	return ""
}

// maxFetchWait bounds one fetch a peer's message makes this node do.
const maxFetchWait = 30 * time.Second

// fetchWait is how long a fetch named by a peer may take: the round
// deadline, at most maxFetchWait.
func (ru *rules) fetchWait() time.Duration { return min(ru.sync.RoundDeadline, maxFetchWait) }

// fetchInput fetches contribution k for round r on base and admits it:
// its root (at most 1 MiB) and every partition, each exactly the size the
// run's codec gives its partition, within fetchWait.
func (ru *rules) fetchInput(ctx context.Context, st *contentstore.Store, k cid.Cid, r int, base cid.Cid) (*input, error) {
	if k.Prefix().Codec != contentstore.CodecDagJSON {
		return nil, rejected(RejectShape, fmt.Errorf("contribution %s is not a dag-json block", k))
	}
	ctx, cancel := context.WithTimeout(ctx, ru.fetchWait())
	defer cancel()
	b, err := st.Block(ctx, k)
	if err != nil {
		return nil, rejected(RejectFetch, fmt.Errorf("contribution %s: %w", k, err))
	}
	c, err := DecodeContribution(b.RawData())
	if err != nil {
		return nil, rejected(RejectShape, fmt.Errorf("contribution %s: %w", k, err))
	}
	if reason, err := ru.admit(c, r, base); err != nil {
		return nil, rejected(reason, fmt.Errorf("contribution %s: %w", k, err))
	}
	parts, err := ru.fetchParts(ctx, st, k, c)
	if err != nil {
		return nil, err
	}
	return &input{cid: k, c: c, parts: parts}, nil
}

// fetchParts fetches contribution k's partitions at once (one at a time,
// bitswap's round trip per block left the link idle about half the time)
// and checks their sizes; the first to fail stops the others and is the
// error.
func (ru *rules) fetchParts(ctx context.Context, st *contentstore.Store, k cid.Cid, c *Contribution) ([][]byte, error) {
	parts := make([][]byte, len(ru.parts))
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var once sync.Once
	var first error
	fail := func(err error) { once.Do(func() { first = err; stop() }) }
	var wg sync.WaitGroup
	for i, l := range c.Partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pk, _ := l.Cid()
			pb, err := st.Block(ctx, pk)
			switch want := ru.codec.EncodedLen(ru.parts[i].Size); {
			case err != nil:
				fail(rejected(RejectFetch, fmt.Errorf("contribution %s partition %d: %w", k, i, err)))
			case len(pb.RawData()) != want:
				fail(rejected(RejectShape, fmt.Errorf("contribution %s partition %d: %d bytes, the codec gives %d", k, i, len(pb.RawData()), want)))
			default:
				parts[i] = pb.RawData()
			}
		}()
	}
	wg.Wait()
	return parts, first
}

// aggregate computes partition pi's aggregate of ins (in any order): the
// encoded block as it travels, its CID, and the inputs it included. A
// partition that fails to decode is left out as gradsync leaves out
// non-finite values (and copies, and zero updates).
func (ru *rules) aggregate(pi int, ins []*input) (enc []byte, k cid.Cid, rep gradsync.AggReport, err error) {
	key := make([]string, 0, len(ins)+1)
	for _, in := range ins {
		key = append(key, in.cid.String())
	}
	sort.Strings(key)
	key = append(key, fmt.Sprint(pi))
	id := strings.Join(key, " ")
	ru.memoMu.Lock()
	a, ok := ru.memo[id]
	ru.memoMu.Unlock()
	if ok {
		return a.enc, a.k, a.rep, a.err
	}
	enc, k, rep, err = ru.aggregateOnce(pi, ins)
	ru.memoMu.Lock()
	defer ru.memoMu.Unlock()
	if ru.memo == nil || len(ru.memo) >= 4*len(ru.parts) {
		ru.memo = map[string]aggregated{}
	}
	ru.memo[id] = aggregated{enc, k, rep, err}
	return enc, k, rep, err
}

func (ru *rules) aggregateOnce(pi int, ins []*input) (enc []byte, k cid.Cid, rep gradsync.AggReport, err error) {
	pr := ru.parts[pi]
	cs := make([]gradsync.Contribution, 0, len(ins))
	bad := map[string]string{}
	// gradsync.Aggregate leaves out copies (the same block, or scaled)
	// and zero updates.
	for _, in := range ins {
		d := make([]float32, pr.Size)
		if err := ru.codec.Decode(d, in.parts[pi]); err != nil {
			bad[in.cid.String()] = gradsync.RejectNonFinite
			continue
		}
		// Every admitted contribution declares the spec's count: equal
		// weights, whatever a peer claims.
		cs = append(cs, gradsync.Contribution{ID: in.cid.String(), Tokens: in.c.Tokens, Delta: d})
	}
	out := make([]float32, pr.Size)
	rep, ok := gradsync.Aggregate(ru.sync, out, cs)
	for id, why := range bad {
		rep.Rejected[id] = why
	}
	if !ok {
		return nil, cid.Undef, rep, fmt.Errorf("partition %d: %d of %d inputs usable, quorum %d", pi, len(rep.Included), len(ins), ru.sync.Quorum)
	}
	enc = ru.codec.Encode(nil, out)
	k, err = contentstore.BlockCID(contentstore.CodecRaw, enc)
	return enc, k, rep, err
}

// roundInput is what a round's transition takes besides its base state:
// the contributions, per partition those it aggregates, and the
// exclusions its record lists (the base's and the round's own, sorted by
// peer; checked by the caller).
type roundInput struct {
	ins      []*input // by CID
	inputs   [][]int  // per partition: indices into ins, ascending
	excluded []exclusion
}

// newRoundInput collects per-partition input lists of contributions into
// one sorted set.
func newRoundInput(perPart [][]*input) roundInput {
	byCID := map[string]*input{}
	for _, ins := range perPart {
		for _, in := range ins {
			byCID[in.cid.String()] = in
		}
	}
	var ri roundInput
	for _, in := range byCID {
		ri.ins = append(ri.ins, in)
	}
	sort.Slice(ri.ins, func(i, j int) bool { return ri.ins[i].cid.String() < ri.ins[j].cid.String() })
	idx := map[string]int{}
	for i, in := range ri.ins {
		idx[in.cid.String()] = i
	}
	for _, ins := range perPart {
		var l []int
		for _, in := range ins {
			l = append(l, idx[in.cid.String()])
		}
		sort.Ints(l)
		l = compactInts(l)
		ri.inputs = append(ri.inputs, l)
	}
	return ri
}

func compactInts(l []int) []int {
	out := l[:0]
	for i, v := range l {
		if i == 0 || v != l[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// aggregates is the first half of round r's transition on base (apply
// the second): its record and its encoded aggregates, from the inputs in
// ri. Same inputs: the same bytes, in any order of arrival.
func (ru *rules) aggregates(r int, base cid.Cid, ri roundInput) (*roundRecord, [][]byte, error) {
	if len(ri.inputs) != len(ru.parts) {
		return nil, nil, fmt.Errorf("round %d: inputs for %d partitions, the run has %d", r, len(ri.inputs), len(ru.parts))
	}
	rec := newRoundRecord(ru.run, r)
	if base.Defined() {
		l := sharding.LinkTo(base)
		rec.Base = &l
	}
	for _, in := range ri.ins {
		rec.Contributions = append(rec.Contributions, sharding.LinkTo(in.cid))
	}
	idx := map[string]int{}
	for i, in := range ri.ins {
		idx[in.cid.String()] = i
	}
	encs := make([][]byte, len(ru.parts))
	included := map[int]bool{}
	for pi := range ru.parts {
		ins := make([]*input, 0, len(ri.inputs[pi]))
		for _, i := range ri.inputs[pi] {
			if i < 0 || i >= len(ri.ins) {
				return nil, nil, fmt.Errorf("round %d partition %d: input %d of %d", r, pi, i, len(ri.ins))
			}
			ins = append(ins, ri.ins[i])
		}
		enc, k, rep, err := ru.aggregate(pi, ins)
		if err != nil {
			return nil, nil, fmt.Errorf("round %d: %w", r, err)
		}
		ar := aggregateRecord{CID: sharding.LinkTo(k), Inputs: ri.inputs[pi], Included: []int{}}
		for _, id := range rep.Included {
			ar.Included = append(ar.Included, idx[id])
			included[idx[id]] = true
		}
		sort.Ints(ar.Included)
		for id, why := range rep.Rejected {
			if rec.Rejected == nil {
				rec.Rejected = map[string]map[int]string{}
			}
			if rec.Rejected[id] == nil {
				rec.Rejected[id] = map[int]string{}
			}
			rec.Rejected[id][pi] = why
		}
		rec.Aggregates = append(rec.Aggregates, ar)
		encs[pi] = enc
	}
	shards, who := map[string]bool{}, map[string]bool{}
	for i := range included {
		for _, l := range ri.ins[i].c.Shards {
			shards[l.CID] = true
		}
		who[ri.ins[i].c.Peer] = true
	}
	for _, s := range sortedKeys(shards) {
		rec.Shards = append(rec.Shards, sharding.Link{CID: s})
	}
	rec.Participants = append(rec.Participants, sortedKeys(who)...)
	rec.Excluded = ri.excluded
	return rec, encs, nil
}

// outerStep applies the round's aggregates encs to global and outer, a
// partition at a time (the outer step is elementwise: the same bits as one
// step over the whole vector, holding one partition's Δ), and refuses a
// non-finite weight (global and outer are then unusable).
func (ru *rules) outerStep(global []float32, outer *gradsync.OuterOptimizer, r int, encs [][]byte) error {
	if len(global) != ru.n || len(outer.Buf) != ru.n {
		return fmt.Errorf("round %d: a state of %d weights, the run has %d", r, len(global), ru.n)
	}
	var delta []float32
	for pi, pr := range ru.parts {
		delta = slices.Grow(delta[:0], pr.Size)[:pr.Size]
		if err := ru.stepPart(r, pi, global[pr.Offset:pr.Offset+pr.Size], outer.Slice(pr.Offset, pr.Size), encs[pi], delta); err != nil {
			return err
		}
	}
	return nil
}

// stepPart applies partition pi's aggregate enc to its weights w and its
// momentum o in one outer step (decoding into delta), and refuses a
// non-finite weight; with w nil, to the momentum alone (Advance: the same
// bits).
func (ru *rules) stepPart(r, pi int, w []float32, o *gradsync.OuterOptimizer, enc []byte, delta []float32) error {
	if err := ru.codec.Decode(delta, enc); err != nil {
		return fmt.Errorf("round %d partition %d: own aggregate: %w", r, pi, err)
	}
	if w == nil {
		o.Advance(delta)
		return nil
	}
	o.Step(w, delta)
	for i, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return rejected(RejectNonFinite, fmt.Errorf("round %d: weight %d is %v after the outer step", r, ru.parts[pi].Offset+i, v))
		}
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// decodeRoundRecord parses round.json strictly: known fields only, one
// JSON value, this format, every link a CID, participants peer IDs, rounds
// from 0, contributions sorted and unique, each aggregate's indices
// ascending and in range.
func decodeRoundRecord(b []byte) (*roundRecord, error) {
	var rec roundRecord
	if err := decodeStrict(b, maxRoundRecord, &rec); err != nil {
		return nil, fmt.Errorf("round.json: %w", err)
	}
	if rec.Round < 0 {
		return nil, fmt.Errorf("round.json: round %d", rec.Round)
	}
	if rec.Format != RoundFormat {
		return nil, fmt.Errorf("round.json: format %q, want %q", rec.Format, RoundFormat)
	}
	links := append(append([]sharding.Link{rec.Run}, rec.Contributions...), rec.Shards...)
	for _, a := range rec.Aggregates {
		links = append(links, a.CID)
	}
	if rec.Base != nil {
		links = append(links, *rec.Base)
	}
	for _, l := range links {
		if _, err := l.Cid(); err != nil {
			return nil, fmt.Errorf("round.json: link %q is not a CID", l.CID)
		}
	}
	for _, p := range rec.Participants {
		if _, err := peer.Decode(p); err != nil {
			return nil, fmt.Errorf("round.json: participant %q: %v", p, err)
		}
	}
	for i, e := range rec.Excluded {
		if _, err := peer.Decode(e.Peer); err != nil {
			return nil, fmt.Errorf("round.json: excluded %q: %v", e.Peer, err)
		}
		if _, err := e.Proof.Cid(); err != nil {
			return nil, fmt.Errorf("round.json: proof against %s: %v", e.Peer, err)
		}
		if i > 0 && e.Peer <= rec.Excluded[i-1].Peer {
			return nil, fmt.Errorf("round.json: excluded peers not sorted and unique")
		}
	}
	if len(rec.Excluded) > MaxParticipants {
		return nil, fmt.Errorf("round.json: %d exclusions, at most %d", len(rec.Excluded), MaxParticipants)
	}
	if len(rec.Contributions) > MaxParticipants {
		return nil, fmt.Errorf("round.json: %d contributions, at most %d", len(rec.Contributions), MaxParticipants)
	}
	for i, l := range rec.Contributions {
		if i > 0 && l.CID <= rec.Contributions[i-1].CID {
			return nil, fmt.Errorf("round.json: contributions not sorted and unique")
		}
	}
	for pi, a := range rec.Aggregates {
		for what, l := range map[string][]int{"inputs": a.Inputs, "included": a.Included} {
			for i, j := range l {
				if j < 0 || j >= len(rec.Contributions) || (i > 0 && j <= l[i-1]) {
					return nil, fmt.Errorf("round.json: aggregate %d: %s not ascending indices of the %d contributions", pi, what, len(rec.Contributions))
				}
			}
		}
	}
	return &rec, nil
}

// includedCount is how many contributions a round included (fork choice).
func (rec *roundRecord) includedCount() int { return len(rec.includedIndices()) }

// includedIndices are the contributions (indices into Contributions,
// ascending) some aggregate included.
func (rec *roundRecord) includedIndices() []int {
	inc := map[int]bool{}
	for _, a := range rec.Aggregates {
		for _, i := range a.Included {
			inc[i] = true
		}
	}
	out := make([]int, 0, len(inc))
	for i := range inc {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

// marshal is round.json's bytes.
func (rec *roundRecord) marshal() ([]byte, error) {
	b, err := json.MarshalIndent(rec, "", "  ")
	return append(b, '\n'), err
}
