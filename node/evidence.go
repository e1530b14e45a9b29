package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/p2p"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// EvidenceFormat names evidence records.
const EvidenceFormat = "fomnet-evidence/1"

// maxEvidence bounds an evidence record: a signed round message (at most
// maxRoundMsg of data) in base64, with its envelope and a CID.
const maxEvidence = 256 << 10

// Evidence shows that a reducer announced an aggregate that its own
// inputs do not give. It is self-contained: Message is the reducer's
// announcement as it signed it (p2p.Message.Signed: run, round, base,
// partition, inputs and the aggregate's CID, under the reducer's key), and
// Recomputed is the CID of the aggregate those inputs give. Anyone who
// holds the run re-checks it with Participant.CheckEvidence; nodes keep it
// as a raw block, so its CID names it.
type Evidence struct {
	Format     string `json:"format"`
	Message    []byte `json:"message"`
	Recomputed string `json:"recomputed"`
}

// EncodeEvidence serialises e and returns its bytes and CID (a raw block).
func EncodeEvidence(e Evidence) ([]byte, cid.Cid, error) {
	if _, err := checkEvidenceForm(&e); err != nil {
		return nil, cid.Undef, err
	}
	return rawJSON(e)
}

// rawJSON is v's JSON as a raw block, and its CID (evidence, proofs).
func rawJSON(v any) ([]byte, cid.Cid, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, cid.Undef, err
	}
	k, err := contentstore.BlockCID(contentstore.CodecRaw, b)
	return b, k, err
}

// DecodeEvidence reads an evidence record, strictly and bounded.
func DecodeEvidence(b []byte) (*Evidence, error) {
	var e Evidence
	if err := decodeStrict(b, maxEvidence, &e); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	if _, err := checkEvidenceForm(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

func checkEvidenceForm(e *Evidence) (cid.Cid, error) {
	if e.Format != EvidenceFormat {
		return cid.Undef, fmt.Errorf("evidence: format %q, want %q", e.Format, EvidenceFormat)
	}
	if len(e.Message) == 0 {
		return cid.Undef, errors.New("evidence: no message")
	}
	k, err := cid.Decode(e.Recomputed)
	if err != nil {
		return cid.Undef, fmt.Errorf("evidence: recomputed %q: %w", e.Recomputed, err)
	}
	return k, nil
}

// CheckEvidence re-checks e against this run and returns the reducer it
// proves wrong: the message's signature, that it is an aggregate
// announcement of this run, and that its inputs — fetched within the fetch
// deadline and admitted by the run's rules, as for any aggregate — give
// e.Recomputed, not what the reducer announced. It may run beside
// RunRounds. An error means the evidence proves nothing (forged, another
// run's, inputs unavailable, or the aggregate was right).
func (p *Participant) CheckEvidence(ctx context.Context, e *Evidence) (peer.ID, error) {
	want, err := checkEvidenceForm(e)
	if err != nil {
		return "", err
	}
	from, topic, data, err := p2p.OpenSigned(e.Message)
	if err != nil {
		return "", fmt.Errorf("evidence: %w", err)
	}
	m, err := DecodeRoundMsg(data)
	if err != nil {
		return "", fmt.Errorf("evidence: %w", err)
	}
	if topic != RunTopic(p.id) || m.Run != p.id.String() || m.Type != MsgAggregate {
		return "", fmt.Errorf("evidence: a %s message of run %s on topic %q, not an aggregate of run %s", sanitize(m.Type), sanitize(m.Run), sanitize(topic), p.id)
	}
	base, err := cid.Decode(m.Base)
	if err != nil {
		return "", fmt.Errorf("evidence: base %q: %w", sanitize(m.Base), err)
	}
	_, got, err := p.recompute(ctx, m, func(ctx context.Context, k cid.Cid) (*input, error) {
		return p.ru.fetchInput(ctx, p.n.Store, k, m.Round, base)
	})
	switch {
	case err != nil:
		return "", fmt.Errorf("evidence: recomputing partition %d of round %d: %w", m.Partition, m.Round, err)
	case got.String() == m.CID:
		return "", fmt.Errorf("evidence: %s's aggregate %s follows from its inputs: no fault", from, sanitize(m.CID))
	case !got.Equals(want):
		return "", fmt.Errorf("evidence: the inputs give %s, the evidence says %s", got, want)
	}
	return from, nil
}

// evidenceLog is what a participant has found against reducers: the CIDs
// of the evidence blocks it stored, and whom they prove wrong.
type evidenceLog struct {
	mu      sync.Mutex
	cids    []cid.Cid
	against map[peer.ID]bool
}

// proven says whether this node holds evidence against id (never itself).
func (p *Participant) proven(id peer.ID) bool {
	p.evidence.mu.Lock()
	defer p.evidence.mu.Unlock()
	return id != p.self && p.evidence.against[id]
}

// distrust leaves id out of the reducers' order from now on, as a peer
// this node holds evidence against (a false fraud proof's sender).
func (p *Participant) distrust(id peer.ID) {
	p.evidence.mu.Lock()
	defer p.evidence.mu.Unlock()
	if p.evidence.against == nil {
		p.evidence.against = map[peer.ID]bool{}
	}
	p.evidence.against[id] = true
}

// accuse keeps evidence that im's sender announced an aggregate whose
// inputs give recomputed, and logs its CID.
func (p *Participant) accuse(ctx context.Context, im inMsg, recomputed cid.Cid) {
	k, err := p.keepEvidence(ctx, im, recomputed)
	if err != nil {
		p.opts.Logf("run %s: evidence against %s not kept: %v", p.id, im.from, err)
		return
	}
	p.evidence.mu.Lock()
	p.evidence.cids = append(p.evidence.cids, k)
	if p.evidence.against == nil {
		p.evidence.against = map[peer.ID]bool{}
	}
	p.evidence.against[im.from] = true
	p.evidence.mu.Unlock()
	p.opts.Logf("run %s: evidence %s: %s announced %s for partition %d of round %d; its inputs give %s", p.id, k, im.from, sanitize(im.m.CID), im.m.Partition, im.m.Round, recomputed)
}

// keepEvidence stores and pins the evidence record and returns its CID.
func (p *Participant) keepEvidence(ctx context.Context, im inMsg, recomputed cid.Cid) (cid.Cid, error) {
	env, err := im.raw.Signed()
	if err != nil {
		return cid.Undef, err
	}
	b, k, err := EncodeEvidence(Evidence{Format: EvidenceFormat, Message: env, Recomputed: recomputed.String()})
	if err != nil {
		return cid.Undef, err
	}
	if err := p.n.Store.PutBlock(ctx, k, b); err != nil {
		return cid.Undef, err
	}
	return k, p.n.Store.Pin(ctx, k, fmt.Sprintf("run %s round %d evidence against %s", p.id, im.m.Round, im.from))
}

// Evidence returns the CIDs of the evidence this participant stored
// against reducers (fomnet-evidence/1 blocks, pinned).
func (p *Participant) Evidence() []cid.Cid {
	p.evidence.mu.Lock()
	defer p.evidence.mu.Unlock()
	return append([]cid.Cid(nil), p.evidence.cids...)
}
