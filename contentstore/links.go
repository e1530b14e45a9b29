package contentstore

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
)

// blockLinks returns the CIDs a block links to, in the order they appear:
// a UnixFS node's links, the {"/": cid} links of a dag-json document (such
// as a dataset manifest), or none for raw bytes.
func blockLinks(c cid.Cid, data []byte) ([]cid.Cid, error) {
	switch c.Prefix().Codec {
	case cid.Raw:
		return nil, nil
	case cid.DagProtobuf:
		nd, err := merkledag.DecodeProtobuf(data)
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", c, err)
		}
		out := make([]cid.Cid, len(nd.Links()))
		for i, l := range nd.Links() {
			out[i] = l.Cid
		}
		return out, nil
	case cid.DagJSON, cid.DagCBOR:
		nb := basicnode.Prototype.Any.NewBuilder()
		var err error
		if c.Prefix().Codec == cid.DagJSON {
			err = dagjson.Decode(nb, bytes.NewReader(data))
		} else {
			err = dagcbor.Decode(nb, bytes.NewReader(data))
		}
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", c, err)
		}
		links, err := traversal.SelectLinks(nb.Build())
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", c, err)
		}
		out := make([]cid.Cid, 0, len(links))
		for _, l := range links {
			cl, ok := l.(cidlink.Link)
			if !ok {
				return nil, fmt.Errorf("block %s: link %v is not a CID", c, l)
			}
			out = append(out, cl.Cid)
		}
		return out, nil
	}
	return nil, fmt.Errorf("block %s: codec %#x is not one fomnet stores (raw, dag-pb, dag-json, dag-cbor)", c, c.Prefix().Codec)
}

// DagJSON encodes v (through encoding/json) as canonical dag-json — keys
// sorted, no spaces — and returns the bytes and their block's CID: the one
// encoding of fomnet's IPLD records (manifests, run specs, recipes,
// generation specs), so the same record always has the same CID.
func DagJSON(v any) ([]byte, cid.Cid, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, cid.Undef, err
	}
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := dagjson.Decode(nb, bytes.NewReader(plain)); err != nil {
		return nil, cid.Undef, err
	}
	var buf bytes.Buffer
	if err := dagjson.Encode(nb.Build(), &buf); err != nil {
		return nil, cid.Undef, err
	}
	c, err := BlockCID(CodecDagJSON, buf.Bytes())
	return buf.Bytes(), c, err
}
