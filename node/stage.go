package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
)

// Stages. KORMo's recipe is a chain — pretraining, mid-training, SFT,
// preference — and each stage here is a run of the swarm. A run whose
// spec names a checkpoint in From starts from it instead of from the
// seed's weights: its genesis holds that checkpoint's weights and a fresh
// outer optimizer, and the genesis's round record links the checkpoint as
// its base. Every lineage walk (mirror, audit, checkpoint verify, Lineage)
// therefore goes on from a stage's first round into the stage before it,
// down to the first pretraining genesis.

// stageBase fetches the checkpoint spec.From names, whole, and returns its
// weights if it can start spec's run: a valid checkpoint (CheckCheckpoint,
// the one rule), a model of the spec's shape (the RoPE base and the
// context length may change: long-context mid-training), and tok — the
// dataset's tokenizer — as its tokenizer. A spec without a model gets the
// checkpoint's (CreateRun completes specs so).
func (n *Node) stageBase(ctx context.Context, spec *RunSpec, tok []byte) ([]float32, error) {
	from, err := spec.From.Cid()
	if err != nil {
		return nil, fmt.Errorf("run: from: %w", err)
	}
	dir, cleanup, err := n.checkpointDir(ctx, from)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	got, err := readConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("run: from %s: %w", from, err)
	}
	if len(spec.Model) == 0 {
		if spec.Model, err = model.MarshalHFConfig(got); err != nil {
			return nil, err
		}
	}
	want, err := spec.ModelConfig()
	if err != nil {
		return nil, err
	}
	if !sameShape(got, want) {
		return nil, fmt.Errorf("run: from %s: its model (%s) is not the run's (%s); only rope_theta and max_position_embeddings may change between stages",
			from, shapeOf(got), shapeOf(want))
	}
	tb, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil || !bytes.Equal(tb, tok) {
		return nil, fmt.Errorf("run: from %s: its tokenizer.json is not the dataset's tokenizer", from)
	}
	w, _, err := model.ReadWeightsFile(want, filepath.Join(dir, "model.safetensors"))
	return w, err
}

// checkpointDir fetches checkpoint ck whole (each fetch bounded by ctx's
// wait, else fetchStall), writes it into a scratch directory under the
// node's home and checks it with CheckCheckpoint. cleanup removes it.
func (n *Node) checkpointDir(ctx context.Context, ck cid.Cid) (string, func(), error) {
	ctx = withStall(ctx)
	if err := n.Store.Fetch(ctx, ck, nil); err != nil {
		return "", nil, fmt.Errorf("run: from %s: %w", ck, err)
	}
	if _, err := n.Store.Lookup(ctx, ck, "config.json"); err != nil {
		return "", nil, fmt.Errorf("run: from %s: not a checkpoint (a directory with config.json): %w", ck, err)
	}
	tmp, err := os.MkdirTemp(n.Home, "stage-base-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	dir := filepath.Join(tmp, "ck")
	if err := n.Store.WriteOut(ctx, ck, dir); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("run: from %s: %w", ck, err)
	}
	rep, err := CheckCheckpoint(ctx, dir, nil)
	if err == nil && !rep.OK {
		err = fmt.Errorf("not a valid checkpoint: %s", strings.Join(rep.Problems, "; "))
	}
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("run: from %s: %w", ck, err)
	}
	return dir, cleanup, nil
}

func readConfig(dir string) (model.Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return model.Config{}, err
	}
	return model.UnmarshalHFConfig(b)
}

// sameShape says whether a checkpoint of a can start a stage of b: every
// tensor alike, the special tokens alike.
func sameShape(a, b model.Config) bool {
	a.MaxSeq, a.RopeTheta = b.MaxSeq, b.RopeTheta
	return a == b
}

func shapeOf(c model.Config) string {
	return fmt.Sprintf("dim %d, %d layers, %d/%d heads, ffn %d, vocab %d, tied %v, eps %g, eos %d, bos %d",
		c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFNDim, c.Vocab, c.Tied, c.NormEps, c.EOS, c.BOS)
}

// sameLink says whether two optional links are both absent or name one CID.
func sameLink(a, b *sharding.Link) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.CID == b.CID
}

// LineageStage is one run along a checkpoint's lineage, as Lineage walked
// it: the run (none for a checkpoint without a round record, such as an
// imported model), its stage and name, and the newest and oldest
// checkpoints of the run on the way (Last is round Rounds; First round 0,
// the run's genesis).
type LineageStage struct {
	Run    string `json:"run,omitempty"`
	Stage  string `json:"stage,omitempty"`
	Name   string `json:"name,omitempty"`
	Rounds int    `json:"rounds"`
	Last   string `json:"last"`
	First  string `json:"first"`
	// Dataset is what the stage trained on; Generators the generators its
	// manifest names for synthetic text (a checkpoint CID where a fomnet
	// generation job wrote it), so a lineage shows which model's text a
	// stage learnt from.
	Dataset    string   `json:"dataset,omitempty"`
	Generators []string `json:"generators,omitempty"`
}

// datasetGenerators lists the generators of a dataset's synthetic shards,
// in order of first appearance.
func (n *Node) datasetGenerators(ctx context.Context, ds sharding.Link) ([]string, error) {
	c, err := ds.Cid()
	if err != nil {
		return nil, err
	}
	mb, err := n.Store.FetchBlock(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", c, err)
	}
	man, err := sharding.DecodeManifest(mb.RawData())
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", c, err)
	}
	var out []string
	for _, s := range man.Shards {
		if s.Source == "synthetic" && s.Generator != "" && !slices.Contains(out, s.Generator) {
			out = append(out, s.Generator)
		}
	}
	return out, nil
}

// maxLineage bounds a lineage walk (round records read).
const maxLineage = 1 << 20

// Lineage walks the lineage of checkpoint ck by the base links of its
// round records, through every stage's genesis into the stage before, and
// returns the runs met, newest first. Each step is checked: a round's base
// is the previous round of its run, a genesis's base is what its run spec
// says it starts from. Fetches wait as ctx's contentstore wait says (else
// fetchStall without a block).
func (n *Node) Lineage(ctx context.Context, ck cid.Cid) ([]LineageStage, error) {
	ctx = withStall(ctx)
	var out []LineageStage
	var spec *RunSpec
	// want is the round the next record must be: -1 any (the first),
	// -2 any of another run (after a stage's genesis).
	want := -1
	for steps := 0; ; steps++ {
		if steps == maxLineage {
			return out, fmt.Errorf("lineage: longer than %d checkpoints", maxLineage)
		}
		rec, err := n.readRoundRecord(ctx, ck)
		if err != nil {
			if want == -2 && errors.Is(err, os.ErrNotExist) {
				// A stage's base without a round record: the lineage starts there.
				return append(out, LineageStage{Last: ck.String(), First: ck.String()}), nil
			}
			return out, fmt.Errorf("lineage: round record of %s: %w", ck, err)
		}
		if want >= 0 && (rec.Round != want || rec.Run.CID != out[len(out)-1].Run) {
			return out, fmt.Errorf("lineage: %s is round %d of run %s; its successor wants round %d of run %s", ck, rec.Round, rec.Run.CID, want, out[len(out)-1].Run)
		}
		if want < 0 {
			run, _ := rec.Run.Cid()
			if spec, err = n.LoadRun(ctx, run); err != nil {
				return out, fmt.Errorf("lineage: checkpoint %s: %w", ck, err)
			}
			st := LineageStage{Run: rec.Run.CID, Stage: spec.Stage, Name: spec.Name, Rounds: rec.Round, Last: ck.String(), Dataset: spec.Dataset.CID}
			if st.Generators, err = n.datasetGenerators(ctx, spec.Dataset); err != nil {
				return out, fmt.Errorf("lineage: run %s: %w", rec.Run.CID, err)
			}
			out = append(out, st)
		}
		if rec.Round == 0 {
			out[len(out)-1].First = ck.String()
			if !sameLink(rec.Base, spec.From) {
				return out, fmt.Errorf("lineage: genesis %s of run %s has a base other than its spec's from", ck, rec.Run.CID)
			}
			if rec.Base == nil {
				return out, nil
			}
			want = -2
		} else {
			want = rec.Round - 1
		}
		if ck, err = rec.Base.Cid(); err != nil {
			return out, fmt.Errorf("lineage: round %d of run %s: base: %w", rec.Round, rec.Run.CID, err)
		}
	}
}
