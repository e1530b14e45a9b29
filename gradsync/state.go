package gradsync

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/fomnet/fomnet/internal/le"
)

// State encodings, for checkpoints and a node's saved state. Format
// (little-endian): 4-byte magic, float32 lr, float32 momentum (outer state
// only), uint32 n, n float32 values. Decoders check every size and reject
// non-finite values.

const (
	magicOuter    = "GOS\x01"
	magicResidual = "GER\x01"
)

func appendFloats(dst []byte, x []float32) []byte {
	dst = slices.Grow(dst, 4+4*len(x))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(x)))
	for _, v := range x {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

func readFloats(b []byte, what string) ([]float32, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: %s: length missing", ErrDecode, what)
	}
	n := int(binary.LittleEndian.Uint32(b))
	if len(b)-4 != 4*n {
		return nil, fmt.Errorf("%w: %s: %d bytes for %d values", ErrDecode, what, len(b)-4, n)
	}
	out := make([]float32, n)
	for i := range out {
		v := math.Float32frombits(binary.LittleEndian.Uint32(b[4+4*i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%w: %s: non-finite value at %d", ErrDecode, what, i)
		}
		out[i] = v
	}
	return out, nil
}

// WriteTo writes what MarshalBinary returns, the momentum streamed (a large
// model's is never held twice).
func (o *OuterOptimizer) WriteTo(w io.Writer) (int64, error) {
	if _, err := w.Write(outerHeader(o.LR, o.Momentum, len(o.Buf))); err != nil {
		return 0, err
	}
	if err := le.WriteFloats(w, o.Buf); err != nil {
		return 0, err
	}
	return 16 + 4*int64(len(o.Buf)), nil
}

// WriteOuter writes WriteTo's bytes for an optimizer of settings lr and mu
// and n momenta that fill produces a chunk at a time, in order (dst: the
// momenta from off): a large model's need never be held whole.
func WriteOuter(w io.Writer, lr, mu float32, n int, fill func(off int, dst []float32) error) error {
	if _, err := w.Write(outerHeader(lr, mu, n)); err != nil {
		return err
	}
	return le.WriteFilled(w, n, fill)
}

// outerHeader is the outer state's header: magic, lr, μ, n.
func outerHeader(lr, mu float32, n int) []byte {
	h := append([]byte(magicOuter), make([]byte, 12)...)
	binary.LittleEndian.PutUint32(h[4:], math.Float32bits(lr))
	binary.LittleEndian.PutUint32(h[8:], math.Float32bits(mu))
	binary.LittleEndian.PutUint32(h[12:], uint32(n))
	return h
}

// readOuterHeader checks h, an outer state's header, for n momenta and
// returns its settings.
func readOuterHeader(h []byte, n int) (lr, mu float32, err error) {
	if len(h) < 16 || string(h[:4]) != magicOuter {
		return 0, 0, fmt.Errorf("%w: outer optimizer state: want magic %q", ErrDecode, magicOuter)
	}
	lr = math.Float32frombits(binary.LittleEndian.Uint32(h[4:]))
	mu = math.Float32frombits(binary.LittleEndian.Uint32(h[8:]))
	if err := checkOuter(lr, mu); err != nil {
		return 0, 0, err
	}
	if m := binary.LittleEndian.Uint32(h[12:]); int64(m) != int64(n) {
		return 0, 0, fmt.Errorf("%w: outer optimizer momentum: %d values, want %d", ErrDecode, m, n)
	}
	return lr, mu, nil
}

// ReadFrom reads what WriteTo wrote into o, whose momentum must already
// have the length the bytes declare, a chunk at a time, checked as
// UnmarshalBinary checks it (r must end there).
func (o *OuterOptimizer) ReadFrom(r io.Reader) (int64, error) {
	h := make([]byte, 16)
	if _, err := io.ReadFull(r, h); err != nil {
		return 0, fmt.Errorf("%w: outer optimizer state: want magic %q", ErrDecode, magicOuter)
	}
	lr, mu, err := readOuterHeader(h, len(o.Buf))
	if err != nil {
		return 0, err
	}
	if err := readMomenta(r, o.Buf, 0); err != nil {
		return 0, err
	}
	if n, _ := r.Read(h[:1]); n != 0 {
		return 0, fmt.Errorf("%w: outer optimizer state: trailing bytes", ErrDecode)
	}
	o.LR, o.Momentum = lr, mu
	return int64(len(h)) + 4*int64(len(o.Buf)), nil
}

// readMomenta reads len(dst) momenta from r into dst, each finite (off:
// where dst starts, for the error).
func readMomenta(r io.Reader, dst []float32, off int) error {
	if err := le.ReadFloats(r, dst); err != nil {
		return fmt.Errorf("%w: outer optimizer momentum: %v", ErrDecode, err)
	}
	for i, v := range dst {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: outer optimizer momentum: non-finite value at %d", ErrDecode, off+i)
		}
	}
	return nil
}

// OuterReader reads the momenta of a state WriteTo wrote a range at a
// time (a large model's need never be held whole), checked as ReadFrom
// checks them: the header and the size when opened, each value as read.
type OuterReader struct {
	r            io.ReaderAt
	LR, Momentum float32
	n            int
}

// NewOuterReader checks r, size bytes long, for a state of n momenta.
func NewOuterReader(r io.ReaderAt, size int64, n int) (*OuterReader, error) {
	h := make([]byte, 16)
	if _, err := r.ReadAt(h, 0); err != nil {
		return nil, fmt.Errorf("%w: outer optimizer state: want magic %q", ErrDecode, magicOuter)
	}
	lr, mu, err := readOuterHeader(h, n)
	if err != nil {
		return nil, err
	}
	if size != 16+4*int64(n) {
		return nil, fmt.Errorf("%w: outer optimizer state: %d bytes, not a header and the %d momenta it declares", ErrDecode, size, n)
	}
	return &OuterReader{r: r, LR: lr, Momentum: mu, n: n}, nil
}

// ReadAt reads momenta [off, off+len(dst)) into dst.
func (o *OuterReader) ReadAt(dst []float32, off int) error {
	if off < 0 || off+len(dst) > o.n {
		return fmt.Errorf("outer optimizer momentum: [%d, %d) of %d", off, off+len(dst), o.n)
	}
	return readMomenta(io.NewSectionReader(o.r, 16+4*int64(off), 4*int64(len(dst))), dst, off)
}

// checkOuter checks an outer optimizer's settings as decoded.
func checkOuter(lr, mu float32) error {
	if !(lr > 0) || math.IsInf(float64(lr), 0) || !(mu >= 0 && mu < 1) {
		return fmt.Errorf("%w: outer optimizer state: lr %v, momentum %v out of range", ErrDecode, lr, mu)
	}
	return nil
}

// MarshalBinary encodes the outer optimizer's settings and momentum
// (WriteTo's bytes).
func (o *OuterOptimizer) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(16 + 4*len(o.Buf))
	_, err := o.WriteTo(&b)
	return b.Bytes(), err
}

// UnmarshalBinary restores what MarshalBinary wrote, its momentum as long
// as the bytes say (ReadFrom's checks).
func (o *OuterOptimizer) UnmarshalBinary(b []byte) error {
	n := int64(-1)
	if len(b) >= 16 {
		n = int64(binary.LittleEndian.Uint32(b[12:]))
	}
	if n < 0 || int64(len(b)-16) != 4*n {
		return fmt.Errorf("%w: outer optimizer state: %d bytes, not a header and the momenta it declares", ErrDecode, len(b))
	}
	c := OuterOptimizer{Buf: make([]float32, n)}
	if _, err := c.ReadFrom(bytes.NewReader(b)); err != nil {
		return err
	}
	o.LR, o.Momentum, o.Buf = c.LR, c.Momentum, c.Buf
	return nil
}

// MarshalBinary encodes the error-feedback residual (the codec is part of
// the run's configuration, not of this state).
func (e *ErrorFeedback) MarshalBinary() ([]byte, error) { return e.AppendBinary(nil) }

// AppendBinary appends what MarshalBinary returns to b.
func (e *ErrorFeedback) AppendBinary(b []byte) ([]byte, error) {
	return appendFloats(append(b, magicResidual...), e.Residual), nil
}

// BinarySize is the length of MarshalBinary's encoding.
func (e *ErrorFeedback) BinarySize() int { return len(magicResidual) + 4 + 4*len(e.Residual) }

// UnmarshalBinary restores a residual of the same length.
func (e *ErrorFeedback) UnmarshalBinary(b []byte) error {
	if len(b) < 4 || string(b[:4]) != magicResidual {
		return fmt.Errorf("%w: error-feedback state: want magic %q", ErrDecode, magicResidual)
	}
	r, err := readFloats(b[4:], "error-feedback residual")
	if err != nil {
		return err
	}
	if len(r) != len(e.Residual) {
		return fmt.Errorf("%w: error-feedback residual of %d values for a %d-value vector", ErrDecode, len(r), len(e.Residual))
	}
	copy(e.Residual, r)
	return nil
}
