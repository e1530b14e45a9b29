package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gradsync"
)

// Error-feedback residuals, as a worker state holds them (workerstate.go):
//
//	"FOMEFST1" | round uint64 | parts uint32 | parts × (len uint32 | residual)
//
// (little-endian; each residual is gradsync's ErrorFeedback encoding).

const efMagic = "FOMEFST1"

// EncodeEFState serialises the residuals after round r.
func EncodeEFState(r int, efs []*gradsync.ErrorFeedback) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(efStateSize(efs))
	if err := writeEFState(&b, r, efs); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeEFState writes EncodeEFState's bytes to w, a partition at a time.
func writeEFState(w io.Writer, r int, efs []*gradsync.ErrorFeedback) error {
	h := make([]byte, 20)
	copy(h, efMagic)
	binary.LittleEndian.PutUint64(h[8:], uint64(r))
	binary.LittleEndian.PutUint32(h[16:], uint32(len(efs)))
	if _, err := w.Write(h); err != nil {
		return err
	}
	var b []byte
	for _, e := range efs {
		b = binary.LittleEndian.AppendUint32(b[:0], uint32(e.BinarySize()))
		var err error
		if b, err = e.AppendBinary(b); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// efStateSize is the length of EncodeEFState's bytes for efs.
func efStateSize(efs []*gradsync.ErrorFeedback) int {
	size := 20
	for _, e := range efs {
		size += 4 + e.BinarySize()
	}
	return size
}

// DecodeEFState restores residuals into efs (whose sizes must match) and
// returns the round they follow.
func DecodeEFState(b []byte, efs []*gradsync.ErrorFeedback) (int, error) {
	br := bytes.NewReader(b)
	r, err := readEFState(br, efs)
	if err == nil && br.Len() != 0 {
		err = fmt.Errorf("error-feedback state: %d trailing bytes", br.Len())
	}
	return r, err
}

// readEFState reads DecodeEFState's bytes from rd, a partition at a time
// (a large model's residuals are never held twice), up to their end.
func readEFState(rd io.Reader, efs []*gradsync.ErrorFeedback) (int, error) {
	h := make([]byte, 20)
	if _, err := io.ReadFull(rd, h); err != nil || string(h[:8]) != efMagic {
		return 0, errors.New("error-feedback state: bad magic or truncated header")
	}
	r := binary.LittleEndian.Uint64(h[8:])
	n := binary.LittleEndian.Uint32(h[16:])
	if r > 1_000_000 || int(n) != len(efs) {
		return 0, fmt.Errorf("error-feedback state: round %d, %d partitions (want %d)", r, n, len(efs))
	}
	var b []byte
	for i, e := range efs {
		if _, err := io.ReadFull(rd, h[:4]); err != nil {
			return 0, fmt.Errorf("error-feedback state: partition %d truncated", i)
		}
		if l := binary.LittleEndian.Uint32(h); int64(l) != int64(e.BinarySize()) {
			return 0, fmt.Errorf("error-feedback state: partition %d claims %d bytes, its residuals take %d", i, l, e.BinarySize())
		}
		b = slices.Grow(b[:0], e.BinarySize())[:e.BinarySize()]
		if _, err := io.ReadFull(rd, b); err != nil {
			return 0, fmt.Errorf("error-feedback state: partition %d truncated", i)
		}
		if err := e.UnmarshalBinary(b); err != nil {
			return 0, fmt.Errorf("error-feedback state: partition %d: %w", i, err)
		}
	}
	return int(r), nil
}

var roundDirRE = regexp.MustCompile(`^round-(\d{6})$`)

// resume loads the newest complete checkpoint this node wrote for the run
// (and, through settle, the worker state that follows it), so a restarted
// node continues where it stopped. It reports the round resumed from (0:
// none).
func (p *Participant) resume() (int, error) {
	rounds, err := p.roundDirs()
	if err != nil {
		return 0, err
	}
	sort.Sort(sort.Reverse(sort.IntSlice(rounds)))
	for _, r := range rounds {
		if r == 0 {
			break
		}
		dir := p.roundDir(r)
		st, err := p.readState(dir)
		if err == nil && st.round != r {
			err = fmt.Errorf("round.json says round %d", st.round)
		}
		if err != nil {
			p.opts.Logf("run %s: checkpoint of round %d unusable (%v); trying an older one", p.id, r, err)
			continue
		}
		// This node computed it (or recomputed it before adopting it).
		ctx := context.Background()
		if st.ck, err = p.n.Store.Add(ctx, dir, contentstore.AddOptions{}); err != nil {
			return 0, err
		}
		if err := p.settle(ctx, lineage{st}); err != nil {
			return 0, err
		}
		return r, nil
	}
	return 0, nil
}
