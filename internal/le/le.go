package le

import (
	"encoding/binary"
	"io"
	"math"
)

// chunk is how many bytes WriteFloats converts at a time.
const chunk = 64 << 10

// WriteFloats writes x to w, 4 bytes an element, little-endian.
func WriteFloats(w io.Writer, x []float32) error {
	var buf [chunk]byte
	for len(x) > 0 {
		n := min(len(x), chunk/4)
		for i, v := range x[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		if _, err := w.Write(buf[:4*n]); err != nil {
			return err
		}
		x = x[n:]
	}
	return nil
}

// ReadFloats fills x from r, 4 bytes an element, little-endian (an error
// if r ends first: io.ErrUnexpectedEOF, or io.EOF before the first byte).
func ReadFloats(r io.Reader, x []float32) error {
	var buf [chunk]byte
	for len(x) > 0 {
		n := min(len(x), chunk/4)
		if _, err := io.ReadFull(r, buf[:4*n]); err != nil {
			return err
		}
		for i := range x[:n] {
			x[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
		x = x[n:]
	}
	return nil
}
