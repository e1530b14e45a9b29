package contentstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/p2p"
	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	flatfs "github.com/ipfs/go-ds-flatfs"
	ipld "github.com/ipfs/go-ipld-format"
)

// Options configure a Store.
type Options struct {
	// Host, if set, makes the store online: a bitswap client and server run
	// on it, with the host's DHT for content routing, and added or pinned
	// roots are provided to the DHT. Without a host the store only serves
	// what it holds to the local process.
	Host *p2p.Host
	// Bitswap adds options to the bitswap instance (tuning, tests).
	Bitswap []bitswap.Option
	// Logf receives notable events, Debugf routine ones such as a DHT
	// provide that found no peers (nil: discarded).
	Logf, Debugf func(format string, args ...any)
}

// Store is a node's content store: a boxo blockstore on flatfs under dir,
// a pin set, and (when online) bitswap.
//
// Blocks read through the store are rehashed; a block that fails its hash
// is deleted and treated as missing, so an online store fetches it again
// and a corrupt block is never served or returned as content.
type Store struct {
	dir  string
	opts Options
	lock *os.File
	ds   *flatfs.Datastore
	raw  blockstore.Blockstore // no hashing on read: Verify and GC
	bs   blockstore.Blockstore // verifying
	bsvc blockservice.BlockService
	dag  ipld.DAGService // online when Host is set
	off  ipld.DAGService // never touches the network
	swap *bitswap.Bitswap
	host *p2p.Host

	// gc is held shared by everything that writes blocks it means to keep
	// (add, fetch, import, pin) and exclusively by GC.
	gc sync.RWMutex

	pinMu sync.Mutex
	pins  map[cid.Cid]string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the store in dir. Only one process may
// have a store open at a time.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Debugf == nil {
		opts.Debugf = func(string, ...any) {}
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("contentstore: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	// Block files are not fsynced one by one (flatfs sync off): fetched
	// blocks are a cache that a crash may truncate, and reads rehash every
	// block, so a damaged one is deleted and fetched again. What must
	// survive a crash is made durable with one syncfs before a pin is
	// recorded (see pinLocked). This doubles bitswap's write throughput.
	ds, err := flatfs.CreateOrOpen(filepath.Join(dir, "blocks"), flatfs.NextToLast(2), false)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("contentstore: opening blocks in %s: %w", dir, err)
	}
	s := &Store{dir: dir, opts: opts, lock: lock, ds: ds, host: opts.Host}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.raw = blockstore.NewBlockstore(ds, blockstore.NoPrefix())
	s.bs = &verifying{Blockstore: s.raw, logf: opts.Logf}
	if err := s.loadPins(); err != nil {
		s.Close()
		return nil, err
	}
	s.off = merkledag.NewDAGService(blockservice.New(s.bs, nil))
	if opts.Host != nil {
		net := bsnet.NewFromIpfsHost(opts.Host.Host)
		s.swap = bitswap.New(s.ctx, net, opts.Host.DHT, s.bs, opts.Bitswap...)
		s.bsvc = blockservice.New(s.bs, s.swap)
		s.wg.Add(1)
		go s.reprovideLoop()
	} else {
		s.bsvc = blockservice.New(s.bs, nil)
	}
	s.dag = merkledag.NewDAGService(s.bsvc)
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Online reports whether the store fetches from and serves to the network.
func (s *Store) Online() bool { return s.swap != nil }

// Close stops bitswap and background work, waits for it, and closes the
// datastore. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		var errs []error
		if s.swap != nil {
			errs = append(errs, s.swap.Close())
		}
		if s.ds != nil {
			errs = append(errs, s.ds.Close())
		}
		errs = append(errs, s.lock.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Has reports whether the block c is stored locally.
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	return s.raw.Has(ctx, c)
}

// Block returns the block c (verified), fetching it if the store is
// online: as FetchBlock, so a fetch waits as ctx's Wait says.
func (s *Store) Block(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	return s.FetchBlock(ctx, c)
}

// PutBlock stores one block, checking that data hashes to c.
func (s *Store) PutBlock(ctx context.Context, c cid.Cid, data []byte) error {
	if err := checkBlock(c, data); err != nil {
		return err
	}
	b, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		return err
	}
	s.gc.RLock()
	defer s.gc.RUnlock()
	return s.bsvc.AddBlock(ctx, b)
}

// Stat sums the blocks in the store.
func (s *Store) Stat(ctx context.Context) (blocksN int, bytes int64, err error) {
	keys, err := s.raw.AllKeysChan(ctx)
	if err != nil {
		return 0, 0, err
	}
	for c := range keys {
		n, err := s.raw.GetSize(ctx, c)
		if err != nil {
			continue
		}
		blocksN++
		bytes += int64(n)
	}
	return blocksN, bytes, ctx.Err()
}

// Traffic counts what bitswap moved since the store opened.
type Traffic struct {
	BlocksReceived uint64 `json:"blocks_received"`
	BytesReceived  uint64 `json:"bytes_received"`
	DupBlocks      uint64 `json:"duplicate_blocks"`
	BlocksSent     uint64 `json:"blocks_sent"`
	BytesSent      uint64 `json:"bytes_sent"`
}

// Traffic returns bitswap's counters (zero for an offline store).
func (s *Store) Traffic() Traffic {
	if s.swap == nil {
		return Traffic{}
	}
	st, err := s.swap.Stat()
	if err != nil {
		return Traffic{}
	}
	return Traffic{BlocksReceived: st.BlocksReceived, BytesReceived: st.DataReceived, DupBlocks: st.DupBlksReceived,
		BlocksSent: st.BlocksSent, BytesSent: st.DataSent}
}

// provide announces c on the DHT in the background (online stores only).
func (s *Store) provide(c cid.Cid) {
	if s.host == nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
		defer cancel()
		if err := s.host.DHT.Provide(ctx, c, true); err != nil && s.ctx.Err() == nil {
			s.opts.Debugf("contentstore: providing %s: %v", c, err)
		}
	}()
}

// reprovideInterval is how often pinned roots are announced again (DHT
// provider records expire after 48 hours).
const reprovideInterval = 12 * time.Hour

func (s *Store) reprovideLoop() {
	defer s.wg.Done()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range s.Pins() {
			ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
			err := s.host.DHT.Provide(ctx, p.CID, true)
			cancel()
			if s.ctx.Err() != nil {
				return
			}
			if err != nil {
				s.opts.Debugf("contentstore: providing %s: %v", p.CID, err)
			}
		}
		t.Reset(reprovideInterval)
	}
}

// CorruptError says a stored block does not hash to its CID.
type CorruptError struct{ CID cid.Cid }

func (e *CorruptError) Error() string {
	return fmt.Sprintf("contentstore: block %s is corrupt (its bytes do not hash to its CID)", e.CID)
}

func checkBlock(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("contentstore: hashing block %s: %w", c, err)
	}
	if !got.Equals(c) {
		return &CorruptError{CID: c}
	}
	return nil
}

// verifying rehashes every block it returns. A corrupt block is deleted
// and reported as not found, so the block service fetches a good copy
// (online) or the caller sees it missing; it is never returned or served.
type verifying struct {
	blockstore.Blockstore
	logf func(string, ...any)
}

func (v *verifying) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := v.Blockstore.Get(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := checkBlock(c, b.RawData()); err != nil {
		v.logf("%v; deleting it", err)
		if derr := v.Blockstore.DeleteBlock(ctx, c); derr != nil {
			return nil, errors.Join(err, derr)
		}
		return nil, ipld.ErrNotFound{Cid: c}
	}
	return b, nil
}

func (s *Store) pinsPath() string { return filepath.Join(s.dir, "pins.json") }

func (s *Store) loadPins() error {
	s.pins = map[cid.Cid]string{}
	data, err := os.ReadFile(s.pinsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("contentstore: %w", err)
	}
	pins, err := DecodePins(data, s.pinsPath())
	if err != nil {
		return err
	}
	for _, p := range pins {
		s.pins[p.CID] = p.Name
	}
	return nil
}

// savePins writes the pin set; called with pinMu held.
func (s *Store) savePins() error {
	pins := make([]Pin, 0, len(s.pins))
	for c, n := range s.pins {
		pins = append(pins, Pin{CID: c, Name: n})
	}
	data, err := EncodePins(pins)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(s.pinsPath(), data); err != nil {
		return fmt.Errorf("contentstore: saving pins: %w", err)
	}
	return nil
}
