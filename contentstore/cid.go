package contentstore

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// ChunkSize is the UnixFS chunk size fomnet imports files with (1 MiB).
const ChunkSize = 1 << 20

// Import parameters: CIDv1, sha2-256, raw leaves, balanced DAG of
// ChunkSize chunks. Every file fomnet names by CID (shards, tokenizer,
// checkpoints) is imported this way, so a CID computed here is the CID the
// content store will serve the file under.
func importParams(dag ipld.DAGService) helpers.DagBuilderParams {
	return helpers.DagBuilderParams{
		Maxlinks:   helpers.DefaultLinksPerBlock,
		RawLeaves:  true,
		CidBuilder: merkledag.V1CidPrefix(),
		Dagserv:    dag,
	}
}

// FileCID returns the CID that the bytes of r get when imported as a UnixFS
// file with fomnet's import parameters. Blocks are built and dropped at
// once (a null datastore): a large file is never held.
func FileCID(ctx context.Context, r io.Reader) (cid.Cid, error) {
	bs := blockstore.NewBlockstore(ds.NewNullDatastore())
	dag := merkledag.NewDAGService(blockservice.New(bs, nil))
	p := importParams(dag)
	db, err := p.New(chunker.NewSizeSplitter(r, ChunkSize))
	if err != nil {
		return cid.Undef, err
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		return cid.Undef, fmt.Errorf("contentstore: importing: %w", err)
	}
	return nd.Cid(), nil
}

// Codec numbers used by fomnet's IPLD objects.
const (
	CodecRaw     = cid.Raw     // raw bytes
	CodecDagJSON = cid.DagJSON // manifests, run specs, round records
)

// BlockCID returns the CIDv1 (sha2-256) of one block of the given codec.
func BlockCID(codec uint64, data []byte) (cid.Cid, error) {
	return cid.Prefix{Version: 1, Codec: codec, MhType: mh.SHA2_256, MhLength: -1}.Sum(data)
}

// PathCID returns the CID that Store.Add gives a file or directory tree,
// computed in memory without a store.
func PathCID(ctx context.Context, path string) (cid.Cid, error) {
	bs := blockstore.NewBlockstore(ds.NewNullDatastore())
	s := &Store{dag: merkledag.NewDAGService(blockservice.New(bs, nil))}
	st, err := os.Lstat(path)
	if err != nil {
		return cid.Undef, fmt.Errorf("contentstore: %w", err)
	}
	nd, err := s.addPath(ctx, path, st, &progressCounter{total: -1})
	if err != nil {
		return cid.Undef, err
	}
	return nd.Cid(), nil
}
