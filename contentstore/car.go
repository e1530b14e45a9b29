package contentstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fomnet/fomnet/internal/fsutil"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carstore "github.com/ipld/go-car/v2/blockstore"
)

// ExportCAR writes the DAG under root, which must be stored locally, to
// path as a CARv2 file (CARv1 payload in depth-first link order, then an
// index). The file appears only when complete.
func (s *Store) ExportCAR(ctx context.Context, root cid.Cid, path string) error {
	s.gc.RLock()
	defer s.gc.RUnlock()
	if err := s.requireComplete(ctx, "export", root); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".part-")
	if err != nil {
		return fmt.Errorf("contentstore: export to %s: %w", path, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // a no-op after the rename
	rw, err := carstore.OpenReadWrite(tmpName, []cid.Cid{root})
	if err != nil {
		return fmt.Errorf("contentstore: export to %s: %w", path, err)
	}
	werr := s.walk(ctx, root, func(c cid.Cid, data []byte, err error) bool {
		if err != nil {
			return false
		}
		b, berr := blocks.NewBlockWithCid(data, c)
		if berr == nil {
			berr = rw.Put(ctx, b)
		}
		if berr != nil {
			err = berr
		}
		return berr == nil
	})
	if werr != nil {
		rw.Discard()
		return fmt.Errorf("contentstore: export to %s: %w", path, werr)
	}
	if err := rw.Finalize(); err != nil {
		return fmt.Errorf("contentstore: export to %s: %w", path, err)
	}
	f, err := os.OpenFile(tmpName, os.O_RDWR, 0)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err == nil {
		err = os.Chmod(tmpName, 0o644)
	}
	if err == nil {
		err = os.Rename(tmpName, path)
	}
	if err != nil {
		return fmt.Errorf("contentstore: export to %s: %w", path, err)
	}
	return fsutil.SyncDir(dir)
}

// ImportResult says what ImportCAR stored.
type ImportResult struct {
	Roots  []cid.Cid
	Blocks int
	Bytes  int64
	// Incomplete lists roots whose DAG is not entirely present after the
	// import; they are not pinned.
	Incomplete []cid.Cid
}

// ImportCAR reads a CARv1 or CARv2 stream, checks every block against its
// CID and stores it, then pins (if pin) each root whose DAG is complete.
// A malformed CAR or a block that does not match its CID stops the import
// with an error naming the block's position; blocks stored before it are
// intact but not pinned, and nothing already stored is changed.
func (s *Store) ImportCAR(ctx context.Context, r io.Reader, name string, pin bool) (ImportResult, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	var res ImportResult
	br, err := carv2.NewBlockReader(r, carv2.MaxAllowedSectionSize(4<<20))
	if err != nil {
		return res, fmt.Errorf("contentstore: import %s: %w", name, err)
	}
	res.Roots = br.Roots
	if len(res.Roots) == 0 {
		return res, fmt.Errorf("contentstore: import %s: the CAR names no roots", name)
	}
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("contentstore: import %s: block %d: %w", name, res.Blocks, err)
		}
		if err := s.bsvc.AddBlock(ctx, b); err != nil {
			return res, fmt.Errorf("contentstore: import %s: storing block %d (%s): %w", name, res.Blocks, b.Cid(), err)
		}
		res.Blocks++
		res.Bytes += int64(len(b.RawData()))
	}
	for _, root := range res.Roots {
		rep, err := s.verifyLocked(ctx, root)
		if err != nil {
			return res, err
		}
		if !rep.OK() {
			res.Incomplete = append(res.Incomplete, root)
			continue
		}
		if pin {
			if err := s.pinLocked(root, name); err != nil {
				return res, err
			}
			s.provide(root)
		}
	}
	return res, nil
}
