package contentstore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/node/nodetest"
	"github.com/fomnet/fomnet/p2p"
	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Node 1 adds; node 2, connected only to node 0, finds node 1 through the
// DHT and fetches over bitswap.
func TestAddOnOneGetOnAnother(t *testing.T) {
	c := nodetest.New(t, 3, nodetest.Options{})
	ctx := timeout(t)
	data := contentstore.RandBytes(1, 5<<20+3)
	root, err := c.Nodes[1].Store.Add(ctx, writeTemp(t, data), contentstore.AddOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	// DHT: the provider record for the root reaches node 2.
	var found bool
	for !found {
		for ai := range c.Nodes[2].Host.DHT.FindProvidersAsync(ctx, root, 1) {
			found = found || ai.ID == c.Nodes[1].Host.ID()
		}
		if ctx.Err() != nil {
			t.Fatal("node 1 never found as provider")
		}
	}
	if len(c.Nodes[2].Host.Network().ConnsToPeer(c.Nodes[1].Host.ID())) > 0 {
		c.Nodes[2].Host.Network().ClosePeer(c.Nodes[1].Host.ID())
	}
	out := filepath.Join(t.TempDir(), "got.bin")
	var last int64
	if err := c.Nodes[2].Store.Get(ctx, root, out, func(d, _ int64) { last = d }); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("fetched file differs")
	}
	if last < int64(len(data)) {
		t.Fatalf("progress ended at %d of %d", last, len(data))
	}
	if tr := c.Nodes[2].Store.Traffic(); tr.BlocksReceived < 6 {
		t.Fatalf("traffic %+v: the blocks did not come over bitswap", tr)
	}
}

// An interrupted fetch resumes, after a restart too: blocks already
// present are not fetched again.
func TestFetchResumes(t *testing.T) {
	c := nodetest.New(t, 2, nodetest.Options{})
	ctx := timeout(t)
	data := contentstore.RandBytes(2, 12<<20)
	root, _ := c.Nodes[0].Store.Add(ctx, writeTemp(t, data), contentstore.AddOptions{Pin: true})
	fctx, cancel := context.WithCancel(ctx)
	err := c.Nodes[1].Store.Fetch(fctx, root, func(d, total int64) {
		if d > total/2 {
			cancel()
		}
	})
	cancel()
	if err == nil {
		t.Fatal("cancelled fetch reported success")
	}
	// Restart the fetching node, as after a crash: the store keeps what
	// arrived, and the new bitswap's counters start at zero.
	c.Restart(1)
	all := dagBlocks(t, c.Nodes[0].Store, root)
	present := 0
	for _, k := range all {
		if ok, _ := c.Nodes[1].Store.Has(ctx, k); ok {
			present++
		}
	}
	if present == 0 || present == len(all) {
		t.Fatalf("%d of %d blocks present after the cancel", present, len(all))
	}
	if err := c.Nodes[1].Store.Fetch(ctx, root, nil); err != nil {
		t.Fatal(err)
	}
	// Every missing block arrives, and nothing the node had is fetched
	// again. The provider may still send a few blocks the cancelled fetch
	// had asked for (its wantlist outlives the restart): they arrive as
	// duplicates, never as many as the blocks that were there.
	if tr := c.Nodes[1].Store.Traffic(); tr.BlocksReceived-tr.DupBlocks != uint64(len(all)-present) || tr.DupBlocks >= uint64(present) {
		t.Fatalf("resumed fetch received %d blocks (%d duplicates); %d of %d were missing", tr.BlocksReceived, tr.DupBlocks, len(all)-present, len(all))
	}
	if rep, _ := c.Nodes[1].Store.Verify(ctx, root); !rep.OK() {
		t.Fatal(rep.Problem())
	}
}

// Three providers; one leaves mid-transfer; the fetch completes from the
// others.
func TestProviderLeavesMidTransfer(t *testing.T) {
	c := nodetest.New(t, 4, nodetest.Options{})
	ctx := timeout(t)
	data := contentstore.RandBytes(3, 24<<20)
	path := writeTemp(t, data)
	var root cid.Cid
	for i := 0; i < 3; i++ {
		r, err := c.Nodes[i].Store.Add(ctx, path, contentstore.AddOptions{Pin: true})
		if err != nil {
			t.Fatal(err)
		}
		root = r
	}
	c.ConnectAll()
	var stopped atomic.Bool
	err := c.Nodes[3].Store.Fetch(ctx, root, func(d, total int64) {
		if d > total/4 && !stopped.Swap(true) {
			go c.Nodes[1].Close() // leave while the fetch runs
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !stopped.Load() {
		t.Fatal("no provider left during the fetch")
	}
	if rep, _ := c.Nodes[3].Store.Verify(ctx, root); !rep.OK() {
		t.Fatal(rep.Problem())
	}
}

// A real bitswap server that answers with wrong bytes for the blocks it
// is asked for: what a corrupt or malicious provider looks like.
func corruptProvider(t *testing.T, good map[cid.Cid][]byte) (*p2p.Host, *bitswap.Bitswap) {
	t.Helper()
	k, _, _ := crypto.GenerateEd25519Key(nil)
	h, err := p2p.New(context.Background(), p2p.Options{Identity: k, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, DHTMode: "server"})
	if err != nil {
		t.Fatal(err)
	}
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()), blockstore.NoPrefix())
	for c, b := range good {
		bad := append([]byte(nil), b...)
		bad[len(bad)/2] ^= 0x55
		blk, _ := blocks.NewBlockWithCid(bad, c) // not checked: this is the fault
		if err := bs.Put(context.Background(), blk); err != nil {
			t.Fatal(err)
		}
	}
	swap := bitswap.New(context.Background(), bsnet.NewFromIpfsHost(h.Host), h.DHT, bs)
	t.Cleanup(func() { swap.Close(); h.Close() })
	return h, swap
}

func TestCorruptProviderNeverPoisons(t *testing.T) {
	c := nodetest.New(t, 3, nodetest.Options{Isolated: true})
	ctx := timeout(t)
	data := contentstore.RandBytes(4, 4<<20)
	root, _ := c.Nodes[0].Store.Add(ctx, writeTemp(t, data), contentstore.AddOptions{Pin: true})
	good := map[cid.Cid][]byte{}
	car := filepath.Join(t.TempDir(), "x.car")
	if err := c.Nodes[0].Store.ExportCAR(ctx, root, car); err != nil {
		t.Fatal(err)
	}
	for _, k := range dagBlocks(t, c.Nodes[0].Store, root) {
		b, _ := c.Nodes[0].Store.Block(ctx, k)
		good[k] = b.RawData()
	}
	bad, badSwap := corruptProvider(t, good)
	connect := func(i int, h *p2p.Host) {
		if err := c.Nodes[i].Host.Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}

	// Only the corrupt provider: the fetch fails, the store stays clean.
	connect(1, bad)
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := c.Nodes[1].Store.Fetch(fctx, root, nil)
	cancel()
	if err == nil {
		t.Fatal("fetch from a corrupt provider succeeded")
	}
	if st, _ := badSwap.Stat(); st.BlocksSent == 0 {
		t.Fatal("the corrupt provider was never asked")
	}
	if n, _, _ := c.Nodes[1].Store.Stat(ctx); n != 0 {
		t.Fatalf("%d blocks stored from a corrupt provider", n)
	}

	// Corrupt and honest providers together: the fetch completes, intact.
	connect(2, bad)
	connect(2, c.Nodes[0].Host)
	if err := c.Nodes[2].Store.Fetch(ctx, root, nil); err != nil {
		t.Fatal(err)
	}
	if rep, _ := c.Nodes[2].Store.Verify(ctx, root); !rep.OK() || rep.Blocks != len(good) {
		t.Fatalf("%+v", rep)
	}
}

func dagBlocks(t *testing.T, s *contentstore.Store, root cid.Cid) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	out = append(out, root)
	b, err := s.Block(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	links, err := contentstore.DecodeLinks(root, b.RawData())
	if err != nil {
		t.Fatal(err)
	}
	return append(out, links...)
}

// A restarted node keeps its identity, store and pins, and serves again.
func TestRestartKeepsStore(t *testing.T) {
	c := nodetest.New(t, 2, nodetest.Options{})
	ctx := timeout(t)
	data := contentstore.RandBytes(5, 2<<20)
	root, _ := c.Nodes[0].Store.Add(ctx, writeTemp(t, data), contentstore.AddOptions{Pin: true})
	id := c.Nodes[0].Host.ID()
	c.Stop(0)
	n0 := c.Restart(0)
	if n0.Host.ID() != id {
		t.Fatal("identity changed across restart")
	}
	if !n0.Store.IsPinned(root) {
		t.Fatal("pin lost across restart")
	}
	if rep, _ := n0.Store.Verify(ctx, root); !rep.OK() {
		t.Fatal(rep.Problem())
	}
	c.Connect(1, 0)
	got, err := c.Nodes[1].Store.ReadRange(ctx, root, 1<<20-10, 20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[1<<20-10:1<<20+10]) {
		t.Fatal("range fetched after restart differs")
	}
	// Only the blocks covering the range (root and two leaves) came over.
	if tr := c.Nodes[1].Store.Traffic(); tr.BlocksReceived > 3 {
		t.Fatalf("a 20-byte range fetched %d blocks", tr.BlocksReceived)
	}
}

// A fetch of content nobody has says what it waits for and, past its
// Wait's Stall, ends with ErrStalled naming the providers found and the
// peers connected — a whole DAG (Fetch) and one block (FetchBlock) alike.
func TestFetchStalls(t *testing.T) {
	defer contentstore.SetWaitReports(100*time.Millisecond, 200*time.Millisecond)()
	c := nodetest.New(t, 2, nodetest.Options{})
	ctx := timeout(t)
	nobody, _ := contentstore.BlockCID(contentstore.CodecRaw, []byte("nobody holds this"))
	for name, fetch := range map[string]func(context.Context) error{
		"Fetch":      func(ctx context.Context) error { return c.Nodes[1].Store.Fetch(ctx, nobody, nil) },
		"FetchBlock": func(ctx context.Context) error { _, err := c.Nodes[1].Store.FetchBlock(ctx, nobody); return err },
	} {
		var reports atomic.Int32
		var last atomic.Value
		wctx := contentstore.WithWait(ctx, contentstore.Wait{Stall: time.Second, Report: func(s contentstore.WaitStatus) {
			reports.Add(1)
			last.Store(s)
		}})
		err := fetch(wctx)
		if !errors.Is(err, contentstore.ErrStalled) || !strings.Contains(err.Error(), "0 providers found, 1 peers connected") {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
		if reports.Load() == 0 {
			t.Fatalf("%s: no waiting report before the stall", name)
		}
		if s := last.Load().(contentstore.WaitStatus); !s.Root.Equals(nobody) || s.Peers != 1 || s.Idle < 100*time.Millisecond {
			t.Fatalf("%s: last report %+v", name, s)
		}
	}
}
