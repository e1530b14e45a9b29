package simulate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/model"
)

// With one worker, fp32, outer lr 1 and no momentum, every schedule —
// overlapped, streamed in fragments, both — is plain training (up to the
// rounding of θ − (θ − x), which need not give x back exactly).
func TestOverlapDegeneratesToPlainTraining(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 1, 24, 2)
	o.Sync.OuterLR, o.Sync.Momentum = 1, 0
	o.Methods = []Method{{Name: "ddp"}}
	for _, m := range []Method{{Overlap: "local"}, {Overlap: "eager"}, {Fragments: 4}, {Overlap: "eager", Fragments: 3}} {
		m.Name, m.H, m.Codec, m.Aggregation = "diloco", 6, "fp32", "mean"
		o.Methods = append(o.Methods, m)
	}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows[1:] {
		if math.Abs(r.ValLoss-rows[0].ValLoss) > 1e-5 || math.Abs(r.TrainLoss-rows[0].TrainLoss) > 1e-5 {
			t.Errorf("%s: val %v train %v, plain training %v %v", r.Method, r.ValLoss, r.TrainLoss, rows[0].ValLoss, rows[0].TrainLoss)
		}
	}
}

// quadratic is worker k's objective ½·Σ a_i·(x_i − c_i)², a gradient step
// at a time.
type quadratic struct{ a, c []float64 }

func quadratics(k, n int, seed uint64) []quadratic {
	rng := rand.New(rand.NewPCG(seed, 7))
	qs := make([]quadratic, k)
	for w := range qs {
		for range n {
			qs[w].a = append(qs[w].a, 0.2+rng.Float64())
			qs[w].c = append(qs[w].c, 4*rng.Float64()-2)
		}
	}
	return qs
}

// refOuter is the outer loop written out naively in float64: the
// reference the float32 outerLoop must follow.
func refOuter(qs []quadratic, n, p, h, steps int, lr, mu, eta float64, overlap string) []float64 {
	k := len(qs)
	g, buf := make([]float64, n), make([]float64, n)
	for i := range g {
		g[i] = 0.5
	}
	x, s := make([][]float64, k), make([][]float64, k)
	for w := range x {
		x[w], s[w] = append([]float64(nil), g...), append([]float64(nil), g...)
	}
	pend := make([][]float64, p)
	size := n / p
	for t := 1; t <= steps; t++ {
		for w, q := range qs {
			for i := range x[w] {
				x[w][i] -= eta * q.a[i] * (x[w][i] - q.c[i])
			}
		}
		for f := 0; f < p; f++ {
			off := (f + 1) * h / p
			if t != steps && (t < off || (t-off)%h != 0) {
				continue
			}
			lo, hi := f*size, (f+1)*size
			step := func(a []float64) {
				for i := lo; i < hi; i++ {
					buf[i] = mu*buf[i] + a[i-lo]
					g[i] -= lr * (a[i-lo] + mu*buf[i])
				}
			}
			if pend[f] != nil {
				step(pend[f])
				pend[f] = nil
				for w := range x {
					for i := lo; i < hi; i++ {
						x[w][i] += g[i] - s[w][i]
						s[w][i] = g[i]
					}
				}
			}
			agg := make([]float64, size)
			d := make([][]float64, k)
			for w := range x {
				for i := lo; i < hi; i++ {
					d[w] = append(d[w], s[w][i]-x[w][i])
					agg[i-lo] += d[w][i-lo] / float64(k)
				}
			}
			if overlap == "" || t == steps {
				step(agg)
				for w := range x {
					copy(x[w][lo:hi], g[lo:hi])
					copy(s[w][lo:hi], g[lo:hi])
				}
				continue
			}
			pend[f] = agg
			for w := range x {
				for i := lo; i < hi; i++ {
					e := g[i] - d[w][i-lo]
					if overlap == "eager" {
						e = g[i] - lr*(d[w][i-lo]+mu*(mu*buf[i]+d[w][i-lo]))
					}
					x[w][i], s[w][i] = e, e
				}
			}
		}
	}
	return g
}

// The outer loop — delayed (overlapped) outer updates, fragments on
// staggered schedules — follows the float64 reference on quadratic
// objectives, and each variant differs from the others, so the test would
// see one computed in place of another.
func TestOuterLoopMatchesFloat64Reference(t *testing.T) {
	const n, k, h, steps, eta = 12, 3, 6, 40, 0.1
	qs := quadratics(k, n, 3)
	cfg := gradsync.DefaultConfig()
	cfg.H, cfg.Codec, cfg.Aggregation, cfg.OuterLR, cfg.Momentum, cfg.Partitions = h, "fp32", "mean", 0.7, 0.5, 3
	finals := map[string][]float64{}
	for _, overlap := range []string{"", "local", "eager"} {
		for _, p := range []int{1, 2, 3} {
			name := fmt.Sprintf("overlap=%q fragments=%d", overlap, p)
			want := refOuter(qs, n, p, h, steps, cfg.OuterLR, cfg.Momentum, eta, overlap)
			global := make([]float32, n)
			for i := range global {
				global[i] = 0.5
			}
			o := Options{Workers: k, Batch: 1, Seq: 1, Seed: 1}
			l, err := newOuterLoop(cfg, Method{Name: "diloco", H: h, Codec: "fp32", Overlap: overlap, Fragments: p}, o, steps, global)
			if err != nil {
				t.Fatal(err)
			}
			x := make([][]float32, k)
			for w := range x {
				x[w] = append([]float32(nil), global...)
			}
			for s := 1; s <= steps; s++ {
				for w, q := range qs {
					for i := range x[w] {
						x[w][i] -= float32(eta * q.a[i] * (float64(x[w][i]) - q.c[i]))
					}
				}
				for _, f := range l.due(s) {
					if err := l.sync(f, x, s); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i := range want {
				if d := math.Abs(float64(l.global[i]) - want[i]); d > 1e-5*(1+math.Abs(want[i])) {
					t.Fatalf("%s: global[%d] = %v, float64 reference %v", name, i, l.global[i], want[i])
				}
			}
			for other, g := range finals {
				if dist(g, want) < 1e-3 {
					t.Errorf("%s ends where %s does: the variants are not told apart", name, other)
				}
			}
			finals[name] = want
		}
	}
}

func dist(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += (a[i] - b[i]) * (a[i] - b[i])
	}
	return math.Sqrt(s)
}

// Fragments on staggered schedules divide what a worker sends at once by
// their number; in all they send one more (partial) sync per fragment, at
// the end of training, than unfragmented rounds.
func TestFragmentsDividePeak(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 2, 16, 1)
	o.Methods = []Method{{Name: "diloco", H: 8, Codec: "fp32"}, {Name: "diloco", H: 8, Codec: "fp32", Fragments: 4}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	whole, frag := rows[0], rows[1]
	if r := frag.PeakBytes / whole.PeakBytes; r < 0.24 || r > 0.26 {
		t.Errorf("peak per sync %v with 4 fragments, %v without: ratio %.3f, want 1/4", frag.PeakBytes, whole.PeakBytes, r)
	}
	// Unfragmented: syncs after steps 8 and 16. Fragments 0–2 sync twice
	// on schedule and once more at the end, fragment 3 twice: 11 quarters.
	if r := frag.BytesPerWorker / whole.BytesPerWorker; math.Abs(r-11.0/8) > 0.01 {
		t.Errorf("bytes %v with 4 fragments, %v without: ratio %.3f, want 11/8", frag.BytesPerWorker, whole.BytesPerWorker, r)
	}
}

// Each held-out source is scored on its own.
func TestSourcesScoredApart(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 1, 4, 1)
	other := &model.Corpus{}
	if err := other.AddText("o", []byte(strings.Repeat("Zebras zigzag. 얼룩말이 달린다.\n\n", 20)), 320, model.ByteEOS); err != nil {
		t.Fatal(err)
	}
	o.Sources = []Source{{Name: "same", Val: val}, {Name: "other", Val: other}}
	o.Methods = []Method{{Name: "ddp"}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := rows[0]
	if len(r.Sources) != 2 || r.Loss("same") != r.ValLoss || r.Loss("other") == r.ValLoss || r.Loss("missing") != r.ValLoss {
		t.Fatalf("sources %+v (val %v)", r.Sources, r.ValLoss)
	}
}

// With Hetero, worker k trains the first 1 − Hetero·k/(K−1) of each
// round's steps, and its contribution declares those steps' tokens.
func TestHeteroTrainsShares(t *testing.T) {
	be := newCPU(t)
	train, val, o := quick(t, 4, 20, 1)
	o.Methods = []Method{{Name: "diloco", H: 10, Codec: "fp32"}, {Name: "diloco", H: 10, Codec: "fp32", Hetero: 0.5}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Shares 1, 5/6, 2/3, 1/2 of 10 steps: 10, 9, 7, 5 a round, two rounds.
	per := int64(o.Batch * o.Seq)
	if rows[0].Tokens != 80*per || rows[1].Tokens != 62*per {
		t.Errorf("tokens %d and %d, want %d and %d", rows[0].Tokens, rows[1].Tokens, 80*per, 62*per)
	}
	if rows[0].ValLoss == rows[1].ValLoss {
		t.Errorf("unequal workers changed nothing: %v", rows[0].ValLoss)
	}
	cfg := gradsync.DefaultConfig()
	cfg.H, cfg.Codec = 10, "fp32"
	l, err := newOuterLoop(cfg, o.Methods[1], o, 20, make([]float32, 4))
	if err != nil {
		t.Fatal(err)
	}
	l.steps = []int{10, 9, 7, 5}
	if l.contribTokens(0) != 10*per || l.contribTokens(3) != 5*per {
		t.Errorf("declared tokens %d and %d", l.contribTokens(0), l.contribTokens(3))
	}
	if _, err := Run(context.Background(), be, train, val, Options{Preset: o.Preset, Workers: 4, Batch: 1, Seq: 32, Steps: 20,
		Methods: []Method{{Name: "diloco", H: 10, Codec: "fp32", Hetero: 0.5, Fragments: 2}}}, nil); err == nil || !strings.Contains(err.Error(), "hetero") {
		t.Errorf("hetero with fragments: %v", err)
	}
}
