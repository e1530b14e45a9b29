package node

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/model"
)

// apply is round r's transition: the round's aggregates from the inputs
// in ri (rules.aggregates), one outer step on base state s, and the
// checkpoint written into a scratch directory (prefix), the one every
// role that accepts a checkpoint runs. A state in memory is moved on in
// place (the caller's own: state.own); one on disk (a lean node's)
// is left as it is, the next read and written a partition at a time
// (nextOnDisk). Same base state, same inputs: the same bytes, either way.
// A round whose outer step leaves a non-finite weight is refused.
func (p *Participant) apply(ctx context.Context, s *state, r int, ri roundInput, prefix string) (*state, error) {
	rec, encs, err := p.ru.aggregates(r, s.ck, ri)
	if err != nil {
		return nil, refusal(err)
	}
	next := &state{round: r, rec: rec, global: s.global, outer: s.outer}
	var v vectors
	if s.global != nil {
		err = refusal(p.ru.outerStep(s.global, s.outer, r, encs))
		v = memVectors(s.global, s.outer)
	} else {
		var done func()
		v, done, err = p.ru.nextOnDisk(s.dir, r, encs)
		if err == nil {
			defer done()
		}
	}
	if err != nil {
		return nil, err
	}
	if err := p.storeAggregates(ctx, encs); err != nil {
		return nil, err
	}
	if next.dir, next.ck, err = p.writeCheckpoint(ctx, rec, v, prefix); err != nil {
		return nil, err
	}
	return next, nil
}

// refusal is err (nil for none) as a refused candidate unless it gives its
// own reason: what the round's inputs cannot make into a checkpoint.
func refusal(err error) error {
	if err != nil && reasonOf(err) == "" {
		return rejected(RejectCandidate, err)
	}
	return err
}

// vectors are what writeCheckpoint writes a state's weights and outer
// state from: fill produces the weights a chunk at a time, in order
// (model.SaveWeightsFrom); outer writes outer.bin.
type vectors struct {
	fill  func(off int, dst []float32) error
	outer func(io.Writer) error
}

// memVectors are the vectors of a state in memory.
func memVectors(global []float32, outer *gradsync.OuterOptimizer) vectors {
	return vectors{
		fill:  func(off int, dst []float32) error { copy(dst, global[off:]); return nil },
		outer: func(w io.Writer) error { _, err := outer.WriteTo(w); return err },
	}
}

// nextOnDisk are the vectors of the state the round's aggregates encs give
// from the checkpoint in directory dir, computed as they are written, a
// partition at a time: the weights (a partition's base weights and
// momentum read, its aggregate decoded, one outer step: outerStep's bits),
// then the momentum apart (Advance: Step's bits). Each holds a partition's
// weights, momentum and Δ at most, never a whole vector; done closes dir's
// files.
func (ru *rules) nextOnDisk(dir string, r int, encs [][]byte) (vectors, func(), error) {
	wf, err := model.OpenWeightsFile(ru.cfg, filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return vectors{}, nil, err
	}
	of, err := os.Open(filepath.Join(dir, "outer.bin"))
	if err != nil {
		wf.Close()
		return vectors{}, nil, err
	}
	done := func() { wf.Close(); of.Close() }
	st, err := of.Stat()
	var or *gradsync.OuterReader
	if err == nil {
		or, err = gradsync.NewOuterReader(of, st.Size(), ru.n)
	}
	if err != nil {
		done()
		return vectors{}, nil, fmt.Errorf("%s: %w", of.Name(), err)
	}
	weights := &nextParts{ru: ru, r: r, encs: encs, wf: wf, or: or, cur: -1}
	momentum := &nextParts{ru: ru, r: r, encs: encs, or: or, cur: -1}
	return vectors{fill: weights.fill, outer: func(w io.Writer) error {
		return gradsync.WriteOuter(w, or.LR, or.Momentum, ru.n, momentum.fill)
	}}, done, nil
}

// nextParts produces the next state's weights (wf set) or momentum, in
// order, computing one partition at a time from the base's files.
type nextParts struct {
	ru   *rules
	r    int
	encs [][]byte
	wf   *model.WeightsFile
	or   *gradsync.OuterReader
	cur  int       // the partition computed, -1 for none
	w, b []float32 // its weights and momentum
	d    []float32 // its aggregate Δ
}

// fill writes the next state's values [off, off+len(dst)) into dst.
func (n *nextParts) fill(off int, dst []float32) error {
	for len(dst) > 0 {
		parts := n.ru.parts
		if n.cur < 0 || off < parts[n.cur].Offset || off >= parts[n.cur].Offset+parts[n.cur].Size {
			pi := sort.Search(len(parts), func(i int) bool { return parts[i].Offset+parts[i].Size > off })
			if err := n.compute(pi); err != nil {
				return err
			}
		}
		pr := parts[n.cur]
		src := n.b
		if n.wf != nil {
			src = n.w
		}
		k := copy(dst, src[off-pr.Offset:pr.Size])
		off, dst = off+k, dst[k:]
	}
	if off == n.ru.n {
		n.w, n.b, n.d, n.cur = nil, nil, nil, -1 // the last: let go
	}
	return nil
}

// compute makes partition pi the one computed.
func (n *nextParts) compute(pi int) error {
	if pi >= len(n.ru.parts) {
		return fmt.Errorf("round %d: no partition holds weight %d", n.r, n.ru.n)
	}
	pr := n.ru.parts[pi]
	if n.b == nil {
		size := 0
		for _, x := range n.ru.parts {
			size = max(size, x.Size)
		}
		n.b, n.d = make([]float32, size), make([]float32, size)
		if n.wf != nil {
			n.w = make([]float32, size)
		}
	}
	o := &gradsync.OuterOptimizer{LR: n.or.LR, Momentum: n.or.Momentum, Buf: n.b[:pr.Size]}
	if err := n.or.ReadAt(o.Buf, pr.Offset); err != nil {
		return err
	}
	var w []float32
	if n.wf != nil {
		w = n.w[:pr.Size]
		if err := n.wf.ReadAt(w, pr.Offset); err != nil {
			return err
		}
	}
	n.cur = -1
	if err := n.ru.stepPart(n.r, pi, w, o, n.encs[pi], n.d[:pr.Size]); err != nil {
		return err
	}
	n.cur = pi
	return nil
}
