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
	if len(delta) != len(e.Residual) {
		panic("gradsync: ErrorFeedback.Encode: length mismatch")
	}
	// v lives only here: a worker holds one residual per partition, not
	// three (the demo's four nodes kept 155 MiB of such scratch).
	v := make([]float32, len(delta))
	for i, d := range delta {
		v[i] = d + e.Residual[i]
	}
	start := len(dst)
	dst = e.Codec.Encode(dst, v)
	if err := e.Codec.Decode(e.Residual, dst[start:]); err != nil {
		panic("gradsync: codec cannot decode its own output: " + err.Error())
	}
	for i := range v {
		e.Residual[i] = v[i] - e.Residual[i]
	}
	return dst
}
