package contentstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
)

// A directory whose 64 entries all link one 1 MiB file, nested three deep,
// is a few blocks in the store and 256 GiB written out: DeclaredSize adds
// what writing would write, and WriteOut refuses it (no disk has that
// much free), leaving nothing behind.
func TestWriteOutRefusesRepeatedLinks(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	src := filepath.Join(t.TempDir(), "f")
	writeFile(t, src, randBytes(7, 1<<20))
	file, err := s.Add(ctx, src, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := func(child cid.Cid, size uint64) cid.Cid {
		nd := merkledag.NodeWithData(unixfs.FolderPBData())
		for i := 0; i < 64; i++ {
			if err := nd.AddRawLink(fmt.Sprintf("e%02d", i), &format.Link{Cid: child, Size: size}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutBlock(ctx, nd.Cid(), nd.RawData()); err != nil {
			t.Fatal(err)
		}
		return nd.Cid()
	}
	d1 := dir(file, 1<<20)
	d3 := dir(dir(d1, 64<<20), 4096<<20)
	if got, err := s.DeclaredSize(ctx, d1, 1<<40); err != nil || got != 64<<20 {
		t.Fatalf("declared size of 64 links to 1 MiB: %d, %v", got, err)
	}
	if _, err := s.DeclaredSize(ctx, d3, 1<<30); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("declared size of 256 GiB under a 1 GiB limit: %v", err)
	}
	out := filepath.Join(t.TempDir(), "out")
	err = s.WriteOut(ctx, d3, out)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("WriteOut of 256 GiB: %v", err)
	}
	t.Log(err)
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 0 {
		t.Fatalf("WriteOut left %v behind", ents)
	}
	// The 64 MiB level still writes, every link a copy.
	if err := s.WriteOut(ctx, d1, out); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 64 {
		t.Fatalf("%d entries written", len(ents))
	}
}
