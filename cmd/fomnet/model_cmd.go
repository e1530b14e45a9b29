package main

import (
	"errors"
	"fmt"
	"github.com/fomnet/fomnet/gradsync"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/model"
)

func newModelCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "model", Short: "Inspect model configurations", Args: noArgs}
	cmd.AddCommand(newModelInfoCmd(e), newModelPlanCmd(e))
	return cmd
}

type planReport struct {
	Preset   string           `json:"preset"`
	Params   int64            `json:"params"`
	Settings string           `json:"settings"`
	Parts    []model.PlanPart `json:"parts"`
	Total    int64            `json:"total_bytes"`
	Device   int64            `json:"device_bytes"`
	Host     int64            `json:"host_bytes"`
	// Need is what the budget is checked against: Device on a GPU, Total
	// on the CPU.
	Need   int64 `json:"need_bytes"`
	Budget int64 `json:"budget_bytes,omitempty"`
	Fits   bool  `json:"fits"`
	// Fit is the first configuration that fits when the one asked for
	// does not (FitPlan's order), as flags; Why says why none does.
	Fit      string `json:"fit,omitempty"`
	FitBytes int64  `json:"fit_bytes,omitempty"`
	// HostBudget, for a swarm participant on a GPU, is this machine's
	// available memory, which its round vectors (Host) must fit apart.
	HostBudget int64  `json:"host_budget_bytes,omitempty"`
	Why        string `json:"why,omitempty"`
}

func newModelPlanCmd(e *env) *cobra.Command {
	var (
		preset        string
		batch, seq    int
		threads       int
		swarm, asJSON bool
		spotChecks    bool
		overlap, lean bool
		dpo           bool
		codec         string
		contributions int
		mem           memoryFlags
		dev           deviceFlags
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Print the memory a training configuration needs, part by part, and what makes it fit",
		Long: `Print the bytes each part of a training configuration holds — weights,
gradients, AdamW moments, activations, the micro-batches' embedding
gradients, kernel workspace, and with --swarm what a swarm participant adds —
against the memory available (--memory, or the CPU's available memory), and
the first settings that make it fit: recomputation, 8-bit AdamW moments,
micro-batches, in that order. train, bench train and join make the same plan
and refuse, before allocating, a configuration that does not fit.

Exit status 1 when neither the configuration nor any setting fits.`,
		Example: `  fomnet model plan --preset llama-1b --batch 1 --seq 256
  fomnet model plan --preset kormo-10b --device cuda --memory 141GiB --batch 1 --seq 4096 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := presetShape(preset, batch, &seq)
			if err != nil {
				return err
			}
			if _, _, err := dev.check(); err != nil {
				return err
			}
			in, err := mem.input(c, batch, seq, threads, &dev)
			if err != nil {
				return err
			}
			if lean && overlap {
				return usageError{errors.New("--lean and --overlap: a lean participant's rounds do not overlap")}
			}
			in.Swarm, in.SpotChecks, in.Overlap, in.Lean = swarm, swarm && spotChecks, swarm && overlap, swarm && lean
			in.Reference = dpo
			if swarm {
				sc := gradsync.DefaultConfig()
				sc.Codec = codec
				cd, err := sc.NewCodec()
				if err != nil {
					return usageError{err}
				}
				in.Encoded, in.Contributions, in.Partitions = int64(cd.EncodedLen(int(model.NumParams(c)))), contributions, sc.Partitions
			}
			budget, err := mem.budget(&dev)
			if err != nil {
				return err
			}
			p := model.MakePlan(c, in)
			r := planReport{Preset: preset, Params: model.NumParams(c), Settings: in.Settings(), Parts: p.Parts, Total: p.Total,
				Device: p.Device, Host: p.Host, Need: p.Need(), Budget: budget, Fits: budget == 0 || p.Need() <= budget}
			if (swarm || in.OffloadMoments || in.OffloadMaster) && dev.cuda() {
				r.HostBudget = memAvailable()
			}
			var none error
			if !r.Fits {
				fit, err := model.FitPlan(c, in, budget, false)
				if err != nil {
					none, r.Why = err, err.Error()
				} else {
					r.Fit, r.FitBytes = flagsFor(fit.Input), fit.Need()
				}
			}
			if err := printPlan(e, r, asJSON); err != nil {
				return err
			}
			return none
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&preset, "preset", "demo", "model preset: "+fmt.Sprint(model.PresetNames()))
	fl.IntVar(&batch, "batch", 1, "sequences per step")
	fl.IntVar(&seq, "seq", 0, "tokens per sequence (default: the preset's max_seq)")
	fl.IntVar(&threads, "threads", 0, "CPU threads the kernels' workspace is planned for (0: GOMAXPROCS)")
	fl.BoolVar(&swarm, "swarm", false, "plan for a swarm participant (fomnet join): add the global weights, outer momentum, residuals, round vectors and the next round's state at its close")
	fl.BoolVar(&spotChecks, "spot-checks", true, "with --swarm: add what re-executing others' contributions holds (a second model too with --overlap)")
	fl.BoolVar(&overlap, "overlap", false, "with --swarm: a run with overlapped rounds (run create --overlap local)")
	fl.StringVar(&codec, "codec", "int8", "with --swarm: the run's pseudo-gradient codec (run create --codec), which sizes the encoded contributions a participant holds")
	fl.IntVar(&contributions, "contributions", 1, "with --swarm: how many contributions a round takes (join --expect)")
	fl.BoolVar(&lean, "lean", false, "with --swarm: a lean participant (join --lean), which holds each vector only in the phase that uses it")
	fl.BoolVar(&dpo, "dpo", false, "a DPO run (run create --objective dpo): add its frozen reference model")
	mem.add(fl, true)
	dev.add(fl)
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printPlan(e *env, r planReport, asJSON bool) error {
	if asJSON {
		return e.printJSON(r)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%s (%s parameters): %s\n", r.Preset, human(float64(r.Params), ""), r.Settings)
	for _, p := range r.Parts {
		var where []string
		if p.Host && r.Need != r.Total {
			where = append(where, "host")
		}
		if p.Phase != "" {
			where = append(where, "only while "+p.Phase)
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\n", p.Name, model.Bytes(p.Bytes), strings.Join(where, ", "))
	}
	if r.Need != r.Total {
		fmt.Fprintf(w, "  on the device\t%s\t\n  in host memory\t%s\t\n", model.Bytes(r.Device), model.Bytes(r.Host))
	} else {
		fmt.Fprintf(w, "  total (at the peak)\t%s\t\n", model.Bytes(r.Total))
	}
	if r.HostBudget > 0 {
		verdict := "fits"
		if r.Host > r.HostBudget {
			verdict = "does not fit"
		}
		fmt.Fprintf(w, "host memory: %s %s this machine's available %s\n", model.Bytes(r.Host), verdict, model.Bytes(r.HostBudget))
	}
	switch {
	case r.Budget == 0:
		fmt.Fprintf(w, "no memory budget to check against (give --memory)\n")
	case r.Fits:
		fmt.Fprintf(w, "fits in %s\n", model.Bytes(r.Budget))
	case r.Fit != "":
		fmt.Fprintf(w, "does not fit in %s; with %s it needs %s\n", model.Bytes(r.Budget), r.Fit, model.Bytes(r.FitBytes))
	default:
		fmt.Fprintf(w, "%s\n", r.Why)
	}
	return w.Flush()
}

type modelInfo struct {
	Preset           string  `json:"preset"`
	Params           int64   `json:"params"`
	MatmulParams     int64   `json:"matmul_params"`
	Seq              int     `json:"seq"`
	Batch            int     `json:"batch"`
	TrainFLOPsPerTok float64 `json:"train_flops_per_token"`
	WeightsBytes     int64   `json:"weights_bytes"`
	TrainStateBytes  int64   `json:"train_state_bytes"`
	ActivationBytes  int64   `json:"activation_bytes"`
	model.Config
}

func newModelInfoCmd(e *env) *cobra.Command {
	var (
		preset     string
		batch, seq int
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Print a preset's parameter count, FLOPs per token and memory",
		Long: `Print a preset's shape, parameter count, training FLOPs per token and memory.

Memory: weights are fp32 (4 bytes a parameter); training state adds fp32
gradients and AdamW's two moments (16 bytes a parameter in all); activations
are what one batch of --batch × --seq tokens keeps for backward, plus scratch.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := presetShape(preset, batch, &seq)
			if err != nil {
				return err
			}
			n := model.NumParams(c)
			info := modelInfo{
				Preset: preset, Params: n, MatmulParams: model.MatmulParams(c), Seq: seq, Batch: batch,
				TrainFLOPsPerTok: model.TrainFLOPsPerToken(c, seq),
				WeightsBytes:     4 * n, TrainStateBytes: 16 * n,
				ActivationBytes: model.ActivationBytes(c, batch, seq, false, false), Config: c,
			}
			if asJSON {
				return e.printJSON(info)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "preset\t%s\n", preset)
			fmt.Fprintf(w, "shape\tdim %d, layers %d, heads %d (kv %d, head dim %d), ffn %d, vocab %d, max seq %d, tied %v\n",
				c.Dim, c.Layers, c.Heads, c.KVHeads, c.HeadDim(), c.FFNDim, c.Vocab, c.MaxSeq, c.Tied)
			fmt.Fprintf(w, "parameters\t%s (%d)\n", human(float64(n), ""), n)
			fmt.Fprintf(w, "train FLOPs/token\t%s at seq %d (6 × %s matmul weights + attention)\n",
				human(info.TrainFLOPsPerTok, "FLOP"), seq, human(float64(info.MatmulParams), ""))
			fmt.Fprintf(w, "weights (fp32)\t%s\n", bytesHuman(info.WeightsBytes))
			fmt.Fprintf(w, "training state\t%s (weights, grads, AdamW m and v)\n", bytesHuman(info.TrainStateBytes))
			fmt.Fprintf(w, "activations\t%s at batch %d × seq %d\n", bytesHuman(info.ActivationBytes), batch, seq)
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "demo", "model preset: "+fmt.Sprint(model.PresetNames()))
	cmd.Flags().IntVar(&batch, "batch", 1, "batch size for the activation estimate")
	cmd.Flags().IntVar(&seq, "seq", 0, "sequence length (default: the preset's max_seq)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// presetShape reads --preset, --batch and --seq (0: the preset's max_seq).
func presetShape(preset string, batch int, seq *int) (model.Config, error) {
	c, err := model.Preset(preset)
	if err != nil {
		return c, usageError{err}
	}
	if *seq == 0 {
		*seq = c.MaxSeq
	}
	if batch <= 0 || *seq <= 0 || *seq > c.MaxSeq {
		return c, usagef("--batch %d and --seq %d must be positive, seq at most max_seq %d", batch, *seq, c.MaxSeq)
	}
	return c, nil
}

func human(v float64, unit string) string {
	for _, s := range []struct {
		f float64
		p string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if v >= s.f {
			return fmt.Sprintf("%.2f %s%s", v/s.f, s.p, unit)
		}
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

func bytesHuman(b int64) string { return model.Bytes(b) }
