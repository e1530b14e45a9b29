package contentstore

import (
	"context"
	"fmt"
	"sort"

	"github.com/ipfs/go-cid"
)

// Pin pins root recursively. The whole DAG must be stored locally (Fetch it
// first); a DAG with missing or corrupt blocks is refused.
func (s *Store) Pin(ctx context.Context, root cid.Cid, name string) error {
	s.gc.RLock()
	defer s.gc.RUnlock()
	if err := s.requireComplete(ctx, "pin", root); err != nil {
		return err
	}
	if err := s.pinLocked(root, name); err != nil {
		return err
	}
	s.provide(root)
	return nil
}

// pinLocked records a pin; the caller holds gc shared.
func (s *Store) pinLocked(root cid.Cid, name string) error {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	if old, ok := s.pins[root]; ok && (old == name || name == "") {
		return nil
	}
	// The DAG's blocks reach the disk before the pin that promises them.
	if err := syncFS(s.lock); err != nil {
		return fmt.Errorf("contentstore: pin %s: syncing blocks: %w", root, err)
	}
	prev, had := s.pins[root]
	s.pins[root] = name
	if err := s.savePins(); err != nil {
		if had {
			s.pins[root] = prev
		} else {
			delete(s.pins, root)
		}
		return err
	}
	return nil
}

// Unpin removes the pin on root; its blocks go at the next GC unless
// another pin reaches them.
func (s *Store) Unpin(root cid.Cid) error {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	name, ok := s.pins[root]
	if !ok {
		return fmt.Errorf("contentstore: %s is not pinned", root)
	}
	delete(s.pins, root)
	if err := s.savePins(); err != nil {
		s.pins[root] = name
		return err
	}
	return nil
}

// Pins lists the pins in CID order.
func (s *Store) Pins() []Pin {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	out := make([]Pin, 0, len(s.pins))
	for c, n := range s.pins {
		out = append(out, Pin{CID: c, Name: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CID.KeyString() < out[j].CID.KeyString() })
	return out
}

// IsPinned reports whether root is pinned (directly).
func (s *Store) IsPinned(root cid.Cid) bool {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	_, ok := s.pins[root]
	return ok
}

// GCResult says what a garbage collection removed.
type GCResult struct {
	Removed int   `json:"removed"`     // blocks deleted
	Freed   int64 `json:"freed_bytes"` // bytes deleted
	Kept    int   `json:"kept"`        // blocks reachable from pins
}

// GC deletes every block not reachable from a pin. It waits for running
// adds, fetches and imports to finish and holds new ones off while it runs.
// Blocks a pinned DAG is missing do not stop it; corrupt blocks under a pin
// are kept (Verify reports them).
func (s *Store) GC(ctx context.Context) (GCResult, error) {
	s.gc.Lock()
	defer s.gc.Unlock()
	// The blockstore keys blocks by multihash (AllKeysChan gives them back
	// as raw CIDs), so liveness is by multihash too.
	live := map[string]bool{}
	for _, p := range s.Pins() {
		if err := s.walk(ctx, p.CID, func(c cid.Cid, data []byte, err error) bool {
			live[string(c.Hash())] = true
			return err == nil
		}); err != nil {
			return GCResult{}, err
		}
	}
	keys, err := s.raw.AllKeysChan(ctx)
	if err != nil {
		return GCResult{}, fmt.Errorf("contentstore: gc: %w", err)
	}
	var res GCResult
	var dead []cid.Cid
	for c := range keys {
		if live[string(c.Hash())] {
			res.Kept++
			continue
		}
		dead = append(dead, c)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	for _, c := range dead {
		n, err := s.raw.GetSize(ctx, c)
		if err != nil {
			n = 0
		}
		if err := s.raw.DeleteBlock(ctx, c); err != nil {
			return res, fmt.Errorf("contentstore: gc: deleting %s: %w", c, err)
		}
		res.Removed++
		res.Freed += int64(n)
	}
	return res, nil
}
