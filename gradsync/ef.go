package gradsync

// ErrorFeedback keeps, for one worker, what its codec did not send, and
// adds it to the next round's pseudo-gradient: v = Δ + residual; send
// encode(v); residual = v − decode(encode(v)). Over rounds nothing is lost,
// only delayed. The residual is worker state: it must be saved with the
// node and restored after a restart.
type ErrorFeedback struct {
	Codec    Codec
	Residual []float32
}

// NewErrorFeedback starts with a zero residual for n elements.
func NewErrorFeedback(c Codec, n int) *ErrorFeedback {
	return &ErrorFeedback{Codec: c, Residual: make([]float32, n)}
}

// Encode appends the encoding of delta + residual to dst and updates the
// residual.
func (e *ErrorFeedback) Encode(dst []byte, delta []float32) []byte {
	return e.encode(dst, delta, false)
}

// EncodeSent is Encode that also leaves in delta what the encoding decodes
// to — the values every receiver applies, bit for bit — for a caller that
// needs them at once (an overlapped round's next start) without decoding
// again: Encode decodes its own output anyway to keep the residual.
func (e *ErrorFeedback) EncodeSent(dst []byte, delta []float32) []byte {
	return e.encode(dst, delta, true)
}

func (e *ErrorFeedback) encode(dst []byte, delta []float32, sent bool) []byte {
	if len(delta) != len(e.Residual) {
		panic("gradsync: ErrorFeedback.Encode: length mismatch")
	}
	// v lives only here: a worker holds one residual per partition, not
	// three (the demo's four nodes kept 155 MiB of such scratch); where
	// delta is given back, v is computed in it.
	v := delta
	if !sent {
		v = make([]float32, len(delta))
	}
	for i, d := range delta {
		v[i] = d + e.Residual[i]
	}
	start := len(dst)
	dst = e.Codec.Encode(dst, v)
	if err := e.Codec.Decode(e.Residual, dst[start:]); err != nil {
		panic("gradsync: codec cannot decode its own output: " + err.Error())
	}
	for i, d := range e.Residual {
		e.Residual[i] = v[i] - d
		if sent {
			delta[i] = d
		}
	}
	return dst
}
