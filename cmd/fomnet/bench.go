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
	cmd.AddCommand(newBenchKernelsCmd(e), newBenchTrainCmd(e), newBenchSyncCmd(e), newBenchSwarmCmd(e))
	return cmd
}

type benchKernelsOut struct {
	Backend    string                    `json:"backend"`
	Threads    int                       `json:"threads"`
	PeakGFLOPS float64                   `json:"peak_gflops"`
	PeakSource string                    `json:"peak_source"` // "measured" (CPU FMA) or "datasheet" (GPU)
	GEMM       []gemmRow                 `json:"gemm"`
	Attention  []kernels.AttentionResult `json:"attention"`
}

type gemmRow struct {
	kernels.GEMMResult
	Fraction float64 `json:"fraction_of_peak"`
}

// kernelShapes are the shapes bench kernels measures: on the CPU small
// transformer products (M = 256…2048 tokens); on a GPU those of a
// gpt2-small-like step at 16×1024 tokens, the lm_head, square products and
// attention at 1024 and 4096 tokens with head dimensions 64 and 128.
func kernelShapes(gpu, quick bool) (gemm [][3]int, attn []kernels.AttnShape) {
	if gpu {
		gemm = [][3]int{{16384, 768, 3072}, {16384, 3072, 768}, {16384, 768, 768}, {16384, 50304, 768}, {4096, 4096, 4096}, {8192, 8192, 8192}}
		attn = []kernels.AttnShape{{B: 16, T: 1024, NH: 12, KVH: 12, HD: 64}, {B: 8, T: 1024, NH: 16, KVH: 16, HD: 128},
			{B: 4, T: 4096, NH: 12, KVH: 12, HD: 64}, {B: 2, T: 4096, NH: 16, KVH: 16, HD: 128}}
		if quick {
			gemm, attn = gemm[:1], attn[:1]
		}
		return gemm, attn
	}
	for _, m := range []int{256, 1024, 2048} {
		for _, x := range [][2]int{{256, 256}, {256, 704}, {768, 768}, {768, 2048}, {2048, 768}, {768, 3072}} {
			gemm = append(gemm, [3]int{m, x[1], x[0]})
		}
	}
	attn = []kernels.AttnShape{{B: 8, T: 256, NH: 8, KVH: 4, HD: 32}, {B: 4, T: 64, NH: 12, KVH: 12, HD: 64}, {B: 1, T: 1024, NH: 12, KVH: 12, HD: 64}}
	if quick {
		gemm = [][3]int{{256, 256, 256}, {256, 768, 768}}
	}
	return gemm, attn
}

func newBenchKernelsCmd(e *env) *cobra.Command {
	var (
		threads int
		path    string
		asJSON  bool
		quick   bool
		minTime time.Duration
		dev     deviceFlags
	)
	cmd := &cobra.Command{
		Use:   "kernels",
		Short: "GFLOP/s of GEMM at transformer shapes and of attention",
		Long: `Measure GEMM at transformer shapes in the three transpositions a training
step uses — NT (forward x·Wᵀ), NN (input gradient) and TN (weight gradient) —
and fused causal attention forward and backward. On the CPU the shapes are
small (M = 256…2048 tokens) and the peak is this machine's measured FMA peak;
with --device cuda they are a gpt2-small-like step's at 16×1024 tokens, its
lm_head, 4096³ and 8192³, and attention at 1024 and 4096 tokens, against the
GPU's datasheet dense peak for --precision. A GPU product includes rounding
its float32 operands to bfloat16 (the bf16 path's Matmul does that on each
call).`,
		Example: `  fomnet bench kernels --quick
  fomnet bench kernels --device cuda --precision bf16 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			be, err := dev.open(e, threads, path)
			if err != nil {
				return err
			}
			defer be.Close()
			measure := func() float64 { return cpu.PeakGFLOPS(be.Threads(), 300*time.Millisecond) }
			out := benchKernelsOut{Backend: be.Name(), Threads: be.Threads(), PeakSource: "measured"}
			if dev.cuda() {
				measure = func() float64 { return 1e3 * cuda.PeakTFLOPS(be.Name(), cuda.Precision(dev.precision)) }
				out.PeakSource = "datasheet"
			}
			out.PeakGFLOPS = measure()
			gemms, attns := kernelShapes(dev.cuda(), quick)
			for _, g := range gemms {
				for _, op := range []string{"NT", "NN", "TN"} {
					if err := ctxOf(cmd).Err(); err != nil {
						return err
					}
					r := kernels.BenchGEMM(be, g[0], g[1], g[2], op, minTime)
					if err := kernels.Err(be); err != nil {
						return err
					}
					out.GEMM = append(out.GEMM, gemmRow{GEMMResult: r})
					if !asJSON {
						e.logf("gemm %s M=%d N=%d K=%d: %.1f GFLOP/s", op, r.M, r.N, r.K, r.GFLOPS)
					}
				}
			}
			for _, s := range attns {
				if err := ctxOf(cmd).Err(); err != nil {
					return err
				}
				out.Attention = append(out.Attention, kernels.BenchAttention(be, s, minTime))
				if err := kernels.Err(be); err != nil {
					return err
				}
			}
			// Measure the peak again and keep the higher figure: a neighbour
			// busy during one measurement only ever lowers it.
			out.PeakGFLOPS = max(out.PeakGFLOPS, measure())
			for i := range out.GEMM {
				if out.PeakGFLOPS > 0 {
					out.GEMM[i].Fraction = out.GEMM[i].GFLOPS / out.PeakGFLOPS
				}
			}
			if asJSON {
				return e.printJSON(out)
			}
			fmt.Fprintf(e.stdout, "%s, %d threads, %s peak %.1f GFLOP/s\n", out.Backend, out.Threads, out.PeakSource, out.PeakGFLOPS)
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(w, "op\tM\tN\tK\tms\tGFLOP/s\t%% peak\t\n")
			for _, r := range out.GEMM {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.3f\t%.1f\t%.0f%%\t\n", r.Op, r.M, r.N, r.K, r.MS, r.GFLOPS, 100*r.Fraction)
			}
			fmt.Fprintf(w, "\t\t\t\t\t\t\t\n")
			fmt.Fprintf(w, "attention B×T×NH/KVH×HD\tfwd ms\tfwd GFLOP/s\tbwd ms\tbwd GFLOP/s\t\n")
			for _, a := range out.Attention {
				s := a.Shape
				fmt.Fprintf(w, "%d×%d×%d/%d×%d\t%.3f\t%.1f\t%.3f\t%.1f\t\n", s.B, s.T, s.NH, s.KVH, s.HD, a.FwdMS, a.FwdGFLOPS, a.BwdMS, a.BwdGFLOPS)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	cmd.Flags().StringVar(&path, "cpu-path", "auto", "CPU code path: auto, avx2 or generic")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&quick, "quick", false, "measure a few shapes only")
	cmd.Flags().DurationVar(&minTime, "min-time", 200*time.Millisecond, "time to spend per shape")
	dev.add(cmd.Flags())
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
	Settings      string         `json:"settings"`
	PlanBytes     int64          `json:"plan_bytes"`        // at the peak, everywhere
	PlanDevice    int64          `json:"plan_device_bytes"` // of that, on the backend's device (a GPU's memory, or the CPU's)
	PlanHost      int64          `json:"plan_host_bytes"`   // and in host memory beside a GPU's
	PeakRSS       int64          `json:"peak_rss_bytes"`    // the process's (host memory)
	Losses        []float32      `json:"losses"`            // every step's, warm-up first
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
		mem               memoryFlags
	)
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Median training-step time, tokens/s, GFLOP/s and MFU of a preset",
		Long: `Time full training steps (forward, backward, AdamW) of a preset on random
tokens and report the median step time, tokens/s, achieved GFLOP/s (training
FLOPs per token × tokens/s) and MFU against this machine's measured fp32 FMA
peak, with a per-op breakdown of where the time goes. With --device cuda the
peak is the GPU's datasheet dense figure for the precision (bf16 tensor cores,
or fp32), and each timed operation waits for the GPU. The memory flags
(--optimizer, --recompute, --micro) choose how the model holds its state; the
configuration is planned (fomnet model plan) and refused before allocating
when it does not fit --memory (default: the CPU's available memory). Peak
resident memory of the process is reported beside the plan's total.`,
		Example: `  fomnet bench train --preset demo --batch 8 --seq 256
  fomnet bench train --preset gpt2-small-like --batch 4 --seq 64 --json
  fomnet bench train --preset gpt2-small-like --batch 16 --seq 1024 --device cuda --precision bf16`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := model.Preset(preset)
			if err != nil {
				return usageError{err}
			}
			if batch <= 0 || seq <= 0 || seq > c.MaxSeq || steps <= 0 {
				return usagef("--batch %d, --seq %d (max %d) and --steps %d must be positive", batch, seq, c.MaxSeq, steps)
			}
			if _, _, err := dev.check(); err != nil {
				return err
			}
			in, err := mem.input(c, batch, seq, threads, &dev)
			if err != nil {
				return err
			}
			plan, err := mem.check(e, c, in, &dev, false)
			if err != nil {
				return err
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
			e.logf("benchmarking %s (%s) on %s with %d threads; planned %s…", preset, in.Settings(), be.Name(), be.Threads(), model.Bytes(plan.Total))
			res, err := model.BenchTrain(be, c, model.BenchConfig{Batch: batch, Seq: seq, Steps: steps, Micro: in.Micro, Options: in.Options}, mallocs)
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
				FLOPsPerTok: model.TrainFLOPsPerToken(c, seq), AllocsPerStep: res.AllocsPerStep,
				Settings: in.Settings(), PlanBytes: plan.Total, PlanDevice: plan.Device, PlanHost: plan.Host, PeakRSS: peakRSS(), Losses: res.Losses}
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
			planned := model.Bytes(out.PlanBytes)
			if dev.cuda() {
				planned = fmt.Sprintf("%s on the device and %s in host memory", model.Bytes(out.PlanDevice), model.Bytes(out.PlanHost))
			}
			fmt.Fprintf(e.stdout, "%s: planned %s, peak resident %s; loss %.4f → %.4f over %d steps\n", out.Settings,
				planned, model.Bytes(out.PeakRSS), out.Losses[0], out.Losses[len(out.Losses)-1], len(out.Losses))
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
	mem.add(cmd.Flags(), true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}
