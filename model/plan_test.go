package model

import (
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels/cpu"
)

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// The plan's model figures against what the CPU backend allocates (Go's
// heap), for every memory option: within 1% and 64 KiB.
func TestPlanMatchesAllocations(t *testing.T) {
	c, _ := Preset("demo")
	const b, T = 4, 64
	tokens, targets := batch(1, c, b, T)
	for _, in := range []PlanInput{
		{Batch: b, Seq: T},
		{Batch: b, Seq: T, Options: Options{Recompute: true}},
		{Batch: b, Seq: T, Options: Options{AdamW8: true}},
		{Batch: b, Seq: T, Micro: 2, Options: Options{Recompute: true, AdamW8: true}},
	} {
		// A backend of its own: a backend's tasks keep their last call's
		// buffers, so another model would stay alive through them.
		be := backend(t, cpu.Options{Threads: 2})
		before := heapInUse()
		m, err := NewWith(be, c, in.Options)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		if _, err := m.Accumulate(tokens, targets, b, T, in.micro()); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Step(1e-3, DefaultOptim()); err != nil {
			t.Fatal(err)
		}
		got := heapInUse() - before
		ws := be.WorkspaceBytes()
		if bound := cpu.MaxWorkspaceBytes(2, MatmulRows(c, in.Tokens()), T); ws > bound {
			t.Errorf("%s: workspace %d bytes over its bound %d", in.Settings(), ws, bound)
		}
		in.Workspace = ws
		want := MakePlan(c, in).Total
		runtime.KeepAlive(m)
		be.Close()
		if d := got - want; d < -want/100-64<<10 || d > want/100+64<<10 {
			t.Errorf("%s: allocated %d bytes, the plan says %d", in.Settings(), got, want)
		}
		t.Logf("%s: allocated %s, planned %s", in.Settings(), Bytes(got), Bytes(want))
	}
}

// A DPO reference (NewFrozen) allocates what its plan parts say, its
// weights and a forward pass's activations as recomputation keeps them
// with no gradients' buffers: within 1% and 64 KiB of Go's heap.
func TestReferencePlanMatchesAllocations(t *testing.T) {
	c, _ := Preset("demo")
	const b, T = 4, 64
	tokens, targets := batch(1, c, b, T)
	be := backend(t, cpu.Options{Threads: 2})
	before := heapInUse()
	m, err := NewFrozen(be, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Forward(tokens, targets, b, T, false); err != nil {
		t.Fatal(err)
	}
	got := heapInUse() - before
	want := be.WorkspaceBytes()
	for _, p := range referenceParts(c, PlanInput{Batch: b, Seq: T}) {
		want += p.Bytes
	}
	runtime.KeepAlive(m)
	if d := got - want; d < -want/100-64<<10 || d > want/100+64<<10 {
		t.Errorf("a frozen model allocated %d bytes, the plan says %d", got, want)
	}
	t.Logf("frozen: allocated %s, planned %s", Bytes(got), Bytes(want))
}

// On a GPU, FitPlan passes over plans whose host part exceeds the host
// budget: KORMo-10B on 78 GiB keeps its moments in host memory, fp32
// ones (80 GiB) where the host is not checked, 8-bit ones within 64 GiB.
func TestFitPlanHostBudget(t *testing.T) {
	c, _ := Preset("kormo-10b")
	in := PlanInput{Batch: 1, Seq: 4096, GPU: true, BF16: true}
	for _, host := range []int64{0, 64 << 30} {
		in.HostBudget = host
		p, err := FitPlan(c, in, 78<<30, false)
		if err != nil || !p.Input.OffloadMoments || p.Input.AdamW8 != (host > 0) || host > 0 && p.Host > host {
			t.Errorf("host budget %s: %v, %s (%s in host memory)", Bytes(host), err, p.Input.Settings(), Bytes(p.Host))
		}
	}
}

// FitPlan tries the cheapest settings first and says when nothing fits.
func TestFitPlan(t *testing.T) {
	c, _ := Preset("gpt2-small-like")
	in := PlanInput{Batch: 8, Seq: 1024}
	full := MakePlan(c, in).Total
	if p, err := FitPlan(c, in, full, false); err != nil || p.Input.Settings() != in.Settings() {
		t.Fatalf("a budget the plan fits: %v, %s", err, p.Input.Settings())
	}
	rc := MakePlan(c, PlanInput{Batch: 8, Seq: 1024, Options: Options{Recompute: true}}).Total
	if p, err := FitPlan(c, in, rc, false); err != nil || !p.Input.Recompute || p.Input.AdamW8 || p.Input.micro() != 1 {
		t.Fatalf("recomputation fits: %v, %s", err, p.Input.Settings())
	}
	eight := MakePlan(c, PlanInput{Batch: 8, Seq: 1024, Options: Options{Recompute: true, AdamW8: true}}).Total
	if p, err := FitPlan(c, in, eight, false); err != nil || !p.Input.AdamW8 {
		t.Fatalf("8-bit moments fit: %v, %s", err, p.Input.Settings())
	}
	if p, err := FitPlan(c, in, eight, true); err != nil || p.Input.AdamW8 || p.Input.micro() == 1 {
		t.Fatalf("optimizer fixed: %v, %s", err, p.Input.Settings())
	}
	if _, err := FitPlan(c, in, 1<<20, false); err == nil || !strings.Contains(err.Error(), "nothing fits in 1.00 MiB") {
		t.Fatalf("1 MiB: %v", err)
	}

	// On a GPU's bf16 path, bf16 gradients come after 8-bit moments and
	// before micro-batches; a swarm participant's plan has none.
	gpu := PlanInput{Batch: 8, Seq: 1024, BF16: true, GPU: true}
	small := gpu
	small.Options = Options{Recompute: true, AdamW8: true, GradsBF16: true}
	budget := MakePlan(c, small).Device
	p, err := FitPlan(c, gpu, budget, false)
	if err != nil || !p.Input.GradsBF16 || p.Input.micro() != 1 {
		t.Fatalf("bf16 gradients fit: %v, %s", err, p.Input.Settings())
	}
	if !strings.Contains(p.Input.Settings(), "bf16 gradients") || !slices.ContainsFunc(p.Parts, func(x PlanPart) bool { return x.Name == "gradients (bf16)" && x.Bytes == 2*NumParams(c) }) {
		t.Errorf("bf16 gradients plan: %s, %+v", p.Input.Settings(), p.Parts)
	}
	gpu.Swarm = true
	if p, err := FitPlan(c, gpu, budget, true); err == nil && p.Input.GradsBF16 {
		t.Errorf("a swarm participant planned with bf16 gradients: %s", p.Input.Settings())
	}

	// Then the moments in host memory: they leave the device's plan for
	// the host's.
	gpu.Swarm = false
	host := small
	host.OffloadMoments = true
	hp := MakePlan(c, host)
	if hp.Device != budget-momentBytes(c, host) || hp.Host != momentBytes(c, host) {
		t.Errorf("moments in host memory: device %d, host %d; want %d and %d", hp.Device, hp.Host, budget-momentBytes(c, host), momentBytes(c, host))
	}
	p, err = FitPlan(c, gpu, hp.Device, false)
	if err != nil || !p.Input.OffloadMoments || !p.Input.GradsBF16 || !strings.Contains(p.Input.Settings(), "moments in host memory") {
		t.Fatalf("moments in host memory fit: %v, %s", err, p.Input.Settings())
	}

	// A swarm participant on a GPU may keep them there too (the same bits),
	// beside its round vectors.
	sw := PlanInput{Batch: 8, Seq: 1024, GPU: true, Swarm: true, Options: Options{Recompute: true, AdamW8: true}}
	whole := MakePlan(c, sw)
	p, err = FitPlan(c, sw, whole.Device-momentBytes(c, sw), true)
	if err != nil || !p.Input.OffloadMoments || p.Input.GradsBF16 || p.Host != whole.Host+momentBytes(c, sw) {
		t.Fatalf("a participant's moments in host memory: %v, %s, host %d (without: %d)", err, p.Input.Settings(), p.Host, whole.Host)
	}
}

// A plan's total is its peak: parts held throughout and the largest phase,
// never two phases together; device and host peak apart.
func TestPlanPeak(t *testing.T) {
	parts := []PlanPart{
		{Name: "a", Bytes: 10},
		{Name: "b", Bytes: 5, Host: true},
		{Name: "c", Bytes: 7, Host: true, Phase: PhaseClose},
		{Name: "d", Bytes: 3, Host: true, Phase: PhaseCheck},
		{Name: "e", Bytes: 6, Phase: PhaseCheck},
	}
	all := func(PlanPart) bool { return true }
	if got := peak(parts, all); got != 10+5+9 {
		t.Errorf("peak %d, want 24 (checking: 3+6 > closing: 7)", got)
	}
	if got := peak(parts, func(x PlanPart) bool { return x.Host }); got != 5+7 {
		t.Errorf("host peak %d, want 12", got)
	}
	c, _ := Preset("demo")
	p := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Swarm: true})
	q := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Swarm: true, SpotChecks: true, Overlap: true})
	if add := p.Total - MakePlan(c, PlanInput{Batch: 1, Seq: 64}).Total; add != 24*NumParams(c) {
		t.Errorf("a participant adds %d bytes to its model, want 24 a parameter (global, momentum, residuals, Δ, the next state at the close)", add)
	}
	if q.Total <= p.Total {
		t.Errorf("spot checks and overlapped rounds add nothing: %d ≤ %d", q.Total, p.Total)
	}
	// Sequential rounds lend the participant's model to its checks.
	model := MakePlan(c, PlanInput{Batch: 1, Seq: 64})
	s := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Swarm: true, SpotChecks: true})
	if s.Total-p.Total >= model.Total {
		t.Errorf("spot checks on sequential rounds add %d bytes, a whole model (%d)", s.Total-p.Total, model.Total)
	}
	// A lean participant (CPU) holds its model, residuals and Δ (its
	// worker states stream between the model and the store) while it
	// trains, or a partition's weights, momentum and aggregate (here the
	// whole vector: one partition) while it closes; spot checks add
	// nothing. On a GPU its model stays on the device.
	n := NumParams(c)
	l := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Swarm: true, SpotChecks: true, Lean: true, Workspace: 1000})
	mw := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Workspace: 1000})
	if want := 1000 + max(mw.Total-1000+4*n+4*n, 12*n); l.Total != want {
		t.Errorf("lean participant: %d bytes at the peak, want %d", l.Total, want)
	}
	if lo := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Swarm: true, Lean: true, Workspace: 1000}); lo.Total != l.Total {
		t.Errorf("spot checks change a lean participant's peak: %d, %d", lo.Total, l.Total)
	}
	g := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Swarm: true, Lean: true, GPU: true})
	if gm := MakePlan(c, PlanInput{Batch: 1, Seq: 64, GPU: true}); g.Device != gm.Device || g.Host != 12*n {
		t.Errorf("lean on a GPU: device %d (model %d), host %d (want %d)", g.Device, gm.Device, g.Host, 12*n)
	}
	// A close of four partitions holds one partition's weights, momentum
	// and aggregate at a time; training, the residuals and a partition's
	// Δ are the most.
	part := 4 * ((n + 3) / 4)
	if g4 := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Options: Options{AdamW8: true}, Swarm: true, Lean: true, GPU: true, Partitions: 4}); g4.Host != 4*n+part {
		t.Errorf("lean on a GPU, 4 partitions: host %d, want %d", g4.Host, 4*n+part)
	}
	if g1 := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Options: Options{AdamW8: true}, Swarm: true, Lean: true, GPU: true, Partitions: 1}); g1.Host != 12*n {
		t.Errorf("lean on a GPU, 1 partition: host %d, want %d (the close)", g1.Host, 12*n)
	}
	// ...and on the CPU its model beside them.
	o8 := Options{AdamW8: true}
	l4 := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Options: o8, Swarm: true, Lean: true, Workspace: 1000, Partitions: 4})
	m8 := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Options: o8, Workspace: 1000})
	if want := 1000 + max(m8.Total-1000+4*n+part, 3*part); l4.Total != want {
		t.Errorf("lean participant, 8-bit moments, 4 partitions: %d bytes at the peak, want %d", l4.Total, want)
	}
	// Three contributions encoded in 1000 bytes each, and the aggregates.
	if e := MakePlan(c, PlanInput{Batch: 1, Seq: 64, Swarm: true, Lean: true, Workspace: 1000, Encoded: 1000, Contributions: 3}); e.Total != l.Total+4000 {
		t.Errorf("encoded contributions add %d bytes, want 4000", e.Total-l.Total)
	}
	if fit, err := FitPlan(c, PlanInput{Batch: 1, Seq: 64, Swarm: true}, l.Total, true); err != nil || !fit.Input.Lean {
		t.Errorf("FitPlan does not fall back to a lean participant: %v", err)
	}
}

// A frozen model (a DPO reference) evaluates to the bits of a full one,
// refuses to train, and allocates what the plan's reference parts say.
func TestFrozenModel(t *testing.T) {
	c, _ := Preset("demo")
	const b, T = 4, 64
	tokens, targets := batch(2, c, b, T)
	full, err := New(backend(t, cpu.Options{Threads: 2}), c)
	if err != nil {
		t.Fatal(err)
	}
	full.Init(3)
	w := make([]float32, full.Layout.Size)
	full.Backend().Download(w, full.Params)
	want, err := full.Forward(tokens, targets, b, T, false)
	if err != nil {
		t.Fatal(err)
	}
	wantNLL, _ := full.rowNLL(targets, b, T)

	be := backend(t, cpu.Options{Threads: 2})
	before := heapInUse()
	fz, err := NewFrozen(be, c)
	if err != nil {
		t.Fatal(err)
	}
	be.Upload(fz.Params, w)
	got, err := fz.Forward(tokens, targets, b, T, false)
	if err != nil {
		t.Fatal(err)
	}
	allocated := heapInUse() - before
	if gotNLL, _ := fz.rowNLL(targets, b, T); got != want || !slices.Equal(gotNLL, wantNLL) {
		t.Fatalf("frozen loss %v, full %v (row NLLs equal: %v)", got, want, slices.Equal(gotNLL, wantNLL))
	}
	fz.ZeroGrad()
	if err := fz.Backward(); !errors.Is(err, ErrFrozen) {
		t.Errorf("Backward on a frozen model: %v", err)
	}
	if _, err := fz.Step(1e-3, DefaultOptim()); !errors.Is(err, ErrFrozen) {
		t.Errorf("Step on a frozen model: %v", err)
	}
	if err := fz.SetOptimState(full.OptimState()); err == nil {
		t.Error("a frozen model took moments")
	}
	in := PlanInput{Batch: b, Seq: T}
	ws := be.WorkspaceBytes()
	runtime.KeepAlive(fz)
	runtime.KeepAlive(full) // neither collected inside the measurement
	runtime.KeepAlive(w)
	ref := MakePlan(c, PlanInput{Batch: b, Seq: T, Reference: true}).Total - MakePlan(c, in).Total
	if d := allocated - ws - ref; d < -ref/100-64<<10 || d > ref/100+64<<10 {
		t.Errorf("a frozen model allocated %d bytes (and %d of workspace), the plan says %d", allocated-ws, ws, ref)
	}
	t.Logf("frozen: allocated %s, planned %s", Bytes(allocated-ws), Bytes(ref))
}
