package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Round messages travel on the run's gossipsub topic, RunTopic(runID),
// signed by their author (gossipsub StrictSign). They carry CIDs; the
// objects themselves move over bitswap.
const (
	MsgContribution = "contribution" // a participant's encoded Δ for a round
	MsgAggregate    = "aggregate"    // a reducer's result for one partition
	MsgCheckpoint   = "checkpoint"   // the checkpoint a node computed after a round
	MsgFraud        = "fraud"        // a fraud proof (fraud.go) against a contribution's author
)

// RunTopic is the gossipsub topic of a run.
func RunTopic(run cid.Cid) string { return "fomnet/run/" + run.String() }

// MaxParticipants bounds how many contributions one aggregate may list.
const MaxParticipants = 1024

// RoundMsg is one announcement on a run's topic.
type RoundMsg struct {
	Type  string `json:"type"`
	Run   string `json:"run"`
	Round int    `json:"round"`
	// Base is the checkpoint CID the round started from.
	Base string `json:"base"`
	// CID is the announced object: a contribution root, an aggregated
	// partition block, or a checkpoint directory.
	CID string `json:"cid"`
	// Tokens (contribution): tokens trained this round, the weight.
	Tokens int64 `json:"tokens,omitempty"`
	// Partition (aggregate): which partition CID aggregates.
	Partition int `json:"partition,omitempty"`
	// Inputs (aggregate): the contributions it aggregated (before the
	// aggregation's own rejections), sorted: anyone can recompute it.
	Inputs []string `json:"inputs,omitempty"`
	// Down (contribution): the download rate its author measured before
	// the round, bytes a second (0: none yet); it orders the reducers
	// (link.go). A claim, never evidence: the order it sets is safe
	// whatever it says, as every aggregate is recomputed.
	Down int64 `json:"down,omitempty"`
}

const maxRoundMsg = 96 << 10

// EncodeRoundMsg serialises m after checking it.
func EncodeRoundMsg(m RoundMsg) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > maxRoundMsg {
		return nil, fmt.Errorf("round message: %d bytes exceeds %d", len(b), maxRoundMsg)
	}
	return b, nil
}

// DecodeRoundMsg parses and checks a round message (stateless checks:
// shape, CIDs, ranges). Whether it belongs to the current run, round and
// base is the validator's business.
func DecodeRoundMsg(b []byte) (RoundMsg, error) {
	var m RoundMsg
	if err := decodeStrict(b, maxRoundMsg, &m); err != nil {
		return m, fmt.Errorf("round message: %w", err)
	}
	return m, m.check()
}

func (m RoundMsg) check() error {
	bad := func(format string, a ...any) error { return fmt.Errorf("round message: "+format, a...) }
	for what, s := range map[string]string{"run": m.Run, "base": m.Base, "cid": m.CID} {
		if _, err := cid.Decode(s); err != nil {
			return bad("%s %q: %v", what, s, err)
		}
	}
	if m.Round < 0 || m.Round > 1_000_000 {
		return bad("round %d out of range", m.Round)
	}
	switch m.Type {
	case MsgContribution:
		if m.Tokens <= 0 || m.Partition != 0 || len(m.Inputs) != 0 {
			return bad("contribution needs tokens > 0 and no partition or included list")
		}
		if m.Down < 0 || m.Down > maxDown {
			return bad("download rate %d out of range [0, %d]", m.Down, int64(maxDown))
		}
	case MsgAggregate:
		if m.Partition < 0 || m.Partition > 4096 || m.Tokens != 0 || m.Down != 0 {
			return bad("aggregate partition %d out of range", m.Partition)
		}
		if len(m.Inputs) == 0 || len(m.Inputs) > MaxParticipants {
			return bad("aggregate lists %d contributions", len(m.Inputs))
		}
		if !sort.StringsAreSorted(m.Inputs) {
			return bad("aggregate's inputs are not sorted")
		}
		for i, s := range m.Inputs {
			if _, err := cid.Decode(s); err != nil {
				return bad("inputs[%d] %q: %v", i, s, err)
			}
			if i > 0 && s == m.Inputs[i-1] {
				return bad("inputs[%d] listed twice", i)
			}
		}
	case MsgCheckpoint, MsgFraud:
		if m.Tokens != 0 || m.Partition != 0 || len(m.Inputs) != 0 || m.Down != 0 {
			return bad("%s carries only its CID", m.Type)
		}
	default:
		return bad("unknown type %q", m.Type)
	}
	return nil
}

// ContributionFormat names the contribution object's format.
const ContributionFormat = "fomnet-contribution/2"

// Contribution is the root block (dag-json) of one participant's Δ for a
// round. Each partition of the encoded Δ is a raw block of its own, so a
// reducer fetches only the partition it reduces. It binds everything its
// inner steps depend on, so anyone can re-execute it (reexec.go): the
// base, the worker state it started from (Prior; absent: fresh), the
// checkpoint its steps started from when that is not the base (Start, in
// overlapped runs: the base's own base), the shards, and through Peer the
// seed; and it links the state it left.
type Contribution struct {
	Format     string          `json:"format"`
	Run        sharding.Link   `json:"run"`
	Round      int             `json:"round"`
	Base       sharding.Link   `json:"base"`
	Peer       string          `json:"peer"`
	Tokens     int64           `json:"tokens"`
	Codec      string          `json:"codec"`
	Params     int             `json:"params"`
	Partitions []sharding.Link `json:"partitions"`
	// Shards are the dataset shards the contributor trained on this round.
	Shards []sharding.Link `json:"shards"`
	// Prior is the worker state the round started from (workerstate.go),
	// absent for a fresh one; State is the state it left.
	Prior *sharding.Link `json:"prior,omitempty"`
	State sharding.Link  `json:"state"`
	// Start, in a run with overlapped rounds, is the checkpoint the inner
	// steps started from, trained while the base's round closed: the
	// base's own base, less the author's contribution that Prior's round
	// included (overlap.go). Absent, they started from the base.
	Start *sharding.Link `json:"start,omitempty"`
}

// EncodeContribution returns the canonical dag-json bytes and CID.
func EncodeContribution(c *Contribution) ([]byte, cid.Cid, error) {
	if err := c.check(); err != nil {
		return nil, cid.Undef, err
	}
	return dagJSONBlock(c, "contribution")
}

// DecodeContribution parses a contribution root block.
func DecodeContribution(b []byte) (*Contribution, error) {
	var c Contribution
	if err := decodeStrict(b, 1<<20, &c); err != nil {
		return nil, fmt.Errorf("contribution: %w", err)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Contribution) check() error {
	if c.Format != ContributionFormat {
		return fmt.Errorf("contribution: format %q, want %q", c.Format, ContributionFormat)
	}
	links := map[string]sharding.Link{"run": c.Run, "base": c.Base, "state": c.State}
	if c.Prior != nil {
		links["prior"] = *c.Prior
	}
	if c.Start != nil {
		links["start"] = *c.Start
	}
	for what, l := range links {
		k, err := l.Cid()
		if err != nil {
			return fmt.Errorf("contribution: %s link: %w", what, err)
		}
		if (what == "state" || what == "prior") && k.Prefix().Codec != cid.DagProtobuf && k.Prefix().Codec != cid.Raw {
			return fmt.Errorf("contribution: %s %s is not a file", what, k)
		}
	}
	if _, err := peer.Decode(c.Peer); err != nil {
		return fmt.Errorf("contribution: peer %q: %w", c.Peer, err)
	}
	if c.Tokens <= 0 || c.Params <= 0 || c.Round < 0 {
		return fmt.Errorf("contribution: tokens %d, params %d, round %d", c.Tokens, c.Params, c.Round)
	}
	if len(c.Partitions) == 0 || len(c.Partitions) > 4096 {
		return fmt.Errorf("contribution: %d partitions", len(c.Partitions))
	}
	if len(c.Shards) > 1<<16 {
		return fmt.Errorf("contribution: %d shards", len(c.Shards))
	}
	for i, l := range c.Shards {
		if _, err := l.Cid(); err != nil {
			return fmt.Errorf("contribution: shard %d: %w", i, err)
		}
	}
	for i, l := range c.Partitions {
		k, err := l.Cid()
		if err != nil {
			return fmt.Errorf("contribution: partition %d: %w", i, err)
		}
		if k.Prefix().Codec != cid.Raw {
			return fmt.Errorf("contribution: partition %d is not a raw block", i)
		}
	}
	return nil
}

// Reducers returns the order in which the participants reduce partition p
// of round r: the first is its reducer, the next take over in turn if it
// is silent past the deadline. Rendezvous hashing: each participant's
// score is SHA-256(run, round, partition, peer), highest first, so every
// node computes the same order from the same participant set, and a
// participant joining or leaving moves only the partitions it wins or
// held.
func Reducers(run cid.Cid, r, p int, participants []peer.ID) []peer.ID {
	type scored struct {
		id    peer.ID
		score [32]byte
	}
	s := make([]scored, len(participants))
	var hdr [16]byte
	binary.BigEndian.PutUint64(hdr[:8], uint64(r))
	binary.BigEndian.PutUint64(hdr[8:], uint64(p))
	for i, id := range participants {
		h := sha256.New()
		h.Write(run.Bytes())
		h.Write(hdr[:])
		h.Write([]byte(id))
		copy(s[i].score[:], h.Sum(nil))
		s[i].id = id
	}
	sort.Slice(s, func(i, j int) bool {
		if c := bytes.Compare(s[i].score[:], s[j].score[:]); c != 0 {
			return c > 0
		}
		return s[i].id < s[j].id
	})
	out := make([]peer.ID, len(s))
	for i := range s {
		out[i] = s[i].id
	}
	return out
}
