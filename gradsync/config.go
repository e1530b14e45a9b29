package gradsync

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config holds DiLoCo's knobs.
type Config struct {
	// H is the number of inner steps per round (default 100).
	H int `json:"h"`
	// WarmupRounds rounds of WarmupH inner steps each come first, then
	// rounds of H (default none). WarmupH may be shorter or longer than H.
	// On the demo preset evenly spaced rounds did best (docs/BENCHMARKS.md).
	WarmupRounds int `json:"warmup_rounds,omitempty"`
	WarmupH      int `json:"warmup_h,omitempty"`
	// OuterLR and Momentum set the Nesterov outer optimizer (defaults 0.7
	// and 0.9, as in DiLoCo).
	OuterLR  float64 `json:"outer_lr"`
	Momentum float64 `json:"momentum"`
	// Codec is "fp32", "int8", "int4", "int2" or "topk" (default "int8"); Block is
	// the int8/int4/int2 block size (default 256); Chunk and TopKFrac set topk (defaults 4096
	// and 1/32).
	Codec    string  `json:"codec"`
	Block    int     `json:"block"`
	Chunk    int     `json:"chunk"`
	TopKFrac float64 `json:"topk_frac"`
	// Partitions splits the vector for reducers (default 16).
	Partitions int `json:"partitions"`
	// Aggregation is "trimmed-mean" (per coordinate, the mean of what is
	// left after dropping the TrimFrac lowest and highest values; default),
	// "mean-clip" (token-weighted mean with per-contribution norm
	// clipping), "centered-clip" or "mean" (plain token-weighted mean: no
	// clipping and no outlier rejection; for comparisons only, it has no
	// defence). The default is what bounded every attack measured best at
	// a cost of 1–2% without one (docs/BENCHMARKS.md, robust aggregation).
	Aggregation string `json:"aggregation"`
	// ClipMultiple clips each contribution's norm to this multiple of the
	// median norm (default 2); TrimFrac is the share trimmed at each end by
	// trimmed-mean (default 0.2); RejectMultiple rejects contributions whose
	// norm exceeds this multiple of the median (default 10).
	ClipMultiple   float64 `json:"clip_multiple"`
	TrimFrac       float64 `json:"trim_frac"`
	RejectMultiple float64 `json:"reject_multiple"`
	// Quorum is the fewest contributions a round may close with (default 1).
	Quorum int `json:"quorum"`
	// RoundDeadline is how long a round waits for contributions once it
	// has a quorum (default 2 minutes); used by the swarm.
	RoundDeadline time.Duration `json:"round_deadline"`
	// Overlap is "" (sequential rounds: a round's inner steps start once
	// the previous round has settled) or "local": a worker trains round
	// r+1 while round r closes, from the checkpoint round r started from
	// less its own round-r contribution as decoded, and that
	// contribution's Δ is applied to checkpoint r one round late (see the
	// package doc; "eager" did worse in bench sync and is the simulator's
	// alone).
	Overlap string `json:"overlap,omitempty"`
	// CloseCore and CloseSlack, if CloseCore > 0, close a round by
	// CloseRule (Core, Slack, and RoundDeadline as its Deadline) rather
	// than on RoundDeadline once every expected contribution is in; absent,
	// rounds close as before.
	CloseCore  float64 `json:"close_core,omitempty"`
	CloseSlack float64 `json:"close_slack,omitempty"`
}

// CloseRule returns the rule a round closes by, if the config sets one.
func (c Config) CloseRule() (CloseRule, bool) {
	return CloseRule{Core: c.CloseCore, Slack: c.CloseSlack, Deadline: c.RoundDeadline}, c.CloseCore > 0
}

// DefaultConfig returns DiLoCo's published defaults where they exist.
func DefaultConfig() Config {
	return Config{H: 100, OuterLR: 0.7, Momentum: 0.9, Codec: "int8", Block: 256, Chunk: 4096, TopKFrac: 1.0 / 32,
		Partitions: 16, Aggregation: "trimmed-mean", ClipMultiple: 2, TrimFrac: 0.2, RejectMultiple: 10, Quorum: 1,
		RoundDeadline: 2 * time.Minute}
}

// Validate reports every field out of range.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.H < 1 {
		bad("h %d must be at least 1", c.H)
	}
	if c.WarmupRounds < 0 || (c.WarmupRounds > 0 && c.WarmupH < 1) {
		bad("warmup_rounds %d with warmup_h %d: want no warmup rounds, or warmup_h at least 1", c.WarmupRounds, c.WarmupH)
	}
	if !(c.OuterLR > 0) || math.IsInf(c.OuterLR, 0) {
		bad("outer_lr %v must be positive", c.OuterLR)
	}
	if !(c.Momentum >= 0 && c.Momentum < 1) {
		bad("momentum %v must lie in [0, 1)", c.Momentum)
	}
	if _, err := c.NewCodec(); err != nil {
		errs = append(errs, err)
	}
	if c.Partitions < 1 {
		bad("partitions %d must be at least 1", c.Partitions)
	}
	switch c.Aggregation {
	case "mean-clip", "trimmed-mean", "centered-clip", "mean":
	default:
		bad("aggregation %q (want mean-clip, trimmed-mean, centered-clip or mean)", c.Aggregation)
	}
	if !(c.ClipMultiple > 0) {
		bad("clip_multiple %v must be positive", c.ClipMultiple)
	}
	if !(c.TrimFrac >= 0 && c.TrimFrac < 0.5) {
		bad("trim_frac %v must lie in [0, 0.5)", c.TrimFrac)
	}
	if !(c.RejectMultiple > 1) {
		bad("reject_multiple %v must exceed 1", c.RejectMultiple)
	}
	if c.Quorum < 1 {
		bad("quorum %d must be at least 1", c.Quorum)
	}
	if c.RoundDeadline < 0 {
		bad("round_deadline %v must not be negative", c.RoundDeadline)
	}
	if !(c.CloseCore >= 0 && c.CloseCore <= 1) || !(c.CloseSlack >= 0) || math.IsInf(c.CloseSlack, 0) {
		bad("close_core %v must lie in [0, 1] and close_slack %v be a non-negative number", c.CloseCore, c.CloseSlack)
	}
	if c.Overlap != "" && c.Overlap != "local" {
		bad("overlap %q (want \"\" or local)", c.Overlap)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gradsync config: %w", err)
	}
	return nil
}

// RoundH is the number of inner steps of round r (from 0).
func (c Config) RoundH(r int) int {
	if r < c.WarmupRounds {
		return c.WarmupH
	}
	return c.H
}

// RoundStart is the number of inner steps before round r (from 0): the
// first step of round r, and for r = rounds the length of a run.
func (c Config) RoundStart(r int) int {
	w := min(r, c.WarmupRounds)
	return w*c.WarmupH + (r-w)*c.H
}

// NewCodec builds the configured codec.
func (c Config) NewCodec() (Codec, error) { return NewCodec(c.Codec, c.Block, c.Chunk, c.TopKFrac) }

// Range is a named slice [Offset, Offset+Size) of the parameter vector.
type Range struct {
	Name         string
	Offset, Size int
}

// Partitions splits n elements into p contiguous ranges of near-equal size
// (the first n%p get one more element), named "part-i".
func Partitions(n, p int) []Range {
	p = max(1, min(p, n))
	out := make([]Range, 0, p)
	off := 0
	for i := 0; i < p; i++ {
		size := n / p
		if i < n%p {
			size++
		}
		out = append(out, Range{Name: fmt.Sprintf("part-%d", i), Offset: off, Size: size})
		off += size
	}
	return out
}
