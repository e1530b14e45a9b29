package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/gradsync/simulate"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
)

func newBenchSyncCmd(e *env) *cobra.Command {
	var (
		quick    bool
		asJSON   bool
		workers  int
		steps    int
		threads  int
		parallel int
		aggEF    bool
		synth    int
		outerLR  float64
		mom      float64
		lr       float64
		methods  string
		frac     float64
		batch    int
		seq      int
		preset   string
		dev      deviceFlags
		evalRows int
		natural  []string
		seed     uint64
		optim    = model.DefaultOptim()
	)
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Compare DDP with DiLoCo (H, codecs, robust aggregation) at equal tokens",
		Long: `Train K simulated workers in this process with the real gradsync code and
compare, at equal tokens: data-parallel training (gradients averaged every
step) and DiLoCo for several H and codecs, plus an adversarial worker with and
without robust aggregation. Data: the built-in bilingual corpus, any --natural
files and synthetic documents, byte-level, 10% of each file held out.
Validation loss is reported per source — natural text and generated
documents — and "vs DDP" compares on each: judge a method on the natural
text, which is hard to fit, not on the generated documents every method
fits.

Bytes per worker are what a bandwidth-optimal exchange sends: DDP, a ring
all-reduce of fp32 gradients each step (2·(K−1)/K·4·N); DiLoCo, each round,
(K−1)/K of its encoded contribution to the partition reducers plus, as a
reducer, its encoded aggregate partition to the K−1 others ((K−1)/K of one
encoded vector). --quick uses the tiny preset and finishes in about two
minutes on two cores; the default trains the demo preset and takes longer.
Methods are trained side by side (--parallel), each with its share of the
compute threads; a method's result does not depend on how many ran at once.
With --device cuda (a binary built with -tags cuda) each method trained at
once gets its own context on the GPU; in fp32 the results are the CPU's, bit
for bit.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := simulate.DefaultOptions()
			if quick {
				o = simulate.QuickOptions()
			}
			if cmd.Flags().Changed("workers") {
				o.Workers = workers
			}
			if cmd.Flags().Changed("steps") {
				o.Steps = steps
			}
			if cmd.Flags().Changed("lr") {
				if !(lr > 0) || math.IsInf(lr, 0) {
					return usagef("--lr %v must be a positive number", lr)
				}
				o.LR = lr
			}
			if cmd.Flags().Changed("outer-lr") {
				o.Sync.OuterLR = outerLR
			}
			if cmd.Flags().Changed("momentum") {
				o.Sync.Momentum = mom
			}
			if cmd.Flags().Changed("seed") {
				o.Seed = seed
			}
			if cmd.Flags().Changed("batch") {
				o.Batch = batch
			}
			if cmd.Flags().Changed("seq") {
				o.Seq = seq
			}
			if cmd.Flags().Changed("preset") {
				o.Preset = preset
			}
			if cmd.Flags().Changed("topk-frac") {
				o.Sync.TopKFrac = frac
			}
			if cmd.Flags().Changed("eval-rows") {
				if evalRows < 0 {
					return usagef("--eval-rows %d must not be negative", evalRows)
				}
				o.EvalRows = evalRows
			}
			o.AggregateFeedback = aggEF
			if optim.Validate() != nil {
				return usagef("--beta1 %v and --beta2 %v must lie in [0, 1), --eps %v must be positive, --weight-decay %v and --clip %v must be finite and not negative",
					optim.Beta1, optim.Beta2, optim.Eps, optim.WeightDecay, optim.ClipNorm)
			}
			o.Optim = optim
			if methods != "" {
				ms, err := parseMethods(methods)
				if err != nil {
					return usageError{err}
				}
				o.Methods = ms
			}
			if o.Workers < 1 || o.Steps < 1 || synth < 0 {
				return usagef("--workers %d, --steps %d must be positive and --synthetic %d not negative", o.Workers, o.Steps, synth)
			}
			for _, m := range o.Methods {
				if m.Accum > 0 && o.Steps%m.Accum != 0 {
					return usagef("--methods: %s: accum=%d does not divide --steps %d", m, m.Accum, o.Steps)
				}
				if m.Fragments > 1 && (m.WarmupRounds > 0 || m.Fragments > m.H) {
					return usagef("--methods: %s: %d fragments need no warmup rounds and H of at least %d", m, m.Fragments, m.Fragments)
				}
			}
			c, err := model.Preset(o.Preset)
			if err != nil {
				return err
			}
			if threads < 0 || parallel < 0 {
				return usagef("--threads %d and --parallel %d must not be negative", threads, parallel)
			}
			total := threads
			if total == 0 {
				total = runtime.GOMAXPROCS(0)
			}
			lanes := parallel
			if lanes == 0 {
				lanes = total
			}
			lanes = max(1, min(lanes, len(o.Methods)))
			perLane := max(1, total/lanes)
			bes := make([]kernels.Backend, lanes)
			for i := range bes {
				// On a GPU each lane gets its own context and stream.
				be, err := dev.open(e, perLane, "auto")
				if err != nil {
					return err
				}
				defer be.Close()
				bes[i] = be
			}
			train, val, sources, err := benchCorpus(c, synth, natural)
			if err != nil {
				return err
			}
			o.Sources = sources
			e.logf("bench sync: %s preset, %d workers × %d steps of %d×%d tokens, lr %g (AdamW β %g, %g, ε %g, weight decay %g, clip %g), outer lr %g, momentum %g, %d methods (%d at a time, compute threads each: %d), %d training tokens in the corpus",
				o.Preset, o.Workers, o.Steps, o.Batch, o.Seq, o.LR, o.Optim.Beta1, o.Optim.Beta2, o.Optim.Eps, o.Optim.WeightDecay, o.Optim.ClipNorm,
				o.Sync.OuterLR, o.Sync.Momentum, len(o.Methods), lanes, perLane, len(train.Tokens))
			var last time.Time
			o.OnStep = func(m simulate.Method, step, steps int) {
				if time.Since(last) >= 10*time.Second {
					last = time.Now()
					e.logf("  %-40s step %d/%d", m.String(), step, steps)
				}
			}
			rows, err := simulate.RunParallel(ctxOf(cmd), bes, train, val, o, func(r simulate.Row) {
				e.logf("  %-40s val %.4f (natural %.4f, generated %.4f; train %.4f)  %s/worker  %s  %.0fs", r.Method.String(), r.ValLoss, r.Loss("natural"), r.Loss("generated"), r.TrainLoss, bytesHuman(int64(r.BytesPerWorker)), reduction(r.ReductionVsDDP), r.Seconds)
			})
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(rows)
			}
			ref := simulate.ReferenceDDP(o.Methods)
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(w, "method\tH\tcodec\taggregation\tadversary\taccum\tβ1,β2\tworkers\tval loss\tnatural\tvs DDP\tgenerated\tvs DDP\ttrain loss\tbytes/worker\tpeak/sync\treduction vs DDP\t\n")
			for _, r := range rows {
				h, codec, agg := "-", "-", "-"
				if r.Name != "ddp" {
					h, codec, agg = r.HString(), r.Codec, r.Aggregation
					if agg == "" {
						agg = o.Sync.Aggregation
					}
				}
				adv := r.Adversary
				if adv == "" {
					adv = "-"
				}
				vs := func(source string) string {
					if ref < 0 || !(rows[ref].Loss(source) > 0) {
						return "-"
					}
					return fmt.Sprintf("%.3f×", r.Loss(source)/rows[ref].Loss(source))
				}
				op := r.Method.Optim(o)
				name := r.Name + r.Schedule()
				peak := "-"
				if r.PeakBytes > 0 {
					peak = bytesHuman(int64(r.PeakBytes))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%v,%v\t%d\t%.4f\t%.4f\t%s\t%.4f\t%s\t%.4f\t%s\t%s\t%s\t\n", name, h, codec, agg, adv, max(1, r.Accum), op.Beta1, op.Beta2, r.Workers, r.ValLoss,
					r.Loss("natural"), vs("natural"), r.Loss("generated"), vs("generated"), r.TrainLoss, bytesHuman(int64(r.BytesPerWorker)), peak, reduction(r.ReductionVsDDP))
			}
			return w.Flush()
		},
	}
	dev.add(cmd.Flags())
	cmd.Flags().BoolVar(&quick, "quick", false, "tiny preset, fewer steps and methods (about two minutes)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON rows")
	cmd.Flags().IntVar(&workers, "workers", 4, "simulated workers K")
	cmd.Flags().IntVar(&steps, "steps", 0, "inner steps per worker (default: the mode's)")
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads in all, shared out among the methods trained at once (0: GOMAXPROCS)")
	cmd.Flags().BoolVar(&aggEF, "aggregate-feedback", false, "experiment: reducers keep what the codec dropped from the aggregate and add it to the next round's (the node's reducers do not)")
	cmd.Flags().IntVar(&parallel, "parallel", 0, "methods trained at once, each on its own backend (0: one per thread, at most one per method)")
	cmd.Flags().IntVar(&evalRows, "eval-rows", 0, "validation windows of --seq tokens scored (0: the whole held-out 10%; before 2026-11-26 the tables used 64)")
	cmd.Flags().IntVar(&synth, "synthetic", 3000, "synthetic documents added to the built-in corpus")
	cmd.Flags().StringSliceVar(&natural, "natural", nil, "natural text files added to the built-in corpus (text, .tsv, .jsonl, .parquet; 10% of each held out), e.g. ../shared/data/bilingual/mono/ko/unsu-joh-eun-nal.txt")
	cmd.Flags().Float64Var(&lr, "lr", 2e-3, "peak learning rate of DDP and of the workers' inner steps (cosine schedule)")
	cmd.Flags().Float32Var(&optim.Beta1, "beta1", optim.Beta1, "AdamW β1 of DDP and of the workers' inner steps")
	cmd.Flags().Float32Var(&optim.Beta2, "beta2", optim.Beta2, "AdamW β2 of DDP and of the workers' inner steps")
	cmd.Flags().Float32Var(&optim.Eps, "eps", optim.Eps, "AdamW ε of DDP and of the workers' inner steps")
	cmd.Flags().Float32Var(&optim.WeightDecay, "weight-decay", optim.WeightDecay, "AdamW weight decay of DDP and of the workers' inner steps")
	cmd.Flags().Float64Var(&optim.ClipNorm, "clip", optim.ClipNorm, "gradient-norm clip of DDP's and the workers' steps (0: none)")
	cmd.Flags().Float64Var(&outerLR, "outer-lr", 0.7, "outer learning rate")
	cmd.Flags().Float64Var(&mom, "momentum", 0.5, "outer Nesterov momentum")
	cmd.Flags().IntVar(&batch, "batch", 4, "sequences per worker per step")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed of the initial weights and the workers' batches (another seed shows the noise between runs)")
	cmd.Flags().IntVar(&seq, "seq", 0, "tokens per sequence (default: the mode's)")
	cmd.Flags().StringVar(&preset, "preset", "demo", "model preset (default: demo, tiny with --quick)")
	cmd.Flags().Float64Var(&frac, "topk-frac", 1.0/32, "share of each chunk the topk codec keeps")
	cmd.Flags().StringVar(&methods, "methods", "", `methods to run instead of the mode's, e.g. "ddp,diloco:50:topk,diloco:50:int8:trimmed-mean:scaled" (adversaries: scaled, random, zero, opposite, inflated, alie — worker 0 sends that in place of its Δ); H may be warmupHxrounds+H, e.g. diloco:60x10+420:int4; a method may end in settings: :accum=N takes one optimizer step per N steps' batches (same tokens; H counts optimizer steps), :beta1=B and :beta2=B replace --beta1/--beta2 for that method, :vcorr=K gives DiLoCo's workers AdamW whose second moment estimates that of K batches' mean gradient from the two halves of each batch (an experiment), :overlap=local or :overlap=eager lets the workers train on while a round's exchange completes (its aggregate applied one round late), :fragments=N synchronises N fragments of the parameters on staggered schedules (streaming DiLoCo), :hetero=S makes the workers unequal (worker k of K trains the first 1 − S·k/(K−1) of each round's steps, declaring their tokens), e.g. ddp,diloco:150:int4:accum=2:beta1=0.95:beta2=0.99,diloco:300:int4:overlap=eager:fragments=4; "vs DDP" and the reduction compare with the first ddp`)
	return cmd
}

func reduction(x float64) string {
	if x == 0 || math.IsInf(x, 0) {
		return "-"
	}
	return fmt.Sprintf("%.0f×", x)
}

// parseH reads a method's H: "300", or "60x10+420" for 10 warmup rounds of
// 60 inner steps and then rounds of 420.
func parseH(s string) (simulate.Method, error) {
	var m simulate.Method
	pos := func(s string) (int, bool) {
		n, err := strconv.Atoi(s)
		return n, err == nil && n > 0
	}
	var ok bool
	if w, rest, found := strings.Cut(s, "+"); found {
		h, n, found := strings.Cut(w, "x")
		var ok1, ok2, ok3 bool
		m.WarmupH, ok1 = pos(h)
		m.WarmupRounds, ok2 = pos(n)
		m.H, ok3 = pos(rest)
		ok = found && ok1 && ok2 && ok3
	} else {
		m.H, ok = pos(s)
	}
	if !ok {
		return simulate.Method{}, fmt.Errorf("H %q: want a positive integer, or warmupHxrounds+H such as 60x10+420", s)
	}
	return m, nil
}

// methodOptions is the key=value settings a method may end with.
type methodOptions struct {
	accum        int
	beta1, beta2 float32
	vcorr        float64
	overlap      string
	fragments    int
	hetero       float64
}

// parseMethodOption reads one of them into mo.
func parseMethodOption(mo *methodOptions, kv string) error {
	k, v, _ := strings.Cut(kv, "=")
	switch k {
	case "accum":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%s: want accum=N with N a positive integer", kv)
		}
		mo.accum = n
	case "beta1", "beta2":
		b, err := strconv.ParseFloat(v, 32)
		if err != nil || !(b > 0 && b < 1) {
			return fmt.Errorf("%s: want %s=B with 0 < B < 1 (for 0, set --%s 0 for every method)", kv, k, k)
		}
		if k == "beta1" {
			mo.beta1 = float32(b)
		} else {
			mo.beta2 = float32(b)
		}
	case "vcorr":
		k, err := strconv.ParseFloat(v, 64)
		if err != nil || !(k >= 1) || math.IsInf(k, 0) {
			return fmt.Errorf("%s: want vcorr=K with K at least 1 (usually --workers)", kv)
		}
		mo.vcorr = k
	case "overlap":
		if !slices.Contains(simulate.Overlaps, v) {
			return fmt.Errorf("%s: want overlap= one of %s", kv, strings.Join(simulate.Overlaps, ", "))
		}
		mo.overlap = v
	case "fragments":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%s: want fragments=N with N a positive integer", kv)
		}
		mo.fragments = n
	case "hetero":
		h, err := strconv.ParseFloat(v, 64)
		if err != nil || !(h > 0 && h < 1) {
			return fmt.Errorf("%s: want hetero=S with 0 < S < 1", kv)
		}
		mo.hetero = h
	default:
		return fmt.Errorf("%s: unknown setting (want accum=, beta1=, beta2=, vcorr=, overlap=, fragments= or hetero=)", kv)
	}
	return nil
}

// parseMethods reads "ddp,diloco:H:codec[:aggregation[:adversary]],…",
// where each method may end in settings ":accum=N", ":beta1=B", ":beta2=B".
func parseMethods(s string) ([]simulate.Method, error) {
	var out []simulate.Method
	for _, f := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(f), ":")
		var mo methodOptions
		for len(parts) > 1 && strings.Contains(parts[len(parts)-1], "=") {
			if err := parseMethodOption(&mo, parts[len(parts)-1]); err != nil {
				return nil, fmt.Errorf("method %q: %w", f, err)
			}
			parts = parts[:len(parts)-1]
		}
		var m simulate.Method
		switch {
		case parts[0] == "ddp" && len(parts) == 1:
			m.Name = "ddp"
		case parts[0] == "diloco" && len(parts) >= 3 && len(parts) <= 5:
			var err error
			if m, err = parseH(parts[1]); err != nil {
				return nil, fmt.Errorf("method %q: %w", f, err)
			}
			m.Name, m.Codec = "diloco", parts[2]
			if len(parts) > 3 {
				m.Aggregation = parts[3]
			}
			if len(parts) > 4 {
				m.Adversary = parts[4]
			}
		default:
			return nil, fmt.Errorf("method %q: want ddp or diloco:H:codec[:aggregation[:adversary]], either followed by settings such as :accum=2:beta2=0.99", f)
		}
		m.Accum, m.Beta1, m.Beta2, m.VCorr, m.Overlap, m.Fragments, m.Hetero = mo.accum, mo.beta1, mo.beta2, mo.vcorr, mo.overlap, mo.fragments, mo.hetero
		if (m.VCorr != 0 || m.Overlap != "" || m.Fragments != 0 || m.Hetero != 0) && m.Name == "ddp" {
			return nil, fmt.Errorf("method %q: vcorr, overlap, fragments and hetero are for DiLoCo's workers", f)
		}
		if m.Hetero != 0 && m.Fragments > 1 {
			return nil, fmt.Errorf("method %q: hetero is for DiLoCo without fragments", f)
		}
		out = append(out, m)
	}
	return out, nil
}
