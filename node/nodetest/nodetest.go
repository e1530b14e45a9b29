package nodetest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fomnet/fomnet/node"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Options configure a cluster.
type Options struct {
	// API serves each node's local API (off by default).
	API bool
	// Isolated leaves nodes unconnected; by default every node bootstraps
	// from node 0.
	Isolated bool
	// TCPOnly listens on TCP alone (no QUIC), for transport-specific
	// measurements.
	TCPOnly bool
	// Logf, if set, receives every node's log lines (t.Logf is typical).
	Logf func(format string, args ...any)
	// KeySeed, if not 0, derives node i's identity from (KeySeed, i), so
	// that two clusters with one seed have the same peer IDs (and so the
	// same shards in a run): a run can be compared with a rerun. Two such
	// clusters must not run at once.
	KeySeed uint64
}

// Cluster is a set of nodes that stop when the test ends.
type Cluster struct {
	Nodes []*node.Node
	Homes []string
	tb    testing.TB
	opts  Options
}

// New starts n nodes. Node 0 starts first; the others bootstrap from it.
func New(tb testing.TB, n int, o Options) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, opts: o}
	for i := 0; i < n; i++ {
		home := tb.TempDir()
		cfg := node.DefaultConfig()
		cfg.Network.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
		if o.TCPOnly {
			cfg.Network.Listen = cfg.Network.Listen[:1]
		}
		cfg.Network.DHTMode = "server"
		cfg.API.Listen = "127.0.0.1:0"
		if o.KeySeed != 0 {
			writeIdentity(tb, filepath.Join(home, node.IdentityFile), o.KeySeed, i)
		}
		if _, err := node.Init(home, cfg); err != nil {
			tb.Fatal(err)
		}
		c.Homes = append(c.Homes, home)
		c.Nodes = append(c.Nodes, nil)
		c.start(i)
	}
	return c
}

func (c *Cluster) start(i int) *node.Node {
	c.tb.Helper()
	var boot []string
	if !c.opts.Isolated {
		boot = c.BootstrapAddrs(i)
	}
	logf := c.opts.Logf
	nd, err := node.Open(context.Background(), c.Homes[i], node.Options{Bootstrap: boot, API: c.opts.API, Logf: logf})
	if err != nil {
		c.tb.Fatal(err)
	}
	c.tb.Cleanup(func() { nd.Close() })
	c.Nodes[i] = nd
	return nd
}

// BootstrapAddrs are the addresses of the first running node other than
// skip, or none.
func (c *Cluster) BootstrapAddrs(skip int) []string {
	for j, nd := range c.Nodes {
		if j == skip || nd == nil || nd.Host == nil {
			continue
		}
		var out []string
		for _, a := range nd.Host.FullAddrs() {
			out = append(out, a.String())
		}
		return out
	}
	return nil
}

// Stop closes node i (as a crash or a user leaving would).
func (c *Cluster) Stop(i int) {
	c.tb.Helper()
	if err := c.Nodes[i].Close(); err != nil {
		c.tb.Fatal(err)
	}
	c.Nodes[i] = nil
}

// Restart closes node i if it runs and starts it again on the same home.
func (c *Cluster) Restart(i int) *node.Node {
	c.tb.Helper()
	if c.Nodes[i] != nil {
		c.Stop(i)
	}
	return c.start(i)
}

// Connect connects node i to node j directly.
func (c *Cluster) Connect(i, j int) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hj := c.Nodes[j].Host
	if err := c.Nodes[i].Host.Connect(ctx, peer.AddrInfo{ID: hj.ID(), Addrs: hj.Addrs()}); err != nil {
		c.tb.Fatal(err)
	}
}

// ConnectAll connects every pair of running nodes.
func (c *Cluster) ConnectAll() {
	c.tb.Helper()
	for i := range c.Nodes {
		for j := i + 1; j < len(c.Nodes); j++ {
			if c.Nodes[i] != nil && c.Nodes[j] != nil {
				c.Connect(i, j)
			}
		}
	}
}

// writeIdentity writes the Ed25519 identity derived from (seed, i) to path.
func writeIdentity(tb testing.TB, path string, seed uint64, i int) {
	tb.Helper()
	sum := sha256.Sum256(fmt.Appendf(nil, "nodetest identity %d %d", seed, i))
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(sum[:]))
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		tb.Fatal(err)
	}
}
