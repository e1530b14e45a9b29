package contentstore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Progress is told how many bytes are done out of total (-1: not known yet).
type Progress func(done, total int64)

// AddOptions configure Add.
type AddOptions struct {
	// Pin pins the result (recursively).
	Pin bool
	// Name is recorded with the pin (default: the path's base name).
	Name string
	// Progress, if set, is called as file bytes are imported.
	Progress Progress
}

// Add imports a file or a directory tree as UnixFS with fomnet's import
// parameters (the CID FileCID computes for a file), stores its blocks,
// optionally pins it and, when online, provides it. Symbolic links and
// special files are refused, so the same tree always gives the same CID.
func (s *Store) Add(ctx context.Context, path string, o AddOptions) (cid.Cid, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return cid.Undef, fmt.Errorf("contentstore: add: %w", err)
	}
	total := int64(-1)
	if st.Mode().IsRegular() {
		total = st.Size()
	} else if st.IsDir() {
		total, err = treeSize(path)
		if err != nil {
			return cid.Undef, fmt.Errorf("contentstore: add: %w", err)
		}
	}
	s.gc.RLock()
	defer s.gc.RUnlock()
	pr := &progressCounter{total: total, fn: o.Progress}
	nd, err := s.addPath(ctx, path, st, pr)
	if err != nil {
		return cid.Undef, err
	}
	if o.Pin {
		name := o.Name
		if name == "" {
			name = filepath.Base(path)
		}
		if err := s.pinLocked(nd.Cid(), name); err != nil {
			return cid.Undef, err
		}
	}
	s.provide(nd.Cid())
	return nd.Cid(), nil
}

// AddReader imports the bytes of r as one UnixFS file (not pinned).
func (s *Store) AddReader(ctx context.Context, r io.Reader, o AddOptions) (cid.Cid, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	nd, err := s.addFile(r, &progressCounter{total: -1, fn: o.Progress})
	if err != nil {
		return cid.Undef, err
	}
	if o.Pin {
		if err := s.pinLocked(nd.Cid(), o.Name); err != nil {
			return cid.Undef, err
		}
	}
	s.provide(nd.Cid())
	return nd.Cid(), nil
}

func (s *Store) addPath(ctx context.Context, path string, st os.FileInfo, pr *progressCounter) (ipld.Node, error) {
	switch {
	case st.Mode().IsRegular():
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("contentstore: add: %w", err)
		}
		defer f.Close()
		nd, err := s.addFile(&ctxReader{ctx: ctx, r: f}, pr)
		if err != nil {
			return nil, fmt.Errorf("contentstore: add %s: %w", path, err)
		}
		return nd, nil
	case st.IsDir():
		return s.addDir(ctx, path, pr)
	}
	return nil, fmt.Errorf("contentstore: add %s: %s is not a regular file or directory", path, st.Mode().Type())
}

func (s *Store) addFile(r io.Reader, pr *progressCounter) (ipld.Node, error) {
	p := importParams(s.dag)
	db, err := p.New(chunker.NewSizeSplitter(&countingReader{r: r, pr: pr}, ChunkSize))
	if err != nil {
		return nil, err
	}
	return balanced.Layout(db)
}

func (s *Store) addDir(ctx context.Context, path string, pr *progressCounter) (ipld.Node, error) {
	dir, err := uio.NewDirectory(s.dag, uio.WithCidBuilder(merkledag.V1CidPrefix()))
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return nil, fmt.Errorf("contentstore: add: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(path, e.Name())
		st, err := os.Lstat(p)
		if err != nil {
			return nil, fmt.Errorf("contentstore: add: %w", err)
		}
		nd, err := s.addPath(ctx, p, st, pr)
		if err != nil {
			return nil, err
		}
		if err := dir.AddChild(ctx, e.Name(), nd); err != nil {
			return nil, fmt.Errorf("contentstore: add %s: %w", p, err)
		}
	}
	nd, err := dir.GetNode()
	if err != nil {
		return nil, err
	}
	if err := s.dag.Add(ctx, nd); err != nil {
		return nil, fmt.Errorf("contentstore: add %s: %w", path, err)
	}
	return nd, nil
}

// treeSize sums the sizes of the regular files under dir.
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

type progressCounter struct {
	done, total int64
	fn          Progress
}

func (p *progressCounter) add(n int) {
	p.done += int64(n)
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
}

type countingReader struct {
	r  io.Reader
	pr *progressCounter
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.pr.add(n)
	return n, err
}

// ctxReader stops a long import when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
