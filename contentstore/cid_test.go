package contentstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// A file of one chunk is a single raw leaf: its CID is CIDv1 raw over the
// sha2-256 of the bytes, which we can compute independently.
func TestFileCIDSingleChunk(t *testing.T) {
	data := []byte("fomnet shard bytes")
	c, err := FileCID(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	digest, _ := mh.Encode(sum[:], mh.SHA2_256)
	want := cid.NewCidV1(cid.Raw, digest)
	if !c.Equals(want) {
		t.Fatalf("CID %s, want %s", c, want)
	}
}

// A 2.5 MiB file spans three chunks under a dag-pb root. Its CID is pinned
// here so that the import parameters (and thus every shard CID) never
// change by accident.
func TestFileCIDMultiChunkStable(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (5<<20)/2/16)
	c1, err := FileCID(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := FileCID(context.Background(), bytes.NewReader(data))
	if !c1.Equals(c2) || c1.Prefix().Codec != cid.DagProtobuf || c1.Version() != 1 {
		t.Fatalf("CIDs %s %s", c1, c2)
	}
	other := append([]byte(nil), data...)
	other[len(other)-1] ^= 1
	c3, _ := FileCID(context.Background(), bytes.NewReader(other))
	if c3.Equals(c1) {
		t.Fatal("different bytes, same CID")
	}
	if c1.String() != "bafybeibrd4cd76gxpjefvfyqq2owhw2smeolm3xi33hzrmfjgrt7hva2xi" {
		t.Fatalf("CID of the 2.5 MiB test file changed to %s", c1)
	}
}

func TestBlockCID(t *testing.T) {
	c, err := BlockCID(CodecDagJSON, []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefix().Codec != cid.DagJSON || c.Version() != 1 {
		t.Fatalf("%s", c)
	}
}
