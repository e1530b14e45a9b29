package model

import (
	"fmt"

	"github.com/fomnet/fomnet/kernels"
)

// accum holds what Accumulate keeps across a batch's slices: every slice's
// gradient of the embedding lookup and all the batch's tokens, so that the
// embedding's gradient is added once, in token order, as one pass over the
// whole batch adds it.
type accum struct {
	dres   kernels.Buffer    // [B·T, Dim]
	tokens kernels.IntBuffer // [B·T]
}

// Accumulate adds to Grads the gradient of the mean cross-entropy of a b×t
// batch and returns that mean, running the batch in micro slices of b/micro
// rows: the activations held are a slice's, not the batch's. Loss and
// gradients are bit-identical to Forward with gradient then Backward on the
// whole batch, whatever micro: rows are independent through the forward
// pass, the loss gradient is scaled by the whole batch's target count, every
// weight gradient is one chain over tokens in order that each slice
// continues (the kernels' contract), and the embedding's gradient — whose
// buffer the output head shares when tied — is added after the last slice,
// over all tokens in order. Grads are added to, as Backward does; micro
// must divide b.
func (m *Model) Accumulate(tokens, targets []int32, b, t, micro int) (float32, error) {
	if err := m.checkBatch(tokens, targets, b, t); err != nil {
		return 0, err
	}
	if targets == nil || micro <= 0 || b%micro != 0 {
		return 0, fmt.Errorf("%w: accumulating a %d-row batch in %d micro-batches needs targets and a micro count that divides the rows", ErrBatch, b, micro)
	}
	count := countTargets(targets)
	if micro == 1 { // the losses are read once the backward pass is queued
		m.forward(tokens, targets, b, t, true, count)
		if err := m.Backward(); err != nil {
			return 0, err
		}
		var sum float64
		if err := m.addLosses(&sum); err != nil {
			return 0, err
		}
		return meanLoss(sum, count)
	}
	c, be := m.Config, m.be
	rows := b / micro
	step := rows * t
	if m.acc == nil || m.acc.tokens.Len() != b*t {
		m.acc = nil // let the old buffers go before allocating the new
		m.acc = &accum{dres: be.Alloc(b * t * c.Dim), tokens: be.AllocInt(b * t)}
	}
	var sum float64
	for i := 0; i < micro; i++ {
		sl := tokens[i*step : (i+1)*step]
		m.forward(sl, targets[i*step:(i+1)*step], rows, t, true, count)
		if err := m.backward(); err != nil {
			return 0, err
		}
		be.Copy(be.View(m.acc.dres, i*step*c.Dim, step*c.Dim), m.act.dres)
		if err := m.addLosses(&sum); err != nil {
			return 0, err
		}
	}
	be.UploadInt(m.acc.tokens, tokens)
	be.EmbeddingBackward(m.g.embed, m.acc.dres, m.acc.tokens, b*t, c.Dim)
	if err := kernels.Err(be); err != nil {
		return 0, err
	}
	return meanLoss(sum, count)
}
