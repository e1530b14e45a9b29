package node

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
)

// RunFormat names the run spec's format and version.
const RunFormat = "fomnet-run/1"

// RunSpec describes one training run completely: which model, from which
// data, with which recipe and sync settings. It is stored as an IPLD
// dag-json block; its CID is the run ID, so every participant that holds
// the ID agrees on every setting.
type RunSpec struct {
	Format string `json:"format"`
	Name   string `json:"name"`
	// Model is the model's Hugging Face config.json (LlamaForCausalLM).
	Model json.RawMessage `json:"model,omitempty"`
	// Dataset links the dataset manifest (fomnet data prepare); its
	// tokenizer is the run's tokenizer.
	Dataset sharding.Link `json:"dataset"`
	// Tokenizer links the tokenizer (tokenizer.json); Node.CreateRun sets
	// it from the dataset's manifest, and participants check they agree.
	Tokenizer *sharding.Link `json:"tokenizer,omitempty"`
	// From, if set, is the checkpoint this run starts from (a stage after
	// another: stage.go) instead of the seed's genesis weights.
	From  *sharding.Link `json:"from,omitempty"`
	Stage string         `json:"stage"`
	// Rounds is how many outer rounds the run trains.
	Rounds int       `json:"rounds"`
	Inner  InnerSpec `json:"inner"`
	// Sync is DiLoCo's settings (the round deadline in nanoseconds).
	Sync gradsync.Config `json:"sync"`
	// Seed fixes the genesis weights and every batch order.
	Seed uint64 `json:"seed"`
	// SpotCheck is the share of each round's contributions re-executed by
	// another member (spotcheck.go); absent: DefaultSpotCheck.
	SpotCheck *float64 `json:"spot_check,omitempty"`
}

// DefaultSpotCheck is the share of contributions spot-checked when a run
// spec does not say: each node then re-executes about a tenth of a
// contribution per round, a tenth of its training.
const DefaultSpotCheck = 0.1

// SpotCheckShare is the run's spot-check share.
func (r *RunSpec) SpotCheckShare() float64 {
	if r.SpotCheck == nil {
		return DefaultSpotCheck
	}
	return *r.SpotCheck
}

// InnerSpec is the local training recipe each participant follows.
type InnerSpec struct {
	Batch int `json:"batch"`
	Seq   int `json:"seq"`
	// LR schedule over the whole run (Sync.RoundStart(Rounds) inner steps:
	// Rounds rounds of H, the first Sync.WarmupRounds of them WarmupH).
	Schedule    string  `json:"schedule"` // constant, cosine, wsd
	MaxLR       float64 `json:"max_lr"`
	MinLR       float64 `json:"min_lr"`
	Warmup      int     `json:"warmup"`
	DecayFrac   float64 `json:"decay_frac,omitempty"`
	WeightDecay float64 `json:"weight_decay"`
	ClipNorm    float64 `json:"clip_norm"`
	// Beta1 and Beta2 are AdamW's moment decays; absent (0) means
	// model.DefaultOptim()'s 0.9 and 0.95. With small per-worker batches
	// DiLoCo did better with 0.95 and 0.99 (docs/BENCHMARKS.md).
	Beta1 float64 `json:"beta1,omitempty"`
	Beta2 float64 `json:"beta2,omitempty"`
	// Optimizer is how every participant holds AdamW's moments: absent or
	// "adamw", fp32; "adamw8", 8 bits a value with blockwise scales
	// (model.Options.AdamW8) — a different optimizer, so the run's choice.
	Optimizer string `json:"optimizer,omitempty"`
	// ShardsPerRound is how many shard visits the data pipeline's schedule
	// hands out per round, spread over the round's participants.
	ShardsPerRound int `json:"shards_per_round"`
	// Objective is what the inner steps minimise: absent, cross-entropy;
	// "dpo" (the stage's base, From, is the frozen reference) or "simpo",
	// preference objectives with Beta, Gamma and Alpha (the chosen
	// answer's NLL weight; model.PrefConfig), which train on a dataset of
	// pairs with batches of whole pairs.
	Objective string  `json:"objective,omitempty"`
	Beta      float64 `json:"beta,omitempty"`
	Gamma     float64 `json:"gamma,omitempty"`
	Alpha     float64 `json:"alpha,omitempty"`
}

// Pref is the run's preference objective, if it has one.
func (r *RunSpec) Pref() (model.PrefConfig, bool) {
	if r.Inner.Objective == "" {
		return model.PrefConfig{}, false
	}
	return model.PrefConfig{Objective: r.Inner.Objective, Beta: r.Inner.Beta, Gamma: r.Inner.Gamma, Alpha: r.Inner.Alpha}, true
}

// dpo says whether the run's objective is DPO, which trains against a
// frozen reference: the stage base's weights.
func (r *RunSpec) dpo() bool { return r.Inner.Objective == model.ObjectiveDPO }

// ModelOptions are the model options the run fixes for every
// participant (the inner optimizer's moments).
func (r *RunSpec) ModelOptions() model.Options {
	return model.Options{AdamW8: r.Inner.Optimizer == "adamw8"}
}

// ModelConfig decodes the run's model.
func (r *RunSpec) ModelConfig() (model.Config, error) {
	c, err := model.UnmarshalHFConfig(r.Model)
	if err != nil {
		return c, fmt.Errorf("run: model: %w", err)
	}
	return c, nil
}

// TrainConfig is the inner-loop recipe for the whole run.
func (r *RunSpec) TrainConfig() model.TrainConfig {
	tc := model.DefaultTrainConfig()
	tc.Batch, tc.Seq, tc.Seed = r.Inner.Batch, r.Inner.Seq, r.Seed
	tc.Steps = r.Sync.RoundStart(r.Rounds)
	tc.Schedule = kernels.Schedule{Kind: r.Inner.Schedule, MaxLR: r.Inner.MaxLR, MinLR: r.Inner.MinLR,
		Warmup: r.Inner.Warmup, Total: tc.Steps, DecayFrac: r.Inner.DecayFrac}
	tc.Optim.WeightDecay = float32(r.Inner.WeightDecay)
	tc.Optim.ClipNorm = r.Inner.ClipNorm
	if r.Inner.Beta1 != 0 {
		tc.Optim.Beta1 = float32(r.Inner.Beta1)
	}
	if r.Inner.Beta2 != 0 {
		tc.Optim.Beta2 = float32(r.Inner.Beta2)
	}
	return tc
}

// fitsData says whether the run's objective fits its dataset: preference
// pairs train with a preference objective, and only pairs do.
func (r *RunSpec) fitsData(pairs bool) error {
	if _, pref := r.Pref(); pairs != pref {
		return fmt.Errorf("run: objective %q on a dataset %s preference pairs: pairs train with dpo or simpo, and only pairs do",
			r.Inner.Objective, map[bool]string{true: "of", false: "without"}[pairs])
	}
	return nil
}

// Validate checks every field; errors name the field.
func (r *RunSpec) Validate() error {
	if r.Format != RunFormat {
		return fmt.Errorf("run: format %q, want %q", r.Format, RunFormat)
	}
	c, err := r.ModelConfig()
	if err != nil {
		return err
	}
	if _, err := r.Dataset.Cid(); err != nil {
		return fmt.Errorf("run: dataset link: %w", err)
	}
	if r.Tokenizer != nil {
		if _, err := r.Tokenizer.Cid(); err != nil {
			return fmt.Errorf("run: tokenizer link: %w", err)
		}
	}
	if r.From != nil {
		if _, err := r.From.Cid(); err != nil {
			return fmt.Errorf("run: from link: %w", err)
		}
	}
	if r.Rounds < 1 || r.Rounds > 1_000_000 {
		return fmt.Errorf("run: rounds %d outside 1..1000000", r.Rounds)
	}
	if r.Stage == "" {
		return fmt.Errorf("run: stage is empty")
	}
	for what, v := range map[string]string{"name": r.Name, "stage": r.Stage} {
		if sanitize(v) != v || len(v) > 256 {
			return fmt.Errorf("run: %s %q has control characters or exceeds 256 bytes", what, v)
		}
	}
	if r.Inner.ShardsPerRound < 1 || r.Inner.ShardsPerRound > 1<<16 {
		return fmt.Errorf("run: inner shards_per_round %d outside 1..65536", r.Inner.ShardsPerRound)
	}
	if pc, ok := r.Pref(); ok {
		if err := pc.Validate(); err != nil {
			return fmt.Errorf("run: inner: %w", err)
		}
		if pc.Objective == model.ObjectiveDPO && r.From == nil {
			return fmt.Errorf("run: inner objective dpo needs from: the checkpoint the stage starts from is its reference")
		}
		if r.Inner.Batch%2 != 0 {
			return fmt.Errorf("run: inner batch %d: a preference objective's batches are pairs of rows (an even number)", r.Inner.Batch)
		}
	} else if r.Inner.Beta != 0 || r.Inner.Gamma != 0 || r.Inner.Alpha != 0 {
		return fmt.Errorf("run: inner beta, gamma and alpha are for a preference objective (dpo, simpo); the run has none")
	}
	if o := r.Inner.Optimizer; o != "" && o != "adamw" && o != "adamw8" {
		return fmt.Errorf("run: inner optimizer %q: want adamw or adamw8", o)
	}
	if q := r.SpotCheckShare(); !(q >= 0 && q <= 1) {
		return fmt.Errorf("run: spot_check %v is not a share between 0 and 1", q)
	}
	if err := r.Sync.Validate(); err != nil {
		return fmt.Errorf("run: sync: %w", err)
	}
	tc := r.TrainConfig()
	if err := tc.Validate(c); err != nil {
		return fmt.Errorf("run: inner: %w", err)
	}
	if err := tc.Schedule.Validate(); err != nil {
		return fmt.Errorf("run: inner schedule: %w", err)
	}
	return nil
}

// EncodeRunSpec validates r and returns its canonical dag-json bytes and
// its CID, the run ID.
func EncodeRunSpec(r *RunSpec) ([]byte, cid.Cid, error) {
	if err := r.Validate(); err != nil {
		return nil, cid.Undef, err
	}
	return dagJSONBlock(r, "run")
}

// DecodeRunSpec parses a run spec block and checks that it is canonical
// (so that its CID is the one EncodeRunSpec gives) and valid.
func DecodeRunSpec(b []byte) (*RunSpec, error) {
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("run: spec of %d bytes exceeds 1 MiB", len(b))
	}
	var r RunSpec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	again, _, err := EncodeRunSpec(&r)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("run: spec is not in canonical dag-json form")
	}
	return &r, nil
}

// dagJSONBlock encodes v as a canonical dag-json block and returns its
// bytes and CID; what names v in errors.
func dagJSONBlock(v any, what string) ([]byte, cid.Cid, error) {
	b, c, err := contentstore.DagJSON(v)
	if err != nil {
		return nil, cid.Undef, fmt.Errorf("%s: %w", what, err)
	}
	return b, c, nil
}

// NewRunSpec fills a spec from a preset, a dataset and defaults suited to
// the preset's size.
func NewRunSpec(name, preset string, dataset cid.Cid, rounds int, sync gradsync.Config, seed uint64) (*RunSpec, error) {
	c, err := model.Preset(preset)
	if err != nil {
		return nil, err
	}
	return NewRunSpecForModel(name, c, dataset, rounds, sync, seed)
}

// NewRunSpecForModel is NewRunSpec for an explicit model config.
func NewRunSpecForModel(name string, c model.Config, dataset cid.Cid, rounds int, sync gradsync.Config, seed uint64) (*RunSpec, error) {
	hf, err := model.MarshalHFConfig(c)
	if err != nil {
		return nil, err
	}
	tc := model.DefaultTrainConfig()
	r := &RunSpec{
		Format: RunFormat, Name: name, Model: hf, Dataset: sharding.LinkTo(dataset), Stage: "pretrain",
		Rounds: rounds, Seed: seed, Sync: sync,
		Inner: InnerSpec{Batch: tc.Batch, Seq: min(tc.Seq, c.MaxSeq), Schedule: tc.Schedule.Kind, MaxLR: tc.Schedule.MaxLR,
			MinLR: tc.Schedule.MinLR, Warmup: tc.Schedule.Warmup, WeightDecay: float64(tc.Optim.WeightDecay), ClipNorm: tc.Optim.ClipNorm,
			ShardsPerRound: 16},
	}
	return r, nil
}
