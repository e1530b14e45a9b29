package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/internal/le"
	"github.com/fomnet/fomnet/model"
	"github.com/ipfs/go-cid"
)

// A worker's state: what its next round's inner steps and encoding depend
// on besides the base checkpoint, the data and the seed — the inner AdamW
// moments and step count, and the error-feedback residuals. After each
// round a worker stores its state as a UnixFS file and its contribution
// links it (Contribution.State), beside the state it started from
// (Contribution.Prior), so anyone can re-execute the contribution.
//
// One rule says which state a round starts from: the state after the
// worker's contribution to the previous round if that round's checkpoint
// (the base) included it; otherwise a fresh one (zero moments, step 0,
// zero residuals), which a contribution says by linking no prior. A
// worker's states so form a chain through the rounds that included its
// work, and a state nobody can trace to a checked contribution is refused.
//
//	"FOMWKST1" | step uint64 | n uint64 | m n×f32 | v n×f32 | residuals
//	"FOMWKST2" | step uint64 | n uint64 | k uint64 | m n×u8 | v n×u8 |
//	             m scales k×f32 | v scales k×f32 | residuals
//
// (little-endian; residuals: EncodeEFState's bytes, its round the
// contribution's). The second holds AdamW's moments in 8 bits
// (model.Options.AdamW8; a run's inner optimizer "adamw8"), k block scales
// each.

const (
	workerStateMagic  = "FOMWKST1"
	workerState8Magic = "FOMWKST2"
)

// workerState is a worker's state between rounds: its moments a host
// copy (opt), or those a model holds (in: written from it, read into it,
// a chunk at a time).
type workerState struct {
	opt   model.OptimState
	in    *model.Model
	round int // of the contribution that left it
	efs   []*gradsync.ErrorFeedback
}

// stateShape is what a run's worker states hold: n parameters' moments,
// in 8 bits with k block scales each when k > 0.
type stateShape struct{ n, k int }

// stateShape is the shape of the run's worker states.
func (p *Participant) stateShape() stateShape {
	lay := model.NewLayout(p.cfg)
	if p.spec.ModelOptions().AdamW8 {
		return stateShape{lay.Size, model.Adam8Scales(lay)}
	}
	return stateShape{n: lay.Size}
}

// modelShape is the shape of the worker states model m's moments make.
func modelShape(m *model.Model) stateShape {
	if m.AdamW8() {
		return stateShape{m.Layout.Size, model.Adam8Scales(m.Layout)}
	}
	return stateShape{n: m.Layout.Size}
}

// encodeWorkerState serialises s.
func encodeWorkerState(s *workerState) ([]byte, error) {
	var b bytes.Buffer
	if err := writeWorkerState(&b, s); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeWorkerState writes encodeWorkerState's bytes to w, streamed (a
// large model's state is never held a second time as bytes).
func writeWorkerState(w io.Writer, s *workerState) error {
	o := &s.opt
	step, sh := o.Step, stateShape{n: len(o.M)}
	if o.M8 != nil {
		sh = stateShape{len(o.M8), len(o.MS)}
	}
	if s.in != nil {
		step, sh = s.in.Steps(), modelShape(s.in)
	}
	h := []byte(workerStateMagic)
	if sh.k > 0 {
		h = []byte(workerState8Magic)
	}
	put := func(v int) { h = binary.LittleEndian.AppendUint64(h, uint64(v)) }
	put(step)
	put(sh.n)
	if sh.k > 0 {
		put(sh.k)
	}
	if _, err := w.Write(h); err != nil {
		return err
	}
	if err := writeMoments(w, s); err != nil {
		return err
	}
	return writeEFState(w, s.round, s.efs)
}

// writeMoments writes s's moments: its model's, or its host copy's
// vectors in the model's order (model.WriteMoments).
func writeMoments(w io.Writer, s *workerState) error {
	if s.in != nil {
		return s.in.WriteMoments(w)
	}
	o := &s.opt
	if o.M8 != nil {
		for _, b := range [][]byte{o.M8, o.V8} {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
	}
	for _, x := range [][]float32{o.M, o.V, o.MS, o.VS} {
		if err := le.WriteFloats(w, x); err != nil {
			return err
		}
	}
	return nil
}

// decodeWorkerState parses a worker state of shape sh whose residuals have
// the shapes of efs (which it fills).
func decodeWorkerState(b []byte, sh stateShape, efs []*gradsync.ErrorFeedback) (*workerState, error) {
	br := bytes.NewReader(b)
	s, err := readWorkerState(br, sh, efs, nil)
	if err == nil && br.Len() != 0 {
		err = fmt.Errorf("worker state: error-feedback state: %d trailing bytes", br.Len())
	}
	return s, err
}

// readWorkerState reads decodeWorkerState's bytes from rd, up to their end,
// its moments into model into (whose moments are then the state's), or,
// without one, into the state's own vectors (never holding them twice).
func readWorkerState(rd io.Reader, sh stateShape, efs []*gradsync.ErrorFeedback, into *model.Model) (*workerState, error) {
	magic, head := workerStateMagic, 24
	if sh.k > 0 {
		magic, head = workerState8Magic, 32
	}
	h := make([]byte, head)
	if _, err := io.ReadFull(rd, h); err != nil || string(h[:8]) != magic {
		return nil, fmt.Errorf("worker state: not a %s state (bad magic or truncated header)", magic)
	}
	step, got := binary.LittleEndian.Uint64(h[8:]), binary.LittleEndian.Uint64(h[16:])
	var k uint64
	if sh.k > 0 {
		k = binary.LittleEndian.Uint64(h[24:])
	}
	if got != uint64(sh.n) || k != uint64(sh.k) || step > 1<<40 {
		return nil, fmt.Errorf("worker state: %d moments (%d block scales) at step %d, the model has %d parameters (%d scales)", got, k, step, sh.n, sh.k)
	}
	s := &workerState{opt: model.OptimState{Step: int(step)}, efs: efs, in: into}
	o := &s.opt
	var err error
	if into != nil {
		s.opt = model.OptimState{}
		if modelShape(into) != sh {
			return nil, fmt.Errorf("worker state: a model whose moments are shaped %+v cannot hold states shaped %+v", modelShape(into), sh)
		}
		err = into.ReadMoments(rd, int(step))
	} else if sh.k > 0 {
		o.M8, o.V8, o.MS, o.VS = make([]byte, sh.n), make([]byte, sh.n), make([]float32, sh.k), make([]float32, sh.k)
		for _, b := range [][]byte{o.M8, o.V8} {
			if err == nil {
				_, err = io.ReadFull(rd, b)
			}
		}
		for _, x := range [][]float32{o.MS, o.VS} {
			if err == nil {
				err = le.ReadFloats(rd, x)
			}
		}
	} else {
		o.M, o.V = make([]float32, sh.n), make([]float32, sh.n)
		if err = le.ReadFloats(rd, o.M); err == nil {
			err = le.ReadFloats(rd, o.V)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("worker state: its moments: %w", err)
	}
	if s.round, err = readEFState(rd, efs); err != nil {
		return nil, fmt.Errorf("worker state: %w", err)
	}
	return s, nil
}

// workerStateSize is the encoded size of a worker state of shape sh and
// residuals shaped as efs.
func workerStateSize(sh stateShape, efs []*gradsync.ErrorFeedback) int64 {
	if sh.k > 0 {
		return int64(32+2*sh.n+8*sh.k) + int64(efStateSize(efs))
	}
	return int64(24+8*sh.n) + int64(efStateSize(efs))
}

// heldState returns this node's worker state as the model and residuals
// hold it, after round r: where rounds overlap, a copy that the next
// round's steps leave alone; otherwise the model's moments and the
// residuals themselves, which nothing moves before the state is stored
// (streamed from them: a copy would be 4 bytes a parameter more at the
// peak for the residuals, 2 or 8 for the moments).
//
// A copy fills the buffers of the state held before (p.spare, once
// stored): allocating the three vectors afresh each round cost more than
// copying them, on the way from one round's steps to the next's.
func (p *Participant) heldState(r int) *workerState {
	if p.sync.Overlap == "" {
		return &workerState{in: p.m, round: r, efs: p.efs}
	}
	s := p.spare
	p.spare = nil
	if s == nil || len(s.efs) != len(p.efs) {
		s = &workerState{efs: make([]*gradsync.ErrorFeedback, len(p.efs))}
	}
	p.m.OptimStateInto(&s.opt)
	s.round = r
	for i, e := range p.efs {
		if f := s.efs[i]; f != nil && len(f.Residual) == len(e.Residual) {
			f.Codec = e.Codec
			copy(f.Residual, e.Residual)
		} else {
			s.efs[i] = &gradsync.ErrorFeedback{Codec: e.Codec, Residual: slices.Clone(e.Residual)}
		}
	}
	return s
}

// storeWorkerState adds worker state s to the store, pinned as pin, and
// returns its CID.
func (p *Participant) storeWorkerState(ctx context.Context, s *workerState, pin string) (cid.Cid, error) {
	return p.streamWorkerState(s, func(r io.Reader) (cid.Cid, error) {
		return p.n.Store.AddReader(ctx, r, contentstore.AddOptions{Pin: true, Name: pin})
	})
}

// workerStateCID is the CID worker state s is stored under.
func (p *Participant) workerStateCID(ctx context.Context, s *workerState) (cid.Cid, error) {
	return p.streamWorkerState(s, func(r io.Reader) (cid.Cid, error) { return contentstore.FileCID(ctx, r) })
}

// streamWorkerState hands import a reader of s's encoding, written as it
// is read: a large model's state is never held as bytes. The writer
// drives the backend where s's moments are a model's.
func (p *Participant) streamWorkerState(s *workerState, importer func(io.Reader) (cid.Cid, error)) (cid.Cid, error) {
	if s.in != nil {
		p.ru.drive.Lock()
		defer p.ru.drive.Unlock()
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		bw := bufio.NewWriterSize(pw, 1<<20)
		err := writeWorkerState(bw, s)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	k, err := importer(pr)
	pr.CloseWithError(errors.New("worker state: import stopped")) // the writer stops if the import did
	<-done
	return k, err
}

// workerStatePin names the pin of this node's worker state after round r
// of run. States are unpinned as round directories are pruned
// (RunOptions.KeepRounds), the newest two rounds' always kept: a spot
// check of round r, in round r+1, needs the states after r−1 and r.
func workerStatePin(run cid.Cid, r int) string {
	return fmt.Sprintf("run %s round %d worker state", run, r)
}

// pruneWorkerStates unpins this node's worker states of rounds up to upto.
func (p *Participant) pruneWorkerStates(upto int) error {
	for _, pin := range p.n.Store.Pins() {
		var r int
		if _, err := fmt.Sscanf(pin.Name, "run "+p.id.String()+" round %d worker state", &r); err != nil || r > upto ||
			pin.Name != workerStatePin(p.id, r) || pin.CID.Equals(p.held) {
			continue
		}
		if err := p.n.Store.Unpin(pin.CID); err != nil {
			return err
		}
	}
	return nil
}

// loadWorkerState reads worker state k (fetched if need be, within the
// context's wait) into a fresh set of residuals and model into's moments
// (it drives the backend). While it reads into this node's model, and
// after it failed to, the model holds nothing of this node's worker state
// (p.lent).
func (p *Participant) loadWorkerState(ctx context.Context, k cid.Cid, into *model.Model) (*workerState, error) {
	if k.Prefix().Codec != cid.DagProtobuf && k.Prefix().Codec != cid.Raw {
		return nil, fmt.Errorf("worker state %s is not a file", k)
	}
	// Fetches wait as ctx says (a file's reads would not): its root
	// first, whose declared size must be the run's, then the rest.
	if _, err := p.n.Store.FetchBlock(ctx, k); err != nil {
		return nil, fmt.Errorf("worker state %s: %w", k, err)
	}
	f, err := p.n.Store.Open(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("worker state %s: %w", k, err)
	}
	defer f.Close()
	sh, efs := p.stateShape(), p.newResiduals()
	want := workerStateSize(sh, efs)
	if int64(f.Size()) != want {
		return nil, fmt.Errorf("worker state %s: %d bytes, the run's model takes %d", k, f.Size(), want)
	}
	if err := p.n.Store.Fetch(ctx, k, nil); err != nil {
		return nil, fmt.Errorf("worker state %s: %w", k, err)
	}
	// Read as it decodes: the size was checked, so it ends where the file does.
	p.ru.drive.Lock()
	p.lent = p.lent || into == p.m
	s, err := readWorkerState(bufio.NewReaderSize(f, 1<<20), sh, efs, into)
	p.ru.drive.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	return s, nil
}

// newResiduals is a zeroed set of the run's error-feedback residuals.
func (p *Participant) newResiduals() []*gradsync.ErrorFeedback {
	efs := make([]*gradsync.ErrorFeedback, len(p.parts))
	for i, r := range p.parts {
		efs[i] = gradsync.NewErrorFeedback(p.codec, r.Size)
	}
	return efs
}

// holdState makes s (nil: a fresh state) the state this node's model and
// residuals hold, and k its CID (cid.Undef for a fresh one): s's moments
// were read into the model (loadHeld); residuals a lean node let go of
// (release) are s's own, or allocated.
func (p *Participant) holdState(s *workerState, k cid.Cid) error {
	if s == nil {
		if err := p.m.SetOptimState(model.OptimState{}); err != nil {
			return err
		}
		for i, e := range p.efs {
			if e.Residual == nil {
				e.Residual = make([]float32, p.parts[i].Size)
			}
			clear(e.Residual)
		}
	} else {
		if len(s.efs) != len(p.efs) {
			return fmt.Errorf("worker state %s: %d residual partitions, the run has %d", k, len(s.efs), len(p.efs))
		}
		for i, e := range s.efs {
			if len(e.Residual) != p.parts[i].Size {
				return fmt.Errorf("worker state %s: partition %d has %d residuals, the run %d", k, i, len(e.Residual), p.parts[i].Size)
			}
		}
		if s.in != p.m { // (loadHeld reads the moments into the model)
			return fmt.Errorf("worker state %s: its moments are not in this node's model", k)
		}
		for i, e := range s.efs {
			if p.efs[i].Residual == nil {
				p.efs[i].Residual = e.Residual
			} else {
				copy(p.efs[i].Residual, e.Residual)
			}
		}
	}
	p.held, p.lent = k, false
	return nil
}

// release lets go of what a lean node holds only while it trains or
// checks (RunOptions.Lean): the residuals, which the worker state it
// stored holds (p.held), and on the CPU its model. reclaim brings them
// back before its next steps.
func (p *Participant) release() {
	if !p.opts.Lean {
		return
	}
	p.ru.drive.Lock()
	for _, e := range p.efs {
		e.Residual = nil
	}
	if !p.opts.GPU {
		p.m, p.checker = nil, nil
	}
	p.lent = true
	p.ru.drive.Unlock()
	p.giveBack()
}

// giveBack hands the memory a lean node let go of back to the system
// before its next phase allocates: the collector would otherwise count
// it as in use until the heap reached its limit, and a vector of the
// model's size allocated then would overshoot the limit by its size.
// Large float slices hold no pointers: collecting costs little.
func (p *Participant) giveBack() {
	if p.opts.Lean {
		debug.FreeOSMemory()
	}
}

// ensureModel builds the node's model where a lean node let go of it
// (its moments then hold nothing of its worker state: p.lent). The
// caller holds ru.drive.
func (p *Participant) ensureModel() error {
	if p.m != nil {
		return nil
	}
	m, err := p.newModel()
	if err != nil {
		return err
	}
	p.m, p.lent = m, true
	return nil
}

// carryState applies the one rule to the round after rec: this node keeps
// (or, after a restart, reads back from its store) the state its
// contribution that rec included left, and starts fresh otherwise. Steps
// running ahead (overlap.go) go on if they still follow the rule, else
// they are dropped first.
func (p *Participant) carryState(ctx context.Context, rec *roundRecord) {
	if p.following || p.keepAhead(ctx, rec) {
		return
	}
	p.dropAhead(ctx)
	c := p.ownIncluded(ctx, rec)
	if c == nil {
		p.freshState()
		return
	}
	k, _ := c.State.Cid()
	if k.Equals(p.held) {
		return
	}
	if p.opts.Lean {
		p.held, p.lent = k, true // reclaim reads it before the next steps
		return
	}
	if err := p.loadHeld(contentstore.WithWait(ctx, contentstore.Wait{Stall: p.ru.fetchWait()}), k); err != nil {
		p.opts.Logf("run %s: starting round %d from a fresh worker state: %v", p.id, rec.Round+1, err)
		p.freshState()
	}
}

// loadHeld reads this node's worker state k into its model and residuals
// and holds it.
func (p *Participant) loadHeld(ctx context.Context, k cid.Cid) error {
	s, err := p.loadWorkerState(ctx, k, p.m)
	if err != nil {
		return err
	}
	p.ru.drive.Lock()
	defer p.ru.drive.Unlock()
	return p.holdState(s, k)
}

// freshState starts the next round from a fresh worker state (which
// cannot fail: the model's own moments, zeroed).
func (p *Participant) freshState() {
	if p.opts.Lean {
		p.held, p.lent = cid.Undef, true // reclaim zeroes them before the next steps
		return
	}
	if err := p.holdState(nil, cid.Undef); err != nil {
		panic(err) // a zero OptimState fits every model
	}
}

// ownIncluded returns this node's contribution that rec's round included
// (nil if none, or if this node no longer holds it).
func (p *Participant) ownIncluded(ctx context.Context, rec *roundRecord) *Contribution {
	for _, i := range rec.includedIndices() {
		k, err := rec.Contributions[i].Cid()
		if err != nil {
			continue
		}
		if ok, _ := p.n.Store.Has(ctx, k); !ok {
			continue
		}
		b, err := p.n.Store.Block(ctx, k)
		if err != nil {
			continue
		}
		if c, err := DecodeContribution(b.RawData()); err == nil && c.Peer == p.self.String() {
			return c
		}
	}
	return nil
}
