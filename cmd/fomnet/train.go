package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

type trainFlags struct {
	preset            string
	steps, batch, seq int
	out               string
	lr, minLR         float64
	warmup            int
	schedule          string
	decayFrac         float64
	seed              uint64
	threads           int
	path              string
	dev               deviceFlags
	mem               memoryFlags
	valFrac           float64
	evalEvery         int
	logEvery          int
	builtin           bool
	data              string
	asJSON            bool
}

type trainSummary struct {
	Checkpoint string   `json:"checkpoint"`
	Preset     string   `json:"preset"`
	Params     int64    `json:"params"`
	Steps      int      `json:"steps"`
	Tokens     int64    `json:"tokens"`
	Loss       float32  `json:"loss"`
	ValLoss    *float32 `json:"val_loss,omitempty"`
	Seconds    float64  `json:"seconds"`
	TokensPerS float64  `json:"tokens_per_s"`
	Backend    string   `json:"backend"`
}

func newTrainCmd(e *env) *cobra.Command {
	var f trainFlags
	cmd := &cobra.Command{
		Use:   "train [flags] FILE...",
		Short: "Train a model on this machine from text or token files",
		Long: `Train a model on this machine (single node, no network).

Inputs are UTF-8 text files, read as byte-level tokens with blank-line-separated
paragraphs as documents, or files ending in .tok holding little-endian uint32
token ids (one document per file). --builtin adds the built-in bilingual corpus.
The last --val-frac of the token stream is held out for validation.

Progress goes to stderr; the checkpoint directory (written atomically as
OUT/step-NNNNNN with model.safetensors, config.json, optimizer.safetensors)
is printed on stdout.`,
		Example: `  fomnet train --preset tiny --steps 200 --builtin
  fomnet train --preset demo --steps 1000 --out runs/a corpus/*.txt`,
		RunE: func(cmd *cobra.Command, args []string) error { return runTrain(cmd, e, f, args) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.preset, "preset", "demo", "model preset: "+fmt.Sprint(model.PresetNames()))
	fl.IntVar(&f.steps, "steps", 100, "optimizer steps")
	fl.IntVar(&f.batch, "batch", 8, "sequences per step")
	fl.IntVar(&f.seq, "seq", 0, "tokens per sequence (0: 256 or the preset's max_seq if smaller)")
	fl.StringVar(&f.out, "out", "checkpoints", "directory under which the checkpoint is written")
	fl.Float64Var(&f.lr, "lr", 3e-3, "peak learning rate")
	fl.Float64Var(&f.minLR, "min-lr", 3e-4, "final learning rate")
	fl.IntVar(&f.warmup, "warmup", 10, "warmup steps")
	fl.StringVar(&f.schedule, "schedule", kernels.ScheduleCosine, "learning-rate schedule: cosine, wsd or constant")
	fl.Float64Var(&f.decayFrac, "decay-frac", 0.2, "wsd: fraction of steps spent decaying")
	fl.Uint64Var(&f.seed, "seed", 1, "seed for initialisation and batch order")
	fl.IntVar(&f.threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	fl.StringVar(&f.path, "cpu-path", "auto", "CPU code path: auto, avx2 or generic")
	f.dev.add(fl)
	f.mem.add(fl, true)
	fl.Float64Var(&f.valFrac, "val-frac", 0.05, "fraction of tokens held out for validation (0 disables)")
	fl.IntVar(&f.evalEvery, "eval-every", 0, "validate every N steps (0: only at the end)")
	fl.IntVar(&f.logEvery, "log-every", 0, "log every N steps (0: about 20 lines per run)")
	fl.BoolVar(&f.builtin, "builtin", false, "train on the built-in bilingual corpus (as well as any files)")
	fl.StringVar(&f.data, "data", "", "train on a dataset made by `fomnet data prepare` (its directory); the checkpoint gets its tokenizer.json")
	fl.BoolVar(&f.asJSON, "json", false, "print the summary as JSON on stdout")
	return cmd
}

func runTrain(cmd *cobra.Command, e *env, f trainFlags, files []string) error {
	if len(files) == 0 && !f.builtin && f.data == "" {
		return usagef("no input: give text or .tok files, --builtin or --data DIR")
	}
	if f.valFrac < 0 || f.valFrac >= 1 {
		return usagef("--val-frac %v must lie in [0, 1)", f.valFrac)
	}
	c, err := model.Preset(f.preset)
	if err != nil {
		return usageError{err}
	}
	if f.seq == 0 {
		f.seq = min(256, c.MaxSeq)
	}
	tc := model.DefaultTrainConfig()
	tc.Batch, tc.Seq, tc.Steps, tc.Seed, tc.EvalEvery = f.batch, f.seq, f.steps, f.seed, f.evalEvery
	tc.Schedule = kernels.Schedule{Kind: f.schedule, MaxLR: f.lr, MinLR: f.minLR, Warmup: f.warmup, Total: f.steps, DecayFrac: f.decayFrac}
	if err := tc.Validate(c); err != nil {
		return usageError{err}
	}
	if _, _, err := f.dev.check(); err != nil {
		return err
	}
	in, err := f.mem.input(c, f.batch, f.seq, f.threads, &f.dev)
	if err != nil {
		return err
	}
	tc.Micro = in.Micro
	if _, err := f.mem.check(e, c, in, &f.dev, false); err != nil {
		return err
	}
	dir := filepath.Join(f.out, fmt.Sprintf("step-%06d", f.steps))
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("checkpoint %s already exists; choose another --out", dir)
	}
	corpus := &model.Corpus{}
	if len(files) > 0 {
		if corpus, err = model.LoadCorpus(files, c.Vocab, int32(c.EOS)); err != nil {
			return err
		}
	}
	var tj []byte
	if f.data != "" {
		if tj, err = loadDataset(corpus, f.data, c); err != nil {
			return err
		}
	} else if tj, err = byteTokenizer(c); err != nil {
		return err
	}
	extra := []model.File{{Name: "tokenizer.json", Data: tj}}
	if f.builtin {
		if err := addBuiltin(corpus, c, 0, 0); err != nil {
			return err
		}
	}
	train, val := corpus, (*model.Corpus)(nil)
	if f.valFrac > 0 {
		train, val = corpus.Split(f.valFrac, int32(c.EOS))
		if len(val.Tokens) < f.seq+1 {
			e.logf("note: validation split has %d tokens, fewer than one sequence of %d; no validation loss", len(val.Tokens), f.seq)
			val = nil
		}
	}
	if len(train.Tokens) < f.seq+1 {
		return fmt.Errorf("corpus: %d training tokens cannot fill one sequence of %d; use more data or a smaller --seq", len(train.Tokens), f.seq)
	}
	be, err := f.dev.open(e, f.threads, f.path)
	if err != nil {
		return err
	}
	defer be.Close()
	m, err := model.NewWith(be, c, in.Options)
	if err != nil {
		return err
	}
	m.Init(f.seed)
	e.logf("training %s (%s parameters) on %s with %d threads: %d documents, %d training tokens, %d steps; %s",
		f.preset, human(float64(model.NumParams(c)), ""), be.Name(), be.Threads(), corpus.Docs, len(train.Tokens), f.steps, in.Settings())
	every := f.logEvery
	if every <= 0 {
		every = max(1, f.steps/20)
	}
	start := time.Now()
	last, err := model.Train(ctxOf(cmd), m, train, val, tc, func(p model.Progress) {
		if p.Step%every != 0 && p.Step != p.Steps && p.Step != 1 {
			return
		}
		val := ""
		if !math.IsNaN(float64(p.ValLoss)) {
			val = fmt.Sprintf("  val %.4f", p.ValLoss)
		}
		e.logf("step %*d/%d  loss %.4f%s  lr %.2e  norm %.3f  %.0f tok/s  %s",
			len(strconv.Itoa(p.Steps)), p.Step, p.Steps, p.Loss, val, p.LR, p.GradNorm, p.TokensPerS, p.Elapsed.Round(time.Second/10))
	})
	if err != nil {
		if errors.Is(err, model.ErrNotFinite) {
			return fmt.Errorf("%w (try a lower --lr)", err)
		}
		return err
	}
	secs := time.Since(start).Seconds()
	meta := map[string]string{"preset": f.preset, "steps": strconv.Itoa(last.Step), "seed": strconv.FormatUint(f.seed, 10)}
	if err := m.Save(dir, meta, extra...); err != nil {
		return err
	}
	tokens := int64(last.Step) * int64(f.batch*f.seq)
	s := trainSummary{Checkpoint: dir, Preset: f.preset, Params: model.NumParams(c), Steps: last.Step, Tokens: tokens,
		Loss: last.Loss, Seconds: secs, TokensPerS: float64(tokens) / secs, Backend: be.Name()}
	if !math.IsNaN(float64(last.ValLoss)) {
		v := last.ValLoss
		s.ValLoss = &v
	}
	e.logf("saved %s", dir)
	if f.asJSON {
		return e.printJSON(s)
	}
	fmt.Fprintln(e.stdout, dir)
	return nil
}

// datasetShard is one shard of a prepared dataset, checked against its
// CID, with the manifest's description of it.
type datasetShard struct {
	Info  sharding.ShardEntry
	Shard *sharding.Shard
}

// readDataset reads a prepared dataset directory: the manifest (passed to
// check, if set, before anything else is read), the tokenizer (its bytes)
// and every shard, each checked against the CID the manifest gives it.
func readDataset(dir string, check func(*sharding.Manifest) error) (*sharding.Manifest, []byte, []datasetShard, error) {
	mb, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s is not a prepared dataset: %w", dir, err)
	}
	man, err := sharding.DecodeManifest(mb)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	if check != nil {
		if err := check(man); err != nil {
			return nil, nil, nil, err
		}
	}
	tj, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, nil, nil, err
	}
	var shards []datasetShard
	for _, s := range man.Shards {
		b, err := os.ReadFile(filepath.Join(dir, filepath.Clean(s.File)))
		if err != nil {
			return nil, nil, nil, err
		}
		got, err := contentstore.FileCID(context.Background(), bytes.NewReader(b))
		if err != nil {
			return nil, nil, nil, err
		}
		if got.String() != s.CID.CID {
			return nil, nil, nil, fmt.Errorf("shard %s: content has CID %s, the manifest says %s (corrupt file?)", s.File, got, s.CID.CID)
		}
		sh, err := sharding.DecodeShard(b)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", s.File, err)
		}
		shards = append(shards, datasetShard{s, sh})
	}
	return man, tj, shards, nil
}

// loadDataset reads a prepared dataset directory into corpus (see
// readDataset) and returns the tokenizer's bytes. The tokenizer's ids must
// fit the model.
func loadDataset(corpus *model.Corpus, dir string, c model.Config) ([]byte, error) {
	_, tj, shards, err := readDataset(dir, func(man *sharding.Manifest) error {
		if man.Vocab > c.Vocab {
			return fmt.Errorf("dataset %s has a %d-token vocabulary; the preset holds %d", dir, man.Vocab, c.Vocab)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	tk, err := tokenizer.Parse(tj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	eos, _ := tk.SpecialID(tokenizer.EOS)
	pad, _ := tk.SpecialID(tokenizer.PAD)
	if int(eos) != c.EOS {
		return nil, fmt.Errorf("dataset EOS id %d differs from the model's %d", eos, c.EOS)
	}
	// With conversations among them (shards with a loss mask), the corpus
	// is cut row by row, and the other shards train every token but PAD.
	masked := slices.ContainsFunc(shards, func(s datasetShard) bool { return s.Shard.Mask != nil })
	for _, s := range shards {
		rows, masks := make([][]int32, s.Shard.Rows), make([][]bool, s.Shard.Rows)
		for i := range rows {
			rows[i], masks[i] = s.Shard.Row(i), s.Shard.RowMask(i)
		}
		add := func() error { return corpus.AddRows(rows, pad, int32(c.EOS), c.Vocab) }
		if masked {
			add = func() error { return corpus.AddMaskedRows(rows, masks, pad, int32(c.EOS), c.Vocab) }
		}
		if err := add(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.Info.File, err)
		}
	}
	return tj, nil
}

// byteTokenizer is tokenizer.json for byte-level tokens: bytes, then as
// many of the default specials (EOS 256, BOS 257, PAD 258, …) as the
// model's vocabulary holds.
func byteTokenizer(c model.Config) ([]byte, error) {
	tk, err := tokenizer.ByteLevel(tokenizer.DefaultSpecials[:min(len(tokenizer.DefaultSpecials), c.Vocab-256)])
	if err != nil {
		return nil, err
	}
	return tk.MarshalJSON()
}
