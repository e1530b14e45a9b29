package contentstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Fetch makes every block of the DAG under root present locally, fetching
// missing ones over bitswap (blocks already present are not fetched again,
// so an interrupted fetch resumes where it stopped). Progress counts DAG
// bytes against the root's cumulative size. Fetched blocks are not pinned.
func (s *Store) Fetch(ctx context.Context, root cid.Cid, progress Progress) error {
	s.gc.RLock()
	defer s.gc.RUnlock()
	return s.fetchLocked(ctx, root, progress)
}

func (s *Store) fetchLocked(ctx context.Context, root cid.Cid, progress Progress) error {
	ctx, wt, end := s.beginFetch(ctx, root)
	defer end()
	ses := blockservice.NewSession(ctx, s.bsvc)
	rb, err := ses.GetBlock(ctx, root)
	if err != nil {
		return fmt.Errorf("contentstore: fetching %s: %w", root, stalled(ctx, err))
	}
	wt.arrived()
	total := int64(-1)
	if nd, err := decodeSize(rb.Cid(), rb.RawData()); err == nil {
		total = nd
	}
	pr := &progressCounter{total: total, fn: progress}
	pr.add(len(rb.RawData()))
	level, err := blockLinks(root, rb.RawData())
	if err != nil {
		return fmt.Errorf("contentstore: fetching %s: %w", root, err)
	}
	seen := map[cid.Cid]bool{root: true}
	for len(level) > 0 {
		want := level[:0:0]
		for _, c := range level {
			if !seen[c] {
				seen[c] = true
				want = append(want, c)
			}
		}
		got := make(map[cid.Cid]bool, len(want))
		var next []cid.Cid
		for b := range ses.GetBlocks(ctx, want) {
			wt.arrived()
			got[b.Cid()] = true
			pr.add(len(b.RawData()))
			links, err := blockLinks(b.Cid(), b.RawData())
			if err != nil {
				return fmt.Errorf("contentstore: fetching %s: %w", root, err)
			}
			next = append(next, links...)
		}
		if len(got) < len(want) {
			var missing cid.Cid
			for _, c := range want {
				if !got[c] {
					missing = c
					break
				}
			}
			err := stalled(ctx, ctx.Err())
			if err == nil {
				err = errors.New("not found")
			}
			return fmt.Errorf("contentstore: fetching %s: %d of %d blocks not received (first: %s): %w", root, len(want)-len(got), len(want), missing, err)
		}
		level = next
	}
	return nil
}

// decodeSize returns the cumulative DAG size a block declares: its own
// size plus the sizes its links record (dag-pb), or its length.
func decodeSize(c cid.Cid, data []byte) (int64, error) {
	if c.Prefix().Codec != cid.DagProtobuf {
		return int64(len(data)), nil
	}
	nd, err := merkledag.DecodeProtobuf(data)
	if err != nil {
		return 0, err
	}
	sz, err := nd.Size()
	return int64(sz), err
}

// beginFetch starts what every fetch of root from the network has beside
// it: its watchdog (ctx's Wait) and, online, the search for root's
// providers, dialled as they are found. end stops both and waits for them.
func (s *Store) beginFetch(ctx context.Context, root cid.Cid) (context.Context, *watch, func()) {
	ctx, wt, stop := s.startWatch(ctx, root)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if s.host != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.connectProviders(ctx, root, wt)
		}()
	}
	return ctx, wt, func() { cancel(); wg.Wait(); stop() }
}

// connectProviders finds providers of c on the DHT (counting them in wt)
// and connects to them, so that the bitswap session has peers to ask
// beyond the ones already connected.
func (s *Store) connectProviders(ctx context.Context, c cid.Cid, wt *watch) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for ai := range s.host.DHT.FindProvidersAsync(ctx, c, 20) {
		if ai.ID == s.host.ID() {
			continue
		}
		wt.providers.Add(1)
		if len(s.host.Network().ConnsToPeer(ai.ID)) > 0 {
			continue
		}
		wg.Add(1)
		go func(ai peer.AddrInfo) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			if err := s.host.Connect(cctx, ai); err != nil && ctx.Err() == nil {
				s.opts.Logf("contentstore: provider %s of %s: %v", ai.ID, c, err)
			}
		}(ai)
	}
}

// FetchBlock returns block c from the store, or else from the network: it
// asks the DHT for providers and connects to them as Fetch does, and waits
// as ctx's Wait says.
func (s *Store) FetchBlock(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if b, err := s.bs.Get(ctx, c); err == nil {
		return b, nil
	}
	ctx, _, end := s.beginFetch(ctx, c)
	defer end()
	b, err := s.bsvc.GetBlock(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("contentstore: fetching %s: %w", c, stalled(ctx, err))
	}
	return b, nil
}

// Get fetches the DAG under c and writes it to out: a file, or a directory
// tree. out is written beside itself under a temporary name and renamed
// into place when complete, so a failure (disk full, permissions, a
// cancelled fetch) leaves no partial file; an existing file at out is
// replaced, an existing directory is not.
func (s *Store) Get(ctx context.Context, c cid.Cid, out string, progress Progress) error {
	if err := s.Fetch(ctx, c, progress); err != nil {
		return err
	}
	return s.WriteOut(ctx, c, out)
}

// ErrTooLarge reports content that would not fit where it is written.
var ErrTooLarge = errors.New("contentstore: content does not fit")

// DeclaredSize returns how many bytes writing the UnixFS file or directory
// c (stored locally) writes: its files' sizes as its nodes declare them,
// every repeated link counted again, as writing it would. Each distinct
// node is read once, so a small DAG whose links repeat blocks (its written
// size growing exponentially with depth) costs little to measure; past
// limit it stops with ErrTooLarge.
func (s *Store) DeclaredSize(ctx context.Context, c cid.Cid, limit int64) (int64, error) {
	nd, err := s.off.Get(ctx, c)
	if err != nil {
		return 0, fmt.Errorf("contentstore: %s: %w", c, err)
	}
	return s.declared(ctx, nd, limit, map[cid.Cid]int64{})
}

func (s *Store) declared(ctx context.Context, nd ipld.Node, limit int64, seen map[cid.Cid]int64) (int64, error) {
	if n, ok := seen[nd.Cid()]; ok {
		return n, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	size := int64(len(nd.RawData())) // a raw leaf
	if pn, ok := nd.(*merkledag.ProtoNode); ok {
		fsn, err := unixfs.FSNodeFromBytes(pn.Data())
		if err != nil {
			return 0, fmt.Errorf("%s: not UnixFS: %w", nd.Cid(), err)
		}
		switch fsn.Type() {
		case unixfs.TDirectory, unixfs.THAMTShard:
			d, err := uio.NewDirectoryFromNode(s.off, nd)
			if err != nil {
				return 0, err
			}
			size = 0
			err = d.ForEachLink(ctx, func(l *ipld.Link) error {
				child, err := l.GetNode(ctx, s.off)
				if err != nil {
					return err
				}
				n, err := s.declared(ctx, child, limit, seen)
				if size += n; err == nil && size > limit {
					err = fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
				}
				return err
			})
			if err != nil {
				return 0, err
			}
		default:
			size = int64(fsn.FileSize())
		}
	}
	if size > limit {
		return 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	seen[nd.Cid()] = size
	return size, nil
}

// WriteOut writes the UnixFS file or directory c, which must be stored
// locally, to out (see Get). It first adds up what c declares it holds and
// refuses, writing nothing, what would not fit in the space left there.
func (s *Store) WriteOut(ctx context.Context, c cid.Cid, out string) error {
	if st, err := os.Lstat(out); err == nil && st.IsDir() {
		return fmt.Errorf("contentstore: %s already exists and is a directory", out)
	}
	nd, err := s.off.Get(ctx, c)
	if err != nil {
		return fmt.Errorf("contentstore: %s: %w", c, err)
	}
	dir := filepath.Dir(out)
	if free, ok := freeSpace(dir); ok {
		if _, err := s.DeclaredSize(ctx, c, free); err != nil {
			if errors.Is(err, ErrTooLarge) {
				return fmt.Errorf("contentstore: %s declares more than the %d bytes free at %s: %w", c, free, dir, ErrTooLarge)
			}
			return fmt.Errorf("contentstore: %s: %w", c, err)
		}
	}
	tmp, err := os.MkdirTemp(dir, "."+filepath.Base(out)+".part-")
	if err != nil {
		return fmt.Errorf("contentstore: writing %s: %w", out, err)
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	target := filepath.Join(tmp, "x")
	if err := s.writeNode(ctx, nd, target); err != nil {
		return fmt.Errorf("contentstore: writing %s: %w", out, err)
	}
	if err := os.Rename(target, out); err != nil {
		return fmt.Errorf("contentstore: writing %s: %w", out, err)
	}
	return fsutil.SyncDir(dir)
}

// writeNode writes the file or directory nd at path.
func (s *Store) writeNode(ctx context.Context, nd ipld.Node, path string) error {
	if pn, ok := nd.(*merkledag.ProtoNode); ok {
		fsn, err := unixfs.FSNodeFromBytes(pn.Data())
		if err != nil {
			return fmt.Errorf("%s: not UnixFS: %w", nd.Cid(), err)
		}
		switch fsn.Type() {
		case unixfs.TDirectory, unixfs.THAMTShard:
			return s.writeDir(ctx, nd, path)
		case unixfs.TFile, unixfs.TRaw:
		default:
			return fmt.Errorf("%s: UnixFS %s nodes are not supported", nd.Cid(), fsn.Type())
		}
	}
	return s.writeFile(ctx, nd, path)
}

func (s *Store) writeFile(ctx context.Context, nd ipld.Node, path string) error {
	r, err := uio.NewDagReader(ctx, nd, s.off)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s *Store) writeDir(ctx context.Context, nd ipld.Node, path string) error {
	d, err := uio.NewDirectoryFromNode(s.off, nd)
	if err != nil {
		return err
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		return err
	}
	return d.ForEachLink(ctx, func(l *ipld.Link) error {
		if err := checkName(l.Name); err != nil {
			return fmt.Errorf("directory %s: %w", nd.Cid(), err)
		}
		child, err := l.GetNode(ctx, s.off)
		if err != nil {
			return err
		}
		return s.writeNode(ctx, child, filepath.Join(path, l.Name))
	})
}

// checkName refuses directory entry names that would escape the directory
// being written or cannot be file names.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || (filepath.Separator != '/' && strings.ContainsRune(name, filepath.Separator)) {
		return fmt.Errorf("entry name %q is not a safe file name", name)
	}
	return nil
}

// File is a UnixFS file opened for reading and seeking.
type File = uio.DagReader

// FileAt reads a File at offsets (io.ReaderAt), one read at a time: it
// seeks only where a read does not start where the last one ended, so a
// file read in order costs no more than reading it through.
type FileAt struct {
	mu  sync.Mutex
	f   File
	pos int64
}

// NewFileAt reads f, which it takes at its start, at offsets.
func NewFileAt(f File) *FileAt { return &FileAt{f: f} }

// ReadAt reads len(p) bytes from off, fewer only at the end (io.EOF).
func (a *FileAt) ReadAt(p []byte, off int64) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if off != a.pos {
		if _, err := a.f.Seek(off, io.SeekStart); err != nil {
			a.pos = -1 // where f stands is unknown: the next read seeks
			return 0, err
		}
		a.pos = off
	}
	n, err := io.ReadFull(a.f, p)
	a.pos += int64(n)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// Open opens the UnixFS file c for reading. Blocks are fetched as the
// reads reach them (online stores), so reading a byte range fetches only
// the blocks that cover it.
func (s *Store) Open(ctx context.Context, c cid.Cid) (File, error) {
	nd, err := s.dag.Get(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("contentstore: %s: %w", c, err)
	}
	r, err := uio.NewDagReader(ctx, nd, merkledag.NewSession(ctx, s.dag))
	if err != nil {
		return nil, fmt.Errorf("contentstore: %s: %w", c, err)
	}
	return r, nil
}

// ReadRange returns length bytes of the file c from offset off (fewer at
// the end of the file).
func (s *Store) ReadRange(ctx context.Context, c cid.Cid, off, length int64) ([]byte, error) {
	if off < 0 || length < 0 {
		return nil, fmt.Errorf("contentstore: range %d+%d of %s: negative", off, length, c)
	}
	r, err := s.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	size := int64(r.Size())
	if off > size {
		return nil, fmt.Errorf("contentstore: range %d+%d of %s: starts past the end (%d bytes)", off, length, c, size)
	}
	if off+length > size {
		length = size - off
	}
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		return nil, fmt.Errorf("contentstore: range %d+%d of %s: %w", off, length, c, err)
	}
	buf := make([]byte, length)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("contentstore: range %d+%d of %s: %w", off, length, c, err)
	}
	return buf, nil
}

// Lookup returns the CID of the entry name in the UnixFS directory dir
// (fetching the directory's blocks if the store is online).
func (s *Store) Lookup(ctx context.Context, dir cid.Cid, name string) (cid.Cid, error) {
	nd, err := s.dag.Get(ctx, dir)
	if err != nil {
		return cid.Undef, fmt.Errorf("contentstore: %s: %w", dir, err)
	}
	d, err := uio.NewDirectoryFromNode(s.dag, nd)
	if err != nil {
		return cid.Undef, fmt.Errorf("contentstore: %s is not a directory: %w", dir, err)
	}
	l, err := d.Find(ctx, name)
	if err != nil {
		return cid.Undef, fmt.Errorf("contentstore: %s/%s: %w", dir, name, err)
	}
	return l.Cid(), nil
}
