package kernels

import (
	"fmt"
	"math"
)

// Schedule kinds.
const (
	ScheduleConstant = "constant" // warmup, then MaxLR
	ScheduleCosine   = "cosine"   // warmup, then cosine decay from MaxLR to MinLR
	ScheduleWSD      = "wsd"      // warmup, stable at MaxLR, then linear decay to MinLR
)

// Schedule is a learning-rate schedule over Total optimizer steps.
// Warmup is linear from MaxLR/Warmup at step 0 to MaxLR at step Warmup-1.
type Schedule struct {
	Kind   string  // ScheduleConstant, ScheduleCosine or ScheduleWSD
	MaxLR  float64 // peak learning rate, > 0
	MinLR  float64 // floor reached at the last step, 0 <= MinLR <= MaxLR
	Warmup int     // warmup steps, 0 <= Warmup <= Total
	Total  int     // total steps, > 0
	// DecayFrac is, for ScheduleWSD, the fraction of Total spent in the final
	// decay (0.1–0.2 is usual). Ignored by the other kinds.
	DecayFrac float64
}

// Validate reports the first field that is out of range.
func (s Schedule) Validate() error {
	switch s.Kind {
	case ScheduleConstant, ScheduleCosine, ScheduleWSD:
	default:
		return fmt.Errorf("schedule: unknown kind %q (want %q, %q or %q)", s.Kind, ScheduleConstant, ScheduleCosine, ScheduleWSD)
	}
	switch {
	case !(s.MaxLR > 0) || math.IsInf(s.MaxLR, 0):
		return fmt.Errorf("schedule: max lr %v must be a positive finite number", s.MaxLR)
	case s.MinLR < 0 || s.MinLR > s.MaxLR:
		return fmt.Errorf("schedule: min lr %v must lie in [0, max lr %v]", s.MinLR, s.MaxLR)
	case s.Total <= 0:
		return fmt.Errorf("schedule: total steps %d must be positive", s.Total)
	case s.Warmup < 0 || s.Warmup > s.Total:
		return fmt.Errorf("schedule: warmup %d must lie in [0, total %d]", s.Warmup, s.Total)
	case s.Kind == ScheduleWSD && (s.DecayFrac < 0 || s.DecayFrac > 1):
		return fmt.Errorf("schedule: wsd decay fraction %v must lie in [0, 1]", s.DecayFrac)
	}
	return nil
}

// LR returns the learning rate for step (counting from 0). Steps past Total
// keep the final value.
func (s Schedule) LR(step int) float64 {
	if step < s.Warmup {
		return s.MaxLR * float64(step+1) / float64(s.Warmup)
	}
	switch s.Kind {
	case ScheduleCosine:
		span := s.Total - s.Warmup
		if span <= 1 {
			return s.MaxLR
		}
		p := math.Min(1, float64(step-s.Warmup)/float64(span-1))
		return s.MinLR + 0.5*(s.MaxLR-s.MinLR)*(1+math.Cos(math.Pi*p))
	case ScheduleWSD:
		decay := int(math.Round(s.DecayFrac * float64(s.Total)))
		start := max(s.Total-decay, s.Warmup)
		if step < start || decay == 0 {
			return s.MaxLR
		}
		span := s.Total - start
		if span <= 1 {
			return s.MinLR
		}
		p := math.Min(1, float64(step-start)/float64(span-1))
		return s.MaxLR + (s.MinLR-s.MaxLR)*p
	default:
		return s.MaxLR
	}
}
