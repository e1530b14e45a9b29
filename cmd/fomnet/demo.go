package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/node"
)

// demoOut is the demo's --json summary.
type demoOut = node.DemoResult

func newDemoCmd(e *env) *cobra.Command {
	var (
		o         node.DemoOptions
		threads   int
		asJSON    bool
		dashboard bool
		dev       deviceFlags
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "A swarm of nodes on this machine trains a small bilingual model with DiLoCo",
		Long: `Start a swarm of real fomnet nodes on 127.0.0.1 in this process (libp2p hosts,
DHT, gossipsub, bitswap, content stores on disk), prepare the built-in
Korean–English corpus on the first node (the seeder), create a run, and train
it: every round each node trains H inner steps on its own batches, publishes
its compressed pseudo-gradient by CID, the partitions' reducers aggregate,
and every node applies the outer step and writes the same checkpoint — the
same CID on every node, printed each round.

At the end it prints the final checkpoint CID, the validation loss per
language at the start and the end, the bytes the swarm moved, and a greedy
continuation of a Korean and an English prompt. Node identities derive from
--seed, so the same flags give the same checkpoint CIDs on any machine.
Node 0 serves the dashboard while the demo runs: open the one-time link it
prints to watch the loss curves, rounds and contributions; --dashboard keeps
it serving after the end, until Ctrl-C.
With --device cuda (a binary built with -tags cuda) every node trains on the
GPU, each in its own context; in fp32 the results are the CPU's, bit for bit.

--recipe goes on with the rest of KORMo's recipe on the same swarm: SFT on
the built-in bilingual instructions from the pretrained checkpoint, then DPO
on the built-in preference pairs from the SFT checkpoint, each stage a run
whose genesis links the stage before (fomnet checkpoint lineage). After each
stage it scores held-out instructions (exact match, answer language,
preference) and ends with a chat answer in Korean and in English; the
checkpoint printed is then the chat model's.

--synthetic-loop has the swarm write training data with the model it just
pretrained, as KORMo's recipe does at scale: a generation job (fomnet gen)
over --synth-prompts dialogue openings, mostly Korean, each shard generated
by the node rendezvous hashing assigns it, fetched by CID by the next node
and checked by generating a sample of it again; the seeder prepares the
shards with the built-in corpus (the manifest names the generator
checkpoint and gives the generated share of tokens), and the swarm trains
--synth-rounds rounds of a midtraining stage from the pretrained
checkpoint on that mixture. With --recipe, SFT starts from that stage.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Nodes < 1 || o.Nodes > 16 {
				return usagef("--nodes %d: want 1..16", o.Nodes)
			}
			if o.Rounds < 1 || o.H < 1 || o.Batch < 1 || o.Seq < 8 {
				return usagef("--rounds, --h, --batch must be positive and --seq at least 8")
			}
			if _, err := model.Preset(o.Preset); err != nil {
				return usageError{err}
			}
			if _, _, err := dev.check(); err != nil {
				return err
			}
			tmp := ""
			if o.Dir == "" {
				var err error
				if tmp, err = os.MkdirTemp("", "fomnet-demo-"); err != nil {
					return err
				}
				o.Dir = tmp
			}
			o.NewBackend = func() (kernels.Backend, error) { return dev.open(e, threads, "auto") }
			o.Progress = e.logf
			printed := false
			if dashboard {
				o.Hold = func(res *node.DemoResult, link string) {
					if err := printDemo(e, res, "", asJSON); err != nil {
						e.logf("demo: %v", err)
					}
					printed = true
					e.logf("the dashboard serves the demo's run at %s (a one-time link); Ctrl-C stops it", link)
					<-ctxOf(cmd).Done()
				}
			}
			res, err := node.RunDemo(ctxOf(cmd), o)
			if tmp != "" {
				// The nodes' homes hold every round's checkpoint on every
				// node (gigabytes): keep only the final checkpoint.
				if err == nil {
					res.Checkpoint, err = keepOnly(tmp, res.Checkpoint)
				}
				if err != nil {
					os.RemoveAll(tmp)
				}
			}
			if err != nil || printed {
				if err == nil && tmp != "" {
					e.logf("demo: the nodes' homes were removed; the final checkpoint is now in %s", res.Checkpoint)
				}
				return err
			}
			return printDemo(e, res, tmp, asJSON)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", 4, "nodes in the swarm")
	f.BoolVar(&dashboard, "dashboard", false, "after the demo, keep node 0 serving its dashboard (the link is printed) until Ctrl-C")
	f.IntVar(&o.Rounds, "rounds", 8, "outer rounds")
	f.IntVar(&o.H, "h", 20, "inner steps per round")
	f.StringVar(&o.Preset, "preset", "demo", "model preset")
	f.IntVar(&o.Batch, "batch", 4, "sequences per inner step")
	f.IntVar(&o.Seq, "seq", 128, "tokens per sequence")
	f.IntVar(&o.Vocab, "vocab", 8192, "tokenizer vocabulary (at most the preset's)")
	f.IntVar(&o.Synthetic, "synthetic", 2000, "synthetic documents added to the built-in corpus")
	f.StringVar(&o.Codec, "codec", "int8", "pseudo-gradient codec: fp32, int8, int4, int2, topk")
	f.Uint64Var(&o.Seed, "seed", 1, "seed for identities, weights, batches")
	f.BoolVar(&o.Recipe, "recipe", false, "after pretraining, run SFT on built-in instructions, then DPO on built-in pairs (each a run from the last checkpoint) and chat")
	f.IntVar(&o.PostRounds, "post-rounds", 60, "rounds of the SFT stage (--recipe)")
	f.IntVar(&o.PrefRounds, "pref-rounds", 2, "rounds of the DPO stage (--recipe)")
	f.IntVar(&o.Instructions, "instructions", 1000, "built-in instructions for SFT (--recipe)")
	f.IntVar(&o.Pairs, "pairs", 2000, "built-in preference pairs for DPO (--recipe)")
	f.IntVar(&o.EvalItems, "eval-items", 100, "held-out instructions scored after each stage (--recipe)")
	f.BoolVar(&o.SynthLoop, "synthetic-loop", false, "after pretraining, generate training text with the checkpoint and train a midtraining stage on it mixed with the corpus")
	f.IntVar(&o.SynthPrompts, "synth-prompts", 192, "prompts of the generation job (--synthetic-loop)")
	f.IntVar(&o.SynthRounds, "synth-rounds", 4, "rounds of the midtraining stage (--synthetic-loop)")
	f.StringVar(&o.Dir, "dir", "", "directory for the nodes' homes (default: a new temporary directory)")
	f.IntVar(&threads, "threads", 1, "compute threads per node (CPU)")
	dev.add(f)
	f.BoolVar(&asJSON, "json", false, "print a JSON summary")
	return cmd
}

// keepOnly moves the checkpoint directory ck to dir/checkpoint and removes
// everything else under dir. It returns the new path.
func keepOnly(dir, ck string) (string, error) {
	kept := filepath.Join(dir, "checkpoint")
	if err := os.Rename(ck, kept); err != nil {
		return "", err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, en := range ents {
		if en.Name() != "checkpoint" {
			if err := os.RemoveAll(filepath.Join(dir, en.Name())); err != nil {
				return "", err
			}
		}
	}
	return kept, nil
}

// oneLine shows a multi-line sample on one line, its non-blank lines
// joined by " / ".
func oneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " / ")
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// printDemo prints the demo's result on stdout.
func printDemo(e *env, res *node.DemoResult, tmp string, asJSON bool) error {
	if asJSON {
		return e.printJSON(res)
	}
	res.SampleKO, res.SampleEN = oneLine(res.SampleKO), oneLine(res.SampleEN)
	fmt.Fprintf(e.stdout, "checkpoint  %s\n", res.CheckpointCID)
	if tmp != "" {
		fmt.Fprintf(e.stdout, "            %s (the nodes' homes were removed; --dir keeps them)\n", res.Checkpoint)
	} else {
		fmt.Fprintf(e.stdout, "            %s (node 0's copy; every node holds the same)\n", res.Checkpoint)
	}
	fmt.Fprintf(e.stdout, "run         %s: %d nodes, %d rounds in %.0f s\n", res.RunID, res.Nodes, res.Rounds, res.Seconds)
	for _, lang := range []string{"ko", "en"} {
		if s, ok := res.ValLossStart[lang]; ok {
			line := fmt.Sprintf("val loss %s %.3f → %.3f", lang, s, res.ValLossEnd[lang])
			for _, src := range []string{"natural", "synthetic"} {
				if s, ok := res.ValLossStart[lang+"/"+src]; ok {
					line += fmt.Sprintf("   %s %.3f → %.3f", src, s, res.ValLossEnd[lang+"/"+src])
				}
			}
			fmt.Fprintln(e.stdout, line)
		}
	}
	fmt.Fprintf(e.stdout, "traffic     %.1f MiB sent, %.1f MiB received by the swarm; pseudo-gradients compressed %.1f×\n",
		float64(res.BytesSent)/(1<<20), float64(res.BytesReceived)/(1<<20), res.Compression)
	fmt.Fprintf(e.stdout, "spot checks %d contributions re-executed by another node (%d fraud), %.1f s: %.1f%% of the nodes' %.0f s of training\n",
		res.SpotChecks, res.Frauds, res.SpotCheckSeconds, 100*res.SpotCheckSeconds/max(res.TrainSeconds, 1e-9), res.TrainSeconds)
	fmt.Fprintf(e.stdout, "ko          %s\n", res.SampleKO)
	fmt.Fprintf(e.stdout, "en          %s\n", res.SampleEN)
	if sy := res.Synth; sy != nil {
		fmt.Fprintf(e.stdout, "generated   job %s: %d records, %d tokens (%.0f tokens/s), %d generated again by another node; generator %s\n",
			sy.Job, sy.Records, sy.Tokens, sy.TokensPerS, sy.Verified, sy.Generator)
		fmt.Fprintf(e.stdout, "midtrain    dataset %s (%.0f%% of tokens generated), run %s → %s\n", sy.Dataset, 100*sy.GeneratedShare, sy.RunID, sy.CheckpointCID)
		for _, lang := range []string{"ko", "en"} {
			if s, ok := sy.ValLossStart[lang]; ok {
				fmt.Fprintf(e.stdout, "            val loss %s %.3f → %.3f\n", lang, s, sy.ValLossEnd[lang])
			}
		}
	}
	for _, st := range res.Stages {
		for _, r := range st.Instruct {
			fmt.Fprintf(e.stdout, "%-11s %s held-out instructions: exact %.0f%%, answer language %.0f%%, prefers the right answer %.0f%% (%d)  %s\n",
				st.Stage, r.Language, 100*r.ExactMatch, 100*r.LanguageMatch, 100*r.PrefAccuracy, r.N, st.CheckpointCID)
		}
	}
	if res.ChatKO != "" || res.ChatEN != "" {
		fmt.Fprintf(e.stdout, "chat ko     %s\n", oneLine(res.ChatKO))
		fmt.Fprintf(e.stdout, "chat en     %s\n", oneLine(res.ChatEN))
	}
	return nil
}
