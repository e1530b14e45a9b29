package simulate

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fomnet/fomnet/model"
)

// vcorrRef is one step of the noise-corrected AdamW in float64, written out
// from the formula in vcorr.go's comment (an independent reference).
type vcorrRef struct {
	p, m, v1, v2 []float64
	t            int
}

func (r *vcorrRef) step(gA, gB []float32, decay []bool, k, lr float64, o model.OptimConfig) {
	var sq float64
	g := make([]float64, len(gA))
	d := make([]float64, len(gA))
	for i := range gA {
		g[i] = (float64(gA[i]) + float64(gB[i])) / 2
		d[i] = (float64(gA[i]) - float64(gB[i])) / 2
		sq += g[i] * g[i]
	}
	scale := 1.0
	if n := math.Sqrt(sq); o.ClipNorm > 0 && n > o.ClipNorm {
		scale = o.ClipNorm / n
	}
	r.t++
	b1, b2 := float64(o.Beta1), float64(o.Beta2)
	for i := range r.p {
		gi, di := g[i]*scale, d[i]*scale
		r.m[i] = b1*r.m[i] + (1-b1)*gi
		r.v1[i] = b2*r.v1[i] + (1-b2)*gi*gi
		r.v2[i] = b2*r.v2[i] + (1-b2)*di*di
		v := math.Max(r.v1[i]-(1-1/k)*r.v2[i], r.v1[i]/k)
		mh := r.m[i] / (1 - math.Pow(b1, float64(r.t)))
		vh := v / (1 - math.Pow(b2, float64(r.t)))
		u := mh / (math.Sqrt(vh) + float64(o.Eps))
		if decay[i] {
			u += float64(o.WeightDecay) * r.p[i]
		}
		r.p[i] -= lr * u
	}
}

// vcorrUpdate agrees with the float64 reference over several steps, with
// clipping on and off, tensors that decay and that do not, and coordinates
// where the correction or its floor decides.
func TestVCorrUpdate(t *testing.T) {
	const n = 257
	rng := rand.New(rand.NewPCG(3, 4))
	for _, clip := range []float64{0, 0.5} {
		o := model.DefaultOptim()
		o.ClipNorm = clip
		s := newVCorrBuffers(n, 4)
		ref := &vcorrRef{p: make([]float64, n), m: make([]float64, n), v1: make([]float64, n), v2: make([]float64, n)}
		for i := range s.p {
			s.p[i] = float32(rng.NormFloat64())
			ref.p[i] = float64(s.p[i])
			s.decay[i] = i%3 != 0
		}
		floored := 0
		for step := 1; step <= 6; step++ {
			for i := range s.gA {
				mu := 0.1 * rng.NormFloat64()
				noise := 0.01 * float64(i%7) // some coordinates noise-dominated, some not
				s.gA[i] = float32(mu + noise*rng.NormFloat64())
				s.gB[i] = float32(mu + noise*rng.NormFloat64())
			}
			s.t++
			if err := vcorrUpdate(s, 1e-2, o); err != nil {
				t.Fatal(err)
			}
			ref.step(s.gA, s.gB, s.decay, 4, 1e-2, o)
			for i := range s.p {
				if d := math.Abs(float64(s.p[i]) - ref.p[i]); d > 1e-5*(1+math.Abs(ref.p[i])) {
					t.Fatalf("clip %v step %d param %d: %v, reference %v", clip, step, i, s.p[i], ref.p[i])
				}
				if ref.v1[i]-0.75*ref.v2[i] < ref.v1[i]/4 {
					floored++
				}
			}
		}
		if floored == 0 {
			t.Fatalf("clip %v: the floor was never reached; the test does not cover it", clip)
		}
	}
	s := newVCorrBuffers(1, 2)
	s.gA[0], s.t = float32(math.NaN()), 1
	if err := vcorrUpdate(s, 1e-2, model.DefaultOptim()); err == nil {
		t.Fatal("a NaN gradient was stepped on")
	}
}

// The estimator is right: on gradients μ + noise of known variance, the
// running mean of g² that vcorrUpdate keeps sits near μ² + σ², and its
// running means combined by the formula of vcorr.go (which TestVCorrUpdate
// holds the code to) near μ² + σ²/k, the mean of k gradients' square.
func TestVCorrEstimatesMeanGradient(t *testing.T) {
	const n, k = 400, 4.0
	rng := rand.New(rand.NewPCG(5, 6))
	o := model.DefaultOptim()
	o.Beta2, o.ClipNorm, o.WeightDecay = 0.999, 0, 0
	s := newVCorrBuffers(n, k)
	mu := make([]float64, n)
	for i := range mu {
		mu[i] = 0.3 * float64(i%4) // 0: noise only
	}
	const sigmaHalf = 1.0 // each half's std; g = mean of two halves has σ² = 0.5
	for step := 0; step < 4000; step++ {
		for i := range s.gA {
			s.gA[i] = float32(mu[i] + sigmaHalf*rng.NormFloat64())
			s.gB[i] = float32(mu[i] + sigmaHalf*rng.NormFloat64())
		}
		s.t++
		if err := vcorrUpdate(s, 0, o); err != nil {
			t.Fatal(err)
		}
	}
	bc := 1 / (1 - math.Pow(float64(o.Beta2), float64(s.t)))
	for _, m := range []float64{0, 0.3, 0.6, 0.9} {
		var raw, corr float64
		var cnt int
		for i := range mu {
			if mu[i] != m {
				continue
			}
			raw += float64(s.v1[i]) * bc
			corr += math.Max(float64(s.v1[i])-(1-1/k)*float64(s.v2[i]), float64(s.v1[i])/k) * bc
			cnt++
		}
		raw, corr = raw/float64(cnt), corr/float64(cnt)
		wantRaw, wantCorr := m*m+0.5, m*m+0.5/k
		if math.Abs(raw-wantRaw) > 0.05*wantRaw || math.Abs(corr-wantCorr) > 0.08*wantCorr {
			t.Fatalf("μ %v: mean of g² %.4f (want %.4f), corrected %.4f (want %.4f)", m, raw, wantRaw, corr, wantCorr)
		}
	}
}

// With one worker, H = 1, fp32, outer lr 1 and no momentum, DiLoCo with
// vcorr=1 (no correction: the two halves' mean gradient, AdamW's moments)
// is plain training, as DDP: the same loss up to the rounding of taking
// the gradient in two halves. With vcorr=4 it trains differently but
// still learns.
func TestVCorrRun(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 1, 30, 2)
	o.Sync.OuterLR, o.Sync.Momentum = 1, 0
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 1, Codec: "fp32", VCorr: 1}, {Name: "diloco", H: 1, Codec: "fp32", VCorr: 4}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(rows[0].ValLoss - rows[1].ValLoss); d > 1e-3 {
		t.Fatalf("DDP %.6f vs DiLoCo(K=1,H=1,vcorr=1) %.6f", rows[0].ValLoss, rows[1].ValLoss)
	}
	if rows[2].ValLoss == rows[1].ValLoss || !(rows[2].ValLoss < 5) { // ln 259 ≈ 5.56 at the start
		t.Fatalf("vcorr=4: loss %.6f (vcorr=1 %.6f)", rows[2].ValLoss, rows[1].ValLoss)
	}
	for _, m := range []Method{{Name: "ddp", VCorr: 4}, {Name: "diloco", H: 1, Codec: "fp32", VCorr: 0.5}} {
		o.Methods = []Method{m}
		if _, err := Run(context.Background(), be, train, val, o, nil); err == nil {
			t.Fatalf("%s was accepted", m)
		}
	}
	o.Batch = 3
	o.Methods = []Method{{Name: "diloco", H: 1, Codec: "fp32", VCorr: 4}}
	if _, err := Run(context.Background(), be, train, val, o, nil); err == nil {
		t.Fatal("vcorr with an odd batch was accepted")
	}
}
