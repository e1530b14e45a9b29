package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/fomnet/fomnet/kernels"
)

// Preference objectives: the last stage of KORMo's recipe teaches the
// model to prefer one answer over another. A batch holds P pairs: rows
// 0..P−1 the chosen answers, rows P..2P−1 the rejected answers to the same
// prompts, each a whole conversation whose targets are IgnoreIndex outside
// the answer. What a pair's loss sees of a row is its log-likelihood
// ℓ = −NLL (the sum over the answer's tokens), so the gradient is the
// cross-entropy's, scaled row by row by ∂loss/∂NLL: one forward and one
// backward pass of the policy, on every backend, with no new kernel.
//
//   - DPO (Rafailov et al.): z = β·((ℓc − ℓc_ref) − (ℓr − ℓr_ref)) with
//     the reference ℓ from the frozen stage base; loss = −log σ(z).
//   - SimPO (Meng et al.): z = β·(ℓc/|c| − ℓr/|r|) − γ, length-normalised
//     and reference-free; loss = −log σ(z).
//
// Either may add α times the chosen answer's mean per-token NLL
// (ℓc/|c| negated) to the pair's loss, as RPO and Llama 3's preference
// stage do: the pairwise loss alone can raise the margin by lowering the
// chosen answer's likelihood too, and the model then stops giving it (on
// the demo the SFT model's exact-match fell from ~70% to ~55% under pure
// DPO at any learning rate tried); the NLL term keeps the chosen answer
// likely while the margin grows.
//
// SimPO is the reference-free option because it needs no second model:
// a volunteer's memory holds one copy of the weights, which is what lets a
// 10B model fit where DPO's policy-plus-reference would not; it also does
// not favour long answers, since ℓ is per token.
const (
	ObjectiveDPO   = "dpo"
	ObjectiveSimPO = "simpo"
)

// PrefConfig chooses the objective and its constants.
type PrefConfig struct {
	Objective string
	Beta      float64 // the inverse temperature β (> 0)
	Gamma     float64 // SimPO's target margin γ (≥ 0; unused by DPO)
	// Alpha weighs the chosen answer's mean per-token NLL added to the
	// loss (≥ 0; 0: the pairwise loss alone).
	Alpha float64
}

// Validate names the field that is out of range.
func (pc PrefConfig) Validate() error {
	switch {
	case pc.Objective != ObjectiveDPO && pc.Objective != ObjectiveSimPO:
		return fmt.Errorf("preference objective %q: want %s or %s", pc.Objective, ObjectiveDPO, ObjectiveSimPO)
	case !(pc.Beta > 0 && pc.Beta < 1e4):
		return fmt.Errorf("preference beta %v: want a positive value", pc.Beta)
	case !(pc.Gamma >= 0 && pc.Gamma < 1e4):
		return fmt.Errorf("preference gamma %v: want a value ≥ 0", pc.Gamma)
	case !(pc.Alpha >= 0 && pc.Alpha < 1e4):
		return fmt.Errorf("preference alpha %v: want a value ≥ 0", pc.Alpha)
	}
	return nil
}

// PrefStats is what a batch of pairs gave: the mean pair loss, the share
// of pairs the model prefers rightly (z > 0 for DPO; the policy's
// normalised likelihood margin above 0 for SimPO) and the mean margin z.
type PrefStats struct {
	Loss, Accuracy, Margin float64
	Pairs                  int
}

// PreferenceForward runs the policy m on a batch of pairs (b rows: b/2
// pairs, as the package's preference comment lays out) and, for DPO, the
// reference ref (frozen, same shape) on the same rows. With grad it leaves
// in m the gradient of the mean pair loss for Backward. ref is unused by
// SimPO and may be nil there.
func (m *Model) PreferenceForward(ref *Model, tokens, targets []int32, b, t int, pc PrefConfig, grad bool) (PrefStats, error) {
	if err := pc.Validate(); err != nil {
		return PrefStats{}, err
	}
	if b%2 != 0 || targets == nil {
		return PrefStats{}, fmt.Errorf("%w: preference batches are pairs of rows with targets; got %d rows", ErrBatch, b)
	}
	if pc.Objective == ObjectiveDPO && ref == nil {
		return PrefStats{}, errors.New("model: DPO needs the reference model")
	}
	if _, err := m.Forward(tokens, targets, b, t, grad); err != nil && !errors.Is(err, ErrNotFinite) {
		return PrefStats{}, err
	}
	nll, n := m.rowNLL(targets, b, t)
	var refNLL []float64
	if pc.Objective == ObjectiveDPO {
		if _, err := ref.Forward(tokens, targets, b, t, false); err != nil && !errors.Is(err, ErrNotFinite) {
			return PrefStats{}, err
		}
		refNLL, _ = ref.rowNLL(targets, b, t)
	}
	P := b / 2
	st := PrefStats{Pairs: P}
	dNLL := make([]float64, b) // ∂(mean loss)/∂NLL of each row
	for p := range P {
		c, r := p, p+P
		if n[c] == 0 || n[r] == 0 {
			return PrefStats{}, fmt.Errorf("%w: pair %d has an answer without targets", ErrBatch, p)
		}
		var z, dc, dr float64 // z and ∂z/∂NLL of chosen and rejected
		switch pc.Objective {
		case ObjectiveDPO:
			z = pc.Beta * ((refNLL[c] - nll[c]) - (refNLL[r] - nll[r]))
			dc, dr = -pc.Beta, pc.Beta
		case ObjectiveSimPO:
			lc, lr := float64(n[c]), float64(n[r])
			z = pc.Beta*(-nll[c]/lc+nll[r]/lr) - pc.Gamma
			dc, dr = -pc.Beta/lc, pc.Beta/lr
		}
		// loss = −log σ(z) + α·NLLc/|c|; ∂(−log σ(z))/∂z = −σ(−z).
		st.Loss += (softplus(-z) + pc.Alpha*nll[c]/float64(n[c])) / float64(P)
		st.Margin += z / float64(P)
		if z > 0 || (pc.Objective == ObjectiveSimPO && z+pc.Gamma > 0) {
			st.Accuracy += 1 / float64(P)
		}
		g := -sigmoid(-z) / float64(P)
		dNLL[c], dNLL[r] = g*dc+pc.Alpha/(float64(n[c])*float64(P)), g*dr
	}
	if math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
		return st, fmt.Errorf("%w: preference loss %v", ErrNotFinite, st.Loss)
	}
	if grad {
		m.scaleRowGrads(dNLL, t)
	}
	return st, kernels.Err(m.be)
}

// rowNLL sums the last forward's per-token losses by row: each row's
// negative log-likelihood and how many targets it counted.
func (m *Model) rowNLL(targets []int32, b, t int) ([]float64, []int) {
	a := m.act
	nll, n := make([]float64, b), make([]int, b)
	for i, v := range targets {
		if v != kernels.IgnoreIndex {
			nll[i/t] += float64(a.hostLoss[i])
			n[i/t]++
		}
	}
	return nll, n
}

// scaleRowGrads turns the last forward's gradient of the mean token loss
// into that of Σ_rows w[row]·NLL(row): each row's dlogits are multiplied
// by w[row]·count (the forward divided them by the count of targets).
func (m *Model) scaleRowGrads(w []float64, t int) {
	a, v := m.act, m.Config.Vocab
	for row, wr := range w {
		m.be.Scale(m.be.View(a.logits, row*t*v, t*v), float32(wr*float64(a.count)))
	}
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// softplus is log(1 + eˣ), without overflow.
func softplus(x float64) float64 {
	if x > 30 {
		return x
	}
	return math.Log1p(math.Exp(x))
}
