package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Overlapped rounds (gradsync.Config.Overlap "local"). A node need not
// idle while a round closes: once its contribution to round r is out, it
// trains round r+1 in the background from the checkpoint round r started
// from (round r's base) less its own round-r Δ as decoded, carrying the
// worker state that contribution left. The contribution it then makes to
// round r+1 names that checkpoint as its Start beside the Base it is
// applied to (checkpoint r, one round late) and its round-r state as its
// Prior, so the start is rebuilt from public objects and re-executed like
// any other: the round transition, fork choice and checkpoints do not
// change, and every node computes the same CID from the same inputs.
//
// The one rule, which startOf holds: an overlapped contribution's Start
// is its base's base; its steps start there less the partitions of the
// contribution whose state is its Prior (the author's, which the base's
// round included, as for every prior), or there alone without a prior;
// the schedule assigns it the shards of the Start's members. If round r
// does not include the node's contribution (a straggler dropped, a fork
// adopted), the steps running ahead no longer follow that rule: they are
// dropped, the worker state restored, and round r+1 trained from its base.

// ahead is a contribution's inner steps running in the background.
type ahead struct {
	round int
	start cid.Cid   // the checkpoint they started from
	began time.Time // when they did
	// prior is the worker state they started from (cid.Undef: fresh); train
	// sets it once hashed, after the steps began.
	prior  cid.Cid
	j      job
	cancel context.CancelFunc
	done   chan struct{}
	// Set once done is closed.
	encs [][]byte
	sent []float32 // what encs decode to
	busy time.Duration
	err  error
}

// overlapStart returns where an overlapped contribution's steps start:
// from, a checkpoint's weights, less prior (its author's contribution, as
// encoded partitions) decoded; nil prior leaves from as it is. A prior
// that does not decode is an error: an admitted contribution always does.
// Its author may pass decoded, what prior decodes to, as it encoded it
// (gradsync.ErrorFeedback.EncodeSent): the same start without decoding,
// computed in decoded's place.
func (ru *rules) overlapStart(from []float32, prior [][]byte, decoded []float32) ([]float32, error) {
	if decoded != nil {
		for k, v := range decoded {
			decoded[k] = from[k] - v
		}
		return decoded, nil
	}
	start := append([]float32(nil), from...)
	if prior == nil {
		return start, nil
	}
	if len(prior) != len(ru.parts) {
		return nil, fmt.Errorf("prior contribution of %d partitions, the run has %d", len(prior), len(ru.parts))
	}
	errs := make([]error, len(ru.parts))
	var wg sync.WaitGroup
	for i, pr := range ru.parts { // apart, on every core, as steps wait on it
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := make([]float32, pr.Size)
			if err := ru.codec.Decode(d, prior[i]); err != nil {
				errs[i] = fmt.Errorf("prior contribution's partition %d: %w", i, err)
				return
			}
			for k, v := range d {
				start[pr.Offset+k] -= v
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return start, nil
}

// startOf returns the weights contribution c's inner steps start from and
// the members whose schedule assigns its shards: the base's, or for an
// overlapped contribution the Start's (prev: the contribution whose state
// c names as its prior, nil for none). A Start other than the base's base
// is a *Fraud: the work does not follow the run's rules.
func (p *Participant) startOf(ctx context.Context, c *Contribution, base *state, prev *Contribution) (weights, []peer.ID, error) {
	if c.Start == nil {
		return base.weights(), base.rec.members(), nil
	}
	author, _ := peer.Decode(c.Peer)
	if base.rec.Base == nil || *c.Start != *base.rec.Base {
		return weights{}, nil, &Fraud{Author: author, Round: c.Round, Detail: fmt.Sprintf(
			"it started from %s; an overlapped contribution to round %d starts from its base's base", c.Start.CID, c.Round)}
	}
	sk, _ := c.Start.Cid()
	from, err := p.checkpointState(ctx, sk, base.round-1)
	if err == nil {
		from, err = p.loaded(from)
	}
	if err != nil {
		return weights{}, nil, fmt.Errorf("its start: %w", err)
	}
	var parts [][]byte
	if prev != nil {
		for i, l := range prev.Partitions {
			k, _ := l.Cid()
			b, err := p.n.Store.Block(withStall(ctx), k)
			if err != nil {
				return weights{}, nil, fmt.Errorf("its prior contribution's partition %d: %w", i, err)
			}
			parts = append(parts, b.RawData())
		}
	}
	start, err := p.ru.overlapStart(from.global, parts, nil)
	if err != nil {
		return weights{}, nil, &Fraud{Author: author, Round: c.Round, Detail: err.Error()}
	}
	return weights{v: start}, from.rec.members(), nil
}

// trainAhead starts round r+1's inner steps in the background, from the
// base less this node's round-r contribution own (its encoded partitions;
// sent, if not nil, is what they decode to, which spares decoding them on
// the way from one round's steps to the next; trainAhead takes it over),
// when the run overlaps rounds and this node runs round r+1. The caller
// has taken the worker state the round-r steps left.
func (p *Participant) trainAhead(ctx context.Context, r int, own [][]byte, sent []float32) error {
	if p.sync.Overlap == "" || r >= p.upto {
		p.ru.putVec(sent)
		return nil
	}
	start, err := p.ru.overlapStart(p.global, own, sent)
	if err != nil {
		return err
	}
	j := p.ownJob(r + 1)
	actx, cancel := context.WithCancel(ctx)
	a := &ahead{round: r + 1, start: p.base, began: time.Now(), j: j, cancel: cancel, done: make(chan struct{})}
	m, efs, step := p.m, p.efs, p.stepEvents(r+1)
	go func() {
		defer close(a.done)
		a.encs, a.sent, a.busy, a.err = p.ru.work(actx, m, efs, weights{v: start}, r+1, j, step)
		p.ru.putVec(start)
	}()
	p.ahead = a
	return nil
}

// takeAhead waits for the steps running ahead for round r, if any, and
// hands them over (nil if none).
func (p *Participant) takeAhead(ctx context.Context, r int) (*ahead, error) {
	a := p.ahead
	if a == nil || a.round != r {
		return nil, nil
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.ahead = nil
	a.cancel()
	if a.err != nil {
		return nil, fmt.Errorf("inner steps of round %d: %w", r, a.err)
	}
	return a, nil
}

// keepAhead says whether the steps running ahead still follow the rule
// once the round of rec has settled: they are its next round's, started
// from rec's base, with the state of this node's contribution rec
// included (or a fresh one).
func (p *Participant) keepAhead(ctx context.Context, rec *roundRecord) bool {
	a := p.ahead
	if a == nil || a.round != rec.Round+1 || rec.Base == nil || rec.Base.CID != a.start.String() {
		return false
	}
	if !a.prior.Defined() {
		return true
	}
	own := p.ownIncluded(ctx, rec)
	return own != nil && own.State == sharding.LinkTo(a.prior)
}

// dropAhead stops the steps running ahead, if any, and puts back the
// worker state they started from (their steps moved the model's moments).
func (p *Participant) dropAhead(ctx context.Context) {
	a := p.ahead
	if a == nil {
		return
	}
	a.cancel()
	<-a.done
	p.ahead = nil
	p.opts.Logf("run %s: dropping the inner steps of round %d trained ahead", p.id, a.round)
	if !a.prior.Defined() {
		p.freshState()
		return
	}
	if err := p.loadHeld(contentstore.WithWait(context.WithoutCancel(ctx), contentstore.Wait{Stall: p.ru.fetchWait()}), a.prior); err != nil {
		p.opts.Logf("run %s: worker state %s: %v; starting from a fresh one", p.id, a.prior, err)
		p.freshState()
	}
}
