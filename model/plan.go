package model

import (
	"fmt"
	"slices"
	"strings"
)

// PlanInput is what a memory plan is made for: one training configuration
// of a model on one device.
type PlanInput struct {
	Batch, Seq int
	// Micro is how many micro-batches a step's batch is cut into
	// (Accumulate); 0 means 1.
	Micro int
	Options
	// Swarm adds what a swarm participant holds besides its model (package
	// node; swarmParts); SpotChecks its second model, re-executing others'
	// contributions; Overlap what overlapped rounds hold besides; Lean
	// keeps each vector in memory only in the phase that uses it (node's
	// RunOptions.Lean; not with Overlap).
	Swarm, SpotChecks, Overlap, Lean bool
	// BF16 adds the CUDA bf16 path's operand copies (its workspace).
	BF16 bool
	// Reference adds a DPO run's frozen reference model (NewFrozen) and,
	// for a swarm participant, the copy of its weights it is built from.
	Reference bool
	// Encoded is the bytes of one contribution as the run's codec encodes
	// it, and Contributions how many a round's close takes (0 means 1):
	// a swarm participant holds them, and an aggregate as large, from its
	// own contribution to the close.
	Encoded       int64
	Contributions int
	// Partitions is how many partitions a swarm run cuts its vectors into
	// (gradsync.Partitions; 0 means 1): a round's close holds one
	// partition's aggregate Δ at a time.
	Partitions int
	// GPU: the model lives in device memory, the swarm's vectors in the
	// host's (package node keeps them in Go slices); the budget is the
	// device's. On the CPU both are the same memory.
	GPU bool
	// HostBudget, on a GPU, is the host memory a plan's host part may
	// take (0: unchecked): FitPlan passes over plans that need more.
	HostBudget int64
	// Workspace is the backend's own scratch (kernels/cpu:
	// MaxWorkspaceBytes for MatmulRows).
	Workspace int64
}

// MatmulRows is the most rows op(A) has in the matrix products of a step
// over n tokens: the tokens, or an output size (weight gradients).
func MatmulRows(c Config, n int) int {
	return max(n, c.Vocab, c.FFNDim, c.Dim, c.Heads*c.HeadDim())
}

// Tokens is how many tokens one micro-batch holds.
func (in PlanInput) Tokens() int { return in.Batch / in.micro() * in.Seq }

// micro is in.Micro, at least 1.
func (in PlanInput) micro() int { return max(1, in.Micro) }

// Settings describes the choices that change memory, e.g. "batch 8×256,
// 2 micro-batches, recompute, adamw8".
func (in PlanInput) Settings() string {
	s := []string{fmt.Sprintf("batch %d×%d", in.Batch, in.Seq)}
	if in.micro() > 1 {
		s = append(s, fmt.Sprintf("%d micro-batches", in.micro()))
	}
	if in.Recompute {
		s = append(s, "recompute")
	}
	if in.AdamW8 {
		s = append(s, "adamw8")
	} else {
		s = append(s, "adamw (fp32 moments)")
	}
	if in.GradsBF16 {
		s = append(s, "bf16 gradients")
	}
	if in.OffloadMoments {
		s = append(s, "moments in host memory")
	}
	if in.OffloadMaster {
		s = append(s, "master weights in host memory")
	} else if in.WeightCopy {
		s = append(s, "bf16 weight copy")
	}
	if in.Swarm && in.Lean {
		s = append(s, "lean")
	}
	return strings.Join(s, ", ")
}

// PlanPart is one part of a plan: what it holds and its bytes, on the
// backend's device or (Host) in the process's own memory; held throughout,
// or only in one Phase of a round (parts of different phases are never
// held together).
type PlanPart struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
	Host  bool   `json:"host,omitempty"`
	Phase string `json:"phase,omitempty"`
}

// Plan is a memory plan: the bytes each part of a training configuration
// holds, from the same tables the model allocates from (Layout,
// actSizes, Adam8Scales).
type Plan struct {
	Input PlanInput  `json:"-"`
	Parts []PlanPart `json:"parts"`
	// Total is the peak: the parts held throughout and the largest phase.
	Total int64 `json:"total_bytes"`
	// Device and Host are the peaks of the parts that live there.
	Device int64 `json:"device_bytes"`
	Host   int64 `json:"host_bytes"`
}

// Need is what the budget is checked against: the device's share on a
// GPU, everything on the CPU (one memory).
func (p Plan) Need() int64 {
	if p.Input.GPU {
		return p.Device
	}
	return p.Total
}

// modelParts are what one Model allocates for a batch of in's shape.
func modelParts(c Config, in PlanInput) []PlanPart {
	p := NumParams(c)
	rows := in.Batch / in.micro()
	grads := PlanPart{Name: "gradients (fp32)", Bytes: 4 * p}
	if in.GradsBF16 {
		grads = PlanPart{Name: "gradients (bf16)", Bytes: 2 * p}
	}
	weights := []PlanPart{{Name: "weights (fp32)", Bytes: 4 * p}}
	switch {
	case in.OffloadMaster && in.GPU:
		weights = []PlanPart{{Name: "master weights (fp32)", Bytes: 4 * p, Host: true}, {Name: "weights (bf16 copy)", Bytes: 2 * p}}
	case in.WeightCopy && in.GPU:
		weights = append(weights, PlanPart{Name: "weights (bf16 copy)", Bytes: 2 * p})
	}
	parts := append(weights, []PlanPart{
		grads,
		{Name: map[bool]string{false: "AdamW moments (fp32)", true: "AdamW moments (8-bit + block scales)"}[in.AdamW8], Bytes: momentBytes(c, in), Host: in.OffloadMoments && in.GPU},
		// and per token 4 int32s on the device, 3 values on the host
		{Name: "activations", Bytes: ActivationBytes(c, rows, in.Seq, in.Recompute, in.BF16) + 28*int64(rows*in.Seq)},
	}...)
	if in.micro() > 1 {
		parts = append(parts, PlanPart{Name: "micro-batch embedding gradients", Bytes: 4 * int64(in.Batch*in.Seq) * int64(c.Dim+1)})
	}
	if in.BF16 {
		parts = append(parts, PlanPart{Name: "bf16 operand copies", Bytes: bf16Workspace(c, rows*in.Seq, in.OffloadMaster || in.WeightCopy)})
	}
	if in.Workspace > 0 {
		parts = append(parts, PlanPart{Name: "kernel workspace", Bytes: in.Workspace})
	}
	return parts
}

// referenceParts are a DPO run's reference model, NewFrozen's: weights
// and a forward pass's activations over the whole batch (a preference
// step is not cut into micro-batches) as recomputation keeps them, no
// gradients' buffers; a
// swarm participant keeps the stage base's weights it builds it from.
func referenceParts(c Config, in PlanInput) []PlanPart {
	p := NumParams(c)
	parts := []PlanPart{
		{Name: "DPO reference weights (fp32)", Bytes: 4 * p},
		{Name: "DPO reference activations", Bytes: actBytes(actSizes(c, in.Batch, in.Seq, true, false), in.BF16) + 28*int64(in.Batch*in.Seq)},
	}
	if in.Swarm {
		parts = append(parts, PlanPart{Name: "DPO reference weights, kept to build it", Bytes: 4 * p, Host: true})
	}
	return parts
}

// momentBytes is AdamW's two moments: fp32, or 8-bit with a scale per
// block and moment (Adam8Scales).
func momentBytes(c Config, in PlanInput) int64 {
	p := NumParams(c)
	if in.AdamW8 {
		return 2*p + 8*int64(Adam8Scales(NewLayout(c)))
	}
	return 8 * p
}

// bf16Workspace is the CUDA bf16 path's operand copies in bfloat16: A, an
// activation held in float32 (bounded by n × the widest activation; every
// output gradient a linear layer's backward products read is held in
// bf16, in the activations); B, a weight (the output head's or the MLP's)
// or, in the weight gradients' products, an activation. Weights whose
// bfloat16 copy is kept (master, or a weight copy: copied) need none.
func bf16Workspace(c Config, n int, copied bool) int64 {
	wide := int64(max(c.Dim, c.FFNDim, c.Heads*c.HeadDim()))
	a, b := int64(n)*wide, int64(n)*wide
	if !copied { // every weight matrix is dim wide on one side
		b = max(b, int64(max(c.Vocab, c.FFNDim, c.Heads*c.HeadDim()))*int64(c.Dim))
	}
	return 2 * (a + b)
}

// MakePlan lists the bytes of each part of configuration in for model c.
func MakePlan(c Config, in PlanInput) Plan {
	parts := modelParts(c, in)
	switch {
	case in.Swarm && in.Lean:
		if !in.GPU { // a CPU model is released between its uses (not the backend's workspace); a device's stays
			mi := in
			mi.Workspace = 0
			parts = modelParts(c, mi)
			for i := range parts {
				parts[i].Phase = PhaseWork
			}
			if in.Workspace > 0 {
				parts = append(parts, PlanPart{Name: "kernel workspace", Bytes: in.Workspace})
			}
		}
		parts = append(parts, leanParts(c, in)...)
	case in.Swarm:
		parts = append(parts, swarmParts(c, in)...)
	}
	if in.Reference {
		parts = append(parts, referenceParts(c, in)...)
	}
	if in.Swarm && in.Encoded > 0 {
		parts = append(parts, PlanPart{Name: "the round's contributions and aggregates, encoded",
			Bytes: int64(max(1, in.Contributions)+1) * in.Encoded, Host: true})
	}
	pl := Plan{Input: in, Parts: parts}
	pl.Total = peak(parts, func(PlanPart) bool { return true })
	pl.Device = peak(parts, func(x PlanPart) bool { return !x.Host })
	pl.Host = peak(parts, func(x PlanPart) bool { return x.Host })
	return pl
}

// Phases of a round in which a swarm participant holds more.
const (
	PhaseCheck = "checking a contribution"
	PhaseClose = "closing the round"
	// PhaseWork: a lean participant's steps, its own or a check's.
	PhaseWork = "training or checking a contribution"
)

// leanParts are what a lean participant (node's RunOptions.Lean) holds
// besides its model, which on the CPU it holds only while it trains or
// checks a contribution: then the residuals and a partition's Δ (encoded
// one at a time); while a round closes, a partition's weights, momentum
// and aggregate Δ, the base's read from its checkpoint and the next's
// written a partition at a time (node's nextOnDisk). A checked
// contribution's base is read from disk a piece at a time, as the node's
// own; worker states stream between the model and the store.
func leanParts(c Config, in PlanInput) []PlanPart {
	p := NumParams(c)
	parts := int64(max(1, in.Partitions))
	part := 4 * ((p + parts - 1) / parts) // the largest partition (gradsync.Partitions)
	return []PlanPart{
		{Name: "error-feedback residuals", Bytes: 4 * p, Host: true, Phase: PhaseWork},
		{Name: "a partition's Δ", Bytes: part, Host: true, Phase: PhaseWork},
		{Name: "a partition's base weights, momentum and aggregate Δ", Bytes: 3 * part, Host: true, Phase: PhaseClose},
	}
}

// swarmParts are what a swarm participant (package node) holds besides its
// model: the base's weights and outer momentum, the error-feedback
// residuals and the round's Δ throughout; the next round's weights and
// momentum while a round closes; with spot checks, the base state and
// residuals of the contribution it checks (its moments read into the
// checking model: its own, lent, where rounds are sequential — it reloads
// its worker state after); with overlapped rounds, a second model for the
// checks, a copy of the worker state and the start of the round ahead.
// Worker states stream between a model and the store.
func swarmParts(c Config, in PlanInput) []PlanPart {
	p := NumParams(c)
	moments := momentBytes(c, in)
	parts := []PlanPart{
		{Name: "global weights and outer momentum", Bytes: 8 * p, Host: true},
		{Name: "error-feedback residuals", Bytes: 4 * p, Host: true},
		{Name: "round Δ", Bytes: 4 * p, Host: true},
		{Name: "next round's weights and momentum", Bytes: 8 * p, Host: true, Phase: PhaseClose},
	}
	if in.SpotChecks {
		ci := in
		ci.Workspace = 0 // the backend's, shared
		for _, x := range modelParts(c, ci) {
			if !in.Overlap {
				break // re-executions borrow the participant's model
			}
			x.Name = "re-execution " + x.Name // kept once allocated
			parts = append(parts, x)
		}
		parts = append(parts, PlanPart{Name: "re-execution residuals", Bytes: 4 * p, Host: true, Phase: PhaseCheck},
			PlanPart{Name: "re-executed round's base (weights and momentum)", Bytes: 8 * p, Host: true, Phase: PhaseCheck})
	}
	if in.Overlap {
		parts = append(parts, PlanPart{Name: "held worker state (a copy)", Bytes: 4*p + moments, Host: true},
			PlanPart{Name: "start of the round ahead", Bytes: 4 * p, Host: true})
	}
	return parts
}

// peak is the most bytes the parts that pass keep held at once: those held
// throughout and the largest of the phases.
func peak(parts []PlanPart, keep func(PlanPart) bool) int64 {
	var always, most int64
	phases := map[string]int64{}
	for _, x := range parts {
		switch {
		case !keep(x):
		case x.Phase == "":
			always += x.Bytes
		default:
			phases[x.Phase] += x.Bytes
			most = max(most, phases[x.Phase])
		}
	}
	return always + most
}

// with returns o changed by set.
func with(o Options, set func(*Options)) Options {
	set(&o)
	return o
}

// FitPlan returns the first of the configurations derived from in whose
// plan's Need fits budget bytes, cheapest in compute first: as given; with
// recomputation; then (unless the optimizer is fixed, as a run fixes it)
// with 8-bit moments; on a GPU's bf16 path (not for a swarm participant,
// whose work others re-execute bit for bit), each of those with bf16
// gradients; on a GPU, each of all those with the moments in host memory;
// on a GPU's bf16 path (not for a swarm participant), each of all those
// with the master weights in host memory (each of all those, where a bf16
// weight copy is asked for, first with it and then without); then cutting
// the batch into 2, 4, … micro-batches with each; then, for a swarm
// participant whose rounds do not overlap, all of those again lean
// (slower: it reads its base and worker state back from disk each round).
// If none fits it returns the smallest plan and an error that says by how
// much it misses. On a GPU a plan whose host part exceeds in.HostBudget
// (where given) is passed over too; the caller still checks the plan it
// keeps (the CLI's hostFits, the node's HostMemory).
func FitPlan(c Config, in PlanInput, budget int64, fixedOptimizer bool) (Plan, error) {
	var tries []PlanInput
	opts := []Options{in.Options, with(in.Options, func(o *Options) { o.Recompute = true })}
	if !fixedOptimizer && !in.AdamW8 {
		eight := with(in.Options, func(o *Options) { o.AdamW8 = true })
		opts = append(opts, eight, with(eight, func(o *Options) { o.Recompute = true }))
	}
	if in.BF16 && in.GPU && !in.Swarm && !in.GradsBF16 { // bf16 gradients: they change results
		for _, o := range slices.Clone(opts) {
			o.GradsBF16 = true
			opts = append(opts, o)
		}
	}
	if in.GPU && !in.OffloadMoments { // then moments in host memory: slower steps, the same bits
		for _, o := range slices.Clone(opts) {
			o.OffloadMoments = true
			opts = append(opts, o)
		}
	}
	if in.BF16 && in.GPU && !in.Swarm && !in.OffloadMaster { // then the master weights too
		for _, o := range slices.Clone(opts) {
			o.OffloadMaster = true
			opts = append(opts, o)
		}
	}
	if in.WeightCopy { // dropping the bf16 weight copy is the cheapest concession of all
		var all []Options
		for _, o := range opts {
			all = append(all, o, with(o, func(o *Options) { o.WeightCopy = false }))
		}
		opts = all
	}
	leans := []bool{in.Lean}
	if in.Swarm && !in.Overlap && !in.Lean {
		leans = append(leans, true)
	}
	for _, lean := range leans {
		for mi := in.micro(); mi <= in.Batch; mi++ {
			if in.Batch%mi != 0 {
				continue
			}
			for _, o := range opts {
				t := in
				t.Micro, t.Options, t.Lean = mi, o, lean
				t.Recompute = t.Recompute || in.Recompute
				tries = append(tries, t)
			}
		}
	}
	best := MakePlan(c, in)
	for _, t := range tries {
		p := MakePlan(c, t)
		if p.Need() <= budget && (!in.GPU || in.HostBudget <= 0 || p.Host <= in.HostBudget) {
			return p, nil
		}
		if p.Need() < best.Need() {
			best = p
		}
	}
	return best, fmt.Errorf("model: nothing fits in %s: the smallest plan (%s) needs %s", Bytes(budget), best.Input.Settings(), Bytes(best.Need()))
}

// FitError is a configuration whose plan does not fit a budget: with the
// first settings that do (Fit), or why none does (Err).
type FitError struct {
	Plan   Plan
	Budget int64
	Fit    *Plan
	Err    error
}

func (e *FitError) Error() string {
	s := fmt.Sprintf("%s needs %s, more than the %s available", e.Plan.Input.Settings(), Bytes(e.Plan.Need()), Bytes(e.Budget))
	if e.Fit == nil {
		return s + ", and " + e.Err.Error()
	}
	return fmt.Sprintf("%s; %s fits (%s)", s, e.Fit.Input.Settings(), Bytes(e.Fit.Need()))
}

// CheckPlan is the plan of in and, when its Need exceeds budget (> 0), a
// *FitError naming what fits instead (FitPlan; fixedOptimizer as there).
// Every role that trains refuses with it before allocating.
func CheckPlan(c Config, in PlanInput, budget int64, fixedOptimizer bool) (Plan, error) {
	p := MakePlan(c, in)
	if budget <= 0 || p.Need() <= budget {
		return p, nil
	}
	fit, err := FitPlan(c, in, budget, fixedOptimizer)
	if err != nil {
		return p, &FitError{Plan: p, Budget: budget, Err: err}
	}
	return p, &FitError{Plan: p, Budget: budget, Fit: &fit}
}

// Bytes formats a byte count in binary units.
func Bytes(b int64) string {
	v := float64(b)
	for _, s := range []struct {
		f float64
		p string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if v >= s.f {
			return fmt.Sprintf("%.2f %s", v/s.f, s.p)
		}
	}
	return fmt.Sprintf("%d B", b)
}
