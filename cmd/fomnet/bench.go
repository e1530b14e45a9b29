package main

import (
	"fmt"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/kernels/cuda"
	"github.com/fomnet/fomnet/model"
)

func newBenchCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure kernels and training speed", Args: noArgs}
	cmd.AddCommand(newBenchKernelsCmd(e), newBenchTrainCmd(e), newBenchSyncCmd(e))
	return cmd
}

type benchKernelsOut struct {
	Backend    string                `json:"backend"`
	Threads    int                   `json:"threads"`
	PeakGFLOPS float64               `json:"peak_gflops"`
	GEMM       []gemmRow             `json:"gemm"`
	Attention  []cpu.AttentionResult `json:"attention"`
}

type gemmRow struct {
	cpu.GEMMResult
	Fraction float64 `json:"fraction_of_peak"`
}

func newBenchKernelsCmd(e *env) *cobra.Command {
	var (
		threads int
		path    string
		asJSON  bool
		quick   bool
		minTime time.Duration
	)
	cmd := &cobra.Command{
		Use:   "kernels",
		Short: "GFLOP/s of GEMM at transformer shapes and of attention",
		Long: `Measure GEMM at transformer shapes (M = 256…2048 tokens, K and N = 256…3072) in
the three transpositions a training step uses — NT (forward x·Wᵀ), NN (input
gradient) and TN (weight gradient) — and fused causal attention forward and
backward, against the machine's measured FMA peak.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			be, err := newBackend(e, threads, path)
			if err != nil {
				return err
			}
			defer be.Close()
			out := benchKernelsOut{Backend: be.Name(), Threads: be.Threads(), PeakGFLOPS: cpu.PeakGFLOPS(be.Threads(), 300*time.Millisecond)}
			ms := []int{256, 1024, 2048}
			kn := [][2]int{{256, 256}, {256, 704}, {768, 768}, {768, 2048}, {2048, 768}, {768, 3072}}
			if quick {
				ms, kn = []int{256}, [][2]int{{256, 256}, {768, 768}}
			}
			for _, m := range ms {
				for _, x := range kn {
					for _, op := range []string{"NT", "NN", "TN"} {
						if err := ctxOf(cmd).Err(); err != nil {
							return err
						}
						r := cpu.BenchGEMM(be, m, x[1], x[0], op, minTime)
						out.GEMM = append(out.GEMM, gemmRow{GEMMResult: r})
						if !asJSON {
							e.logf("gemm %s M=%d N=%d K=%d: %.1f GFLOP/s", op, m, x[1], x[0], r.GFLOPS)
						}
					}
				}
			}
			for _, s := range []kernels.AttnShape{{B: 8, T: 256, NH: 8, KVH: 4, HD: 32}, {B: 4, T: 64, NH: 12, KVH: 12, HD: 64}, {B: 1, T: 1024, NH: 12, KVH: 12, HD: 64}} {
				out.Attention = append(out.Attention, cpu.BenchAttention(be, s, minTime))
			}
			// Measure the peak again and keep the higher figure: a neighbour
			// busy during one measurement only ever lowers it.
			out.PeakGFLOPS = max(out.PeakGFLOPS, cpu.PeakGFLOPS(be.Threads(), 300*time.Millisecond))
			for i := range out.GEMM {
				out.GEMM[i].Fraction = out.GEMM[i].GFLOPS / out.PeakGFLOPS
			}
			if asJSON {
				return e.printJSON(out)
			}
			fmt.Fprintf(e.stdout, "%s, %d threads, measured FMA peak %.1f GFLOP/s\n", out.Backend, out.Threads, out.PeakGFLOPS)
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(w, "op\tM\tN\tK\tms\tGFLOP/s\t%% peak\t\n")
			for _, r := range out.GEMM {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.2f\t%.1f\t%.0f%%\t\n", r.Op, r.M, r.N, r.K, r.MS, r.GFLOPS, 100*r.Fraction)
			}
			fmt.Fprintf(w, "\t\t\t\t\t\t\t\n")
			fmt.Fprintf(w, "attention B×T×NH/KVH×HD\tfwd ms\tfwd GFLOP/s\tbwd ms\tbwd GFLOP/s\t\n")
			for _, a := range out.Attention {
				s := a.Shape
				fmt.Fprintf(w, "%d×%d×%d/%d×%d\t%.2f\t%.1f\t%.2f\t%.1f\t\n", s.B, s.T, s.NH, s.KVH, s.HD, a.FwdMS, a.FwdGFLOPS, a.BwdMS, a.BwdGFLOPS)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	cmd.Flags().StringVar(&path, "cpu-path", "auto", "CPU code path: auto, avx2 or generic")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&quick, "quick", false, "measure a few shapes only")
	cmd.Flags().DurationVar(&minTime, "min-time", 200*time.Millisecond, "time to spend per shape")
	return cmd
}

type benchTrainOut struct {
	Preset        string         `json:"preset"`
	Batch         int            `json:"batch"`
	Seq           int            `json:"seq"`
	Threads       int            `json:"threads"`
	Backend       string         `json:"backend"`
	Steps         int            `json:"steps"`
	StepMS        float64        `json:"step_ms"`
	TokensPerS    float64        `json:"tokens_per_s"`
	GFLOPS        float64        `json:"gflops"`
	PeakGFLOPS    float64        `json:"peak_gflops"`
	MFU           float64        `json:"mfu"`
	FLOPsPerTok   float64        `json:"train_flops_per_token"`
	AllocsPerStep float64        `json:"allocs_per_step"`
	Breakdown     []breakdownRow `json:"breakdown"`
}

type breakdownRow struct {
	Op        string  `json:"op"`
	MSPerStep float64 `json:"ms_per_step"`
	Share     float64 `json:"share"`
	Calls     int     `json:"calls_per_step"`
}

func newBenchTrainCmd(e *env) *cobra.Command {
	var (
		preset            string
		batch, seq, steps int
		threads           int
		path              string
		asJSON            bool
		dev               deviceFlags
	)
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Median training-step time, tokens/s, GFLOP/s and MFU of a preset",
		Long: `Time full training steps (forward, backward, AdamW) of a preset on random
tokens and report the median step time, tokens/s, achieved GFLOP/s (training
FLOPs per token × tokens/s) and MFU against this machine's measured fp32 FMA
peak, with a per-op breakdown of where the time goes. With --device cuda the
peak is the GPU's datasheet dense figure for the precision (bf16 tensor cores,
or fp32), and each timed operation waits for the GPU.`,
		Example: `  fomnet bench train --preset demo --batch 8 --seq 256
  fomnet bench train --preset gpt2-small-like --batch 4 --seq 64 --json
  fomnet bench train --preset gpt2-small-like --batch 16 --seq 1024 --device cuda --precision bf16`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := model.Preset(preset)
			if err != nil {
				return usageError{err}
			}
			if preset == "kormo-10b" {
				return usagef("kormo-10b is a configuration only: %s of training state does not fit this machine", bytesHuman(16*model.NumParams(c)))
			}
			if batch <= 0 || seq <= 0 || seq > c.MaxSeq || steps <= 0 {
				return usagef("--batch %d, --seq %d (max %d) and --steps %d must be positive", batch, seq, c.MaxSeq, steps)
			}
			be, err := dev.open(e, threads, path)
			if err != nil {
				return err
			}
			defer be.Close()
			// The CPU's peak is measured; a GPU's is its datasheet figure for
			// the precision's matrix arithmetic (0 where the model is unknown).
			measure := func() float64 { return cpu.PeakGFLOPS(be.Threads(), 300*time.Millisecond) }
			if dev.cuda() {
				measure = func() float64 { return 1e3 * cuda.PeakTFLOPS(be.Name(), cuda.Precision(dev.precision)) }
			}
			peak := measure()
			e.logf("benchmarking %s at batch %d × seq %d on %s with %d threads…", preset, batch, seq, be.Name(), be.Threads())
			res, err := model.BenchTrain(be, c, batch, seq, steps, mallocs)
			if err != nil {
				return err
			}
			// Measure the peak again and keep the higher figure: a neighbour
			// busy during one measurement only ever lowers it.
			peak = max(peak, measure())
			mfu := 0.0
			if peak > 0 {
				mfu = res.GFLOPS / peak
			} else {
				e.logf("fomnet: note: no datasheet peak for %s; MFU is reported as 0", be.Name())
			}
			out := benchTrainOut{Preset: preset, Batch: batch, Seq: seq, Threads: be.Threads(), Backend: be.Name(), Steps: steps,
				StepMS: res.StepMS, TokensPerS: res.TokensPerS, GFLOPS: res.GFLOPS, PeakGFLOPS: peak, MFU: mfu,
				FLOPsPerTok: model.TrainFLOPsPerToken(c, seq), AllocsPerStep: res.AllocsPerStep}
			var total time.Duration
			for _, o := range res.Breakdown {
				total += o.Total
			}
			for _, o := range res.Breakdown {
				out.Breakdown = append(out.Breakdown, breakdownRow{Op: o.Op, MSPerStep: o.Total.Seconds() * 1e3 / float64(steps),
					Share: o.Total.Seconds() / total.Seconds(), Calls: o.Calls / steps})
			}
			if asJSON {
				return e.printJSON(out)
			}
			fmt.Fprintf(e.stdout, "%s  batch %d × seq %d  %s, %d threads\n", preset, batch, seq, out.Backend, out.Threads)
			fmt.Fprintf(e.stdout, "step %.1f ms (median of %d)  %.0f tokens/s  %.1f GFLOP/s  MFU %.1f%% of %.1f GFLOP/s  %.1f allocs/step\n",
				out.StepMS, steps, out.TokensPerS, out.GFLOPS, 100*out.MFU, peak, out.AllocsPerStep)
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(w, "op\tms/step\tshare\tcalls/step\t\n")
			for _, r := range out.Breakdown {
				fmt.Fprintf(w, "%s\t%.2f\t%.1f%%\t%d\t\n", r.Op, r.MSPerStep, 100*r.Share, r.Calls)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "demo", "model preset: "+fmt.Sprint(model.PresetNames()))
	cmd.Flags().IntVar(&batch, "batch", 8, "sequences per step")
	cmd.Flags().IntVar(&seq, "seq", 256, "tokens per sequence")
	cmd.Flags().IntVar(&steps, "steps", 5, "timed steps (after 2 warm-up steps)")
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	cmd.Flags().StringVar(&path, "cpu-path", "auto", "CPU code path: auto, avx2 or generic")
	dev.add(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}
