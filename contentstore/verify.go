package contentstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Report is the result of verifying a DAG.
type Report struct {
	Root    cid.Cid
	Blocks  int   // blocks present and intact
	Bytes   int64 // their total size
	Missing []cid.Cid
	Corrupt []cid.Cid // present but not hashing to their CID, or undecodable
}

// OK reports whether every block is present and intact.
func (r Report) OK() bool { return len(r.Missing) == 0 && len(r.Corrupt) == 0 }

// Problem describes what is wrong, or "" when OK.
func (r Report) Problem() string {
	switch {
	case r.OK():
		return ""
	case len(r.Corrupt) == 0:
		return fmt.Sprintf("%d blocks missing (first: %s)", len(r.Missing), r.Missing[0])
	case len(r.Missing) == 0:
		return fmt.Sprintf("%d blocks corrupt (first: %s)", len(r.Corrupt), r.Corrupt[0])
	}
	return fmt.Sprintf("%d blocks missing (first: %s), %d corrupt (first: %s)", len(r.Missing), r.Missing[0], len(r.Corrupt), r.Corrupt[0])
}

// Verify walks the DAG under root in the local store, rehashes every block
// and reports the missing and corrupt ones. It never fetches. Children of a
// missing or corrupt block cannot be reached and are not reported.
func (s *Store) Verify(ctx context.Context, root cid.Cid) (Report, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	return s.verifyLocked(ctx, root)
}

func (s *Store) verifyLocked(ctx context.Context, root cid.Cid) (Report, error) {
	rep := Report{Root: root}
	err := s.walk(ctx, root, func(c cid.Cid, data []byte, err error) bool {
		var ce *CorruptError
		switch {
		case err == nil:
			rep.Blocks++
			rep.Bytes += int64(len(data))
			return true
		case ipld.IsNotFound(err):
			rep.Missing = append(rep.Missing, c)
		case errors.As(err, &ce), errors.Is(err, errUndecodable):
			rep.Corrupt = append(rep.Corrupt, c)
		}
		return false
	})
	return rep, err
}

// requireComplete fails unless every block under root is stored and
// intact; op names the operation in the error. The caller holds gc.
func (s *Store) requireComplete(ctx context.Context, op string, root cid.Cid) error {
	rep, err := s.verifyLocked(ctx, root)
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("contentstore: %s %s: %s", op, root, rep.Problem())
	}
	return nil
}

var errUndecodable = errors.New("undecodable block")

// walk visits each block of the DAG under root once, depth first in link
// order, reading the raw store. visit gets the block's bytes, or an error:
// not found, *CorruptError, or errUndecodable. Links are followed when
// visit returns true and the block decoded. Store errors other than "not
// found" end the walk.
func (s *Store) walk(ctx context.Context, root cid.Cid, visit func(c cid.Cid, data []byte, err error) bool) error {
	seen := map[cid.Cid]bool{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[c] {
			continue
		}
		seen[c] = true
		if c.Prefix().MhType == 0x00 { // identity hash: the data is in the CID
			visit(c, nil, nil)
			continue
		}
		b, err := s.raw.Get(ctx, c)
		if err != nil {
			if ipld.IsNotFound(err) {
				visit(c, nil, err)
				continue
			}
			return fmt.Errorf("contentstore: reading %s: %w", c, err)
		}
		if err := checkBlock(c, b.RawData()); err != nil {
			visit(c, b.RawData(), err)
			continue
		}
		links, lerr := blockLinks(c, b.RawData())
		if lerr != nil {
			visit(c, b.RawData(), fmt.Errorf("%w: %v", errUndecodable, lerr))
			continue
		}
		if !visit(c, b.RawData(), nil) {
			continue
		}
		for i := len(links) - 1; i >= 0; i-- {
			stack = append(stack, links[i])
		}
	}
	return nil
}

// Repair deletes the corrupt blocks a report lists, so that a later Fetch
// gets good copies from the network.
func (s *Store) Repair(ctx context.Context, rep Report) error {
	for _, c := range rep.Corrupt {
		if err := s.raw.DeleteBlock(ctx, c); err != nil {
			return fmt.Errorf("contentstore: deleting corrupt block %s: %w", c, err)
		}
	}
	return nil
}
