package sharding

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/ipld/go-ipld-prime/node/basicnode"

	"github.com/fomnet/fomnet/contentstore"
)

// Manifest is a dataset's index, stored as one IPLD dag-json block: its CID
// is the dataset CID. Links ("tokenizer", each shard's "cid") are IPLD
// links, so `ipfs dag get` can walk from the dataset to every shard.
type Manifest struct {
	Format    string       `json:"fomnet"` // "dataset/v1"
	Tokenizer Link         `json:"tokenizer"`
	Vocab     int          `json:"vocab"`
	SeqLen    int          `json:"seq_len"`
	DType     string       `json:"dtype"`
	Shards    []ShardEntry `json:"shards"`
	Totals    []Total      `json:"totals"`
	Report    Report       `json:"report"`
	Recipe    Recipe       `json:"recipe"`
}

// ManifestFormat is the current manifest format.
const ManifestFormat = "dataset/v1"

// Link is an IPLD link in dag-json form: {"/": "<cid>"}.
type Link struct {
	CID string `json:"/"`
}

// LinkTo makes a Link.
func LinkTo(c cid.Cid) Link { return Link{CID: c.String()} }

// Cid parses the link.
func (l Link) Cid() (cid.Cid, error) { return cid.Decode(l.CID) }

// Provenance says where a document came from.
type Provenance struct {
	Language  string `json:"language"`  // ko, en, mixed, none
	Source    string `json:"source"`    // natural or synthetic
	Generator string `json:"generator"` // for synthetic text: what made it
	Licence   string `json:"licence"`
	Stage     string `json:"stage"` // pretrain, midtrain, sft, preference
}

// Group names the shards of one provenance.
func (p Provenance) Group() string {
	g := p.Stage + "/" + p.Language + "/" + p.Source
	if p.Generator != "" {
		g += "/" + p.Generator
	}
	return g
}

// ShardEntry is one shard in the manifest. All documents of a shard share
// its provenance.
type ShardEntry struct {
	CID    Link   `json:"cid"`
	File   string `json:"file"`
	Bytes  int64  `json:"bytes"`
	Tokens int64  `json:"tokens"` // tokens of documents (EOS included, padding not)
	Rows   int    `json:"rows"`
	Docs   int    `json:"docs"`
	// Pairs: the shard holds preference pairs (format version 3).
	Pairs bool `json:"pairs,omitempty"`
	Provenance
	Group string `json:"group"`
}

// Total sums tokens and documents per (language, source).
type Total struct {
	Language  string `json:"language"`
	Source    string `json:"source"`
	Documents int64  `json:"documents"`
	Tokens    int64  `json:"tokens"`
}

// Report counts what preparation did.
type Report struct {
	DocumentsIn  int64            `json:"documents_in"`
	DocumentsOut int64            `json:"documents_out"`
	Malformed    int64            `json:"malformed"`
	Dropped      map[string]int64 `json:"dropped"`
	SkippedFiles int64            `json:"skipped_files,omitempty"` // of input directories: not text, hidden
}

// Recipe records every setting and input digest, so that anyone can
// prepare the same dataset again and get the same CIDs.
type Recipe struct {
	Inputs      []InputRecord `json:"inputs"`
	Filters     FilterConfig  `json:"filters"`
	SeqLen      int           `json:"seq_len"`
	ShardTokens int           `json:"shard_tokens"`
	Normalize   string        `json:"normalize"`
	Tokenizer   Link          `json:"tokenizer"`
}

// InputRecord is one input as the recipe records it.
type InputRecord struct {
	Name      string `json:"name"` // base name; for a file of an input directory, its path from the directory's parent
	SHA256    string `json:"sha256"`
	Bytes     int64  `json:"bytes"`
	Format    Format `json:"format"`
	Field     string `json:"field,omitempty"`
	Source    string `json:"source"`
	Generator string `json:"generator,omitempty"`
	Licence   string `json:"licence"`
	Stage     string `json:"stage"`
}

// ErrEmptyDataset reports a manifest with nothing to train on.
var ErrEmptyDataset = errors.New("the dataset is empty")

// check is what makes a manifest a dataset, on writing and reading alike:
// at least one shard, each of at least one row.
func (m *Manifest) check() error {
	if len(m.Shards) == 0 {
		return fmt.Errorf("manifest: no shards: %w", ErrEmptyDataset)
	}
	for i, s := range m.Shards {
		if s.Rows < 1 {
			return fmt.Errorf("manifest: shard %d (%s) has %d rows: %w", i, s.CID.CID, s.Rows, ErrEmptyDataset)
		}
	}
	return nil
}

// EncodeManifest returns the manifest's canonical dag-json bytes and CID.
func EncodeManifest(m *Manifest) ([]byte, cid.Cid, error) {
	if err := m.check(); err != nil {
		return nil, cid.Undef, err
	}
	b, c, err := contentstore.DagJSON(m)
	if err != nil {
		return nil, cid.Undef, fmt.Errorf("manifest: %w", err)
	}
	return b, c, nil
}

// DecodeManifest parses dag-json manifest bytes and checks their format.
func DecodeManifest(b []byte) (*Manifest, error) {
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := dagjson.Decode(nb, bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("manifest: not dag-json: %w", err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("manifest: format %q, want %q", m.Format, ManifestFormat)
	}
	if _, err := m.Tokenizer.Cid(); err != nil {
		return nil, fmt.Errorf("manifest: tokenizer link: %w", err)
	}
	for i, s := range m.Shards {
		if _, err := s.CID.Cid(); err != nil {
			return nil, fmt.Errorf("manifest: shard %d: %w", i, err)
		}
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}
