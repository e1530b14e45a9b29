package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/sharding"
)

func newDataPublishCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "publish DIR",
		Short: "Store a prepared dataset in the node so peers can fetch it by its dataset CID",
		Long: `Store the dataset in DIR (made by fomnet data prepare) in the node: each shard
and the tokenizer as UnixFS files under the CIDs the manifest names (checked),
and the manifest as its dag-json block, pinned. Prints the dataset CID, which
fomnet run create --data takes.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("data publish takes one DIR, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				c, err := api.PublishDataset(ctxOf(cmd), args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(map[string]string{"dataset_cid": c.String()})
				}
				fmt.Fprintln(e.stdout, c)
				return nil
			})
		},
	}
	f.addHome(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {dataset_cid} as JSON")
	return cmd
}

func newRunCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "run", Short: "Create and show training runs", Args: noArgs}
	cmd.AddCommand(newRunCreateCmd(e), newRunShowCmd(e))
	return cmd
}

func newRunCreateCmd(e *env) *cobra.Command {
	var (
		f                                nodeFlags
		data, preset, name, codec, sched string
		from, stage, objective, overlap  string
		ropeTheta, prefBeta, prefGamma   float64
		prefAlpha                        float64
		ctxLen                           int
		rounds, h, batch, seq, warmup    int
		warmupRounds, warmupH            int
		seed                             uint64
		maxLR, minLR, outerLR, momentum  float64
		closeCore, closeSlack            float64
		deadline                         time.Duration
		quorum                           int
		spotCheck                        float64
		optimizer                        string
		asJSON                           bool
		beta1, beta2                     float64
	)
	cmd := &cobra.Command{
		Use:   "create --data DATASET --preset P [flags]",
		Short: "Write a run spec and print the run ID (its CID)",
		Long: `Write a run spec — model preset, dataset, rounds, inner recipe, DiLoCo sync
settings, seed — as a dag-json block in the node and print its CID, the run
ID. --data takes a dataset CID or a prepared dataset directory (published
first). Nodes take part with fomnet join RUN-ID.

A later stage of a recipe (mid-training, SFT, preference) starts from a
checkpoint: --from CID makes it the run's genesis weights (its model, unless
--preset is given; the shapes must match, while --rope-theta and --context may
change them for long-context mid-training) and links it, so the lineage goes
on into the run before (fomnet checkpoint lineage).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" {
				return usagef("run create needs --data (a dataset CID or directory)")
			}
			mc, err := model.Preset(preset)
			if err != nil {
				return usageError{err}
			}
			ownModel := from == "" || cmd.Flags().Changed("preset")
			if !ownModel && (ropeTheta != 0 || ctxLen != 0) {
				return usagef("--rope-theta and --context change a --preset's model; with --from alone the run keeps the checkpoint's")
			}
			if ropeTheta != 0 {
				mc.RopeTheta = ropeTheta
			}
			if ctxLen != 0 {
				mc.MaxSeq = ctxLen
			}
			if !cmd.Flags().Changed("stage") && from != "" {
				stage = "sft"
			}
			sc := gradsync.DefaultConfig()
			sc.H, sc.Codec, sc.OuterLR, sc.Momentum, sc.RoundDeadline, sc.Quorum = h, codec, outerLR, momentum, deadline, quorum
			sc.Overlap = overlap
			if closeCore > 0 {
				sc.CloseCore, sc.CloseSlack = closeCore, closeSlack
			}
			sc.WarmupRounds, sc.WarmupH = warmupRounds, warmupH
			if err := sc.Validate(); err != nil {
				return usageError{err}
			}
			// Every argument is checked before anything is published: a
			// dataset directory's CID is its manifest's, known offline.
			ds, err := cid.Decode(data)
			dir := ""
			if err != nil {
				if st, serr := os.Stat(data); serr != nil || !st.IsDir() {
					return usagef("--data %q is neither a CID nor a dataset directory", data)
				}
				if ds, err = node.DatasetDirCID(data); err != nil {
					return usageError{fmt.Errorf("--data: %w", err)}
				}
				dir = data
			}
			spec, err := node.NewRunSpecForModel(name, mc, ds, rounds, sc, seed)
			if err != nil {
				return err
			}
			// Defaults that fit the run: seq from the preset (256 at most),
			// warm-up a tenth of the run's inner steps (100 at most).
			spec.Inner.Batch, spec.Inner.Seq = batch, seq
			if !cmd.Flags().Changed("seq") {
				spec.Inner.Seq = min(seq, mc.MaxSeq)
			}
			spec.Inner.Warmup = min(100, sc.RoundStart(rounds)/10)
			if cmd.Flags().Changed("warmup") {
				spec.Inner.Warmup = warmup
			}
			spec.Inner.Schedule, spec.Inner.MaxLR, spec.Inner.MinLR = sched, maxLR, minLR
			if cmd.Flags().Changed("beta1") {
				spec.Inner.Beta1 = beta1
			}
			if cmd.Flags().Changed("beta2") {
				spec.Inner.Beta2 = beta2
			}
			if cmd.Flags().Changed("spot-check") {
				spec.SpotCheck = &spotCheck
			}
			if optimizer != "adamw" {
				spec.Inner.Optimizer = optimizer
			}
			spec.Stage = stage
			spec.Inner.Objective = objective
			if objective != "" {
				spec.Inner.Beta, spec.Inner.Gamma, spec.Inner.Alpha = prefBeta, prefGamma, prefAlpha
			}
			if from != "" {
				k, err := cid.Decode(from)
				if err != nil {
					return usagef("--from %q is not a checkpoint CID: %v", from, err)
				}
				l := sharding.LinkTo(k)
				spec.From = &l
			}
			if err := spec.Validate(); err != nil {
				return usageError{err}
			}
			if !ownModel {
				spec.Model = nil // the node takes the checkpoint's (CreateRun)
			}
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				if dir != "" {
					got, err := api.PublishDataset(ctxOf(cmd), dir)
					if err != nil {
						return err
					}
					if !got.Equals(ds) {
						return fmt.Errorf("published dataset %s, but %s's manifest gives %s (changed meanwhile?)", got, dir, ds)
					}
					e.logf("fomnet: published dataset %s", ds)
				}
				id, err := api.CreateRun(ctxOf(cmd), spec)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(map[string]string{"run_id": id.String()})
				}
				fmt.Fprintln(e.stdout, id)
				return nil
			})
		},
	}
	f.addHome(cmd)
	f.addTimeout(cmd, e)
	fl := cmd.Flags()
	fl.StringVar(&data, "data", "", "dataset CID, or a dataset directory from fomnet data prepare")
	fl.StringVar(&preset, "preset", "demo", "model preset (with --from: only when given, and of the checkpoint's shape)")
	fl.StringVar(&from, "from", "", "checkpoint CID this stage starts from (its weights are the genesis)")
	fl.StringVar(&stage, "stage", "pretrain", "the recipe stage this run is: pretrain, midtrain, sft, preference (default sft with --from)")
	fl.StringVar(&objective, "objective", "", "inner objective: cross-entropy (empty), or on preference pairs dpo (needs --from: its reference) or simpo")
	fl.Float64Var(&prefBeta, "beta", 0.1, "the preference objective's β")
	fl.Float64Var(&prefGamma, "gamma", 0, "SimPO's target margin γ")
	fl.Float64Var(&prefAlpha, "alpha", 0, "weight of the chosen answer's per-token NLL added to the preference loss (0: none)")
	fl.Float64Var(&ropeTheta, "rope-theta", 0, "RoPE base of the preset's model (0: the preset's)")
	fl.IntVar(&ctxLen, "context", 0, "context length (max_position_embeddings) of the preset's model (0: the preset's)")
	fl.StringVar(&name, "name", "fomnet run", "a name for people")
	fl.IntVar(&rounds, "rounds", 100, "outer rounds")
	fl.IntVar(&h, "h", 100, "inner steps per round")
	fl.IntVar(&warmupRounds, "warmup-rounds", 0, "first rounds of --warmup-h inner steps, before the rounds of --h")
	fl.IntVar(&warmupH, "warmup-h", 0, "inner steps in each warmup round")
	fl.IntVar(&batch, "batch", 8, "sequences per inner step")
	fl.IntVar(&seq, "seq", 256, "tokens per sequence (default: 256, or the preset's context if shorter)")
	fl.StringVar(&sched, "schedule", "cosine", "inner LR schedule over the whole run: constant, cosine, wsd")
	fl.Float64Var(&maxLR, "max-lr", 3e-3, "inner peak learning rate")
	fl.Float64Var(&minLR, "min-lr", 3e-4, "inner final learning rate")
	fl.IntVar(&warmup, "warmup", 100, "inner warmup steps (default: 100, or a tenth of the run's inner steps if fewer)")
	fl.Float64Var(&beta1, "beta1", 0.9, "inner AdamW β1 (written into the spec only when set)")
	fl.Float64Var(&beta2, "beta2", 0.95, "inner AdamW β2 (written into the spec only when set; 0.99 with β1 0.95 did better for DiLoCo on small batches)")
	fl.StringVar(&codec, "codec", "int8", "pseudo-gradient codec: fp32, int8, int4, int2, topk")
	fl.Float64Var(&outerLR, "outer-lr", 0.7, "outer Nesterov learning rate")
	fl.Float64Var(&momentum, "momentum", 0.9, "outer Nesterov momentum")
	fl.DurationVar(&deadline, "deadline", 2*time.Minute, "how long a round waits for contributions and aggregates")
	fl.IntVar(&quorum, "quorum", 1, "fewest contributions a round may close with")
	fl.Float64Var(&closeCore, "close-core", 0, "close rounds by rule: once this share of the expected contributions is in (0: wait for all until --deadline)")
	fl.Float64Var(&closeSlack, "close-slack", 0.25, "with --close-core: then wait at most this multiple of the time they took")
	fl.StringVar(&overlap, "overlap", "", "overlapped rounds: \"\" (train once the previous round settled) or local (train the next round while one closes; its Δ lands a round late)")
	fl.StringVar(&optimizer, "optimizer", "adamw", "inner AdamW's moments for every participant: adamw (fp32) or adamw8 (8 bits a value, blockwise scales; written into the spec only when adamw8)")
	fl.Float64Var(&spotCheck, "spot-check", node.DefaultSpotCheck, "share of each round's contributions another member re-executes (written into the spec only when set; 0: none)")
	fl.Uint64Var(&seed, "seed", 1, "seed of the genesis weights and batch orders")
	fl.BoolVar(&asJSON, "json", false, "print {run_id} as JSON")
	return cmd
}

func newRunShowCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show RUN-ID",
		Short: "Print a run's spec",
		Args:  oneCID("run show"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, _ := parseCID(args[0])
			return withNode(ctxOf(cmd), e, &f, true, false, func(api node.API) error {
				spec, err := api.LoadRun(ctxOf(cmd), id)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(spec)
				}
				mc, _ := spec.ModelConfig()
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "run\t%s\n", id)
				fmt.Fprintf(tw, "name\t%s\n", spec.Name)
				fmt.Fprintf(tw, "model\t%d parameters (dim %d, %d layers, vocab %d)\n", model.NumParams(mc), mc.Dim, mc.Layers, mc.Vocab)
				fmt.Fprintf(tw, "dataset\t%s\n", spec.Dataset.CID)
				if spec.Tokenizer != nil {
					fmt.Fprintf(tw, "tokenizer\t%s\n", spec.Tokenizer.CID)
				}
				fmt.Fprintf(tw, "stage\t%s\n", spec.Stage)
				hs := fmt.Sprintf("H=%d", spec.Sync.H)
				if w := spec.Sync.WarmupRounds; w > 0 {
					hs = fmt.Sprintf("H=%d (the first %d: %d)", spec.Sync.H, w, spec.Sync.WarmupH)
				}
				fmt.Fprintf(tw, "rounds\t%d × %s inner steps of %d×%d tokens, %d shard visits per round\n", spec.Rounds, hs, spec.Inner.Batch, spec.Inner.Seq, spec.Inner.ShardsPerRound)
				fmt.Fprintf(tw, "inner LR\t%s %.2g → %.2g, warmup %d\n", spec.Inner.Schedule, spec.Inner.MaxLR, spec.Inner.MinLR, spec.Inner.Warmup)
				op := spec.TrainConfig().Optim
				fmt.Fprintf(tw, "inner AdamW\tβ %g, %g, weight decay %g, clip %g\n", op.Beta1, op.Beta2, op.WeightDecay, op.ClipNorm)
				fmt.Fprintf(tw, "sync\t%s codec, %d partitions, %s, outer lr %.2g momentum %.2g, quorum %d, deadline %s\n",
					spec.Sync.Codec, spec.Sync.Partitions, spec.Sync.Aggregation, spec.Sync.OuterLR, spec.Sync.Momentum, spec.Sync.Quorum,
					spec.Sync.RoundDeadline)
				fmt.Fprintf(tw, "seed\t%d\n", spec.Seed)
				return tw.Flush()
			})
		},
	}
	f.addTimeout(cmd, e)
	f.addNet(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the spec as JSON")
	return cmd
}

func newJoinCmd(e *env) *cobra.Command {
	var (
		f       nodeFlags
		threads int
		expect  int
		keep    int
		upto    int
		lean    bool
		linger  time.Duration
		dev     deviceFlags
		mem     memoryFlags
		out     string
	)
	cmd := &cobra.Command{
		Use:   "join RUN-ID|RECIPE|GEN-JOB|PLAN --bootstrap MULTIADDR",
		Short: "Take part in a run (or every stage of a recipe, a generation job, a split preparation)",
		Long: `Start a node (no daemon may run on this home: join is the node), fetch the
run's spec and dataset from the swarm, catch up to the swarm's newest
checkpoint (or resume from this node's own), then train round after round:
H inner steps, the compressed pseudo-gradient published by CID, the
partitions this node reduces, the outer step and the round's checkpoint.
Progress goes to stderr; the final checkpoint CID to stdout. After the
last round it keeps serving for --linger (the run's round deadline), so
that followers can still fetch the contributions they verify it from.

Given a recipe (fomnet recipe create), it takes part in every stage in
turn: each later stage's run is derived from the recipe and the last
checkpoint of the stage before, so every node joins the same run; the last
stage's last checkpoint CID goes to stdout.

Given a generation job (fomnet gen create, then fomnet gen publish on a
node that serves it), it generates the shards
rendezvous hashing gives it, checks the shards its peers claim by
generating a sample of their records again (a record that differs is a
fraud proof, gossiped; its author's claims are ignored from then on),
generates what nobody delivers, and prints each shard's number and CID
(--out: writes them and a data prepare recipe, as gen run does).

Given a preparation plan (fomnet data prepare --parts N --swarm; the plan
directory and its inputs added to a node), it makes the pieces of the
parts rendezvous hashing gives it, checks its peers' pieces against the
inputs (every document's cheap stages, a share analysed in full), merges
all pieces into the dataset (--out) and prints the dataset's CID: the
CID one machine preparing the same inputs gets.`,
		Args: oneCID("join"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, _ := parseCID(args[0])
			ctx := ctxOf(cmd)
			home := f.homeDir()
			mo, err := mem.options(&dev) // --offload (the run fixes the optimizer)
			if err != nil {
				return err
			}
			if dev.precision == "bf16" {
				return usagef("--precision bf16: peers re-execute a participant's work bit for bit, which only the fp32 path gives on every CPU and GPU; join computes in fp32 (--device cuda alone)")
			}
			if _, err := node.Dial(ctx, home); err == nil {
				return fmt.Errorf("a daemon (or a join) runs on %s; stop it or join with another --home", home)
			}
			// Like a daemon, a joining node serves the local API: status,
			// the dashboard and the other commands reach it while it trains.
			n, err := node.Open(ctx, home, node.Options{Listen: f.listen, Bootstrap: f.bootstrap, DHTMode: f.dhtMode, Metrics: f.metrics,
				API: true, Logf: e.logf, Debugf: e.debugf})
			if err != nil {
				return err
			}
			defer n.Close()
			be, err := dev.open(e, threads, "auto")
			if err != nil {
				return err
			}
			defer be.Close()
			budget, err := mem.budget(&dev)
			if err != nil {
				return err
			}
			if mem.micro < 1 {
				return usagef("--micro %d must be positive", mem.micro)
			}
			holdTo(budget, &dev)
			var last time.Time
			o := node.RunOptions{Backend: be, Expect: expect, KeepRounds: keep, Logf: e.logf,
				Recompute: mem.recompute, OffloadMoments: mo.OffloadMoments, Micro: mem.micro, Lean: lean, Memory: budget, GPU: dev.cuda(), HostMemory: memAvailable(), Events: func(ev node.RoundEvent) {
					switch ev.Phase {
					case "train":
						if time.Since(last) > 2*time.Second || ev.Step == ev.Steps {
							last = time.Now()
							e.logf("round %d  step %d/%d  loss %.3f", ev.Round, ev.Step, ev.Steps, ev.Loss)
						}
					case "contributed":
						e.logf("round %d  contributed %s (%.2f MiB, %.1f× smaller than fp32; inner steps %.2fs)", ev.Round, ev.CID,
							float64(ev.EncodedBytes)/(1<<20), float64(ev.RawBytes)/float64(max(ev.EncodedBytes, 1)), ev.StepSeconds)
					case "checkpoint":
						e.logf("round %d  checkpoint %s (%d contributions)", ev.Round, ev.CID, ev.Contributions)
					case "adopted":
						e.logf("round %d  adopted the swarm's checkpoint %s", ev.Round, ev.CID)
					case "deadline":
						e.logf("round %d  deadline passed waiting for %s", ev.Round, ev.Waiting)
					case "busy":
						e.log.Info(fmt.Sprintf("round %d  inner steps ran %.2fs of it", ev.Round, ev.Seconds), "round", ev.Round, "steps_seconds", ev.Seconds)
					case "aggregated":
						e.log.Info(fmt.Sprintf("round %d  reduced %d partitions", ev.Round, ev.Partitions), "round", ev.Round, "reduced", ev.Partitions)
					case "link":
						e.log.Info(fmt.Sprintf("round %d  downloaded %.2f MiB at %.1f Mbit/s", ev.Round, float64(ev.EncodedBytes)/(1<<20), ev.Rate*8/1e6),
							"round", ev.Round, "down_bytes", ev.EncodedBytes, "down_seconds", ev.Seconds, "down_bytes_per_second", ev.Rate)
					case "timing":
						e.log.Info(fmt.Sprintf("round %d  %s took %.2fs", ev.Round, ev.Name, ev.Seconds), "round", ev.Round, "phase", ev.Name, "seconds", ev.Seconds)
					case "verified":
						e.logf("catching up: round %d recomputed from its contributions and verified (%d of %d)%s", ev.Round, ev.Step, ev.Steps,
							eta(int64(ev.Step), int64(ev.Steps), time.Duration(ev.Seconds*float64(time.Second))))
					}
				}}
			kind, err := n.JobKind(ctx, id)
			if err != nil {
				return err
			}
			jo := node.JobOptions{Expect: expect, Logf: e.logf}
			switch kind {
			case "gen":
				return joinGen(ctx, e, n, id, node.GenJobOptions{Backend: be, JobOptions: jo}, out, linger)
			case "prep":
				return joinPrep(ctx, e, n, id, node.PrepJobOptions{Threads: threads, JobOptions: jo, Out: out}, linger)
			}
			fetched := newProgress(e, "run dataset fetched")
			defer fetched.finish()
			o.FetchProgress = fetched.update
			if kind == "recipe" {
				final, err := n.RunRecipe(ctx, id, o, func(p *node.Participant) error {
					_, err := p.CatchUp(ctx, 10*time.Second)
					return err
				}, func(st node.RecipeStage) {
					e.logf("recipe %s: stage %d (%s), run %s", id, st.Index+1, st.Spec.Stage, st.Run)
				})
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, final)
				return nil
			}
			p, err := n.OpenRun(ctx, id, o)
			if err != nil {
				return err
			}
			defer p.Close()
			if _, err := p.CatchUp(ctx, 10*time.Second); err != nil {
				return err
			}
			if err := p.RunRounds(ctx, upto); err != nil {
				if errors.Is(err, context.Canceled) {
					e.logf("fomnet: stopped; join again to resume from round %d", p.Round())
				}
				return err
			}
			fmt.Fprintln(e.stdout, p.Base())
			// Followers and late joiners verify the last round from its
			// contributions, which only the participants hold.
			spec, err := n.LoadRun(ctx, id)
			if err != nil {
				return err
			}
			if linger < 0 {
				linger = spec.Sync.RoundDeadline
			}
			if linger > 0 && p.Round() > spec.Rounds {
				e.logf("fomnet: the run is over; serving its last round for %v so that followers can verify it (--linger)", linger)
				select {
				case <-time.After(linger):
				case <-ctx.Done():
				}
			}
			return nil
		},
	}
	f.addNet(cmd)
	f.addMetrics(cmd)
	f.addTimeout(cmd, e)
	cmd.Flags().DurationVar(&linger, "linger", -1, "after the run's last round, keep serving it this long (default: the run's round deadline; 0: exit at once)")
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	dev.add(cmd.Flags())
	mem.add(cmd.Flags(), false)
	cmd.Flags().BoolVar(&lean, "lean", false, "hold each of the round's vectors in memory only while it is used: the base state read from its checkpoint directory, the model and residuals rebuilt from the stored worker state before each round's steps (same bytes, a few more disk reads and writes a round; not for runs that overlap rounds)")
	cmd.Flags().IntVar(&expect, "expect", 0, "contributions a round waits for before closing early (0: every peer on the run's topic); a generation or preparation job: peers to wait for before sharing out its units")
	cmd.Flags().StringVar(&out, "out", "", "a generation job: directory for its shards and their data prepare recipe; a preparation: the dataset's directory")
	cmd.Flags().IntVar(&keep, "keep-rounds", 0, "keep the checkpoint directories of the newest N rounds (and round 0) under runs/RUN-ID, removing older ones; every checkpoint stays pinned in the store (0: keep all)")
	cmd.Flags().IntVar(&upto, "until", 1<<30, "stop after this round (default: the run's last)")
	return cmd
}

func newCheckpointCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "checkpoint", Short: "List the run checkpoints this node holds", Args: noArgs}
	var f nodeFlags
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls [RUN-ID]",
		Short: "List pinned run checkpoints (newest round last)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("checkpoint ls takes at most one RUN-ID")
			}
			if len(args) == 1 {
				_, err := parseCID(args[0])
				return err
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNode(ctxOf(cmd), e, &f, false, false, func(api node.API) error {
				pins, err := api.Pins(ctxOf(cmd))
				if err != nil {
					return err
				}
				type row struct {
					Run   string `json:"run"`
					Round int    `json:"round"`
					CID   string `json:"cid"`
				}
				var rows []row
				for _, p := range pins {
					run, r, ok := node.ParseCheckpointPin(p.Name)
					if !ok {
						continue
					}
					if len(args) == 1 && run != args[0] {
						continue
					}
					rows = append(rows, row{Run: run, Round: r, CID: p.CID})
				}
				sort.Slice(rows, func(i, j int) bool {
					if rows[i].Run != rows[j].Run {
						return rows[i].Run < rows[j].Run
					}
					return rows[i].Round < rows[j].Round
				})
				if asJSON {
					if rows == nil {
						rows = []row{}
					}
					return e.printJSON(rows)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%d\t%s\n", strings.TrimSpace(r.Run), r.Round, r.CID)
				}
				return tw.Flush()
			})
		},
	}
	f.addHome(ls)
	ls.Flags().BoolVar(&asJSON, "json", false, "print [{run, round, cid}] as JSON")
	cmd.AddCommand(ls, newCheckpointVerifyCmd(e), newCheckpointLineageCmd(e))
	return cmd
}

func newCheckpointLineageCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "lineage CID",
		Short: "Walk a checkpoint's lineage through every stage, back to the first genesis",
		Long: `Follow the base links of a checkpoint's round records (fetched through the
node on --home) round by round; a stage's genesis links the checkpoint the
stage started from, so the walk goes on into the stage before. Prints one line
per run, newest first: stage, run, rounds walked, last and first checkpoint.
Exit status 1 if a link does not hold (a round's base of another round or run,
a genesis whose base is not its spec's from).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("checkpoint lineage takes one checkpoint CID, got %d arguments", len(args))
			}
			_, err := parseCID(args[0])
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ck, _ := cid.Decode(args[0])
			return withNode(ctxOf(cmd), e, &f, true, false, func(api node.API) error {
				stages, err := api.Lineage(ctxOf(cmd), ck)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(stages)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				for _, s := range stages {
					if s.Run == "" {
						fmt.Fprintf(tw, "(no run)\t-\t-\t%s\n", s.Last)
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%d rounds\t%s … %s\n", s.Stage, s.Run, s.Rounds, s.Last, s.First)
					fmt.Fprintf(tw, "\tdataset %s\t\t\n", s.Dataset)
					for _, g := range s.Generators {
						fmt.Fprintf(tw, "\t  text generated by %s\t\t\n", g)
					}
				}
				return tw.Flush()
			})
		},
	}
	f.addHome(cmd)
	f.addTimeout(cmd, e)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print [{run, stage, name, rounds, last, first, dataset, generators}] as JSON, newest first")
	return cmd
}

func newCheckpointVerifyCmd(e *env) *cobra.Command {
	var f nodeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify DIR|CID",
		Short: "Check a checkpoint: blocks, config, tensors, tokenizer, round record links",
		Long: `Check a checkpoint directory, or a checkpoint CID (fetched through the node on
--home; every block is rehashed): config.json is a valid Llama config,
model.safetensors holds exactly its tensors in the right shapes, tokenizer.json
and outer.bin agree with it, and round.json parses and every CID it links (run,
base, contributions, aggregates, shards) resolves — stored here or served by a
peer. Problems are listed; the exit status is 1 when there are any.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("checkpoint verify takes one directory or CID, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := ctxOf(cmd)
			dir, cleanup, err := checkpointSource(ctx, e, &f, args[0])
			if err != nil {
				return err
			}
			defer cleanup()
			var rep *node.CheckpointReport
			check := func(api node.API) error {
				var resolve func(context.Context, cid.Cid) (bool, error)
				if api != nil {
					resolve = api.Resolve
				}
				if rep, err = node.CheckCheckpoint(ctx, dir, resolve); err != nil {
					return err
				}
				if c, err := cid.Decode(args[0]); err == nil && api != nil {
					v, err := api.Verify(ctx, c)
					if err != nil {
						return err
					}
					for _, m := range v.Missing {
						rep.Problems = append(rep.Problems, "block missing: "+m)
					}
					for _, m := range v.Corrupt {
						rep.Problems = append(rep.Problems, "block corrupt: "+m)
					}
					rep.OK = len(rep.Problems) == 0
				}
				return nil
			}
			if _, serr := os.Stat(f.homeDir()); serr == nil {
				err = withNode(ctx, e, &f, true, false, check)
			} else {
				e.logf("fomnet: no node home at %s: round.json links are checked for form, not resolved", f.homeDir())
				err = check(nil)
			}
			if err != nil {
				return err
			}
			if asJSON {
				if err := e.printJSON(rep); err != nil {
					return err
				}
			} else if rep.OK {
				fmt.Fprintf(e.stdout, "%s ok: %d parameters, round %d, %d links resolved\n", args[0], rep.Params, rep.Round, rep.Links)
			} else {
				fmt.Fprintf(e.stdout, "%s FAILED:\n", args[0])
				for _, p := range rep.Problems {
					fmt.Fprintf(e.stdout, "  %s\n", p)
				}
			}
			if !rep.OK {
				return fmt.Errorf("%s: %d problems", args[0], len(rep.Problems))
			}
			return nil
		},
	}
	f.addNet(cmd)
	f.addTimeout(cmd, e)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {dir, params, run, round, links, problems, ok}")
	return cmd
}
