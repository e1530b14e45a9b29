package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fomnet/fomnet/contentstore"
)

// Spot checks. Once a round's checkpoint is settled, a hash of it picks
// each contribution the round included with the run's probability
// (RunSpec.SpotCheckShare) and names its verifier: the first of the
// round's other members in a rendezvous order keyed by the checkpoint and
// the contribution. Nobody knew the checkpoint before the round closed,
// so nobody could know which work would be checked, nor by whom. In the
// next round, once its own contribution is out, the verifier re-executes
// each contribution it was named for (reexec.go) and, on a difference,
// publishes a fraud proof (fraud.go) on the run's topic and convicts the
// author; every node re-checks the proof before it records the exclusion.
//
// Cost: each included contribution is re-executed with probability q by
// one other member, so a node re-executes about q contributions a round,
// each as long as its own inner steps: q of its compute (0.1 by default).
// A worker that cheats in a round is caught in that round with
// probability q (if it is not the round's only member), so one that
// cheats every round is caught after 1/q rounds on average.

// draw is a uniform number in [0, 1) from a hash of what and the CIDs.
func draw(what string, ks ...cid.Cid) float64 {
	h := sha256.New()
	h.Write([]byte(what))
	for _, k := range ks {
		h.Write(k.Bytes())
	}
	return float64(binary.BigEndian.Uint64(h.Sum(nil)[:8])>>11) / (1 << 53)
}

// sampled says whether contribution k of the round whose checkpoint is ck
// is in an audit's sample of the given share.
func sampled(ck, k cid.Cid, share float64) bool {
	return share >= 1 || draw("fomnet audit sample", ck, k) < share
}

// spotVerifier returns who re-executes contribution k by author, included
// in the round whose checkpoint is ck and whose members are members, and
// whether it is checked at all (with probability share).
func spotVerifier(ck, k cid.Cid, author peer.ID, members []peer.ID, share float64) (peer.ID, bool) {
	if share <= 0 || (share < 1 && draw("fomnet spot check", ck, k) >= share) {
		return "", false
	}
	var best peer.ID
	var bestScore []byte
	for _, id := range members {
		if id == author {
			continue
		}
		h := sha256.New()
		h.Write([]byte("fomnet spot verifier"))
		h.Write(ck.Bytes())
		h.Write(k.Bytes())
		h.Write([]byte(id))
		if s := h.Sum(nil); best == "" || bytes.Compare(s, bestScore) > 0 {
			best, bestScore = id, s
		}
	}
	return best, best != ""
}

// spotCheck re-executes the contributions of the base's round that this
// node is the verifier of, and proves each that does not follow from its
// inputs: it publishes the proof in round r and convicts the author.
func (p *Participant) spotCheck(ctx context.Context, r int) error {
	rec, ck := p.rec, p.base
	if rec.Round < 1 || p.following {
		return nil
	}
	// The round waits on this: a fetch nobody serves (an author gone with
	// its worker state) gives up after the run's fetch wait, not an audit's.
	ctx = contentstore.WithWait(ctx, contentstore.Wait{Stall: p.ru.fetchWait()})
	members := rec.members() // less those it convicted
	var base *state
	for _, i := range rec.includedIndices() {
		k, _ := rec.Contributions[i].Cid()
		c, err := p.localContribution(ctx, k)
		if err != nil {
			p.opts.Logf("run %s: spot check of round %d: %v", p.id, rec.Round, err)
			continue
		}
		if rec.excludes(c.Peer) {
			continue // proven already
		}
		author, _ := peer.Decode(c.Peer)
		v, ok := spotVerifier(ck, k, author, members, p.spec.SpotCheckShare())
		if p.cheat.accuse && author != p.self {
			v, ok = p.self, true
		}
		if !ok || v != p.self {
			continue
		}
		if base == nil {
			bk, _ := rec.Base.Cid()
			if base, err = p.checkpointState(ctx, bk, rec.Round-1); err != nil {
				return fmt.Errorf("spot check of round %d: its base: %w", rec.Round, err)
			}
			defer p.release() // a lean node's checking model, until its own steps
		}
		start := time.Now()
		p.checkMu.Lock()
		err = p.reexecute(ctx, k, c, base)
		p.checkMu.Unlock()
		if p.cheat.accuse {
			err = &Fraud{Contribution: k, Author: author, Round: c.Round, Detail: "a false accusation"}
		}
		fr, isF := isFraud(err)
		p.event(RoundEvent{Phase: "spot-check", Round: r, CID: k.String(), Seconds: time.Since(start).Seconds(), Fraud: isF})
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !isF:
			p.opts.Logf("run %s: spot check of %s (round %d): could not re-execute: %v", p.id, k, rec.Round, err)
			continue
		}
		p.opts.Logf("run %s: spot check: %v", p.id, fr)
		if err := p.prove(ctx, r, k, fr); err != nil {
			p.opts.Logf("run %s: fraud by %s not proven: %v", p.id, fr.Author, err)
		}
	}
	return nil
}

// localContribution reads contribution k, which this node fetched as an
// input of a round it took part in (fetched again if it has gone).
func (p *Participant) localContribution(ctx context.Context, k cid.Cid) (*Contribution, error) {
	ctx, cancel := context.WithTimeout(ctx, p.ru.fetchWait())
	defer cancel()
	b, err := p.n.Store.Block(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("contribution %s: %w", k, err)
	}
	return DecodeContribution(b.RawData())
}

// prove stores a fraud proof of fr (quoting the signed announcement of
// contribution k this node kept), pins it, convicts the author and
// publishes the proof in round r.
func (p *Participant) prove(ctx context.Context, r int, k cid.Cid, fr *Fraud) error {
	env, ok := p.signedBefore[k.String()]
	if !ok {
		return errors.New("this node did not keep its signed announcement")
	}
	b, pk, err := EncodeFraudProof(FraudProof{Format: FraudFormat, Message: env, Detail: fr.Error()})
	if err != nil {
		return err
	}
	if err := p.keepProof(ctx, pk, b, fr.Author); err != nil {
		return err
	}
	p.convict(fr.Author, pk)
	p.opts.Logf("run %s: fraud proof %s against %s published", p.id, pk, fr.Author)
	return p.publish(ctx, RoundMsg{Type: MsgFraud, Run: p.id.String(), Round: r, Base: p.base.String(), CID: pk.String()})
}

// keepProof stores and pins proof block b (CID k) against author.
func (p *Participant) keepProof(ctx context.Context, k cid.Cid, b []byte, author peer.ID) error {
	if err := p.n.Store.PutBlock(ctx, k, b); err != nil {
		return err
	}
	return p.n.Store.Pin(ctx, k, fmt.Sprintf("run %s fraud proof against %s", p.id, author))
}

// takeProof re-checks the fraud proof a round message names and convicts
// its author, or counts a proof that proves nothing against its sender.
// It takes one proof per sender and round r (each may cost a fetch wait
// and a re-execution, during which it blocks), none from a sender of a
// false one, and checks each proof once.
func (p *Participant) takeProof(ctx context.Context, im inMsg, r int) {
	k, err := cid.Decode(im.m.CID)
	if err != nil || im.from == p.self {
		return
	}
	p.conv.mu.Lock()
	_, seen := p.conv.checked[k.String()] // answered definitely
	liar := p.conv.false_[im.from]
	busy := p.conv.tried[im.from] == r
	if !seen && !liar && !busy {
		if p.conv.tried == nil {
			p.conv.tried = map[peer.ID]int{}
		}
		p.conv.tried[im.from] = r
	}
	p.conv.mu.Unlock()
	if seen || liar || busy {
		return
	}
	author, err := p.proofFor(ctx, k)
	switch {
	case err == nil:
		p.opts.Logf("run %s: fraud proof %s from %s re-checked: %s is excluded from the rounds after this one", p.id, k, im.from, author)
	case errors.Is(err, errNoFault):
		p.conv.mu.Lock()
		if p.conv.false_ == nil {
			p.conv.false_ = map[peer.ID]bool{}
		}
		p.conv.false_[im.from] = true
		p.conv.mu.Unlock()
		p.distrust(im.from)
		p.count(RejectFalseProof, 1)
		p.opts.Logf("run %s: %s sent a false fraud proof %s: %v", p.id, im.from, k, err)
	case ctx.Err() == nil:
		p.opts.Logf("run %s: fraud proof %s from %s: %v", p.id, k, im.from, err)
	}
}

// proofFor fetches and re-checks proof block k, convicting its author
// when it holds; it returns the author. A definite answer (a conviction,
// or no fault) is kept; one that could not tell is not, so the proof can
// be checked again.
func (p *Participant) proofFor(ctx context.Context, k cid.Cid) (peer.ID, error) {
	p.conv.mu.Lock()
	err, seen := p.conv.checked[k.String()]
	author := p.conv.authorOf[k.String()]
	p.conv.mu.Unlock()
	if seen {
		return author, err
	}
	author, err = p.checkProofBlock(ctx, k)
	if ctx.Err() != nil || (err != nil && !errors.Is(err, errNoFault)) {
		return "", err // not a definite answer
	}
	p.conv.mu.Lock()
	if p.conv.checked == nil {
		p.conv.checked, p.conv.authorOf = map[string]error{}, map[string]peer.ID{}
	}
	p.conv.checked[k.String()], p.conv.authorOf[k.String()] = err, author
	p.conv.mu.Unlock()
	return author, err
}

func (p *Participant) checkProofBlock(ctx context.Context, k cid.Cid) (peer.ID, error) {
	if k.Prefix().Codec != cid.Raw {
		return "", fmt.Errorf("fraud proof %s is not a raw block", k)
	}
	fctx, cancel := context.WithTimeout(ctx, p.ru.fetchWait())
	b, err := p.n.Store.Block(fctx, k)
	cancel()
	if err != nil {
		return "", fmt.Errorf("fraud proof %s: %w", k, err)
	}
	f, err := DecodeFraudProof(b.RawData())
	if err != nil {
		return "", err
	}
	author, _, err := p.checkFraud(ctx, f)
	if err != nil {
		return "", err
	}
	if err := p.keepProof(ctx, k, b.RawData(), author); err != nil {
		return "", err
	}
	p.convict(author, k)
	return author, nil
}

// cheats are the ways a test makes a participant dishonest (only tests
// set them, through export_test.go): job changes its work, encs what it
// sends, accuse makes it prove fraud by every contribution it checks.
type cheats struct {
	job      func(r int, j *job)
	encs     func(ctx context.Context, r int, encs [][]byte) [][]byte
	accuse   bool
	straggle func(ctx context.Context, r int) // returns when to publish
}
