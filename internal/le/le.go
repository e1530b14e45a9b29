// Package le writes float32 vectors little-endian, the byte order of every
// file fomnet writes, a chunk at a time: a large model's vector streams to
// its file without being held a second time as bytes. (encoding/binary's
// Write would convert the whole vector into one buffer first.)
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
