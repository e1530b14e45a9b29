package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/internal/fsutil"
)

// Auditing a run's lineage: every round transition is recomputed here,
// bit for bit, from the round's base checkpoint and the contributions its
// record lists (the transition every role runs), and the result's CID
// compared with the checkpoint the lineage holds. Each round stands alone
// — its base is read back from the store, not carried over — so one bad
// round does not hide the rounds after it, and --from audits a tail. The
// contributions are fetched where missing and rehashed block by block
// first, so a corrupt block is named, not merely felt as a mismatch. Then
// the contributions the round included — all, or a sample — are
// re-executed (reexec.go): each must follow from its base, its prior
// worker state, its shards and its author's seed.

// AuditRound is one round of an audit.
type AuditRound struct {
	Round         int    `json:"round"`
	Checkpoint    string `json:"checkpoint"`
	Contributions int    `json:"contributions"`
	// Reexecuted: how many of the included contributions were re-executed.
	Reexecuted int     `json:"reexecuted"`
	Sample     float64 `json:"sample"`
	Result     string  `json:"result"` // ok, mismatch, corrupt, missing, refused
	Detail     string  `json:"detail,omitempty"`
	Seconds    float64 `json:"seconds"`
}

// AuditReport is an audit's result. OK holds when every round audited is.
type AuditReport struct {
	Run        string       `json:"run"`
	Checkpoint string       `json:"checkpoint"`
	Rounds     []AuditRound `json:"rounds"`
	OK         bool         `json:"ok"`
}

// AuditOptions configure an audit.
type AuditOptions struct {
	// From is the first round audited (0 or 1: all).
	From int `json:"from,omitempty"`
	// Sample is the share of each round's included contributions
	// re-executed, chosen by a hash of the round's checkpoint and the
	// contribution (1: all; 0: none, the transitions only).
	Sample float64 `json:"sample"`
}

// Audit recomputes every round of the lineage that ends at checkpoint ck
// (or, given a run ID, at the newest checkpoint of the run this node
// holds), from round o.From on, and re-executes o.Sample of its
// contributions, on a CPU backend of all cores, and reports each round;
// progress, if set, counts rounds audited. Its error is for the audit
// failing to run; what it finds is in the report.
func (n *Node) Audit(ctx context.Context, ck cid.Cid, o AuditOptions, progress contentstore.Progress) (*AuditReport, error) {
	if !(o.Sample >= 0 && o.Sample <= 1) {
		return nil, fmt.Errorf("audit: sample %v is not a share between 0 and 1", o.Sample)
	}
	if ck.Prefix().Codec == contentstore.CodecDagJSON { // a run ID
		newest, err := n.newestCheckpoint(ck)
		if err != nil {
			return nil, err
		}
		ck = newest
	}
	chain, err := n.lineageOf(ctx, ck)
	if err != nil {
		return nil, err
	}
	tip := chain[len(chain)-1]
	run, err := tip.rec.Run.Cid()
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint %s: %w", ck, err)
	}
	var rep *AuditReport
	err = n.withChecker(ctx, run, o.Sample > 0, func(p *Participant) (err error) {
		rep, err = p.audit(ctx, ck, chain, o, progress)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return rep, nil
}

// audit is Audit's walk over chain, the lineage of ck.
func (p *Participant) audit(ctx context.Context, ck cid.Cid, chain []lineageLink, o AuditOptions, progress contentstore.Progress) (*AuditReport, error) {
	n := p.n
	rep := &AuditReport{Run: p.id.String(), Checkpoint: ck.String(), Rounds: []AuditRound{}, OK: true}
	resume := n.auditResume(ck)
	done := resume.load()
	from := min(max(o.From, 1), len(chain))
	for i, l := range chain[from-1:] {
		row, ok := done[l.ck.String()]
		if ok = ok && row.Sample == o.Sample; ok {
			row.Detail = "recomputed ok by this audit before it was interrupted"
		} else {
			start := time.Now()
			row = p.auditRound(ctx, l, o.Sample)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			row.Seconds = time.Since(start).Seconds()
			if row.Result == "ok" {
				done[l.ck.String()] = row
				if err := resume.save(done); err != nil {
					return nil, err
				}
			}
		}
		rep.Rounds = append(rep.Rounds, row)
		rep.OK = rep.OK && row.Result == "ok"
		if progress != nil {
			progress(int64(i+1), int64(len(chain)-from+1))
		}
	}
	return rep, resume.remove()
}

// An audit is resumable: the rounds it found ok are kept, by checkpoint
// CID, in HOME/audits/<audited checkpoint>.json until it ends, so an audit
// of the same checkpoint interrupted (killed, cancelled) takes them from
// there instead of recomputing them. A finished audit removes the file:
// the next one recomputes everything. This node's own disk is trusted.
type auditResumeFile string

func (n *Node) auditResume(ck cid.Cid) auditResumeFile {
	return auditResumeFile(filepath.Join(n.Home, "audits", ck.String()+".json"))
}

// maxAuditResume bounds the file read back (a row per round).
const maxAuditResume = 64 << 20

func (f auditResumeFile) load() map[string]AuditRound {
	done := map[string]AuditRound{}
	b, err := os.ReadFile(string(f))
	if err != nil || decodeStrict(b, maxAuditResume, &done) != nil {
		return map[string]AuditRound{} // absent or damaged: recompute
	}
	return done
}

func (f auditResumeFile) save(done map[string]AuditRound) error {
	b, err := json.Marshal(done)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(string(f)), 0o755); err != nil {
		return err
	}
	return fsutil.WriteFile(string(f), b)
}

func (f auditResumeFile) remove() error {
	if err := os.Remove(string(f)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// newestCheckpoint returns the checkpoint of the newest round of run this
// node holds pinned.
func (n *Node) newestCheckpoint(run cid.Cid) (cid.Cid, error) {
	best, newest := -1, cid.Undef
	for _, p := range n.Store.Pins() {
		if r, round, ok := ParseCheckpointPin(p.Name); ok && r == run.String() && round > best {
			best, newest = round, p.CID
		}
	}
	if best < 1 {
		return cid.Undef, fmt.Errorf("audit: this node holds no checkpoint of run %s past its genesis (follow it first: fomnet mirror --follow %s), or give a checkpoint CID", run, run)
	}
	return newest, nil
}

// lineageLink is one round of a lineage: a checkpoint and its record.
type lineageLink struct {
	ck  cid.Cid
	rec *roundRecord
}

// lineageOf reads the round records from checkpoint ck back to round 1,
// oldest first, checking that they form one run's chain.
func (n *Node) lineageOf(ctx context.Context, ck cid.Cid) ([]lineageLink, error) {
	var chain []lineageLink
	for k, want := ck, -1; ; {
		rec, err := n.readRoundRecord(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("audit: round record of %s: %w", k, err)
		}
		switch {
		case want >= 0 && rec.Round != want:
			return nil, fmt.Errorf("audit: checkpoint %s is round %d, its successor says %d", k, rec.Round, want)
		case len(chain) > 0 && rec.Run != chain[0].rec.Run:
			return nil, fmt.Errorf("audit: checkpoint %s is of run %s, its successor of %s", k, rec.Run.CID, chain[0].rec.Run.CID)
		case rec.Round == 0 && len(chain) == 0:
			return nil, fmt.Errorf("audit: %s is a run's genesis: nothing to audit", k)
		case rec.Round == 0:
			return chain, nil
		}
		chain = append([]lineageLink{{k, rec}}, chain...)
		if k, err = rec.Base.Cid(); err != nil {
			return nil, fmt.Errorf("audit: round %d's base: %w", rec.Round, err)
		}
		want = rec.Round - 1
	}
}

// auditRound recomputes one round from its base and re-executes the
// share sample of the contributions it included.
func (p *Participant) auditRound(ctx context.Context, l lineageLink, sample float64) AuditRound {
	r := l.rec.Round
	row := AuditRound{Round: r, Checkpoint: l.ck.String(), Contributions: len(l.rec.Contributions), Sample: sample}
	fail := func(result string, err error) AuditRound {
		row.Result, row.Detail = result, err.Error()
		return row
	}
	for _, c := range l.rec.Contributions {
		k, _ := c.Cid()
		if result, err := p.intact(ctx, k); err != nil {
			return fail(result, fmt.Errorf("contribution %s: %w", k, err))
		}
	}
	base, err := p.auditBase(ctx, l.rec)
	if err != nil {
		return fail("missing", err)
	}
	p.resetInputs()
	next, err := p.replay(ctx, base.own(), l.rec) // base stays for re-execution
	if err != nil {
		return fail("refused", err)
	}
	defer os.RemoveAll(next.dir)
	if !next.ck.Equals(l.ck) {
		return fail("mismatch", fmt.Errorf("its base and contributions give %s", next.ck))
	}
	for _, i := range l.rec.includedIndices() {
		k, _ := l.rec.Contributions[i].Cid()
		if !sampled(l.ck, k, sample) {
			continue
		}
		b, err := p.n.Store.Block(ctx, k)
		if err != nil {
			return fail("missing", fmt.Errorf("contribution %s: %w", k, err))
		}
		c, err := DecodeContribution(b.RawData())
		if err != nil {
			return fail("refused", fmt.Errorf("contribution %s: %w", k, err))
		}
		switch err := p.reexecute(ctx, k, c, base); {
		case err == nil:
			row.Reexecuted++
		case ctx.Err() != nil:
			return fail("missing", ctx.Err())
		default:
			if _, ok := isFraud(err); ok {
				return fail("mismatch", err)
			}
			return fail("missing", fmt.Errorf("re-executing contribution %s: %w", k, err))
		}
	}
	row.Result = "ok"
	return row
}

// auditBase reads round rec's base checkpoint into a state.
func (p *Participant) auditBase(ctx context.Context, rec *roundRecord) (*state, error) {
	bk, err := rec.Base.Cid()
	if err != nil {
		return nil, err
	}
	return p.checkpointState(ctx, bk, rec.Round-1)
}

// checkpointState returns the state of checkpoint bk of round r: one this
// node settled on, else read back from the store (fetched and rehashed
// where needed); round 0's is the run's genesis, computed here and
// compared.
func (p *Participant) checkpointState(ctx context.Context, bk cid.Cid, r int) (*state, error) {
	if s, ok := p.known(bk); ok && s.round == r {
		return s, nil
	}
	if r == 0 {
		g, err := p.writeGenesis(ctx)
		if err != nil {
			return nil, err
		}
		os.RemoveAll(g.dir)
		if !g.ck.Equals(bk) {
			return nil, fmt.Errorf("round 1's base %s is not the run's genesis %s", bk, g.ck)
		}
		g.dir = ""
		return g.own(), nil
	}
	p.scratch++
	dir := filepath.Join(p.opts.Dir, fmt.Sprintf("scratch-base-%06d-%d", r, p.scratch))
	os.RemoveAll(dir)
	defer os.RemoveAll(dir)
	if _, err := p.intact(ctx, bk); err != nil {
		return nil, fmt.Errorf("base %s: %w", bk, err)
	}
	if err := p.n.Store.WriteOut(ctx, bk, dir); err != nil {
		return nil, fmt.Errorf("base %s: %w", bk, err)
	}
	s, err := p.readState(dir)
	if err != nil {
		return nil, fmt.Errorf("base %s: %w", bk, err)
	}
	if s.round != r {
		return nil, fmt.Errorf("base %s is of round %d, not %d", bk, s.round, r)
	}
	s.ck, s.dir = bk, ""
	return s, nil
}

// intact makes the DAG under k whole in this node's store — fetching what
// is missing, until nothing has arrived for a stall — and rehashes every
// block. On failure it says which: "missing" or "corrupt".
func (p *Participant) intact(ctx context.Context, k cid.Cid) (string, error) {
	v, err := p.n.Store.Verify(ctx, k)
	if err != nil {
		return "missing", err
	}
	if len(v.Corrupt) > 0 {
		return "corrupt", errors.New(v.Problem())
	}
	if v.OK() {
		return "", nil
	}
	if err := p.n.Store.Fetch(withStall(ctx), k, nil); err != nil {
		return "missing", err
	}
	if v, err = p.n.Store.Verify(ctx, k); err != nil || !v.OK() {
		return "corrupt", fmt.Errorf("%v%s", err, v.Problem())
	}
	return "", nil
}
