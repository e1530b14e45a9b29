package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
)

// prefBatch is p pairs of rows of length t: a shared prompt, then answers
// of different lengths (targets IgnoreIndex outside the answer).
func prefBatch(c Config, p, t int) (tokens, targets []int32) {
	r := rand.New(rand.NewPCG(7, 7))
	b := 2 * p
	tokens, targets = make([]int32, b*t), make([]int32, b*t)
	for i := range tokens {
		tokens[i] = int32(r.IntN(ByteVocab - 3))
		targets[i] = kernels.IgnoreIndex
	}
	for pair := range p {
		for _, row := range []int{pair, pair + p} {
			prompt := 3 + pair
			if row != pair {
				copy(tokens[row*t:row*t+prompt], tokens[pair*t:pair*t+prompt])
			}
			end := t - (row % 3) // answers of different lengths
			for i := prompt - 1; i < end-1; i++ {
				targets[row*t+i] = tokens[row*t+i+1]
			}
		}
	}
	return tokens, targets
}

// perturbed sets m's weights to larger random values than Init's (so that
// gradients stand above the float32 noise of the loss).
func perturbed(m *Model, seed uint64) []float32 {
	host := make([]float32, m.Layout.Size)
	r := rand.New(rand.NewPCG(seed, seed))
	for _, tn := range m.Layout.Tensors {
		for i := tn.Offset; i < tn.Offset+tn.Size; i++ {
			if len(tn.Shape) == 1 {
				host[i] = 1 + 0.3*float32(r.NormFloat64())
			} else {
				host[i] = 0.15 * float32(r.NormFloat64())
			}
		}
	}
	m.be.Upload(m.Params, host)
	return host
}

// rowNLL64 is each row's negative log-likelihood over its targets, in
// float64 from the logits of m's last forward (without gradient).
func rowNLL64(t *testing.T, m *Model, targets []int32, b, T int) (nll []float64, n []int) {
	logits := make([]float32, m.Config.Vocab)
	nll, n = make([]float64, b), make([]int, b)
	for bi := range b {
		for ti := range T {
			tg := targets[bi*T+ti]
			if tg == kernels.IgnoreIndex {
				continue
			}
			if err := m.Logits(logits, bi, ti); err != nil {
				t.Fatal(err)
			}
			nll[bi] += nll64(logits, tg)
			n[bi]++
		}
	}
	return nll, n
}

// The DPO and SimPO losses match a float64 computation from the logits.
func TestPreferenceLossReference(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 1})
	policy, ref := newTiny(t, be), newTiny(t, be)
	perturbed(policy, 3)
	const P, T = 3, 16
	tokens, targets := prefBatch(policy.Config, P, T)
	for _, pc := range []PrefConfig{{Objective: ObjectiveDPO, Beta: 0.1}, {Objective: ObjectiveSimPO, Beta: 2, Gamma: 0.5},
		{Objective: ObjectiveDPO, Beta: 0.5, Alpha: 1}, {Objective: ObjectiveSimPO, Beta: 2, Gamma: 0.5, Alpha: 0.3}} {
		st, err := policy.PreferenceForward(ref, tokens, targets, 2*P, T, pc, false)
		if err != nil {
			t.Fatal(err)
		}
		nll, n := rowNLL64(t, policy, targets, 2*P, T)
		if _, err := ref.Forward(tokens, targets, 2*P, T, false); err != nil {
			t.Fatal(err)
		}
		refNLL, _ := rowNLL64(t, ref, targets, 2*P, T)
		var loss, acc float64
		for p := range P {
			c, r := p, p+P
			z := pc.Beta * ((refNLL[c] - nll[c]) - (refNLL[r] - nll[r]))
			if pc.Objective == ObjectiveSimPO {
				z = pc.Beta*(-nll[c]/float64(n[c])+nll[r]/float64(n[r])) - pc.Gamma
			}
			loss += (math.Log(1+math.Exp(-z)) + pc.Alpha*nll[c]/float64(n[c])) / P
			if z > 0 || (pc.Objective == ObjectiveSimPO && z+pc.Gamma > 0) {
				acc += 1.0 / P
			}
		}
		if math.Abs(st.Loss-loss) > 1e-4*loss || math.Abs(st.Accuracy-acc) > 1e-9 {
			t.Fatalf("%+v: loss %v accuracy %v, float64 reference %v and %v", pc, st.Loss, st.Accuracy, loss, acc)
		}
		t.Logf("%s: loss %.6f (reference %.6f), accuracy %.2f, margin %.4f", pc.Objective, st.Loss, loss, st.Accuracy, st.Margin)
	}
}

// The preference gradients match central finite differences of the loss
// along a random direction in every tensor, for DPO and for SimPO.
func TestPreferenceGradientFiniteDifference(t *testing.T) {
	be := backend(t, cpu.Options{})
	policy, ref := newTiny(t, be), newTiny(t, be)
	perturbed(ref, 11)
	const P, T = 2, 16
	tokens, targets := prefBatch(policy.Config, P, T)
	for _, pc := range []PrefConfig{{Objective: ObjectiveDPO, Beta: 0.5}, {Objective: ObjectiveSimPO, Beta: 4, Gamma: 0.3},
		{Objective: ObjectiveDPO, Beta: 0.5, Alpha: 1}} {
		host := perturbed(policy, 5)
		policy.ZeroGrad()
		if _, err := policy.PreferenceForward(ref, tokens, targets, 2*P, T, pc, true); err != nil {
			t.Fatal(err)
		}
		if err := policy.Backward(); err != nil {
			t.Fatal(err)
		}
		grad := make([]float32, policy.Layout.Size)
		be.Download(grad, policy.Grads)
		loss := func(p []float32) float64 {
			be.Upload(policy.Params, p)
			st, err := policy.PreferenceForward(ref, tokens, targets, 2*P, T, pc, false)
			if err != nil {
				t.Fatal(err)
			}
			return st.Loss
		}
		r := rand.New(rand.NewPCG(9, 9))
		const eps = 1e-2
		large := 0
		for _, tn := range policy.Layout.Tensors {
			dir := make([]float64, tn.Size)
			var norm float64
			for i := range dir {
				dir[i] = r.NormFloat64()
				norm += dir[i] * dir[i]
			}
			var analytic float64
			plus := append([]float32(nil), host...)
			minus := append([]float32(nil), host...)
			for i := range dir {
				dir[i] /= math.Sqrt(norm)
				analytic += dir[i] * float64(grad[tn.Offset+i])
				plus[tn.Offset+i] += float32(eps * dir[i])
				minus[tn.Offset+i] -= float32(eps * dir[i])
			}
			fd := (loss(plus) - loss(minus)) / (2 * eps)
			// The noise floor: a row's NLL sums float32 token losses
			// (~3e-6 absolute), which the difference quotient turns
			// into ~1e-4.
			if math.Abs(fd-analytic) > 2e-2*math.Abs(fd)+2e-4 {
				t.Errorf("%s %s: directional derivative %.6g by finite differences, %.6g by backward", pc.Objective, tn.Name, fd, analytic)
			}
			if math.Abs(fd) > 1e-2 {
				large++
			}
		}
		if large < len(policy.Layout.Tensors)/2 {
			t.Errorf("%s: only %d of %d tensors have a derivative above the noise: the check says little", pc.Objective, large, len(policy.Layout.Tensors))
		}
	}
}

// Bad preference batches and settings are refused with what is wrong.
func TestPreferenceErrors(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 1})
	m := newTiny(t, be)
	tokens, targets := prefBatch(m.Config, 2, 8)
	if _, err := m.PreferenceForward(nil, tokens, targets, 4, 8, PrefConfig{Objective: ObjectiveDPO, Beta: 0.1}, false); err == nil {
		t.Fatal("DPO without a reference model ran")
	}
	if _, err := m.PreferenceForward(nil, tokens[:24], targets[:24], 3, 8, PrefConfig{Objective: ObjectiveSimPO, Beta: 1}, false); err == nil {
		t.Fatal("an odd number of rows ran")
	}
	for _, pc := range []PrefConfig{{Objective: "ppo", Beta: 1}, {Objective: ObjectiveDPO}, {Objective: ObjectiveSimPO, Beta: 1, Gamma: -1},
		{Objective: ObjectiveDPO, Beta: 1, Alpha: -0.5}, {Objective: ObjectiveDPO, Beta: 1, Alpha: math.NaN()}} {
		if err := pc.Validate(); err == nil {
			t.Errorf("%+v validated", pc)
		}
	}
	for i := range 8 {
		targets[i] = kernels.IgnoreIndex // pair 0's chosen answer has no targets
	}
	if _, err := m.PreferenceForward(nil, tokens, targets, 4, 8, PrefConfig{Objective: ObjectiveSimPO, Beta: 1}, false); err == nil {
		t.Fatal("a pair without an answer ran")
	}
}
