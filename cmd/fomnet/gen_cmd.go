package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gen"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/sharding"
)

func newGenCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "gen", Short: "Synthetic data as verifiable work: generation jobs", Args: noArgs,
		Long: `A generation job names a generator checkpoint and a prompt set by CID, the
sampling settings (each prompt's seed derived from the job's) and how the
prompts are cut into shards. Anyone holding the checkpoint and the prompts
generates a shard to the same bytes (decoding is deterministic whatever the
batch), so a shard someone else made is checked by generating a sample of
its records again: other text, or text from other settings, is a fraud
proof naming the record.`}
	cmd.AddCommand(newGenCreateCmd(e), newGenShowCmd(e), newGenPublishCmd(e), newGenRunCmd(e), newGenVerifyCmd(e))
	return cmd
}

// A job directory holds spec.json (the spec's canonical dag-json bytes)
// and prompts.jsonl.

func newGenPublishCmd(e *env) *cobra.Command {
	var (
		f    nodeFlags
		ckpt string
	)
	cmd := &cobra.Command{
		Use:   "publish JOBDIR [--checkpoint DIR]",
		Short: "Store a generation job on this node, for the swarm to run",
		Long: `Store the job in JOBDIR on the node of --home (through its daemon when one
runs, which then serves it): the spec as its dag-json block, whose CID is
the job's, and the prompt set; with --checkpoint, the generator checkpoint
too (refused unless it is the job's). Nodes then take part with fomnet
join JOB. Prints the job's CID.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, _, _, err := loadJob(cmd, args[0])
			if err != nil {
				return err
			}
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				if ckpt != "" {
					c, err := api.Add(ctxOf(cmd), ckpt, true, nil)
					if err != nil {
						return err
					}
					if c.String() != spec.Generator {
						return fmt.Errorf("checkpoint %s is %s; the job's generator is %s", ckpt, c, spec.Generator)
					}
				}
				id, err := api.PublishGenJob(ctxOf(cmd), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, id)
				return nil
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().StringVar(&ckpt, "checkpoint", "", "the generator checkpoint directory, stored as well")
	return cmd
}

func newGenCreateCmd(e *env) *cobra.Command {
	var (
		ckpt, prompts, out, stage, licence string
		s                                  gen.Sampling
		perShard                           int
		chat                               bool
	)
	cmd := &cobra.Command{
		Use:   "create --checkpoint DIR --prompts FILE --out JOBDIR",
		Short: "Write a generation job: spec and prompt set",
		Long: `Write a generation job to JOBDIR: spec.json names the checkpoint (its CID as
fomnet add gives it), the prompt set (JSONL, {"prompt": text, "lang": "ko"
or "en"} a line; copied to JOBDIR/prompts.jsonl), the sampling settings, the
prompts a shard covers, and the stage and licence of the output. The job's
CID (of spec.json) is printed.

To have the swarm run it, publish it on a node that serves it (fomnet gen
publish, with its daemon running) and start nodes with fomnet join JOB.`,
		Example: `  fomnet gen create --checkpoint ckpt --prompts prompts.jsonl --max-tokens 96 --out job`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ckpt == "" || prompts == "" || out == "" {
				return usagef("--checkpoint, --prompts and --out are required")
			}
			pb, err := os.ReadFile(prompts)
			if err != nil {
				return err
			}
			ps, err := gen.ReadPrompts(bytes.NewReader(pb))
			if err != nil {
				return fmt.Errorf("%s: %w", prompts, err)
			}
			ctx := ctxOf(cmd)
			cc, err := contentstore.PathCID(ctx, ckpt)
			if err != nil {
				return err
			}
			pc, err := contentstore.FileCID(ctx, bytes.NewReader(pb))
			if err != nil {
				return err
			}
			spec := &gen.Spec{Format: gen.SpecFormat, Generator: cc.String(), Prompts: pc.String(), PromptCount: len(ps),
				Chat: chat, Sampling: s, PerShard: perShard, Stage: stage, Licence: licence}
			if err := spec.Check(); err != nil {
				return usageError{err}
			}
			sb, err := spec.Encode()
			if err != nil {
				return err
			}
			if err := fsutil.WriteDir(out, map[string][]byte{"spec.json": sb, "prompts.jsonl": pb}); err != nil {
				return err
			}
			id, err := spec.CID(ctx)
			if err != nil {
				return err
			}
			e.logf("job %s: %d prompts in %d shards, generator %s", id, len(ps), spec.Shards(), spec.Generator)
			fmt.Fprintln(e.stdout, id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ckpt, "checkpoint", "", "generator checkpoint directory")
	f.StringVar(&prompts, "prompts", "", "prompt set (JSONL)")
	f.StringVar(&out, "out", "", "job directory to write")
	f.BoolVar(&chat, "chat", false, "each prompt is a user's turn; the output is the model's answer")
	f.Float64Var(&s.Temperature, "temperature", 0.8, "sampling temperature (0: greedy)")
	f.IntVar(&s.TopK, "top-k", 0, "keep the k most likely tokens (0: all)")
	f.Float64Var(&s.TopP, "top-p", 0.95, "nucleus sampling threshold (0 or 1: off)")
	f.IntVar(&s.MaxTokens, "max-tokens", 128, "new tokens at most per prompt")
	f.Uint64Var(&s.Seed, "seed", 1, "the job's seed (prompt i samples from a stream derived from it and i)")
	f.IntVar(&perShard, "per-shard", 64, "prompts a shard covers")
	f.StringVar(&stage, "stage", "pretrain", "stage of the output: "+strings.Join(sharding.Stages, ", "))
	f.StringVar(&licence, "licence", "CC0-1.0", "licence of the output (SPDX id)")
	return cmd
}

// loadJob reads JOBDIR's spec and prompts and checks the prompts are the
// spec's.
func loadJob(cmd *cobra.Command, dir string) (*gen.Spec, string, []gen.Prompt, error) {
	spec, err := gen.ReadSpec(filepath.Join(dir, "spec.json"))
	if err != nil {
		return nil, "", nil, err
	}
	id, err := spec.CID(ctxOf(cmd))
	if err != nil {
		return nil, "", nil, err
	}
	pb, err := os.ReadFile(filepath.Join(dir, "prompts.jsonl"))
	if err != nil {
		return nil, "", nil, err
	}
	if c, err := contentstore.FileCID(ctxOf(cmd), bytes.NewReader(pb)); err != nil || c.String() != spec.Prompts {
		return nil, "", nil, fmt.Errorf("%s: prompts.jsonl is %s, the job's prompts are %s", dir, c, spec.Prompts)
	}
	ps, err := gen.ReadPrompts(bytes.NewReader(pb))
	if err != nil {
		return nil, "", nil, err
	}
	if len(ps) != spec.PromptCount {
		return nil, "", nil, fmt.Errorf("%s: %d prompts, the job says %d", dir, len(ps), spec.PromptCount)
	}
	return spec, id, ps, nil
}

// loadGenerator loads the job's checkpoint from dir, refusing another one.
func loadGenerator(e *env, cmd *cobra.Command, spec *gen.Spec, ps []gen.Prompt, dir string, threads, batch int) (*gen.Generator, func(), error) {
	c, err := contentstore.PathCID(ctxOf(cmd), dir)
	if err != nil {
		return nil, nil, err
	}
	if c.String() != spec.Generator {
		return nil, nil, fmt.Errorf("checkpoint %s is %s; the job's generator is %s", dir, c, spec.Generator)
	}
	s, closeFn, err := loadSpeaker(e, dir, threads)
	if err != nil {
		return nil, nil, err
	}
	if s.tk == nil {
		closeFn()
		return nil, nil, fmt.Errorf("checkpoint %s has no tokenizer.json", dir)
	}
	return &gen.Generator{M: s.m, Tok: s.tk, Spec: spec, Prompts: ps, Batch: batch}, closeFn, nil
}

func newGenShowCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show JOBDIR",
		Short: "Describe a generation job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, id, _, err := loadJob(cmd, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]any{"job": id, "spec": spec, "shards": spec.Shards()})
			}
			fmt.Fprintf(e.stdout, "job        %s\ngenerator  %s\nprompts    %s (%d, %d a shard: %d shards)\nsampling   temperature %g, top-k %d, top-p %g, %d tokens at most, seed %d\noutput     %s, %s, chat %v\n",
				id, spec.Generator, spec.Prompts, spec.PromptCount, spec.PerShard, spec.Shards(),
				spec.Sampling.Temperature, spec.Sampling.TopK, spec.Sampling.TopP, spec.Sampling.MaxTokens, spec.Sampling.Seed,
				spec.Stage, spec.Licence, spec.Chat)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// parseShards reads "0-3,7" (empty: all n shards).
func parseShards(s string, n int) ([]int, error) {
	if s == "" {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b >= n {
			return nil, usagef("--shards %q: want shard numbers or ranges in [0, %d)", s, n)
		}
		for k := a; k <= b; k++ {
			out = append(out, k)
		}
	}
	return out, nil
}

type genShardOut struct {
	Shard   int    `json:"shard"`
	File    string `json:"file"`
	CID     string `json:"cid"`
	Records int    `json:"records"`
	Tokens  int    `json:"tokens"`
}

func newGenRunCmd(e *env) *cobra.Command {
	var (
		ckpt, out, shards string
		threads, batch    int
		asJSON            bool
	)
	cmd := &cobra.Command{
		Use:   "run JOBDIR --checkpoint DIR --out OUTDIR",
		Short: "Generate shards of a job",
		Long: `Generate the job's shards (--shards, default all) with the checkpoint in
DIR (refused unless it is the job's generator), --batch sequences at a time,
into OUTDIR/shard-K.jsonl, and write OUTDIR/recipe.json: a data prepare
--config whose inputs are the shards, synthetic, their generator the
checkpoint's CID, with the job's stage and licence.`,
		Example: `  fomnet gen run job --checkpoint ckpt --out synth
  fomnet data prepare --config synth/recipe.json --tokenizer ckpt --out ds`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ckpt == "" || out == "" {
				return usagef("--checkpoint and --out are required")
			}
			spec, id, ps, err := loadJob(cmd, args[0])
			if err != nil {
				return err
			}
			ks, err := parseShards(shards, spec.Shards())
			if err != nil {
				return err
			}
			g, closeFn, err := loadGenerator(e, cmd, spec, ps, ckpt, threads, batch)
			if err != nil {
				return err
			}
			defer closeFn()
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			start := time.Now()
			var res []genShardOut
			recipe := sharding.PrepareConfig{}
			total := 0
			for _, k := range ks {
				if err := ctxOf(cmd).Err(); err != nil {
					return err
				}
				var tokens int
				b, err := g.Shard(k, func(n int) { tokens = n })
				if err != nil {
					return err
				}
				total += tokens
				name := filepath.Join(out, fmt.Sprintf("shard-%d.jsonl", k))
				if err := fsutil.WriteFile(name, b); err != nil {
					return err
				}
				c, err := contentstore.FileCID(ctxOf(cmd), bytes.NewReader(b))
				if err != nil {
					return err
				}
				lo, hi := spec.Range(k)
				res = append(res, genShardOut{Shard: k, File: name, CID: c.String(), Records: hi - lo, Tokens: tokens})
				el := time.Since(start).Seconds()
				e.logf("shard %d/%d: %d records, %d tokens, %s (%.0f tokens/s)", k+1, spec.Shards(), hi-lo, tokens, c, float64(total)/max(el, 1e-3))
				abs, err := filepath.Abs(name)
				if err != nil {
					return err
				}
				recipe.Inputs = append(recipe.Inputs, sharding.Input{Path: abs, Format: sharding.FormatJSONL, Field: "text",
					Source: "synthetic", Generator: spec.Generator, Licence: spec.Licence, Stage: spec.Stage})
			}
			if err := writeGenRecipe(out, recipe.Inputs); err != nil {
				return err
			}
			el := time.Since(start).Seconds()
			if asJSON {
				return e.printJSON(map[string]any{"job": id, "shards": res, "tokens": total, "seconds": el, "tokens_per_s": float64(total) / max(el, 1e-3)})
			}
			for _, r := range res {
				fmt.Fprintf(e.stdout, "%d\t%s\t%s\n", r.Shard, r.CID, r.File)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ckpt, "checkpoint", "", "the job's generator checkpoint directory")
	f.StringVar(&out, "out", "", "directory for the shards")
	f.StringVar(&shards, "shards", "", "shards to generate, e.g. 0-3,7 (default all)")
	f.IntVar(&threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	f.IntVar(&batch, "batch", 64, "sequences decoded at once (the output does not depend on it)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newGenVerifyCmd(e *env) *cobra.Command {
	var (
		ckpt          string
		shard, sample int
		seed          uint64
	)
	cmd := &cobra.Command{
		Use:   "verify JOBDIR SHARDFILE --shard K --checkpoint DIR",
		Short: "Check a shard by generating a sample of it again",
		Long: `Check that SHARDFILE is shard K of the job: its records are the prompts' in
order and in the canonical encoding, and --sample of them (drawn from --seed
and the shard's hash) generated again give the same text. Exit 0 when it
passes; exit 1 with the fraud proof (JSON) on stdout when it does not.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ckpt == "" || !cmd.Flags().Changed("shard") {
				return usagef("--checkpoint and --shard are required")
			}
			spec, _, ps, err := loadJob(cmd, args[0])
			if err != nil {
				return err
			}
			b, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			g, closeFn, err := loadGenerator(e, cmd, spec, ps, ckpt, 0, 64)
			if err != nil {
				return err
			}
			defer closeFn()
			err = g.Verify(shard, b, sample, seed)
			var fp *gen.FraudProof
			if errors.As(err, &fp) {
				if err := e.printJSON(fp); err != nil {
					return err
				}
				return fmt.Errorf("%s is not shard %d of the job: %w", args[1], shard, err)
			}
			if err != nil {
				return err
			}
			e.logf("%s: shard %d verified (%d records generated again)", args[1], shard, min(max(sample, 1), spec.PerShard))
			fmt.Fprintln(e.stdout, "verified")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ckpt, "checkpoint", "", "the job's generator checkpoint directory")
	f.IntVar(&shard, "shard", 0, "which shard the file claims to be")
	f.IntVar(&sample, "sample", 4, "records to generate again")
	f.Uint64Var(&seed, "seed", uint64(time.Now().UnixNano()), "draws which records (default: from the clock)")
	return cmd
}

// joinGen is fomnet join of a generation job: take part until this node
// holds every shard, print them, write them (out), and keep serving them
// for linger (default 30 s) so that peers still at work can check them.
func joinGen(ctx context.Context, e *env, n *node.Node, id cid.Cid, o node.GenJobOptions, out string, linger time.Duration) error {
	j, err := n.OpenGenJob(ctx, id, o)
	if err != nil {
		return err
	}
	defer j.Close()
	e.logf("gen job %s: %d prompts in %d shards, generator %s", id, j.Spec.PromptCount, j.Spec.Shards(), j.Spec.Generator)
	r, err := j.Run(ctx)
	if err != nil {
		return err
	}
	e.logf("gen job %s: done in %.1fs: %d of %d shards generated here (%d tokens, %.0f tokens/s), %d records of peers' shards generated again, %d peers convicted, %d passed over",
		id, r.Seconds, r.Made, len(r.Units), r.Tokens, r.TokensPS, r.Checked, len(r.Convicted), len(r.Passed))
	if out != "" {
		ins, err := j.WriteShards(ctx, r, out)
		if err != nil {
			return err
		}
		if err := writeGenRecipe(out, ins); err != nil {
			return err
		}
	}
	for _, u := range r.Units {
		fmt.Fprintf(e.stdout, "%d\t%s\n", u.Unit, u.CID)
	}
	serveJob(ctx, e, "gen job "+id.String(), "shards", linger)
	return nil
}

// writeGenRecipe writes dir/recipe.json: a data prepare --config whose
// inputs are a job's shards.
func writeGenRecipe(dir string, ins []sharding.Input) error {
	rb, err := json.MarshalIndent(sharding.PrepareConfig{Inputs: ins}, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, "recipe.json"), append(rb, '\n'))
}
