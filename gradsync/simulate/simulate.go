package simulate

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
)

// Method is one training method to compare.
type Method struct {
	Name string `json:"method"` // "ddp" or "diloco"
	H    int    `json:"H"`      // inner steps per round (diloco)
	// WarmupRounds rounds of WarmupH inner steps come before the rounds of H.
	WarmupRounds int    `json:"warmup_rounds,omitempty"`
	WarmupH      int    `json:"warmup_h,omitempty"`
	Codec        string `json:"codec"` // fp32, int8, topk (diloco)
	Aggregation  string `json:"aggregation,omitempty"`
	// Adversary makes worker 0 send a bad Δ in place of its own (one of
	// Adversaries).
	Adversary string `json:"adversary,omitempty"`
	// Accum is gradient accumulation: one optimizer step for every Accum
	// of the comparison's steps, on their batches together (0 or 1: a step
	// each). The tokens are the same, batch for batch; there are 1/Accum as
	// many optimizer steps, and H and the learning-rate schedule (warmup
	// included) count those. For DDP, Accum 2 is a global batch twice as
	// large and half as many all-reduces.
	Accum int `json:"accum,omitempty"`
	// Beta1 and Beta2, where not 0, replace Options.Optim's AdamW betas for
	// this method's steps (so that DDP and DiLoCo can each run with their
	// own best in one comparison).
	Beta1 float32 `json:"beta1,omitempty"`
	Beta2 float32 `json:"beta2,omitempty"`
	// VCorr, where at least 1, gives DiLoCo's workers AdamW with the
	// noise-corrected second moment (vcorr.go): each estimates the running
	// square of the mean gradient of VCorr batches like its own (usually
	// the number of workers, as DDP sees) from the two halves of its batch.
	VCorr float64 `json:"vcorr,omitempty"`
	// Overlap, one of Overlaps, lets DiLoCo's workers train on while a
	// round's exchange completes; its aggregate is applied one round late.
	Overlap string `json:"overlap,omitempty"`
	// Fragments, where above 1, splits the parameters into that many
	// contiguous fragments synchronised on staggered schedules (streaming
	// DiLoCo): fragment i after (i+1)·H/Fragments steps, then every H.
	Fragments int `json:"fragments,omitempty"`
	// Hetero, in [0, 1), makes DiLoCo's workers unequal, as volunteers'
	// machines are: worker k of K trains the first 1 − Hetero·k/(K−1) of
	// each round's steps (rounded up) and idles the rest, as a slower
	// machine given fewer steps to land on time would; its contribution
	// declares the tokens it trained (token-weighted rules use them).
	Hetero float64 `json:"hetero,omitempty"`
}

// Adversaries are the bad pseudo-gradients worker 0 can send: crude ones
// (scaled: −8·Δ; random: Gaussian noise of σ 0.05), a lazy one (zero: no
// update, no work) and crafted-but-plausible
// ones that no norm or shape check can tell from honest work (opposite: −Δ,
// the right norm in the wrong direction; inflated: 1.5·Δ, inside mean-clip's
// clipping radius; alie: per coordinate the honest workers' mean minus one
// standard deviation, "a little is enough", Baruch et al. 2019, sitting
// inside their spread so that trimming and medians keep it).
var Adversaries = []string{"scaled", "random", "zero", "opposite", "inflated", "alie"}

// accum is m.Accum, at least 1.
func (m Method) accum() int { return max(1, m.Accum) }

// Optim is the method's AdamW settings: o's, with m's betas where set.
func (m Method) Optim(o Options) model.OptimConfig {
	c := o.optim()
	if m.Beta1 != 0 {
		c.Beta1 = m.Beta1
	}
	if m.Beta2 != 0 {
		c.Beta2 = m.Beta2
	}
	return c
}

func (m Method) String() string {
	s := "ddp"
	if m.Name != "ddp" {
		s = fmt.Sprintf("diloco H=%s %s", m.HString(), m.Codec)
		if m.Aggregation != "" {
			s += " " + m.Aggregation
		}
		if m.Adversary != "" {
			s += " adversary=" + m.Adversary
		}
	}
	if m.accum() > 1 {
		s += fmt.Sprintf(" accum=%d", m.accum())
	}
	if m.Beta1 != 0 {
		s += fmt.Sprintf(" beta1=%v", m.Beta1)
	}
	if m.Beta2 != 0 {
		s += fmt.Sprintf(" beta2=%v", m.Beta2)
	}
	return s + m.Schedule()
}

// Schedule is how the method's workers and rounds differ from plain
// DiLoCo's, " vcorr=… overlap=… fragments=… hetero=…" (empty if not).
func (m Method) Schedule() string {
	var s string
	if m.VCorr != 0 {
		s += fmt.Sprintf(" vcorr=%v", m.VCorr)
	}
	if m.Overlap != "" {
		s += " overlap=" + m.Overlap
	}
	if m.Fragments > 1 {
		s += fmt.Sprintf(" fragments=%d", m.Fragments)
	}
	if m.Hetero != 0 {
		s += fmt.Sprintf(" hetero=%v", m.Hetero)
	}
	return s
}

// HString is H, preceded by the warmup rounds if any ("60x10+420").
func (m Method) HString() string {
	if m.WarmupRounds > 0 {
		return fmt.Sprintf("%dx%d+%d", m.WarmupH, m.WarmupRounds, m.H)
	}
	return fmt.Sprint(m.H)
}

// Options set the comparison.
type Options struct {
	Preset   string
	Workers  int     // K
	Batch    int     // sequences per worker per step
	Seq      int     // tokens per sequence
	Steps    int     // inner steps per worker (DDP steps)
	LR       float64 // inner (and DDP) peak learning rate
	Warmup   int
	Seed     uint64
	Sync     gradsync.Config // outer settings; H, Codec, Aggregation come from each Method
	Methods  []Method
	EvalRows int // validation sequences of Seq tokens evaluated (0: the whole validation split)
	// Optim is AdamW's settings for DDP's steps and the workers' inner
	// steps alike (the zero value: model.DefaultOptim()).
	Optim model.OptimConfig
	// AggregateFeedback gives each partition's reducer error feedback: what
	// its codec dropped from the aggregate is added to the next round's
	// (an experiment; the node's reducers do not do this).
	AggregateFeedback bool
	// Sources are held-out corpora scored beside the validation split, each
	// on its own (the first EvalRows windows of each, or all of them): a
	// method is judged on the source that is hard to fit (natural text),
	// not on the mixture (mostly generated documents every method fits).
	Sources []Source
	// OnStep, if set, is called after every step of every method (for
	// progress reports).
	OnStep func(m Method, step, steps int)
}

// optim is o.Optim, or model.DefaultOptim() where it is unset.
func (o Options) optim() model.OptimConfig {
	if o.Optim == (model.OptimConfig{}) {
		return model.DefaultOptim()
	}
	return o.Optim
}

func (o Options) stepDone(m Method, s int) {
	if o.OnStep != nil {
		o.OnStep(m, s+1, o.Steps)
	}
}

// DefaultOptions compares DDP with DiLoCo at H 10, 50, 100 and 250 for each
// codec on the demo preset, with 4 workers. The outer momentum is 0.5, not
// DiLoCo's 0.9: with runs of tens of rounds, 0.5 gave lower loss here.
func DefaultOptions() Options {
	o := Options{Preset: "demo", Workers: 4, Batch: 4, Seq: 128, Steps: 1000, LR: 2e-3, Warmup: 20, Seed: 1,
		Sync: gradsync.DefaultConfig(), Optim: model.DefaultOptim()}
	o.Sync.Momentum = 0.5
	o.Methods = []Method{{Name: "ddp"}}
	for _, h := range []int{10, 50, 100, 250} {
		for _, c := range []string{"fp32", "int8", "int4", "topk"} {
			o.Methods = append(o.Methods, Method{Name: "diloco", H: h, Codec: c})
		}
	}
	o.Methods = append(o.Methods,
		Method{Name: "diloco", H: 50, Codec: "int8", Aggregation: "mean", Adversary: "scaled"},
		Method{Name: "diloco", H: 50, Codec: "int8", Aggregation: "trimmed-mean", Adversary: "scaled"})
	return o
}

// QuickOptions is a small comparison that finishes in about two minutes on
// two cores: the tiny preset, 600 steps, H 50 with each codec, H 300 with
// int4, and the adversarial pair.
func QuickOptions() Options {
	o := DefaultOptions()
	o.Preset, o.Steps, o.Batch, o.Seq = "tiny", 600, 4, 64
	o.Methods = []Method{{Name: "ddp"}}
	for _, c := range []string{"fp32", "int8", "int4", "topk"} {
		o.Methods = append(o.Methods, Method{Name: "diloco", H: 50, Codec: c})
	}
	o.Methods = append(o.Methods, Method{Name: "diloco", H: 300, Codec: "int4"},
		Method{Name: "diloco", H: 50, Codec: "int8", Aggregation: "mean", Adversary: "scaled"},
		Method{Name: "diloco", H: 50, Codec: "int8", Aggregation: "trimmed-mean", Adversary: "scaled"})
	return o
}

// Source is a named held-out corpus.
type Source struct {
	Name string
	Val  *model.Corpus
}

// SourceLoss is a method's validation loss on one Source.
type SourceLoss struct {
	Source string  `json:"source"`
	Loss   float64 `json:"val_loss"`
}

// Row is one method's result.
type Row struct {
	Method
	Workers int     `json:"workers"`
	ValLoss float64 `json:"val_loss"`
	// TrainLoss is the loss on as many windows from the start of the
	// training split as ValLoss scores of the validation split.
	TrainLoss float64 `json:"train_loss"`
	// Sources is the validation loss on each of Options.Sources, in order.
	Sources        []SourceLoss `json:"val_by_source,omitempty"`
	BytesPerWorker float64      `json:"bytes_per_worker"`
	// PeakBytes is the most a worker sends in one sync (DiLoCo): what its
	// uplink must carry at once. Streaming fragments divide it.
	PeakBytes      float64 `json:"peak_bytes_per_sync,omitempty"`
	ReductionVsDDP float64 `json:"reduction_vs_ddp"`
	Tokens         int64   `json:"tokens"`
	Seconds        float64 `json:"seconds"`
}

// Run trains every method from the same initial parameters on the same
// token budget and reports validation loss and bytes. ReductionVsDDP
// compares with the first DDP method (ReferenceDDP). progress, if set,
// receives a row per finished method.
func Run(ctx context.Context, be kernels.Backend, train, val *model.Corpus, o Options, progress func(Row)) ([]Row, error) {
	return RunParallel(ctx, []kernels.Backend{be}, train, val, o, progress)
}

// RunParallel is Run with the methods spread over len(bes) backends, one
// method at a time on each (a backend is not shared between goroutines).
// The rows are Run's, in the order of o.Methods: a method's result depends
// only on its inputs, never on which backend ran it or on its thread count.
// o.OnStep and progress are called from one goroutine at a time; a row
// finished before the reference DDP's has no ReductionVsDDP in progress,
// only in the result. On the first error the other methods are stopped.
func RunParallel(ctx context.Context, bes []kernels.Backend, train, val *model.Corpus, o Options, progress func(Row)) ([]Row, error) {
	c, err := model.Preset(o.Preset)
	if err != nil {
		return nil, err
	}
	if o.Workers < 1 || o.Batch < 1 || o.Steps < 1 || o.Seq < 1 || o.Seq > c.MaxSeq {
		return nil, fmt.Errorf("simulate: workers %d, batch %d, steps %d and seq %d (max %d) must be positive", o.Workers, o.Batch, o.Steps, o.Seq, c.MaxSeq)
	}
	if len(bes) == 0 {
		return nil, fmt.Errorf("simulate: no backend")
	}
	if err := o.optim().Validate(); err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	for _, m := range o.Methods {
		if m.Accum < 0 || o.Steps%m.accum() != 0 {
			return nil, fmt.Errorf("simulate: %s: accum %d must be positive and divide the %d steps", m, m.Accum, o.Steps)
		}
		if err := m.Optim(o).Validate(); err != nil {
			return nil, fmt.Errorf("simulate: %s: %w", m, err)
		}
		if m.Adversary != "" && (m.Name == "ddp" || !slices.Contains(Adversaries, m.Adversary)) {
			return nil, fmt.Errorf("simulate: %s: adversary %q (want one of %v, for DiLoCo)", m, m.Adversary, Adversaries)
		}
		if (m.Overlap != "" || m.Fragments != 0) && (m.Name == "ddp" || (m.Overlap != "" && !slices.Contains(Overlaps, m.Overlap)) || m.Fragments < 0) {
			return nil, fmt.Errorf("simulate: %s: overlap %q (want one of %v) and fragments %d (not negative) are for DiLoCo", m, m.Overlap, Overlaps, m.Fragments)
		}
		if m.Hetero != 0 && (m.Name == "ddp" || !(m.Hetero > 0 && m.Hetero < 1) || m.Fragments > 1) {
			return nil, fmt.Errorf("simulate: %s: hetero %v must lie in [0, 1), for DiLoCo without fragments", m, m.Hetero)
		}
		if m.Fragments > 1 && (m.WarmupRounds > 0 || m.Fragments > m.H) {
			return nil, fmt.Errorf("simulate: %s: %d fragments need no warmup rounds and H ≥ %d", m, m.Fragments, m.Fragments)
		}
		if m.VCorr != 0 && (m.Name == "ddp" || !(m.VCorr >= 1) || math.IsInf(m.VCorr, 0) || (m.accum()*o.Batch)%2 != 0) {
			return nil, fmt.Errorf("simulate: %s: vcorr %v must be at least 1, for DiLoCo, with an even batch (%d sequences)", m, m.VCorr, m.accum()*o.Batch)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex // serialises OnStep, progress and the shared results
	if onStep := o.OnStep; onStep != nil {
		o.OnStep = func(m Method, step, steps int) {
			mu.Lock()
			defer mu.Unlock()
			onStep(m, step, steps)
		}
	}
	rows := make([]Row, len(o.Methods))
	ref := ReferenceDDP(o.Methods)
	var ddpBytes float64
	var firstErr error
	next := make(chan int)
	var wg sync.WaitGroup
	for _, be := range bes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r, err := runMethod(ctx, be, c, train, val, o, o.Methods[i])
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", o.Methods[i], err)
					}
					cancel()
				} else {
					if i == ref {
						ddpBytes = r.BytesPerWorker
					}
					rows[i] = r
					r.setReduction(ddpBytes)
					if progress != nil {
						progress(r)
					}
				}
				mu.Unlock()
			}
		}()
	}
send:
	for i := range o.Methods {
		select {
		case next <- i:
		case <-ctx.Done():
			break send
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i := range rows {
		rows[i].setReduction(ddpBytes)
	}
	return rows, nil
}

// Loss is r's validation loss on the named source, or ValLoss where there
// is no such source.
func (r Row) Loss(source string) float64 {
	for _, s := range r.Sources {
		if s.Source == source {
			return s.Loss
		}
	}
	return r.ValLoss
}

// ReferenceDDP is the index of the DDP method that rows' ReductionVsDDP
// compares with: the first "ddp" in ms, or -1 if none.
func ReferenceDDP(ms []Method) int {
	for i, m := range ms {
		if m.Name == "ddp" {
			return i
		}
	}
	return -1
}

// setReduction fills in ReductionVsDDP once DDP's bytes are known.
func (r *Row) setReduction(ddpBytes float64) {
	if ddpBytes > 0 && r.BytesPerWorker > 0 {
		r.ReductionVsDDP = ddpBytes / r.BytesPerWorker
	}
}

// runMethod trains one method and fills in its row but for ReductionVsDDP.
func runMethod(ctx context.Context, be kernels.Backend, c model.Config, train, val *model.Corpus, o Options, m Method) (Row, error) {
	start := time.Now()
	var r Row
	var err error
	if m.Name == "ddp" {
		r, err = runDDP(ctx, be, c, train, val, o, m)
	} else {
		r, err = runDiLoCo(ctx, be, c, train, val, o, m)
	}
	if err != nil {
		return Row{}, err
	}
	r.Method, r.Workers, r.Seconds = m, o.Workers, time.Since(start).Seconds()
	return r, nil
}

// trains says whether worker k of K trains step pos of a round of h steps:
// under Hetero, whether pos falls in the first 1 − Hetero·k/(K−1) of it.
func (m Method) trains(k, workers, pos, h int) bool {
	if m.Hetero == 0 || workers < 2 {
		return true
	}
	share := 1 - m.Hetero*float64(k)/float64(workers-1)
	return pos < int(math.Ceil(share*float64(h)))
}

// evalBatch is the validation batch: fixed, so every method (whatever its
// training batch) is scored on the same windows.
const evalBatch = 8

// evaluate is the mean loss over the first EvalRows windows of Seq tokens
// of the validation split (rounded up to whole batches), or over all of them.
func evaluate(m *model.Model, val *model.Corpus, o Options) (float32, error) {
	return model.Evaluate(m, val, evalBatch, o.Seq, (o.EvalRows+evalBatch-1)/evalBatch)
}

// trainLoss is the mean loss over the first windows of the training split,
// as many batches of them as evaluate scores of the validation split: set
// beside the validation loss, it tells a gap in fitting the data from a gap
// in generalising.
func trainLoss(m *model.Model, train, val *model.Corpus, o Options) (float32, error) {
	nb := (o.EvalRows + evalBatch - 1) / evalBatch
	if o.EvalRows == 0 {
		nb = max(1, (len(val.Tokens)-1)/o.Seq/evalBatch)
	}
	return model.Evaluate(m, train, evalBatch, o.Seq, nb)
}

// score fills in r's validation and training losses of m.
func score(r *Row, m *model.Model, train, val *model.Corpus, o Options) error {
	vl, err := evaluate(m, val, o)
	if err != nil {
		return err
	}
	tl, err := trainLoss(m, train, val, o)
	if err != nil {
		return err
	}
	r.ValLoss, r.TrainLoss = float64(vl), float64(tl)
	for _, src := range o.Sources {
		l, err := evaluate(m, src.Val, o)
		if err != nil {
			return fmt.Errorf("held-out %s: %w", src.Name, err)
		}
		r.Sources = append(r.Sources, SourceLoss{Source: src.Name, Loss: float64(l)})
	}
	return nil
}

// schedule is the learning rate of a method's optimizer steps: o.Steps/a of
// them, a of the comparison's steps each.
func schedule(o Options, a int) kernels.Schedule {
	return kernels.Schedule{Kind: kernels.ScheduleCosine, MaxLR: o.LR, MinLR: o.LR / 10, Warmup: o.Warmup / a, Total: o.Steps / a}
}

// batches fills tokens and targets with worker k's batches of steps
// [s, s+a), one after another: its share of an optimizer step.
func batches(train *model.Corpus, o Options, k, s, a int, tokens, targets []int32) error {
	n := o.Batch * o.Seq
	for i := 0; i < a; i++ {
		if err := train.Batch(o.Seed+uint64(k)*7919, s+i, o.Batch, o.Seq, tokens[i*n:(i+1)*n], targets[i*n:(i+1)*n]); err != nil {
			return err
		}
	}
	return nil
}

func runDDP(ctx context.Context, be kernels.Backend, c model.Config, train, val *model.Corpus, o Options, meth Method) (Row, error) {
	m, err := model.New(be, c)
	if err != nil {
		return Row{}, err
	}
	m.Init(o.Seed)
	a, op := meth.accum(), meth.Optim(o)
	per := a * o.Batch * o.Seq   // one worker's tokens in an optimizer step
	b := o.Workers * a * o.Batch // averaging K workers' gradients = one batch K times larger
	tokens, targets := make([]int32, b*o.Seq), make([]int32, b*o.Seq)
	sched := schedule(o, a)
	for j := 0; j < o.Steps/a; j++ {
		if err := ctx.Err(); err != nil {
			return Row{}, err
		}
		// The same sequences the K DiLoCo workers see at these steps.
		for k := 0; k < o.Workers; k++ {
			if err := batches(train, o, k, j*a, a, tokens[k*per:], targets[k*per:]); err != nil {
				return Row{}, err
			}
		}
		m.ZeroGrad()
		if _, err := m.Forward(tokens, targets, b, o.Seq, true); err != nil {
			return Row{}, err
		}
		if err := m.Backward(); err != nil {
			return Row{}, err
		}
		if _, err := m.Step(sched.LR(j), op); err != nil {
			return Row{}, err
		}
		o.stepDone(meth, (j+1)*a-1)
	}
	n := float64(m.Layout.Size)
	k := float64(o.Workers)
	r := Row{BytesPerWorker: float64(o.Steps/a) * 2 * (k - 1) / k * 4 * n, Tokens: int64(o.Steps) * int64(o.Workers*o.Batch*o.Seq)}
	err = score(&r, m, train, val, o)
	return r, err
}

func runDiLoCo(ctx context.Context, be kernels.Backend, c model.Config, train, val *model.Corpus, o Options, meth Method) (Row, error) {
	cfg := o.Sync
	cfg.H, cfg.Codec, cfg.WarmupRounds, cfg.WarmupH = meth.H, meth.Codec, meth.WarmupRounds, meth.WarmupH
	if meth.Aggregation != "" {
		cfg.Aggregation = meth.Aggregation
	}
	if err := cfg.Validate(); err != nil {
		return Row{}, err
	}
	workers := make([]*model.Model, o.Workers)
	for k := range workers {
		m, err := model.New(be, c)
		if err != nil {
			return Row{}, err
		}
		m.Init(o.Seed) // same start everywhere
		workers[k] = m
	}
	n := workers[0].Layout.Size
	global := make([]float32, n)
	be.Download(global, workers[0].Params)
	a := meth.accum()
	inner := o.Steps / a // optimizer steps per worker
	loop, err := newOuterLoop(cfg, meth, o, inner, global)
	if err != nil {
		return Row{}, err
	}
	locals := make([][]float32, o.Workers)
	for k := range locals {
		locals[k] = make([]float32, n)
	}
	op := meth.Optim(o)
	tokens, targets := make([]int32, a*o.Batch*o.Seq), make([]int32, a*o.Batch*o.Seq)
	sched := schedule(o, a)
	var vc []*vcorrState
	if meth.VCorr >= 1 {
		for _, m := range workers {
			vc = append(vc, newVCorrState(m, meth.VCorr))
		}
	}
	var trained int64 // optimizer steps all workers took
	round := 0
	for s := 0; s < inner; s++ {
		for cfg.RoundStart(round+1) <= s {
			round++
		}
		for k, m := range workers {
			if err := ctx.Err(); err != nil {
				return Row{}, err
			}
			if !meth.trains(k, o.Workers, s-cfg.RoundStart(round), cfg.RoundH(round)) {
				continue // a slower worker, done with its share of the round
			}
			trained++
			loop.steps[k]++
			if err := batches(train, o, k, s*a, a, tokens, targets); err != nil {
				return Row{}, err
			}
			if vc != nil {
				if err := vc[k].step(be, m, tokens, targets, a*o.Batch, o.Seq, sched.LR(s), op); err != nil {
					return Row{}, err
				}
				continue
			}
			m.ZeroGrad()
			if _, err := m.Forward(tokens, targets, a*o.Batch, o.Seq, true); err != nil {
				return Row{}, err
			}
			if err := m.Backward(); err != nil {
				return Row{}, err
			}
			if _, err := m.Step(sched.LR(s), op); err != nil {
				return Row{}, err
			}
		}
		o.stepDone(meth, (s+1)*a-1)
		due := loop.due(s + 1)
		if len(due) == 0 {
			continue
		}
		for k, m := range workers {
			be.Download(locals[k], m.Params)
		}
		for _, i := range due {
			if err := loop.sync(i, locals, s+1); err != nil {
				return Row{}, err
			}
		}
		for k, m := range workers {
			be.Upload(m.Params, locals[k])
		}
	}
	r := Row{BytesPerWorker: loop.sent, PeakBytes: loop.peak, Tokens: trained * int64(a*o.Batch*o.Seq)}
	err = score(&r, workers[0], train, val, o)
	return r, err
}
