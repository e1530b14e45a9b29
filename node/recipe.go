package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/sharding"
)

// RecipeFormat names the recipe's format and version.
const RecipeFormat = "fomnet-recipe/1"

// maxStages bounds a recipe.
const maxStages = 16

// Recipe is a model's whole training as stages — pretraining,
// mid-training, SFT, preference — each a run spec. A later stage's spec has
// no from: it starts from the previous stage's last checkpoint, which
// every node that trained (or verified) that stage holds, so every node
// derives the same run ID for it (Stage). Stored as dag-json; its CID names
// it (fomnet join RECIPE).
type Recipe struct {
	Format string    `json:"format"`
	Name   string    `json:"name"`
	Stages []RunSpec `json:"stages"`
}

// placeholderFrom stands for a later stage's from while its spec is
// validated (any CID would do).
var placeholderFrom = func() cid.Cid {
	c, _ := contentstore.BlockCID(contentstore.CodecRaw, []byte("fomnet recipe: the previous stage's last checkpoint"))
	return c
}()

// Validate checks every stage; errors name the stage.
func (r *Recipe) Validate() error {
	if r.Format != RecipeFormat {
		return fmt.Errorf("recipe: format %q, want %q", r.Format, RecipeFormat)
	}
	if sanitize(r.Name) != r.Name || len(r.Name) > 256 {
		return fmt.Errorf("recipe: name %q has control characters or exceeds 256 bytes", r.Name)
	}
	if len(r.Stages) == 0 || len(r.Stages) > maxStages {
		return fmt.Errorf("recipe: %d stages; want 1 to %d", len(r.Stages), maxStages)
	}
	for i, s := range r.Stages {
		if i > 0 && s.From != nil {
			return fmt.Errorf("recipe: stage %d (%s) names from %s; a later stage starts from the last checkpoint of the one before", i+1, s.Stage, s.From.CID)
		}
		if len(s.Model) == 0 {
			return fmt.Errorf("recipe: stage %d (%s) has no model; a recipe gives each stage's, so that every node derives one run ID", i+1, s.Stage)
		}
		if err := r.Stage(i, placeholderFrom).Validate(); err != nil {
			return fmt.Errorf("recipe: stage %d: %w", i+1, err)
		}
	}
	return nil
}

// Stage is stage i's run spec, starting from from (the last checkpoint
// of stage i−1; the first stage keeps its own).
func (r *Recipe) Stage(i int, from cid.Cid) *RunSpec {
	s := r.Stages[i]
	if i > 0 {
		l := sharding.LinkTo(from)
		s.From = &l
	}
	return &s
}

// EncodeRecipe validates r and returns its canonical dag-json bytes and
// its CID.
func EncodeRecipe(r *Recipe) ([]byte, cid.Cid, error) {
	if err := r.Validate(); err != nil {
		return nil, cid.Undef, err
	}
	return dagJSONBlock(r, "recipe")
}

// DecodeRecipe parses a recipe block, checking that it is canonical and
// valid.
func DecodeRecipe(b []byte) (*Recipe, error) {
	var r Recipe
	if err := decodeStrict(b, 1<<20, &r); err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	again, _, err := EncodeRecipe(&r)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, errors.New("recipe: not in canonical dag-json form")
	}
	return &r, nil
}

// CreateRecipe stores recipe r, pinned (with the datasets its stages link
// when stored here), and returns its CID.
func (n *Node) CreateRecipe(ctx context.Context, r *Recipe) (cid.Cid, error) {
	b, id, err := EncodeRecipe(r)
	if err != nil {
		return cid.Undef, err
	}
	if err := n.Store.PutBlock(ctx, id, b); err != nil {
		return cid.Undef, err
	}
	if rep, _ := n.Store.Verify(ctx, id); rep.OK() {
		if err := n.Store.Pin(ctx, id, "recipe "+r.Name); err != nil {
			return cid.Undef, err
		}
	}
	return id, nil
}

// LoadRecipe fetches and decodes a recipe.
func (n *Node) LoadRecipe(ctx context.Context, id cid.Cid) (*Recipe, error) {
	b, err := n.Store.FetchBlock(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("recipe %s: %w", id, err)
	}
	return DecodeRecipe(b.RawData())
}

// RecipeStage is a stage of a recipe being run: its index, run ID and
// participant (open while RunRecipe's each runs).
type RecipeStage struct {
	Index int
	Run   cid.Cid
	Spec  *RunSpec
}

// RunRecipe takes part in every stage of recipe id in turn: stage i's run
// is derived from the recipe and stage i−1's last checkpoint (so every
// node joins the same run), caught up to, and trained to its end. before
// (optional) hears of each stage as it starts. It returns the last
// stage's last checkpoint.
func (n *Node) RunRecipe(ctx context.Context, id cid.Cid, o RunOptions, catchUp func(*Participant) error, before func(RecipeStage)) (cid.Cid, error) {
	if o.Dir != "" {
		return cid.Undef, errors.New("recipe: each stage keeps its own run directory; leave RunOptions.Dir empty")
	}
	r, err := n.LoadRecipe(ctx, id)
	if err != nil {
		return cid.Undef, err
	}
	from := cid.Undef
	for i := range r.Stages {
		spec := r.Stage(i, from)
		run, err := n.CreateRun(ctx, spec)
		if err != nil {
			return cid.Undef, fmt.Errorf("recipe %s: stage %d: %w", id, i+1, err)
		}
		if before != nil {
			before(RecipeStage{Index: i, Run: run, Spec: spec})
		}
		p, err := n.OpenRun(ctx, run, o)
		if err != nil {
			return cid.Undef, fmt.Errorf("recipe %s: stage %d: %w", id, i+1, err)
		}
		if catchUp != nil {
			err = catchUp(p)
		}
		if err == nil {
			err = p.RunRounds(ctx, spec.Rounds)
		}
		from = p.Base()
		p.Close()
		if err != nil {
			return cid.Undef, fmt.Errorf("recipe %s: stage %d (%s): %w", id, i+1, spec.Stage, err)
		}
	}
	return from, nil
}
