package node

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
	"github.com/ipfs/go-cid"
)

// PublishDataset stores a prepared dataset directory (fomnet data prepare:
// manifest.json, tokenizer.json, shards/) so that peers can fetch it by its
// dataset CID: each shard and the tokenizer as UnixFS files (the CIDs the
// manifest names, checked), the manifest as its dag-json block, and one
// recursive pin on the manifest, whose links reach everything.
func (n *Node) PublishDataset(ctx context.Context, dir string) (cid.Cid, error) {
	man, mb, dsCID, err := readDatasetDir(dir)
	if err != nil {
		return cid.Undef, err
	}
	files := []struct {
		path string
		want sharding.Link
	}{{filepath.Join(dir, "tokenizer.json"), man.Tokenizer}}
	for _, s := range man.Shards {
		files = append(files, struct {
			path string
			want sharding.Link
		}{filepath.Join(dir, filepath.Clean(s.File)), s.CID})
	}
	for _, f := range files {
		got, err := n.Store.Add(ctx, f.path, contentstore.AddOptions{})
		if err != nil {
			return cid.Undef, err
		}
		if got.String() != f.want.CID {
			return cid.Undef, fmt.Errorf("%s has CID %s, the manifest says %s", f.path, got, f.want.CID)
		}
	}
	if err := n.Store.PutBlock(ctx, dsCID, mb); err != nil {
		return cid.Undef, fmt.Errorf("dataset manifest: %w (is manifest.json in canonical form?)", err)
	}
	if err := n.Store.Pin(ctx, dsCID, "dataset "+filepath.Base(dir)); err != nil {
		return cid.Undef, err
	}
	return dsCID, nil
}

// DatasetDirCID is the dataset CID of a prepared dataset directory (its
// manifest's), found without publishing anything; an empty or malformed
// manifest is an error.
func DatasetDirCID(dir string) (cid.Cid, error) {
	_, _, k, err := readDatasetDir(dir)
	return k, err
}

func readDatasetDir(dir string) (*sharding.Manifest, []byte, cid.Cid, error) {
	mb, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, nil, cid.Undef, err
	}
	man, err := sharding.DecodeManifest(mb)
	if err != nil {
		return nil, nil, cid.Undef, fmt.Errorf("%s: %w", dir, err)
	}
	_, k, err := sharding.EncodeManifest(man)
	return man, mb, k, err
}

// Dataset is a dataset fetched from the store: its manifest, tokenizer
// bytes, and each shard decoded.
type Dataset struct {
	CID       cid.Cid
	Manifest  *sharding.Manifest
	Tokenizer []byte
	Shards    []*sharding.Shard
}

// LoadDataset fetches (if needed) and decodes the dataset dsCID.
func (n *Node) LoadDataset(ctx context.Context, dsCID cid.Cid, progress contentstore.Progress) (*Dataset, error) {
	if err := n.Store.Fetch(ctx, dsCID, progress); err != nil {
		return nil, err
	}
	d, err := n.loadDatasetHead(ctx, dsCID, progress)
	if err != nil {
		return nil, err
	}
	read := func(l sharding.Link) ([]byte, error) {
		c, err := l.Cid()
		if err != nil {
			return nil, err
		}
		return n.readFile(ctx, c)
	}
	for i, s := range d.Manifest.Shards {
		b, err := read(s.CID)
		if err != nil {
			return nil, fmt.Errorf("dataset %s: shard %d: %w", dsCID, i, err)
		}
		sh, err := sharding.DecodeShard(b)
		if err != nil {
			return nil, fmt.Errorf("dataset %s: shard %d (%s): %w", dsCID, i, s.CID.CID, err)
		}
		d.Shards = append(d.Shards, sh)
	}
	return d, nil
}

// loadDatasetHead is LoadDataset without the shards: the manifest and the
// tokenizer, all a follower needs.
func (n *Node) loadDatasetHead(ctx context.Context, dsCID cid.Cid, _ contentstore.Progress) (*Dataset, error) {
	mb, err := n.Store.FetchBlock(ctx, dsCID)
	if err != nil {
		return nil, err
	}
	man, err := sharding.DecodeManifest(mb.RawData())
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", dsCID, err)
	}
	tc, err := man.Tokenizer.Cid()
	if err != nil {
		return nil, fmt.Errorf("dataset %s: tokenizer: %w", dsCID, err)
	}
	f, err := n.Store.Open(ctx, tc)
	if err != nil {
		return nil, fmt.Errorf("dataset %s: tokenizer: %w", dsCID, err)
	}
	defer f.Close()
	d := &Dataset{CID: dsCID, Manifest: man}
	if d.Tokenizer, err = io.ReadAll(io.LimitReader(f, 64<<20)); err != nil {
		return nil, fmt.Errorf("dataset %s: tokenizer: %w", dsCID, err)
	}
	return d, nil
}

// PrepareBuiltinDataset prepares the project's built-in bilingual corpus
// plus synthetic documents as a dataset in dir (as `fomnet data prepare
// --builtin --synthetic N` does): a tokenizer of vocab tokens trained on
// it, rows of seq+1 tokens.
func PrepareBuiltinDataset(ctx context.Context, dir string, vocab, seq, synthetic int) (*sharding.Prepared, error) {
	cfg := sharding.PrepareConfig{Filters: sharding.DefaultFilters(), Builtin: true, Synthetic: synthetic, SyntheticSeed: 1,
		SeqLen: seq, ShardTokens: 1 << 20}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	texts, readErr := sharding.Texts(nil, true, synthetic, 1)
	tk, err := tokenizer.Train(ctx, texts, tokenizer.TrainConfig{Vocab: vocab})
	if _, rerr := readErr(); rerr != nil {
		return nil, rerr
	}
	if err != nil {
		return nil, err
	}
	return sharding.Prepare(ctx, cfg, tk, dir, nil)
}

// readFile reads the UnixFS file c whole, fetching what the store lacks.
func (n *Node) readFile(ctx context.Context, c cid.Cid) ([]byte, error) {
	f, err := n.Store.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
