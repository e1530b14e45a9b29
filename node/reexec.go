package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Re-executing a contribution. fomnet's arithmetic gives the same bytes
// on every thread count, build and device, so a contribution is checked
// by doing its work again: from the round's base checkpoint (for an
// overlapped contribution, from its start: overlap.go's startOf), the worker
// state it names as its prior (which must be the state its author's
// contribution to the base's round left, if the base included one; else
// none), the shards the schedule assigns its author (which it must list)
// and its author's seed, the run's H inner steps and the encoding give
// its partitions and the state it links, byte for byte — or they do not,
// and the first difference is named. Audits, spot checks and fraud proofs
// all call reexecute.

// Fraud is a contribution that does not follow from its inputs: the work
// it claims was not done as the run's rules say. Detail names the first
// difference.
type Fraud struct {
	Contribution cid.Cid
	Author       peer.ID
	Round        int
	Detail       string
}

func (f *Fraud) Error() string {
	return fmt.Sprintf("contribution %s by %s to round %d: %s", f.Contribution, f.Author, f.Round, f.Detail)
}

// reexecute re-runs contribution k (whose root is c) of round c.Round on
// base, the round's base state (verified by the caller: its checkpoint is
// c's base). It returns nil when the contribution follows from its
// inputs, a *Fraud when it does not, and another error when it could not
// tell (content missing, cancelled).
func (p *Participant) reexecute(ctx context.Context, k cid.Cid, c *Contribution, base *state) error {
	author, err := peer.Decode(c.Peer)
	if err != nil {
		return err
	}
	fraud := func(format string, a ...any) error {
		return &Fraud{Contribution: k, Author: author, Round: c.Round, Detail: fmt.Sprintf(format, a...)}
	}
	if reason, err := p.ru.admit(c, c.Round, base.ck); err != nil {
		return fmt.Errorf("not an input of round %d (%s): %w", c.Round, reason, err)
	}
	// A follower holds the dataset's manifest only until it re-executes.
	if err := p.loadShards(ctx); err != nil {
		return fmt.Errorf("the run's dataset: %w", err)
	}
	m, efs, prev, err := p.priorState(ctx, c, base.rec)
	var start weights
	var members []peer.ID
	if err == nil {
		start, members, err = p.startOf(ctx, c, base, prev)
	}
	if f, ok := isFraud(err); ok {
		f.Contribution = k
	}
	if err != nil {
		return err
	}
	j := p.job(c.Round, author, members)
	if !slices.Equal(j.shards, c.Shards) {
		return fraud("it lists %d shards %s; the schedule assigns its author %d: %s", len(c.Shards), linkList(c.Shards), len(j.shards), linkList(j.shards))
	}
	encs, sent, _, err := p.ru.work(ctx, m, efs, start, c.Round, j, nil)
	if err != nil {
		return fmt.Errorf("re-executing: %w", err)
	}
	p.ru.putVec(sent)
	for i, enc := range encs {
		got, _ := contentstore.BlockCID(contentstore.CodecRaw, enc)
		if want, _ := c.Partitions[i].Cid(); !got.Equals(want) {
			return fraud("partition %d is %s, its inputs give %s%s", i, want, got, p.firstDifference(ctx, i, want, enc))
		}
	}
	got, err := p.workerStateCID(ctx, &workerState{in: m, round: c.Round, efs: efs})
	if err != nil {
		return err
	}
	if want, _ := c.State.Cid(); !got.Equals(want) {
		return fraud("it links worker state %s, its inputs leave %s", want, got)
	}
	return nil
}

// priorState loads the worker state c starts from into this node's
// checking model (allocated once) and a fresh set of residuals. c.Prior
// must be the state its author's contribution to the base's round left
// (rec: the base's record), if that round included one — the one rule of
// workerstate.go; without a prior, the state is fresh. prev is the
// contribution that left it (nil without a prior).
func (p *Participant) priorState(ctx context.Context, c *Contribution, rec *roundRecord) (m *model.Model, efs []*gradsync.ErrorFeedback, prev *Contribution, err error) {
	if err := p.newChecker(); err != nil {
		return nil, nil, nil, err
	}
	if c.Prior == nil {
		return p.checker, p.newResiduals(), nil, p.freshChecker()
	}
	k, _ := c.Prior.Cid()
	ctx = withStall(ctx)
	for _, i := range rec.includedIndices() {
		pk, _ := rec.Contributions[i].Cid()
		b, err := p.n.Store.Block(ctx, pk)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("round %d's contribution %s: %w", rec.Round, pk, err)
		}
		if pc, err := DecodeContribution(b.RawData()); err == nil && pc.Peer == c.Peer && pc.State == *c.Prior {
			prev = pc
			break
		}
	}
	if prev == nil {
		author, _ := peer.Decode(c.Peer)
		return nil, nil, nil, &Fraud{Author: author, Round: c.Round, Detail: fmt.Sprintf(
			"its prior worker state %s is not one its author's contribution to round %d (the base's) left", k, rec.Round)}
	}
	s, err := p.loadWorkerState(ctx, k, p.checker)
	if err != nil {
		return nil, nil, nil, err
	}
	return p.checker, s.efs, prev, nil
}

// newChecker picks the checking model on first use (see
// Participant.checker); freshChecker puts a fresh worker state in its
// moments (loadWorkerState reads a stored one into them). Both drive the
// backend.
func (p *Participant) newChecker() error {
	p.ru.drive.Lock()
	defer p.ru.drive.Unlock()
	if p.checker != nil {
		return nil
	}
	if p.sync.Overlap == "" || p.following {
		err := p.ensureModel()
		p.checker = p.m
		return err
	}
	m, err := p.newModel()
	p.checker = m
	return err
}

// reclaim puts this node's own worker state (p.held) back in its model
// after re-executions borrowed it; one its store cannot give back is
// replaced by a fresh one, as carryState does.
func (p *Participant) reclaim(ctx context.Context) error {
	if !p.lent {
		return nil
	}
	p.ru.drive.Lock()
	err := p.ensureModel()
	p.ru.drive.Unlock()
	if err != nil {
		return err
	}
	if p.held.Defined() {
		err := p.loadHeld(ctx, p.held)
		if err == nil {
			return nil
		}
		p.opts.Logf("run %s: its worker state %s: %v; starting from a fresh one", p.id, p.held, err)
	}
	p.ru.drive.Lock()
	defer p.ru.drive.Unlock()
	return p.holdState(nil, cid.Undef)
}

// checkMemory refuses a run whose memory plan does not fit
// RunOptions.Memory, naming the node's settings that would (the optimizer
// is the run's), or, on a GPU, whose vectors in host memory do not fit
// HostMemory.
func (p *Participant) checkMemory() error {
	in := model.PlanInput{Batch: p.spec.Inner.Batch, Seq: p.spec.Inner.Seq, Micro: p.opts.Micro, Options: p.modelOptions(),
		Swarm: true, SpotChecks: p.spec.SpotCheckShare() > 0, Overlap: p.sync.Overlap != "", Lean: p.opts.Lean, GPU: p.opts.GPU,
		Encoded: int64(p.codec.EncodedLen(int(model.NumParams(p.cfg)))), Contributions: p.opts.Expect, Partitions: p.sync.Partitions,
		Reference: p.spec.dpo(), HostBudget: p.opts.HostMemory}
	in.Workspace = kernels.WorkspaceBytes(p.opts.Backend, model.MatmulRows(p.cfg, in.Tokens()), in.Seq)
	plan, err := model.CheckPlan(p.cfg, in, p.opts.Memory, true)
	if err != nil {
		return fmt.Errorf("run %s: %w", p.id, err)
	}
	if p.opts.GPU && p.opts.HostMemory > 0 && plan.Host > p.opts.HostMemory {
		return fmt.Errorf("run %s: its round vectors need %s of host memory beside the GPU's, more than the %s available",
			p.id, model.Bytes(plan.Host), model.Bytes(p.opts.HostMemory))
	}
	return nil
}

// modelOptions are the run's optimizer and the node's own memory choices.
func (p *Participant) modelOptions() model.Options {
	o := p.spec.ModelOptions()
	o.Recompute, o.OffloadMoments = p.opts.Recompute, p.opts.OffloadMoments
	return o
}

// newModel is a model for this run on the node's backend, with
// modelOptions.
func (p *Participant) newModel() (*model.Model, error) {
	micro := max(1, p.opts.Micro)
	if _, pref := p.spec.Pref(); p.spec.Inner.Batch%micro != 0 || pref && micro > 1 {
		return nil, fmt.Errorf("run %s: %d micro-batches: they must divide the batch of %d, and a preference objective takes whole batches", p.id, micro, p.spec.Inner.Batch)
	}
	return model.NewWith(p.opts.Backend, p.cfg, p.modelOptions())
}

func (p *Participant) freshChecker() error {
	p.ru.drive.Lock()
	defer p.ru.drive.Unlock()
	p.lent = p.lent || p.checker == p.m
	return p.checker.SetOptimState(model.OptimState{})
}

// firstDifference names the first parameter where partition i's block
// want (fetched if this node can) and the re-executed enc decode apart.
func (p *Participant) firstDifference(ctx context.Context, i int, want cid.Cid, enc []byte) string {
	b, err := p.n.Store.Block(withStall(ctx), want)
	if err != nil {
		return ""
	}
	pr := p.parts[i]
	a, g := make([]float32, pr.Size), make([]float32, pr.Size)
	if p.codec.Decode(a, b.RawData()) != nil || p.codec.Decode(g, enc) != nil {
		return " (it does not decode)"
	}
	for j := range a {
		if a[j] != g[j] {
			name, off := model.NewLayout(p.cfg).Locate(pr.Offset + j)
			return fmt.Sprintf(" (first at %s[%d]: %g, re-executed %g)", name, off, a[j], g[j])
		}
	}
	return ""
}

// linkList prints at most a few links.
func linkList(ls []sharding.Link) string {
	var b bytes.Buffer
	for i, l := range ls {
		if i == 3 {
			fmt.Fprintf(&b, " …")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(l.CID)
	}
	return "[" + b.String() + "]"
}

// isFraud reports whether err is a *Fraud (and returns it).
func isFraud(err error) (*Fraud, bool) {
	var f *Fraud
	ok := errors.As(err, &f)
	return f, ok
}
