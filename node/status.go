package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// StatusProtocol is the request/response protocol through which a node asks
// a peer where it stands in a run: which checkpoint it settled on for a
// round (and on which base), and its newest. Gossipsub does not replay
// what was published while a node was away, so a node that restarted or
// fell behind pulls this instead of waiting for announcements that may
// never be repeated. The peer's identity comes from the authenticated
// libp2p connection, so an answer counts as that peer's vote.
const StatusProtocol = protocol.ID("/fomnet/run-status/1.0.0")

// maxStatusMsg bounds a status request or response on the wire.
const maxStatusMsg = 4 << 10

// statusTimeout bounds one status exchange.
const statusTimeout = 5 * time.Second

// StatusRequest asks for a peer's checkpoint of one round of a run.
type StatusRequest struct {
	Run   string `json:"run"`
	Round int    `json:"round"`
}

// StatusResponse is a peer's answer: its settled checkpoint of the round
// asked for and that checkpoint's base ("" when it has not settled the
// round), and its newest settled round and checkpoint (Newest −1: the peer
// does not take part in the run).
type StatusResponse struct {
	Run        string `json:"run"`
	Round      int    `json:"round"`
	Checkpoint string `json:"checkpoint,omitempty"`
	Base       string `json:"base,omitempty"`
	Newest     int    `json:"newest"`
	NewestCID  string `json:"newest_cid,omitempty"`
	// Follower: the peer follows the run (mirror --follow) and trains
	// nothing, so no round waits for a contribution of its. Believed only
	// in that direction: a trainer who says it follows is merely not
	// waited for.
	Follower bool `json:"follower,omitempty"`
}

// decodeStrict parses b, at most limit bytes, as one JSON value of v's
// type with no unknown fields and nothing after it: how every message
// and record from a peer is read.
func decodeStrict(b []byte, limit int, v any) error {
	if len(b) > limit {
		return fmt.Errorf("%d bytes, the limit is %d", len(b), limit)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func checkCID(field, s string, optional bool) error {
	if s == "" && optional {
		return nil
	}
	if _, err := cid.Decode(s); err != nil {
		return fmt.Errorf("%s: %q is not a CID: %v", field, s, err)
	}
	return nil
}

// DecodeStatusRequest parses and checks a status request.
func DecodeStatusRequest(b []byte) (StatusRequest, error) {
	var q StatusRequest
	if err := decodeStrict(b, maxStatusMsg, &q); err != nil {
		return q, fmt.Errorf("status request: %w", err)
	}
	if err := checkCID("run", q.Run, false); err != nil {
		return q, fmt.Errorf("status request: %w", err)
	}
	if q.Round < 0 {
		return q, fmt.Errorf("status request: round %d is negative", q.Round)
	}
	return q, nil
}

// DecodeStatusResponse parses and checks a status response.
func DecodeStatusResponse(b []byte) (StatusResponse, error) {
	var s StatusResponse
	if err := decodeStrict(b, maxStatusMsg, &s); err != nil {
		return s, fmt.Errorf("status response: %w", err)
	}
	for _, f := range []struct {
		name, v  string
		optional bool
	}{{"run", s.Run, false}, {"checkpoint", s.Checkpoint, true}, {"base", s.Base, true}, {"newest_cid", s.NewestCID, true}} {
		if err := checkCID(f.name, f.v, f.optional); err != nil {
			return s, fmt.Errorf("status response: %w", err)
		}
	}
	switch {
	case s.Round < 0:
		return s, fmt.Errorf("status response: round %d is negative", s.Round)
	case s.Newest < -1:
		return s, fmt.Errorf("status response: newest round %d is below -1", s.Newest)
	case (s.Newest >= 0) != (s.NewestCID != ""):
		return s, fmt.Errorf("status response: newest round %d with checkpoint %q", s.Newest, s.NewestCID)
	case s.Checkpoint != "" && s.Round > s.Newest:
		return s, fmt.Errorf("status response: a checkpoint of round %d beyond the newest, %d", s.Round, s.Newest)
	case s.Checkpoint != "" && s.Round > 0 && s.Base == "":
		return s, fmt.Errorf("status response: the checkpoint of round %d has no base", s.Round)
	}
	return s, nil
}

// settledRuns records, per run, the checkpoint this node settled on for
// each round (after the majority vote) and that checkpoint's base: what it
// answers status requests with. It lives as long as the node, so a node
// that finished a run keeps answering for it, and a node started again
// reads it back from its pins (fromPins) when first asked about a run.
type settledRuns struct {
	mu        sync.Mutex
	runs      map[string]map[int][2]string // run → round → {checkpoint, base}
	following map[string]int               // run → FollowRuns under way
	pinned    map[string]bool              // runs read back from the pins
}

// fromPins records, once per run, the checkpoints of run this node pinned
// as settled (CheckpointPin) with their bases, read from their round
// records in the local store (pinned, so whole). What a participant or
// follower settled since overrides nothing: it pinned the same.
func (n *Node) fromPins(ctx context.Context, run string) {
	var mine []contentstore.Pin
	for _, p := range n.Store.Pins() {
		if r, _, ok := ParseCheckpointPin(p.Name); ok && r == run {
			mine = append(mine, p)
		}
	}
	s := &n.settled
	s.mu.Lock()
	done := s.pinned[run] || len(mine) == 0 // no entry for runs asked about in vain
	if s.pinned == nil {
		s.pinned = map[string]bool{}
	}
	if !done {
		s.pinned[run] = true
	}
	s.mu.Unlock()
	if done {
		return
	}
	id, _ := cid.Decode(run)
	for _, p := range mine {
		_, round, _ := ParseCheckpointPin(p.Name)
		rec, err := n.readRoundRecord(ctx, p.CID)
		if err != nil || rec.Round != round {
			continue
		}
		base := cid.Undef
		if rec.Base != nil {
			base, _ = rec.Base.Cid()
		}
		s.setIfAbsent(id, round, p.CID, base)
	}
}

// follow records that a FollowRun of run is under way (+1) or ended (−1).
func (s *settledRuns) follow(run cid.Cid, d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.following == nil {
		s.following = map[string]int{}
	}
	s.following[run.String()] += d
}

func (s *settledRuns) set(run cid.Cid, round int, ck, base cid.Cid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(run, round, ck, base)
}

func (s *settledRuns) setIfAbsent(run cid.Cid, round int, ck, base cid.Cid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.runs[run.String()][round]; !ok {
		s.setLocked(run, round, ck, base)
	}
}

func (s *settledRuns) setLocked(run cid.Cid, round int, ck, base cid.Cid) {
	if s.runs == nil {
		s.runs = map[string]map[int][2]string{}
	}
	m := s.runs[run.String()]
	if m == nil {
		m = map[int][2]string{}
		s.runs[run.String()] = m
	}
	e := [2]string{ck.String(), ""}
	if base.Defined() {
		e[1] = base.String()
	}
	m[round] = e
}

func (s *settledRuns) answer(q StatusRequest) StatusResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := StatusResponse{Run: q.Run, Round: q.Round, Newest: -1, Follower: s.following[q.Run] > 0}
	m := s.runs[q.Run]
	for r, e := range m {
		if r > out.Newest {
			out.Newest, out.NewestCID = r, e[0]
		}
	}
	if e, ok := m[q.Round]; ok {
		out.Checkpoint, out.Base = e[0], e[1]
	}
	return out
}

// serveStatus answers one status request.
func (n *Node) serveStatus(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(statusTimeout))
	b, err := io.ReadAll(io.LimitReader(s, maxStatusMsg+1))
	if err != nil {
		s.Reset()
		return
	}
	q, err := DecodeStatusRequest(b)
	if err != nil {
		n.logf("status request from %s refused: %v", s.Conn().RemotePeer(), err)
		s.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	n.fromPins(ctx, q.Run)
	cancel()
	out, _ := json.Marshal(n.settled.answer(q))
	if _, err := s.Write(out); err != nil {
		s.Reset()
	}
}

// askStatus asks peer pid for its checkpoint of round r of run.
func (n *Node) askStatus(ctx context.Context, pid peer.ID, run cid.Cid, r int) (StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	s, err := n.Host.NewStream(ctx, pid, StatusProtocol)
	if err != nil {
		return StatusResponse{}, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	q, _ := json.Marshal(StatusRequest{Run: run.String(), Round: r})
	if _, err := s.Write(q); err != nil {
		s.Reset()
		return StatusResponse{}, err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return StatusResponse{}, err
	}
	b, err := io.ReadAll(io.LimitReader(s, maxStatusMsg+1))
	if err != nil {
		s.Reset()
		return StatusResponse{}, err
	}
	a, err := DecodeStatusResponse(b)
	if err != nil {
		return a, fmt.Errorf("peer %s: %w", pid, err)
	}
	if a.Run != run.String() || a.Round != r {
		return a, fmt.Errorf("peer %s answered for run %s round %d, not run %s round %d", pid, a.Run, a.Round, run, r)
	}
	return a, nil
}

// askAll asks every peer in ps (concurrently) for its checkpoint of round r
// and returns the answers of those that replied.
func (n *Node) askAll(ctx context.Context, ps []peer.ID, run cid.Cid, r int) map[peer.ID]StatusResponse {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[peer.ID]StatusResponse{}
	for _, pid := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := n.askStatus(ctx, pid, run, r)
			if err != nil {
				return
			}
			mu.Lock()
			out[pid] = a
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
