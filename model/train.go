package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fomnet/fomnet/kernels"
)

// TrainConfig holds the knobs of single-node training.
type TrainConfig struct {
	Batch       int              // sequences per step (default 8)
	Micro       int              // micro-batches a step's batch is cut into (Accumulate; 0: 1)
	Seq         int              // tokens per sequence (default 256, at most the model's max_seq)
	Steps       int              // optimizer steps (default 100)
	Schedule    kernels.Schedule // learning-rate schedule; Total is set to Steps
	Optim       OptimConfig      // AdamW settings
	Seed        uint64           // batch order (parameters come from Init's seed)
	EvalEvery   int              // evaluate on the validation split every N steps; 0 = only at the end
	EvalBatches int              // validation batches per evaluation (default 8)
}

// DefaultTrainConfig returns settings that train the demo preset on two cores.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{
		Batch: 8, Seq: 256, Steps: 100, Seed: 1, EvalBatches: 8,
		Schedule: kernels.Schedule{Kind: kernels.ScheduleCosine, MaxLR: 3e-3, MinLR: 3e-4, Warmup: 10},
		Optim:    DefaultOptim(),
	}
}

// Validate checks the config against the model it will train.
func (tc TrainConfig) Validate(c Config) error {
	switch {
	case tc.Batch <= 0:
		return fmt.Errorf("train: batch %d must be positive", tc.Batch)
	case tc.Micro < 0 || tc.Micro > 0 && tc.Batch%tc.Micro != 0:
		return fmt.Errorf("train: %d micro-batches do not divide the batch of %d", tc.Micro, tc.Batch)
	case tc.Seq <= 0 || tc.Seq > c.MaxSeq:
		return fmt.Errorf("train: seq %d must lie in [1, max_seq %d]", tc.Seq, c.MaxSeq)
	case tc.Steps <= 0:
		return fmt.Errorf("train: steps %d must be positive", tc.Steps)
	case tc.EvalEvery < 0 || tc.EvalBatches < 0:
		return fmt.Errorf("train: eval-every %d and eval batches %d must not be negative", tc.EvalEvery, tc.EvalBatches)
	}
	if err := tc.Optim.Validate(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	s := tc.Schedule
	s.Total = tc.Steps
	s.Warmup = min(s.Warmup, tc.Steps)
	return s.Validate()
}

// Progress is reported after every step.
type Progress struct {
	Step       int     // 1-based
	Steps      int     // total
	Loss       float32 // training loss of this step's batch
	ValLoss    float32 // last validation loss (NaN until the first evaluation)
	LR         float64
	GradNorm   float64
	TokensPerS float64 // over this step
	Elapsed    time.Duration
}

// Train runs tc.Steps steps of AdamW on batches from train, evaluating on val
// (which may be nil). It calls progress after every step and stops early,
// with ctx's error, when ctx is cancelled.
func Train(ctx context.Context, m *Model, train, val *Corpus, tc TrainConfig, progress func(Progress)) (Progress, error) {
	if err := tc.Validate(m.Config); err != nil {
		return Progress{}, err
	}
	sched := tc.Schedule
	sched.Total = tc.Steps
	sched.Warmup = min(sched.Warmup, tc.Steps)
	tokens, targets := make([]int32, tc.Batch*tc.Seq), make([]int32, tc.Batch*tc.Seq)
	start := time.Now()
	p := Progress{Steps: tc.Steps, ValLoss: float32(math.NaN())}
	for step := 0; step < tc.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		t0 := time.Now()
		if err := train.Batch(tc.Seed, m.Steps(), tc.Batch, tc.Seq, tokens, targets); err != nil {
			return p, err
		}
		m.ZeroGrad()
		loss, err := m.Accumulate(tokens, targets, tc.Batch, tc.Seq, max(1, tc.Micro))
		if err != nil {
			return p, fmt.Errorf("step %d: %w", step+1, err)
		}
		lr := sched.LR(step)
		norm, err := m.Step(lr, tc.Optim)
		if err != nil {
			return p, fmt.Errorf("step %d: %w", step+1, err)
		}
		p.Step, p.Loss, p.LR, p.GradNorm = step+1, loss, lr, norm
		p.TokensPerS = float64(tc.Batch*tc.Seq) / time.Since(t0).Seconds()
		last := step+1 == tc.Steps
		if val != nil && (last || tc.EvalEvery > 0 && (step+1)%tc.EvalEvery == 0) {
			vl, err := Evaluate(m, val, tc.Batch, tc.Seq, tc.EvalBatches)
			if err != nil && !errors.Is(err, ErrCorpus) {
				return p, err
			}
			if err == nil {
				p.ValLoss = vl
			}
		}
		p.Elapsed = time.Since(start)
		if progress != nil {
			progress(p)
		}
	}
	return p, nil
}

// Evaluate returns the mean loss over up to maxBatches batches of
// consecutive windows of c (all of them when maxBatches is 0).
func Evaluate(m *Model, c *Corpus, b, t, maxBatches int) (float32, error) {
	var sum float64
	var n int
	stop := errors.New("enough")
	err := c.Windows(b, t, func(tokens, targets []int32, rows int) error {
		if maxBatches > 0 && n >= maxBatches {
			return stop
		}
		l, err := m.Forward(tokens, targets, rows, t, false)
		if err != nil {
			return err
		}
		sum += float64(l)
		n++
		return nil
	})
	if err != nil && err != stop {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: validation split has fewer than %d tokens", ErrCorpus, t+1)
	}
	return float32(sum / float64(n)), nil
}

// EvaluatePreference returns the preference statistics of policy m (and
// the reference ref, for DPO) over up to maxBatches batches of whole pairs
// of c, averaged by pair.
func EvaluatePreference(m, ref *Model, c *Corpus, b, t int, pc PrefConfig, maxBatches int) (PrefStats, error) {
	var out PrefStats
	n := 0
	stop := errors.New("enough")
	err := c.Windows(b, t, func(tokens, targets []int32, rows int) error {
		if maxBatches > 0 && n >= maxBatches {
			return stop
		}
		st, err := m.PreferenceForward(ref, tokens, targets, rows, t, pc, false)
		if err != nil {
			return err
		}
		w := float64(st.Pairs)
		out.Loss += st.Loss * w
		out.Accuracy += st.Accuracy * w
		out.Margin += st.Margin * w
		out.Pairs += st.Pairs
		n++
		return nil
	})
	if err != nil && err != stop {
		return out, err
	}
	if out.Pairs == 0 {
		return out, fmt.Errorf("%w: no whole pair of %d tokens (+1 target) to evaluate", ErrCorpus, t)
	}
	w := float64(out.Pairs)
	out.Loss, out.Accuracy, out.Margin = out.Loss/w, out.Accuracy/w, out.Margin/w
	return out, nil
}
