package gradsync

// ErrorFeedback keeps, for one worker, what its codec did not send, and
// adds it to the next round's pseudo-gradient: v = Δ + residual; send
// encode(v); residual = v − decode(encode(v)). Over rounds nothing is lost,
// only delayed. The residual is worker state: it must be saved with the
// node and restored after a restart.
type ErrorFeedback struct {
	Codec    Codec
	Residual []float32
	v, dec   []float32
}

// NewErrorFeedback starts with a zero residual for n elements.
func NewErrorFeedback(c Codec, n int) *ErrorFeedback {
	return &ErrorFeedback{Codec: c, Residual: make([]float32, n), v: make([]float32, n), dec: make([]float32, n)}
}

// Encode appends the encoding of delta + residual to dst and updates the
// residual.
func (e *ErrorFeedback) Encode(dst []byte, delta []float32) []byte {
	if len(delta) != len(e.Residual) {
		panic("gradsync: ErrorFeedback.Encode: length mismatch")
	}
	for i, d := range delta {
		e.v[i] = d + e.Residual[i]
	}
	start := len(dst)
	dst = e.Codec.Encode(dst, e.v)
	if err := e.Codec.Decode(e.dec, dst[start:]); err != nil {
		panic("gradsync: codec cannot decode its own output: " + err.Error())
	}
	for i := range e.v {
		e.Residual[i] = e.v[i] - e.dec[i]
	}
	return dst
}
