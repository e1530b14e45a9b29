package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// CheckpointReport is what CheckCheckpoint found. OK holds when Problems
// is empty.
type CheckpointReport struct {
	Dir      string   `json:"dir"`
	Params   int64    `json:"params,omitempty"`
	Run      string   `json:"run,omitempty"`
	Round    int      `json:"round"`
	Links    int      `json:"links"` // links in round.json checked
	Problems []string `json:"problems"`
	OK       bool     `json:"ok"`
}

// CheckCheckpoint checks a checkpoint directory: config.json is a valid
// Llama config; model.safetensors holds exactly its tensors, F32, in the
// right shapes; tokenizer.json (when present) parses, fits the vocabulary
// and has the config's EOS and BOS ids as its specials; outer.bin (when
// present) decodes to one momentum per parameter; round.json (when
// present) parses strictly, its links are CIDs, and — given resolve — each
// resolves (resolve reports whether a CID's root block can be had). Every
// problem is listed; the error is only for the check itself failing.
func CheckCheckpoint(ctx context.Context, dir string, resolve func(context.Context, cid.Cid) (bool, error)) (*CheckpointReport, error) {
	r := &CheckpointReport{Dir: dir, Problems: []string{}}
	bad := func(format string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, a...)) }
	read := func(name string, required bool) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			if required || !os.IsNotExist(err) {
				bad("%s: %v", name, err)
			}
			return nil
		}
		return b
	}
	cb := read("config.json", true)
	if cb == nil {
		r.OK = false
		return r, nil
	}
	c, err := model.UnmarshalHFConfig(cb)
	if err != nil {
		bad("%v", err)
		return r, nil
	}
	r.Params = model.NumParams(c)
	if wb := read("model.safetensors", true); wb != nil {
		if _, _, err := model.ReadWeights(c, wb); err != nil {
			bad("model.safetensors: %v", err)
		}
	}
	if tb := read("tokenizer.json", false); tb != nil {
		switch tk, err := tokenizer.Parse(tb); {
		case err != nil:
			bad("tokenizer.json: %v", err)
		case tk.Vocab() > c.Vocab:
			bad("tokenizer.json has %d tokens; config.json vocab_size is %d", tk.Vocab(), c.Vocab)
		default:
			for name, id := range map[string]int{tokenizer.EOS: c.EOS, tokenizer.BOS: c.BOS} {
				if got, ok := tk.SpecialID(name); !ok || int(got) != id {
					bad("tokenizer.json: %s is id %d (present %v); config.json says %d", name, got, ok, id)
				}
			}
		}
	}
	if ob := read("outer.bin", false); ob != nil {
		o := gradsync.NewOuterOptimizer(gradsync.DefaultConfig(), 0)
		if err := o.UnmarshalBinary(ob); err != nil {
			bad("outer.bin: %v", err)
		} else if int64(len(o.Buf)) != r.Params {
			bad("outer.bin holds %d momenta for %d parameters", len(o.Buf), r.Params)
		}
	}
	rb := read("round.json", false)
	if rb == nil {
		r.OK = len(r.Problems) == 0
		return r, nil
	}
	var rec roundRecord
	d := json.NewDecoder(bytes.NewReader(rb))
	d.DisallowUnknownFields()
	if err := d.Decode(&rec); err != nil {
		bad("round.json: %v", err)
		r.OK = false
		return r, nil
	}
	r.Run, r.Round = rec.Run.CID, rec.Round
	type named struct {
		what string
		l    sharding.Link
	}
	links := []named{{"run", rec.Run}}
	if rec.Base != nil {
		links = append(links, named{"base", *rec.Base})
	} else if rec.Round != 0 {
		bad("round.json: round %d has no base", rec.Round)
	}
	for i, l := range rec.Contributions {
		links = append(links, named{fmt.Sprintf("contribution %d", i), l})
	}
	for i, a := range rec.Aggregates {
		links = append(links, named{fmt.Sprintf("aggregate %d", i), a.CID})
		for _, j := range append(append([]int(nil), a.Inputs...), a.Included...) {
			if j < 0 || j >= len(rec.Contributions) {
				bad("round.json: aggregate %d names contribution %d of %d", i, j, len(rec.Contributions))
				break
			}
		}
	}
	for i, l := range rec.Shards {
		links = append(links, named{fmt.Sprintf("shard %d", i), l})
	}
	if rec.Round > 0 && (len(rec.Contributions) == 0 || len(rec.Aggregates) == 0) {
		bad("round.json: round %d lists %d contributions and %d aggregates", rec.Round, len(rec.Contributions), len(rec.Aggregates))
	}
	for _, p := range rec.Participants {
		if _, err := peer.Decode(p); err != nil {
			bad("round.json: participant %q: %v", p, err)
		}
	}
	for _, n := range links {
		k, err := n.l.Cid()
		if err != nil {
			bad("round.json: %s: %q is not a CID", n.what, n.l.CID)
			continue
		}
		r.Links++
		if resolve == nil {
			continue
		}
		ok, err := resolve(ctx, k)
		if err != nil {
			return r, err
		}
		if !ok {
			bad("round.json: %s %s does not resolve (not stored here, and no peer served it)", n.what, k)
		}
	}
	r.OK = len(r.Problems) == 0
	return r, nil
}
