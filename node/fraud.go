package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/p2p"
	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Fraud proofs. A contribution's author signs its announcement (a round
// message on the run's topic: run, round, base and the contribution's
// CID, under the author's key); the contribution binds every input of its
// work (reexec.go). So the announcement alone is a self-contained proof:
// anyone who re-executes the contribution it names and gets other bytes
// knows its author lied, whoever forwarded the proof. A proof is a raw
// block, so its CID names it; a round record lists each peer it convicts
// with the proof (roundRecord.Excluded), and nodes re-check every proof
// before acting on it. A proof whose contribution re-executes to its own
// bytes proves nothing and counts against the peer that sent it.

// FraudFormat names fraud proofs.
const FraudFormat = "fomnet-fraud/1"

// maxFraud bounds a proof: a signed round message (at most maxRoundMsg of
// data) in base64, with its envelope and a detail line.
const maxFraud = 256 << 10

// FraudProof quotes a contribution's signed announcement. Detail is what
// the verifier found (for people; the check re-executes, it does not read
// it).
type FraudProof struct {
	Format  string `json:"format"`
	Message []byte `json:"message"`
	Detail  string `json:"detail"`
}

// EncodeFraudProof serialises f and returns its bytes and CID (raw).
func EncodeFraudProof(f FraudProof) ([]byte, cid.Cid, error) {
	if err := f.check(); err != nil {
		return nil, cid.Undef, err
	}
	return rawJSON(f)
}

// DecodeFraudProof reads a fraud proof, strictly and bounded.
func DecodeFraudProof(b []byte) (*FraudProof, error) {
	var f FraudProof
	if err := decodeStrict(b, maxFraud, &f); err != nil {
		return nil, fmt.Errorf("fraud proof: %w", err)
	}
	return &f, f.check()
}

func (f *FraudProof) check() error {
	switch {
	case f.Format != FraudFormat:
		return fmt.Errorf("fraud proof: format %q, want %q", f.Format, FraudFormat)
	case len(f.Message) == 0:
		return errors.New("fraud proof: no message")
	case len(f.Detail) > 4096:
		return fmt.Errorf("fraud proof: detail of %d bytes", len(f.Detail))
	}
	return nil
}

// announcement opens f's signed message: a contribution announcement of
// run, by its signer.
func (f *FraudProof) announcement(run cid.Cid) (peer.ID, RoundMsg, error) {
	from, topic, m, err := f.open()
	if err != nil {
		return "", m, err
	}
	if topic != RunTopic(run) || m.Run != run.String() || m.Type != MsgContribution {
		return "", m, fmt.Errorf("fraud proof: quotes a %s message of run %s on topic %q, not a contribution to run %s",
			sanitize(m.Type), sanitize(m.Run), sanitize(topic), run)
	}
	return from, m, nil
}

// open checks the signature of the message f quotes and decodes it.
func (f *FraudProof) open() (peer.ID, string, RoundMsg, error) {
	from, topic, data, err := p2p.OpenSigned(f.Message)
	if err != nil {
		return "", "", RoundMsg{}, fmt.Errorf("fraud proof: %w", err)
	}
	m, err := DecodeRoundMsg(data)
	if err != nil {
		return "", "", m, fmt.Errorf("fraud proof: %w", err)
	}
	return from, topic, m, nil
}

// errNoFault: a proof whose contribution follows from its inputs.
var errNoFault = errors.New("no fault")

// checkFraud re-checks proof f against this run: it returns the author
// it convicts and what re-execution found, errNoFault (wrapped) when the
// contribution follows from its inputs, or another error when it cannot
// tell (content nobody serves within the fetch wait, a forged signature,
// another run's message).
func (p *Participant) checkFraud(ctx context.Context, f *FraudProof) (peer.ID, *Fraud, error) {
	author, m, err := f.announcement(p.id)
	if err != nil {
		return "", nil, err
	}
	k, _ := cid.Decode(m.CID)
	base, _ := cid.Decode(m.Base)
	ctx = contentstore.WithWait(ctx, contentstore.Wait{Stall: p.ru.fetchWait()})
	b, err := p.n.Store.Block(ctx, k)
	if err != nil {
		return "", nil, fmt.Errorf("fraud proof: contribution %s: %w", k, err)
	}
	c, err := DecodeContribution(b.RawData())
	if err != nil {
		return "", nil, fmt.Errorf("fraud proof: contribution %s: %w", k, err)
	}
	if c.Peer != author.String() || c.Round != m.Round || c.Base.CID != m.Base {
		// The author signed an announcement its own contribution
		// contradicts: a lie on its face.
		return author, &Fraud{Contribution: k, Author: author, Round: m.Round, Detail: fmt.Sprintf(
			"announced by %s for round %d on %s, it names %s, round %d, base %s", author, m.Round, base, sanitize(c.Peer), c.Round, c.Base.CID)}, nil
	}
	bs, err := p.checkpointState(ctx, base, m.Round-1)
	if err != nil {
		return "", nil, fmt.Errorf("fraud proof: round %d's base: %w", m.Round, err)
	}
	p.checkMu.Lock()
	defer p.checkMu.Unlock()
	err = p.reexecute(ctx, k, c, bs)
	if fr, ok := isFraud(err); ok {
		return author, fr, nil
	}
	if err == nil {
		return "", nil, fmt.Errorf("fraud proof: contribution %s by %s re-executes to its own bytes: %w", k, author, errNoFault)
	}
	return "", nil, fmt.Errorf("fraud proof: %w", err)
}

// FraudCheck is what re-checking a fraud proof found: the peer it
// convicts, the contribution, and the first difference re-execution gave.
type FraudCheck struct {
	Proof        string `json:"proof"`
	Run          string `json:"run"`
	Author       string `json:"author"`
	Contribution string `json:"contribution"`
	Round        int    `json:"round"`
	Detail       string `json:"detail"`
}

// CheckFraud re-checks the fraud proof block k (fetched if need be) on
// this node, which need not have taken part in the run: it re-executes
// the contribution the proof quotes from the run's checkpoint it was
// based on, on a CPU backend of all cores. Its error says why the proof
// proves nothing (or could not be checked).
func (n *Node) CheckFraud(ctx context.Context, k cid.Cid) (*FraudCheck, error) {
	b, err := n.Store.Block(withStall(ctx), k)
	if err != nil {
		return nil, fmt.Errorf("fraud proof %s: %w", k, err)
	}
	f, err := DecodeFraudProof(b.RawData())
	if err != nil {
		return nil, err
	}
	_, _, m, err := f.open()
	if err != nil {
		return nil, err
	}
	run, err := cid.Decode(m.Run)
	if err != nil {
		return nil, fmt.Errorf("fraud proof: run %q: %w", sanitize(m.Run), err)
	}
	var fr *Fraud
	err = n.withChecker(ctx, run, true, func(p *Participant) (err error) {
		_, fr, err = p.checkFraud(ctx, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &FraudCheck{Proof: k.String(), Run: run.String(), Author: fr.Author.String(), Contribution: fr.Contribution.String(),
		Round: fr.Round, Detail: fr.Detail}, nil
}

// withChecker runs f with a detached participant of run (a follower's,
// without the network), on a CPU backend of all cores and a scratch
// directory under HOME; with shards, its dataset loaded whole, to
// re-execute contributions.
func (n *Node) withChecker(ctx context.Context, run cid.Cid, shards bool, f func(*Participant) error) error {
	scratch, err := os.MkdirTemp(n.Home, "check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		return err
	}
	defer be.Close()
	p, err := n.newParticipant(ctx, run, RunOptions{Dir: scratch, Backend: be, Logf: func(string, ...any) {}}, true)
	if err != nil {
		return fmt.Errorf("run %s: %w", run, err)
	}
	if shards {
		if err := p.loadShards(ctx); err != nil {
			return fmt.Errorf("run %s: its dataset, to re-execute contributions: %w", run, err)
		}
	}
	return f(p)
}

// convictions are the peers this node has proven (or re-checked proofs)
// to have lied in a contribution, with the proofs, and the peers that
// sent it a proof that proved nothing. The round transition records the
// convictions not yet in its base (roundRecord.Excluded).
type convictions struct {
	mu     sync.Mutex
	proofs map[peer.ID]cid.Cid
	// checked: each proof block re-checked, and what it showed (nil
	// error: a conviction), so a proof repeated costs nothing.
	checked  map[string]error
	authorOf map[string]peer.ID
	false_   map[peer.ID]bool
	tried    map[peer.ID]int // the round of each sender's last proof taken
}

// convict records that proof k convicts author.
func (p *Participant) convict(author peer.ID, k cid.Cid) {
	p.conv.mu.Lock()
	defer p.conv.mu.Unlock()
	if p.conv.proofs == nil {
		p.conv.proofs = map[peer.ID]cid.Cid{}
	}
	if _, ok := p.conv.proofs[author]; !ok {
		p.conv.proofs[author] = k
	}
}

// exclusions are what round r's record lists: base's exclusions and this
// node's convictions of others, sorted by peer.
func (p *Participant) exclusions(base *roundRecord) []exclusion {
	out := append([]exclusion(nil), base.Excluded...)
	p.conv.mu.Lock()
	for id, k := range p.conv.proofs {
		if !base.excludes(id.String()) {
			out = append(out, exclusion{Peer: id.String(), Proof: sharding.LinkTo(k)})
		}
	}
	p.conv.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	if len(out) == 0 {
		return nil
	}
	return out
}

// checkExclusions checks the exclusions round record rec lists against
// its base's record: every one the base lists, and for each new one a
// proof that re-checks here (re-executed once) to that peer.
func (p *Participant) checkExclusions(ctx context.Context, base, rec *roundRecord) error {
	listed := map[string]sharding.Link{}
	for _, e := range rec.Excluded {
		listed[e.Peer] = e.Proof
	}
	for _, e := range base.Excluded {
		if listed[e.Peer] != e.Proof {
			return fmt.Errorf("it drops the base's exclusion of %s", e.Peer)
		}
	}
	for _, e := range rec.Excluded {
		if base.excludes(e.Peer) {
			continue
		}
		k, _ := e.Proof.Cid()
		author, err := p.proofFor(ctx, k)
		if err != nil {
			return fmt.Errorf("its exclusion of %s: %w", e.Peer, err)
		}
		if author.String() != e.Peer {
			return fmt.Errorf("its proof %s convicts %s, not %s", k, author, e.Peer)
		}
	}
	return nil
}
