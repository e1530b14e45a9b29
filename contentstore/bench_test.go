package contentstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/node/nodetest"
)

// BenchmarkBitswapFetch fetches a 100 MiB file over loopback TCP from 1 and
// from 4 providers into a fresh store on disk (blocks fsynced), as
// `fomnet get` does; the fetch+verify+pin case adds what `fomnet mirror`
// does after the transfer (rehash every block, syncfs, record the pin).
// Each iteration starts the fetching node on an empty store. All nodes
// share the machine's cores, so more providers also means more encryption
// and hashing work competing with the fetcher.
func BenchmarkBitswapFetch(b *testing.B) {
	const size = 100 << 20
	data := contentstore.RandBytes(42, size)
	for _, bc := range []struct {
		providers int
		pin       bool
	}{{1, false}, {4, false}, {1, true}} {
		providers := bc.providers
		name := fmt.Sprintf("providers=%d", providers)
		if bc.pin {
			name += "/fetch+verify+pin"
		}
		b.Run(name, func(b *testing.B) {
			c := nodetest.New(b, providers, nodetest.Options{Isolated: true, TCPOnly: true})
			ctx := context.Background()
			path := writeTempB(b, data)
			var root = addAll(b, c, path)
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				f := nodetest.New(b, 1, nodetest.Options{Isolated: true, TCPOnly: true})
				for j := range c.Nodes {
					connectB(b, f, c, j)
				}
				b.StartTimer()
				if err := f.Nodes[0].Store.Fetch(ctx, root, nil); err != nil {
					b.Fatal(err)
				}
				if bc.pin {
					if err := f.Nodes[0].Store.Pin(ctx, root, "bench"); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				tr := f.Nodes[0].Store.Traffic()
				b.ReportMetric(float64(tr.DupBlocks), "dup-blocks/op")
				f.Stop(0)
				b.StartTimer()
			}
		})
	}
}

func addAll(b *testing.B, c *nodetest.Cluster, path string) (root cid.Cid) {
	for _, n := range c.Nodes {
		r, err := n.Store.Add(context.Background(), path, contentstore.AddOptions{Pin: true})
		if err != nil {
			b.Fatal(err)
		}
		root = r
	}
	return root
}

func writeTempB(b *testing.B, data []byte) string {
	p := filepath.Join(b.TempDir(), "file.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

func connectB(b *testing.B, f, c *nodetest.Cluster, j int) {
	h := c.Nodes[j].Host
	if err := f.Nodes[0].Host.Connect(context.Background(), peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		b.Fatal(err)
	}
}
