package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/model"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Adoption by verification. A node takes a checkpoint someone announced
// only after recomputing it: it reads the round records back from the
// checkpoint to one it holds verified (its own settled rounds, back to the
// genesis the run ID fixes), then replays each round with apply from
// the contributions the record lists and compares CIDs. What it adopts is
// its own computation; a peer's say-so, or how many peers say it, never
// decides.
//
// Fork choice, among verified candidates: the newest round; within a
// round, the one that included the most contributions; then the smallest
// CID. It counts verified work, never peer IDs or messages.

// maxCandidates bounds how many announced checkpoints one catch-up
// verifies (each may cost a fetch deadline when its author withholds the
// contributions it lists).
const maxCandidates = 8

// state is a checkpoint's weights and outer-optimizer state, as verified;
// global and outer are nil where they are on disk only, in dir (a lean
// participant's: RunOptions.Lean).
type state struct {
	round  int
	ck     cid.Cid
	global []float32
	outer  *gradsync.OuterOptimizer
	rec    *roundRecord
	dir    string // the checkpoint's directory on disk
}

// own returns a copy of s that the caller may apply a round to (apply
// moves a state in memory on in place): its vectors copied, where s holds
// them in memory; a state on disk only (a lean node's) apply leaves as it
// is.
func (s *state) own() *state {
	c := *s
	if s.global != nil {
		c.global = append([]float32(nil), s.global...)
		c.outer = s.outer.Clone()
	}
	return &c
}

// weights are s's weights where a contribution's steps start.
func (s *state) weights() weights {
	if s.global != nil {
		return weights{v: s.global}
	}
	return weights{file: filepath.Join(s.dir, "model.safetensors")}
}

// loaded is s with its vectors in memory: s, or a copy read from its
// directory.
func (p *Participant) loaded(s *state) (*state, error) {
	if s.global != nil {
		return s, nil
	}
	c := *s
	return &c, p.readVectors(&c)
}

// readState reads a checkpoint directory this node wrote: weights in the
// run's shape, outer state and round record.
func (p *Participant) readState(dir string) (*state, error) {
	s, err := p.readHead(dir)
	if err != nil {
		return nil, err
	}
	return s, p.readVectors(s)
}

// readVectors reads s's weights and outer state from its directory. Both
// stream into their vectors: a large model's state is never held as
// bytes.
func (p *Participant) readVectors(s *state) error {
	global, _, err := model.ReadWeightsFile(p.cfg, filepath.Join(s.dir, "model.safetensors"))
	if err != nil {
		return err
	}
	of, err := os.Open(filepath.Join(s.dir, "outer.bin"))
	if err != nil {
		return err
	}
	defer of.Close()
	outer := gradsync.NewOuterOptimizer(p.sync, len(global))
	if _, err := outer.ReadFrom(bufio.NewReaderSize(of, 1<<20)); err != nil {
		return fmt.Errorf("%s: %w", of.Name(), err)
	}
	s.global, s.outer = global, outer
	return nil
}

// readHead reads the round record of a checkpoint directory this node
// wrote: a state whose vectors are on disk only.
func (p *Participant) readHead(dir string) (*state, error) {
	rb, err := os.ReadFile(filepath.Join(dir, "round.json"))
	if err != nil {
		return nil, err
	}
	rec, err := decodeRoundRecord(rb)
	if err != nil {
		return nil, err
	}
	if rec.Run.CID != p.id.String() {
		return nil, fmt.Errorf("round.json names run %s", rec.Run.CID)
	}
	return &state{round: rec.Round, rec: rec, dir: dir}, nil
}

// current is this node's settled state (its base); a lean node's vectors
// are in its round directory.
func (p *Participant) current() *state {
	s := &state{round: p.round - 1, ck: p.base, global: p.global, outer: p.outer, rec: p.rec}
	if s.global == nil {
		s.dir = p.roundDir(s.round)
	}
	return s
}

// settled records that this node holds s verified as its round s.round
// (what round-NNNNNN holds, and what it answers status requests with).
func (p *Participant) settled(s *state) {
	base := cid.Undef
	if s.rec.Base != nil {
		base, _ = s.rec.Base.Cid()
	}
	// round-NNNNNN from this round on no longer hold what they did.
	for k, r := range p.verified {
		if r >= s.round {
			delete(p.verified, k)
		}
	}
	p.verified[s.ck.String()] = s.round
	p.n.settled.set(p.id, s.round, s.ck, base)
	p.n.Metrics.runPeers.WithLabelValues(p.id.String()).Set(float64(s.rec.includedCount()))
}

// setCurrent makes s, settled, the base of this node's next round.
func (p *Participant) setCurrent(s *state) {
	p.global, p.outer, p.rec = s.global, s.outer, s.rec
	if p.opts.Lean {
		p.global, p.outer = nil, nil // in its round directory
	}
	p.members = s.rec.members()
	p.mu.Lock()
	p.base, p.round = s.ck, s.round+1
	p.standing = map[peer.ID]bool{}
	for _, id := range p.members {
		p.standing[id] = true
	}
	p.mu.Unlock()
}

// roundDir is where this node keeps its settled checkpoint of round r.
func (p *Participant) roundDir(r int) string {
	return filepath.Join(p.opts.Dir, fmt.Sprintf("round-%06d", r))
}

// known returns the state of a checkpoint this node holds verified.
func (p *Participant) known(ck cid.Cid) (*state, bool) {
	r, ok := p.verified[ck.String()]
	if !ok {
		return nil, false
	}
	if ck.Equals(p.base) {
		return p.current(), true
	}
	read := p.readState
	if p.opts.Lean {
		read = p.readHead
	}
	s, err := read(p.roundDir(r))
	if err != nil {
		return nil, false
	}
	s.ck = ck
	return s, true
}

// candidate is a checkpoint someone named for a round; rec is its round
// record once fetched.
type candidate struct {
	round int
	ck    cid.Cid
	rec   *roundRecord
}

// announced keeps one candidate per sender: its newest.
type announced map[peer.ID]candidate

func (a announced) add(from peer.ID, m RoundMsg) {
	k, err := cid.Decode(m.CID)
	if err != nil || m.Type != MsgCheckpoint {
		return
	}
	if c, ok := a[from]; !ok || m.Round > c.round {
		a[from] = candidate{round: m.Round, ck: k}
	}
}

func (a announced) list() []candidate {
	out := make([]candidate, 0, len(a))
	for _, c := range a {
		out = append(out, c)
	}
	return out
}

// prefetch reads the round records of cs at once, under one fetch
// deadline, and returns those that name this run and their round; the
// others are refused. A candidate nobody serves costs one deadline per
// decision, however many there are.
func (p *Participant) prefetch(ctx context.Context, cs []candidate, why string) []candidate {
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs[i].rec, errs[i] = p.readRecordOf(ctx, cs[i].ck, cs[i].round)
		}()
	}
	wg.Wait()
	var out []candidate
	for i, c := range cs {
		if errs[i] != nil {
			if ctx.Err() == nil {
				p.refuse(errs[i], fmt.Sprintf("%s: checkpoint %s of round %d", why, c.ck, c.round))
			}
			continue
		}
		out = append(out, c)
	}
	return out
}

// readRecordOf fetches round.json of checkpoint ck (bounded in time and
// size) and checks it names this run and round r.
func (p *Participant) readRecordOf(ctx context.Context, ck cid.Cid, r int) (*roundRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, p.ru.fetchWait())
	defer cancel()
	rec, err := p.n.readRoundRecord(ctx, ck)
	if err != nil {
		return nil, rejected(RejectFetch, fmt.Errorf("checkpoint %s: %w", ck, err))
	}
	if rec.Run.CID != p.id.String() || rec.Round != r || (r > 0 && rec.Base == nil) || (r == 0 && !sameLink(rec.Base, p.spec.From)) {
		return nil, rejected(RejectLineage, fmt.Errorf("checkpoint %s: round.json says run %s round %d, want run %s round %d", ck, rec.Run.CID, rec.Round, p.id, r))
	}
	return rec, nil
}

// verify recomputes candidate c (of a round within the run) from a
// checkpoint this node holds verified and returns the lineage, or why it
// is refused. The walk back reads one round.json per round (at most the
// run's rounds); the replay fetches each round's contributions.
func (p *Participant) verify(ctx context.Context, c candidate) (lineage, error) {
	type link struct {
		ck  cid.Cid
		rec *roundRecord
	}
	var chain []link // newest first
	ck, r := c.ck, c.round
	var from *state
	for {
		if s, ok := p.known(ck); ok {
			if s.round != r {
				return nil, rejected(RejectLineage, fmt.Errorf("checkpoint %s is round %d here, round %d in the candidate's lineage", ck, s.round, r))
			}
			from = s
			break
		}
		if r == 0 {
			return nil, rejected(RejectLineage, fmt.Errorf("lineage of %s reaches a genesis %s that is not the run's", c.ck, ck))
		}
		rec := c.rec
		if len(chain) > 0 || rec == nil {
			var err error
			if rec, err = p.readRecordOf(ctx, ck, r); err != nil {
				return nil, err
			}
		}
		chain = append(chain, link{ck, rec})
		var err error
		if ck, err = rec.Base.Cid(); err != nil {
			return nil, rejected(RejectLineage, err)
		}
		r--
	}
	s := from.own()
	var out lineage
	start := time.Now()
	for i := len(chain) - 1; i >= 0; i-- {
		l := chain[i]
		next, err := p.replay(ctx, s, l.rec)
		if err == nil && !next.ck.Equals(l.ck) {
			os.RemoveAll(next.dir)
			err = rejected(RejectCandidate, fmt.Errorf("round %d: its record gives %s, not %s", l.rec.Round, next.ck, l.ck))
		}
		if err != nil {
			p.drop(out)
			return nil, err
		}
		if len(out) > 0 {
			out[len(out)-1].global, out[len(out)-1].outer = nil, nil // consumed by the replay
		}
		out = append(out, next)
		s = next
		p.event(RoundEvent{Phase: "verified", Round: l.rec.Round, Step: len(out), Steps: len(chain), Seconds: time.Since(start).Seconds()})
	}
	return out, nil
}

// lineage is a run of verified checkpoints, oldest first; only the last
// (its tip) keeps its weights in memory, the others their directories.
type lineage []*state

func (l lineage) tip() *state { return l[len(l)-1] }

// drop removes the scratch directories of a lineage not taken.
func (p *Participant) drop(l lineage) {
	for _, s := range l {
		if s.dir != "" && s.dir != p.roundDir(s.round) {
			os.RemoveAll(s.dir)
		}
	}
}

// replay applies the round rec describes to s (which it consumes, where
// in memory) and writes the resulting checkpoint into a scratch directory.
func (p *Participant) replay(ctx context.Context, s *state, rec *roundRecord) (*state, error) {
	// decodeRoundRecord checked its form: links, sorted contributions,
	// ascending indices in range.
	r := rec.Round
	if len(rec.Aggregates) != len(p.ru.parts) || len(rec.Contributions) == 0 {
		return nil, rejected(RejectCandidate, fmt.Errorf("round %d: %d aggregates and %d contributions", r, len(rec.Aggregates), len(rec.Contributions)))
	}
	ri := roundInput{}
	for _, l := range rec.Contributions {
		k, _ := l.Cid()
		in, err := p.input(ctx, k, r, s.ck)
		if err != nil {
			return nil, err
		}
		if s.rec.excludes(in.c.Peer) {
			return nil, rejected(RejectExcluded, fmt.Errorf("round %d: contribution %s by %s, whom its base excludes", r, k, in.c.Peer))
		}
		ri.ins = append(ri.ins, in)
	}
	for _, a := range rec.Aggregates {
		ri.inputs = append(ri.inputs, a.Inputs)
	}
	if err := p.checkExclusions(ctx, s.rec, rec); err != nil {
		return nil, rejected(RejectCandidate, fmt.Errorf("round %d: %w", r, err))
	}
	ri.excluded = rec.Excluded
	return p.apply(ctx, s, r, ri, "verify-")
}

// better is the fork-choice order: newer round, then more exclusions,
// then more included contributions, then the smaller CID.
func better(a, b *state) bool {
	if a.round != b.round {
		return a.round > b.round
	}
	// Every exclusion a candidate lists was proven (checkExclusions): the
	// one that knows more fraud is the better, whatever it included.
	if na, nb := len(a.rec.Excluded), len(b.rec.Excluded); na != nb {
		return na > nb
	}
	if na, nb := a.rec.includedCount(), b.rec.includedCount(); na != nb {
		return na > nb
	}
	return a.ck.String() < b.ck.String()
}

// choose verifies candidates (newest first, at most maxCandidates of them,
// those this node holds skipped) and returns the best lineage by fork
// choice, or nil when none is better than start. Scratch directories of
// those not chosen are removed.
func (p *Participant) choose(ctx context.Context, start *state, cs []candidate, why string) (lineage, error) {
	seen := map[string]bool{}
	var todo []candidate
	for _, c := range cs {
		if _, ok := p.verified[c.ck.String()]; ok || p.worse[c.ck.String()] || seen[c.ck.String()] || c.round < start.round {
			continue
		}
		if c.round < 1 || c.round > p.spec.Rounds {
			p.refuse(rejected(RejectLineage, fmt.Errorf("round %d outside the run's 1..%d", c.round, p.spec.Rounds)),
				fmt.Sprintf("%s: checkpoint %s", why, c.ck))
			continue
		}
		seen[c.ck.String()] = true
		todo = append(todo, c)
	}
	sort.Slice(todo, func(i, j int) bool {
		if todo[i].round != todo[j].round {
			return todo[i].round > todo[j].round
		}
		return todo[i].ck.String() < todo[j].ck.String()
	})
	if len(todo) > maxCandidates {
		p.count(RejectLineage, len(todo)-maxCandidates)
		todo = todo[:maxCandidates]
	}
	todo = p.prefetch(ctx, todo, why)
	var best lineage
	for _, c := range todo {
		cur := start
		if best != nil {
			cur = best.tip()
		}
		if c.round < cur.round {
			break // sorted: nothing later can win
		}
		l, err := p.verify(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				p.drop(best)
				return nil, ctx.Err()
			}
			p.refuse(err, fmt.Sprintf("%s: checkpoint %s of round %d", why, c.ck, c.round))
			continue
		}
		if better(l.tip(), cur) {
			p.drop(best)
			best = l
		} else {
			p.worse[c.ck.String()] = true
			p.drop(l)
		}
	}
	return best, nil
}

// adoptBest adopts the best of the candidates that verifies (choose), if
// it is better than where this node stands, and reports whether it moved.
func (p *Participant) adoptBest(ctx context.Context, cs []candidate, why string) (bool, error) {
	best, err := p.choose(ctx, p.current(), cs, why)
	if err != nil || best == nil {
		return false, err
	}
	return true, p.adopt(ctx, best, why)
}

// adopt settles on a lineage other than this node's own computation.
func (p *Participant) adopt(ctx context.Context, l lineage, why string) error {
	tip := l.tip()
	p.opts.Logf("run %s: %s: adopting round %d, %s (%d contributions), recomputed here from its contributions",
		p.id, why, tip.round, tip.ck, tip.rec.includedCount())
	if err := p.settle(ctx, l); err != nil {
		return err
	}
	p.event(RoundEvent{Phase: "adopted", Round: tip.round, CID: tip.ck.String()})
	return nil
}

// CheckpointPin names the pin of the checkpoint this node settled on for
// round r of run; ParseCheckpointPin reads such a name back (and only
// such: the pins of lineage roots and evidence are named otherwise).
func CheckpointPin(run cid.Cid, r int) string { return fmt.Sprintf("run %s round %d", run, r) }

var checkpointPinRE = regexp.MustCompile(`^run (\S+) round (\d+)$`)

// ParseCheckpointPin returns the run and round a checkpoint pin names.
func ParseCheckpointPin(name string) (run string, round int, ok bool) {
	m := checkpointPinRE.FindStringSubmatch(name)
	if m == nil {
		return "", 0, false
	}
	r, err := strconv.Atoi(m[2])
	return m[1], r, err == nil
}

// settle makes a verified lineage this node's: each checkpoint's
// directory becomes round-NNNNNN (its CID beside it in round-NNNNNN.cid),
// synced and pinned, and the tip is the base of the next round.
func (p *Participant) settle(ctx context.Context, l lineage) error {
	for _, s := range l {
		final := p.roundDir(s.round)
		if s.dir != final {
			if err := os.RemoveAll(final); err != nil {
				return err
			}
			if err := os.Rename(s.dir, final); err != nil {
				return err
			}
			s.dir = final
		}
		if err := fsutil.WriteFile(final+".cid", []byte(s.ck.String()+"\n")); err != nil {
			return err
		}
		if err := fsutil.SyncDir(p.opts.Dir); err != nil {
			return err
		}
		if err := p.n.Store.Pin(ctx, s.ck, CheckpointPin(p.id, s.round)); err != nil {
			return err
		}
		p.settled(s)
		if s == l.tip() {
			p.setCurrent(s)
			p.carryState(ctx, s.rec)
		}
		if p.onSettle != nil {
			p.onSettle(s.round, s.ck)
		}
	}
	return p.prune(l.tip().round)
}

// prune removes the directories of settled rounds older than the newest
// opts.KeepRounds up to newest, round 0 apart; their CID files and pins
// stay (see RunOptions.KeepRounds).
func (p *Participant) prune(newest int) error {
	if p.opts.KeepRounds <= 0 {
		return nil
	}
	rounds, err := p.roundDirs()
	if err != nil {
		return err
	}
	for _, r := range rounds {
		if r == 0 || r > newest-p.opts.KeepRounds {
			continue
		}
		if err := os.RemoveAll(p.roundDir(r)); err != nil {
			return fmt.Errorf("pruning round %d: %w", r, err)
		}
		for ck, vr := range p.verified {
			if vr == r {
				delete(p.verified, ck)
			}
		}
	}
	return p.pruneWorkerStates(newest - max(p.opts.KeepRounds, 2))
}

// roundDirs lists the rounds whose round-NNNNNN directories this node
// holds.
func (p *Participant) roundDirs() ([]int, error) {
	ents, err := os.ReadDir(p.opts.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rounds []int
	for _, e := range ents {
		if m := roundDirRE.FindStringSubmatch(e.Name()); m != nil && e.IsDir() {
			r, _ := strconv.Atoi(m[1])
			rounds = append(rounds, r)
		}
	}
	return rounds, nil
}

// refuse logs why something a peer sent was left out and counts it.
func (p *Participant) refuse(err error, what string) {
	reason := reasonOf(err)
	if reason == "" {
		reason = "other"
	}
	p.count(reason, 1)
	p.opts.Logf("run %s: %s refused (%s): %s", p.id, sanitize(what), reason, sanitize(err.Error()))
}

func (p *Participant) count(reason string, n int) {
	p.rejMu.Lock()
	defer p.rejMu.Unlock()
	if p.rejections == nil {
		p.rejections = map[string]int{}
	}
	p.rejections[reason] += n
	p.n.Metrics.refused.WithLabelValues(reason).Add(float64(n))
}

// Rejections counts, by reason, what this participant refused from its
// peers: contributions, aggregates and checkpoints.
func (p *Participant) Rejections() map[string]int {
	p.rejMu.Lock()
	defer p.rejMu.Unlock()
	out := map[string]int{}
	for k, v := range p.rejections {
		out[k] = v
	}
	return out
}

// sanitize strips control characters from text that came from a peer
// before it is logged.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
