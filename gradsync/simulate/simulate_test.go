package simulate

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
)

func corpus(t *testing.T) (*model.Corpus, *model.Corpus) {
	c := &model.Corpus{}
	text := strings.Repeat("The cat sat on the mat. 고양이가 매트 위에 앉았다.\n\nA dog ran in the park. 개가 공원에서 뛰었다.\n\n", 60)
	if err := c.AddText("t", []byte(text), 320, model.ByteEOS); err != nil {
		t.Fatal(err)
	}
	return c.Split(0.1, model.ByteEOS)
}

// quick is QuickOptions over the test corpus with K workers, the given steps
// and batch, and 32-token sequences.
func quick(t *testing.T, workers, steps, batch int) (train, val *model.Corpus, o Options) {
	train, val = corpus(t)
	o = QuickOptions()
	o.Workers, o.Steps, o.Batch, o.Seq = workers, steps, batch, 32
	return train, val, o
}

// newCPU is a CPU backend closed when the test ends.
func newCPU(t *testing.T) kernels.Backend {
	be := cpu.MustNew(cpu.Options{})
	t.Cleanup(func() { be.Close() })
	return be
}

// With one worker, H = 1, fp32, outer lr 1 and no momentum, DiLoCo is
// plain training: the outer step sets θ to the worker's parameters.
func TestDiLoCoDegeneratesToDDP(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 1, 20, 2)
	o.Sync.OuterLR, o.Sync.Momentum = 1, 0
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 1, Codec: "fp32"}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(rows[0].ValLoss - rows[1].ValLoss); d > 1e-4 {
		t.Fatalf("DDP %.6f vs DiLoCo(K=1,H=1) %.6f", rows[0].ValLoss, rows[1].ValLoss)
	}
	if rows[0].BytesPerWorker != 0 || rows[1].BytesPerWorker != 0 {
		t.Fatalf("one worker sends nothing, got %v and %v", rows[0].BytesPerWorker, rows[1].BytesPerWorker)
	}
}

// Byte accounting follows the documented formulas.
func TestBytesAccounting(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 4, 20, 1)
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 10, Codec: "topk"}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := model.Preset(o.Preset)
	n := model.NumParams(c)
	if want := 20 * 2 * 0.75 * 4 * float64(n); rows[0].BytesPerWorker != want {
		t.Fatalf("DDP bytes %v, want %v", rows[0].BytesPerWorker, want)
	}
	codec, _ := gradsync.NewCodec("topk", o.Sync.Block, o.Sync.Chunk, o.Sync.TopKFrac)
	var agg int
	for _, p := range gradsync.Partitions(int(n), o.Sync.Partitions) {
		agg += codec.EncodedLen(p.Size)
	}
	if want := 2 * 0.75 * float64(codec.EncodedLen(int(n))+agg); rows[1].BytesPerWorker != want {
		t.Fatalf("DiLoCo bytes %v, want %v", rows[1].BytesPerWorker, want)
	}
	if rows[1].ReductionVsDDP < 100 {
		t.Fatalf("reduction %v", rows[1].ReductionVsDDP)
	}
}

// Warmup rounds move the sync points: 5x4+100 over 20 steps is H=5 exactly;
// 4x2+6 is also four rounds (4, 8, 14, 20) but at other steps; 3x2+100 is
// three (3, 6 and the forced last one at 20).
func TestWarmupRounds(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 2, 20, 1)
	o.Methods = []Method{{Name: "diloco", H: 5, Codec: "int8"},
		{Name: "diloco", H: 100, WarmupRounds: 4, WarmupH: 5, Codec: "int8"},
		{Name: "diloco", H: 6, WarmupRounds: 2, WarmupH: 4, Codec: "int8"},
		{Name: "diloco", H: 100, WarmupRounds: 2, WarmupH: 3, Codec: "int8"}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rows[1].ValLoss != rows[0].ValLoss || rows[1].BytesPerWorker != rows[0].BytesPerWorker {
		t.Fatalf("5x4+100 %+v differs from H=5 %+v", rows[1], rows[0])
	}
	if rows[2].BytesPerWorker != rows[0].BytesPerWorker || rows[2].ValLoss == rows[0].ValLoss {
		t.Fatalf("4x2+6 %+v: want H=5's bytes, another loss (H=5 %+v)", rows[2], rows[0])
	}
	if want := rows[0].BytesPerWorker * 3 / 4; math.Abs(rows[3].BytesPerWorker-want) > 1e-9*want {
		t.Fatalf("3x2+100 bytes %v, want %v", rows[3].BytesPerWorker, want)
	}
	if got := rows[2].Method.HString(); got != "4x2+6" {
		t.Fatalf("HString %q", got)
	}
}

// Methods trained side by side on separate backends (with other thread
// counts) give the same rows, in the same order, as one after another on
// one backend. Depends on the CPU kernels' determinism across thread counts.
func TestRunParallelSameRows(t *testing.T) {
	train, val, o := quick(t, 3, 12, 1)
	o.Methods = []Method{{Name: "diloco", H: 4, Codec: "int8"}, {Name: "ddp"},
		{Name: "diloco", H: 5, Codec: "int4", Aggregation: "trimmed-mean", Adversary: "scaled"}}
	one := cpu.MustNew(cpu.Options{Threads: 1})
	defer one.Close()
	want, err := Run(context.Background(), one, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	bes := []kernels.Backend{cpu.MustNew(cpu.Options{Threads: 2}), cpu.MustNew(cpu.Options{Threads: 1}), cpu.MustNew(cpu.Options{Threads: 3})}
	for _, be := range bes {
		defer be.Close()
	}
	var steps, finished int
	o.OnStep = func(Method, int, int) { steps++ } // unsynchronised: the race detector checks RunParallel serialises it
	got, err := RunParallel(context.Background(), bes, train, val, o, func(Row) { finished++ })
	if err != nil {
		t.Fatal(err)
	}
	if steps != 3*o.Steps || finished != 3 {
		t.Fatalf("OnStep called %d times, progress %d times", steps, finished)
	}
	for i := range want {
		want[i].Seconds, got[i].Seconds = 0, 0
		if !reflect.DeepEqual(want[i], got[i]) {
			t.Errorf("row %d: one at a time %+v, side by side %+v", i, want[i], got[i])
		}
	}
	if got[0].ReductionVsDDP <= 1 || got[1].ReductionVsDDP != 1 {
		t.Errorf("reductions %v and %v: the DiLoCo row's is filled in though DDP ran after it", got[0].ReductionVsDDP, got[1].ReductionVsDDP)
	}
}

func TestRunParallelStopsOnError(t *testing.T) {
	train, val, o := quick(t, 2, 200, 1)
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 4, Codec: "no-such-codec"}, {Name: "ddp"}}
	bes := []kernels.Backend{cpu.MustNew(cpu.Options{Threads: 1}), cpu.MustNew(cpu.Options{Threads: 1})}
	for _, be := range bes {
		defer be.Close()
	}
	rows, err := RunParallel(context.Background(), bes, train, val, o, nil)
	if err == nil || !strings.Contains(err.Error(), "no-such-codec") {
		t.Fatalf("rows %v, err %v", rows, err)
	}
}

// Reducer error feedback sends the same bytes and changes the result.
func TestAggregateFeedback(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 3, 12, 1)
	o.Methods = []Method{{Name: "diloco", H: 3, Codec: "int4"}}
	plain, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.AggregateFeedback = true
	fed, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if plain[0].BytesPerWorker != fed[0].BytesPerWorker || plain[0].ValLoss == fed[0].ValLoss {
		t.Fatalf("without reducer feedback %+v, with %+v", plain[0], fed[0])
	}
}

// The validation loss is over the whole held-out split by default, the same
// windows whatever a method's training batch; EvalRows limits it to the first
// windows.
func TestEvaluateWindows(t *testing.T) {
	be := newCPU(t)
	train, val := corpus(t)
	c, _ := model.Preset("tiny")
	m, err := model.New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	const seq = 16
	windows := (len(val.Tokens) - 1) / seq
	if windows < 2*evalBatch {
		t.Fatalf("validation split of %d tokens too small for the test", len(val.Tokens))
	}
	// Reference: each window alone, mean in float64.
	alone := func(c *model.Corpus, n int) []float64 {
		per := make([]float64, n)
		tokens, targets := make([]int32, seq), make([]int32, seq)
		for w := range per {
			copy(tokens, c.Tokens[w*seq:])
			copy(targets, c.Tokens[w*seq+1:])
			l, err := m.Forward(tokens, targets, 1, seq, false)
			if err != nil {
				t.Fatal(err)
			}
			per[w] = float64(l)
		}
		return per
	}
	per := alone(val, windows)
	mean := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	whole := windows / evalBatch * evalBatch // a last partial batch is left out
	for _, tc := range []struct{ rows, batch, n int }{{0, 1, whole}, {0, 4, whole}, {evalBatch, 2, evalBatch}, {evalBatch + 1, 2, 2 * evalBatch}} {
		o := Options{Seq: seq, Batch: tc.batch, EvalRows: tc.rows}
		got, err := evaluate(m, val, o)
		if err != nil {
			t.Fatal(err)
		}
		if want := mean(per[:tc.n]); math.Abs(float64(got)-want) > 1e-5*want {
			t.Errorf("EvalRows %d, batch %d: %.7f, want the mean of the first %d windows %.7f", tc.rows, tc.batch, got, tc.n, want)
		}
		// The training loss is over as many windows, from the training split.
		got, err = trainLoss(m, train, val, o)
		if err != nil {
			t.Fatal(err)
		}
		if want := mean(alone(train, tc.n)); math.Abs(float64(got)-want) > 1e-5*want {
			t.Errorf("EvalRows %d, batch %d: training loss %.7f, want the mean of the first %d training windows %.7f", tc.rows, tc.batch, got, tc.n, want)
		}
	}
}

// Options.Optim reaches DDP's steps and the workers' alike: unset means
// model.DefaultOptim(), another β2 changes both losses, and a β1 out of
// range is refused before any training.
func TestOptimSettings(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 2, 12, 1)
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 4, Codec: "fp32"}}
	run := func(op model.OptimConfig) []Row {
		t.Helper()
		o.Optim = op
		rows, err := Run(context.Background(), be, train, val, o, nil)
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	def, unset := run(model.DefaultOptim()), run(model.OptimConfig{})
	for i := range def {
		if def[i].ValLoss != unset[i].ValLoss {
			t.Fatalf("%s: unset Optim %v, DefaultOptim %v", def[i].Method, unset[i].ValLoss, def[i].ValLoss)
		}
	}
	op := model.DefaultOptim()
	op.Beta2 = 0.99
	for i, r := range run(op) {
		if r.ValLoss == def[i].ValLoss {
			t.Fatalf("%s: β2 0.99 gave the default's loss %v", r.Method, r.ValLoss)
		}
	}
	o.Optim.Beta1 = 1
	if _, err := Run(context.Background(), be, train, val, o, nil); err == nil || !strings.Contains(err.Error(), "beta1") {
		t.Fatalf("β1 1: err %v", err)
	}
}

// Accum is gradient accumulation over the comparison's own batches. Against
// a step written out here (one AdamW step on worker 0's batches of steps 0
// and 1 together), DDP with accum 2 over 2 steps and one worker is the same
// to the bit; DiLoCo at K=1, H=1, fp32 with outer lr 1 and no momentum is
// that DDP too. With more workers, DDP with accum 2 sends half the bytes,
// DiLoCo with accum 2 and H=2 the bytes of H=4 without it (the same
// rounds), every method sees the same tokens, an explicit accum 1 is
// accum 0's run, and an accum that does not divide the steps is refused.
func TestAccum(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 1, 2, 2)
	o.Warmup = 4
	o.Sync.OuterLR, o.Sync.Momentum = 1, 0
	o.Methods = []Method{{Name: "ddp", Accum: 2}, {Name: "diloco", H: 1, Codec: "fp32", Accum: 2}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := model.Preset(o.Preset)
	m, err := model.New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(o.Seed)
	n := o.Batch * o.Seq
	tokens, targets := make([]int32, 2*n), make([]int32, 2*n)
	for s := 0; s < 2; s++ {
		if err := train.Batch(o.Seed, s, o.Batch, o.Seq, tokens[s*n:], targets[s*n:]); err != nil {
			t.Fatal(err)
		}
	}
	m.ZeroGrad()
	if _, err := m.Forward(tokens, targets, 2*o.Batch, o.Seq, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	lr := kernels.Schedule{Kind: kernels.ScheduleCosine, MaxLR: o.LR, MinLR: o.LR / 10, Warmup: 2, Total: 1}.LR(0)
	if _, err := m.Step(lr, model.DefaultOptim()); err != nil {
		t.Fatal(err)
	}
	want, err := evaluate(m, val, o)
	if err != nil {
		t.Fatal(err)
	}
	if rows[0].ValLoss != float64(want) {
		t.Fatalf("DDP accum 2: %v, the step written out: %v", rows[0].ValLoss, want)
	}
	if d := math.Abs(rows[0].ValLoss - rows[1].ValLoss); d > 1e-4 {
		t.Fatalf("DDP accum 2 %.6f vs DiLoCo(K=1,H=1) accum 2 %.6f", rows[0].ValLoss, rows[1].ValLoss)
	}

	train, val, o = quick(t, 3, 8, 1)
	o.Methods = []Method{{Name: "ddp"}, {Name: "ddp", Accum: 2}, {Name: "diloco", H: 4, Codec: "int8"},
		{Name: "diloco", H: 2, Codec: "int8", Accum: 2}, {Name: "diloco", H: 4, Codec: "int8", Accum: 1}}
	rows, err = Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows[1:] {
		if r.Tokens != rows[0].Tokens {
			t.Errorf("%s: %d tokens, DDP %d", r.Method, r.Tokens, rows[0].Tokens)
		}
	}
	if rows[1].BytesPerWorker != rows[0].BytesPerWorker/2 || rows[1].ReductionVsDDP != 2 {
		t.Errorf("DDP accum 2: %v bytes (%v×), DDP %v", rows[1].BytesPerWorker, rows[1].ReductionVsDDP, rows[0].BytesPerWorker)
	}
	if rows[3].BytesPerWorker != rows[2].BytesPerWorker || rows[3].ValLoss == rows[2].ValLoss || rows[1].ValLoss == rows[0].ValLoss {
		t.Errorf("accum 2 should keep the rounds' bytes and change the loss: %+v %+v", rows[3], rows[2])
	}
	if rows[4].ValLoss != rows[2].ValLoss || rows[4].BytesPerWorker != rows[2].BytesPerWorker {
		t.Errorf("accum 1 %+v differs from accum 0 %+v", rows[4], rows[2])
	}
	if got := rows[3].Method.String(); got != "diloco H=2 int8 accum=2" {
		t.Errorf("String %q", got)
	}
	o.Methods = []Method{{Name: "diloco", H: 2, Codec: "int8", Accum: 3}}
	if _, err := Run(context.Background(), be, train, val, o, nil); err == nil || !strings.Contains(err.Error(), "accum 3") {
		t.Fatalf("accum 3 over 8 steps: err %v", err)
	}
}

// A method's own betas are the run's AdamW with those betas, to the bit,
// and leave the other methods alone; a β out of range is refused.
func TestMethodBetas(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 2, 12, 1)
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 4, Codec: "int4", Beta1: 0.95, Beta2: 0.99}}
	mixed, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 4, Codec: "int4"}}
	def, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Optim = model.DefaultOptim()
	o.Optim.Beta1, o.Optim.Beta2 = 0.95, 0.99
	all, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mixed[0].ValLoss != def[0].ValLoss || mixed[1].ValLoss != all[1].ValLoss || mixed[1].ValLoss == def[1].ValLoss {
		t.Fatalf("ddp %v (default %v); diloco with its own betas %v, with the run's %v, default %v",
			mixed[0].ValLoss, def[0].ValLoss, mixed[1].ValLoss, all[1].ValLoss, def[1].ValLoss)
	}
	o.Methods = []Method{{Name: "ddp", Beta2: 1}}
	if _, err := Run(context.Background(), be, train, val, o, nil); err == nil || !strings.Contains(err.Error(), "beta2 1") {
		t.Fatalf("β2 1: err %v", err)
	}
}

// Every adversary changes what worker 0 sends (the honest run's rows
// differ from each attacked one's), and an unknown one is refused.
func TestAdversaries(t *testing.T) {
	train, val, o := quick(t, 3, 12, 1)
	o.Methods = []Method{{Name: "diloco", H: 4, Codec: "int8", Aggregation: "mean"}}
	for _, a := range Adversaries {
		o.Methods = append(o.Methods, Method{Name: "diloco", H: 4, Codec: "int8", Aggregation: "mean", Adversary: a})
	}
	be := cpu.MustNew(cpu.Options{Threads: 1})
	defer be.Close()
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rows[1:] {
		if r.ValLoss == rows[0].ValLoss {
			t.Errorf("adversary %s: validation loss %v, the same as without it", Adversaries[i], r.ValLoss)
		}
	}
	o.Methods = []Method{{Name: "diloco", H: 4, Codec: "int8", Adversary: "sleepy"}}
	if _, err := Run(context.Background(), be, train, val, o, nil); err == nil || !strings.Contains(err.Error(), "sleepy") {
		t.Fatalf("unknown adversary: %v", err)
	}
}
