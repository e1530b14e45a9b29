package node_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fomnet/fomnet/node/nodetest"
)

// A daemon that adds content announces it; another daemon hears it.
func TestAnnouncements(t *testing.T) {
	c := nodetest.New(t, 2, nodetest.Options{API: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := filepath.Join(t.TempDir(), "ckpt.bin")
	os.WriteFile(p, []byte("weights"), 0o644)
	// Wait until node 0 knows node 1 is on the topic, as a real daemon would
	// have long before its first add.
	for {
		as, _ := c.Nodes[1].Announced(ctx)
		if len(as) > 0 {
			if as[0].Peer != c.Nodes[0].Host.ID().String() || as[0].Name != "ckpt.bin" || as[0].Bytes != 7 {
				t.Fatalf("%+v", as[0])
			}
			return
		}
		if _, err := c.Nodes[0].Add(ctx, p, true, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("announcement never heard")
		case <-time.After(200 * time.Millisecond):
		}
	}
}
