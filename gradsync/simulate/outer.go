package simulate

import (
	"fmt"
	"math/rand/v2"

	"github.com/fomnet/fomnet/gradsync"
)

// Overlaps are the ways a worker may go on training while a round's
// exchange is still under way ("" waits for it, as the node does today):
//
//   - "local": the next round starts where the worker's own inner steps
//     took it — the global parameters minus its own decoded contribution,
//     which anyone can recompute from the checkpoint and the contribution;
//   - "eager": the next round starts from the outer step the worker would
//     take if its own contribution were the aggregate (momentum included,
//     the optimizer untouched), as in eager updates (Kale et al. 2025).
//
// Either way the round's aggregate lands one round late, just before the
// worker's next contribution: the global parameters (the checkpoint) take
// the outer step then, and the worker's parameters move by the difference
// between that step and its own estimate, keeping the progress it made in
// between. With one worker, fp32, outer lr 1 and no momentum, both are
// plain training.
var Overlaps = []string{"local", "eager"}

// fragment is a contiguous range of the parameters synchronised on its own
// schedule (streaming DiLoCo), with its per-worker error feedback and
// reducer partitions.
type fragment struct {
	gradsync.Range
	offset  int                       // first sync after this many optimizer steps; then every H
	efs     []*gradsync.ErrorFeedback // per worker
	parts   []gradsync.Range          // reducer partitions, relative to the fragment
	aggEFs  []*gradsync.ErrorFeedback // reducers' residuals (AggregateFeedback)
	decoded [][]float32               // per worker, scratch
	agg     []float32
	pending []float32 // overlapped: the last aggregate, not yet applied
}

// outerLoop is DiLoCo's outer loop over K workers' parameter vectors,
// the same code for every schedule: one fragment synchronised every H
// steps, or several on staggered schedules, each waited for or overlapped.
type outerLoop struct {
	cfg      gradsync.Config
	codec    gradsync.Codec
	overlap  string
	inner    int // optimizer steps in all
	adv      string
	honest   *moments
	rng      *rand.Rand
	tokens   int64 // per worker per optimizer step
	steps    []int // per worker: optimizer steps since its last sync
	hetero   bool  // workers train unequal steps (Method.Hetero)
	aggEF    bool
	global   []float32
	outer    *gradsync.OuterOptimizer
	frags    []*fragment
	starts   [][]float32 // per worker: where its current interval began
	delta    []float32
	order    []int
	sent     float64 // bytes per worker, all syncs
	peak     float64 // bytes per worker, the largest sync
	workersF float64
}

// newOuterLoop starts K workers from global. Fragments > 1 needs no warmup
// rounds and at most H fragments.
func newOuterLoop(cfg gradsync.Config, m Method, o Options, inner int, global []float32) (*outerLoop, error) {
	codec, err := cfg.NewCodec()
	if err != nil {
		return nil, err
	}
	nf := max(1, m.Fragments)
	if nf > 1 && (cfg.WarmupRounds > 0 || nf > cfg.H) {
		return nil, fmt.Errorf("%d fragments need no warmup rounds and H ≥ %d (H is %d)", nf, nf, cfg.H)
	}
	n, k := len(global), o.Workers
	l := &outerLoop{cfg: cfg, codec: codec, overlap: m.Overlap, inner: inner, adv: m.Adversary,
		honest: newMoments(m.Adversary == "alie", n), rng: rand.New(rand.NewPCG(o.Seed, 99)),
		tokens: int64(m.accum() * o.Batch * o.Seq), aggEF: o.AggregateFeedback, global: global,
		outer: gradsync.NewOuterOptimizer(cfg, n), delta: make([]float32, n), workersF: float64(k), steps: make([]int, k), hetero: m.Hetero != 0}
	for i := 1; i <= k; i++ {
		l.order = append(l.order, i%k) // the adversary last: alie needs the others
	}
	for i := 0; i < k; i++ {
		l.starts = append(l.starts, append([]float32(nil), global...))
	}
	for i, r := range gradsync.Partitions(n, nf) {
		f := &fragment{Range: r, offset: (i + 1) * cfg.H / nf, agg: make([]float32, r.Size),
			parts: gradsync.Partitions(r.Size, cfg.Partitions)}
		for range k {
			f.efs = append(f.efs, gradsync.NewErrorFeedback(codec, r.Size))
			f.decoded = append(f.decoded, make([]float32, r.Size))
		}
		if l.aggEF {
			for _, p := range f.parts {
				f.aggEFs = append(f.aggEFs, gradsync.NewErrorFeedback(codec, p.Size))
			}
		}
		l.frags = append(l.frags, f)
	}
	return l, nil
}

// due is the fragments that synchronise once t optimizer steps are done:
// one fragment at the ends of cfg's rounds, several each on its own
// schedule, and every fragment after the last step.
func (l *outerLoop) due(t int) []int {
	var out []int
	for i, f := range l.frags {
		switch {
		case t == l.inner:
		case len(l.frags) == 1:
			if !l.roundEnd(t) {
				continue
			}
		case t < f.offset || (t-f.offset)%l.cfg.H != 0:
			continue
		}
		out = append(out, i)
	}
	return out
}

// roundEnd says whether t steps end one of cfg's rounds.
func (l *outerLoop) roundEnd(t int) bool {
	for r := 1; l.cfg.RoundStart(r) <= t; r++ {
		if l.cfg.RoundStart(r) == t {
			return true
		}
	}
	return false
}

// sync synchronises fragment i of the workers' parameters (locals, one
// vector per worker, changed in place) after t optimizer steps.
func (l *outerLoop) sync(i int, locals [][]float32, t int) error {
	f := l.frags[i]
	lo, hi := f.Offset, f.Offset+f.Size
	g, opt := l.global[lo:hi], l.outer.Slice(lo, f.Size)
	if f.pending != nil { // the last sync's aggregate lands
		opt.Step(g, f.pending)
		f.pending = nil
		for k, x := range locals {
			s := l.starts[k][lo:hi]
			for j := range g {
				x[lo+j] += g[j] - s[j]
			}
			copy(s, g)
		}
	}
	bytes, err := l.exchange(f, locals)
	if err != nil {
		return fmt.Errorf("sync of fragment %d after step %d: %w", i, t, err)
	}
	l.sent += bytes
	l.peak = max(l.peak, bytes)
	clear(l.steps)
	if l.overlap == "" || t == l.inner {
		opt.Step(g, f.agg)
		for k, x := range locals {
			copy(x[lo:hi], g)
			copy(l.starts[k][lo:hi], g)
		}
		return nil
	}
	f.pending = append(f.pending[:0], f.agg...)
	for k, x := range locals {
		s := l.starts[k][lo:hi]
		if l.overlap == "eager" {
			opt.Estimate(s, g, f.decoded[k])
		} else {
			for j := range s {
				s[j] = g[j] - f.decoded[k][j]
			}
		}
		copy(x[lo:hi], s)
	}
	return nil
}

// contribTokens is the tokens worker k's contribution declares: those of
// one optimizer step (every worker trains alike), or with Hetero those of
// the steps it trained since its last sync.
func (l *outerLoop) contribTokens(k int) int64 {
	if !l.hetero {
		return l.tokens
	}
	return l.tokens * int64(max(1, l.steps[k]))
}

// exchange is one sync's traffic: each worker encodes its pseudo-gradient
// of the fragment with error feedback; each reducer partition is aggregated
// from the decoded contributions, encoded again as its reducer would
// publish it, and decoded into f.agg. It returns the bytes each worker
// sends.
func (l *outerLoop) exchange(f *fragment, locals [][]float32) (float64, error) {
	lo, hi := f.Offset, f.Offset+f.Size
	delta := l.delta[:f.Size]
	var contribBytes, aggBytes int
	l.honest.reset()
	for _, k := range l.order {
		gradsync.PseudoGradient(delta, l.starts[k][lo:hi], locals[k][lo:hi])
		if k == 0 {
			adversary(l.adv, delta, l.honest, l.rng)
		} else {
			l.honest.add(delta)
		}
		msg := f.efs[k].Encode(nil, delta)
		contribBytes = len(msg)
		if err := l.codec.Decode(f.decoded[k], msg); err != nil {
			return 0, err
		}
	}
	for pi, p := range f.parts {
		cs := make([]gradsync.Contribution, len(locals))
		for k := range cs {
			cs[k] = gradsync.Contribution{ID: fmt.Sprintf("worker-%d", k), Tokens: l.contribTokens(k), Delta: f.decoded[k][p.Offset : p.Offset+p.Size]}
		}
		part := f.agg[p.Offset : p.Offset+p.Size]
		if _, ok := gradsync.Aggregate(l.cfg, part, cs); !ok {
			return 0, fmt.Errorf("no quorum")
		}
		var msg []byte
		if l.aggEF {
			msg = f.aggEFs[pi].Encode(nil, part)
		} else {
			msg = l.codec.Encode(nil, part)
		}
		aggBytes += len(msg)
		if err := l.codec.Decode(part, msg); err != nil {
			return 0, err
		}
	}
	return (l.workersF - 1) / l.workersF * float64(contribBytes+aggBytes), nil
}
