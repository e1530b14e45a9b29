package le

import (
	"encoding/binary"
	"io"
	"math"
	"unsafe"
)

// chunk is how many bytes WriteFloats converts at a time.
const chunk = 64 << 10

// native is whether this machine stores a float32 as its little-endian
// bytes: then a vector is written and read as the bytes it is made of.
var native = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// bytesOf is x's memory as bytes.
func bytesOf(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

// WriteFloats writes x to w, 4 bytes an element, little-endian.
func WriteFloats(w io.Writer, x []float32) error {
	if native {
		_, err := w.Write(bytesOf(x))
		return err
	}
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

// FillChunk is how many elements WriteFilled asks fill for at a time.
const FillChunk = 1 << 20

// WriteFilled writes n elements that fill produces in order, at most
// FillChunk at a time (dst: the elements from off), so that they are
// never held whole.
func WriteFilled(w io.Writer, n int, fill func(off int, dst []float32) error) error {
	buf := make([]float32, min(n, FillChunk))
	for off := 0; off < n; off += len(buf) {
		part := buf[:min(len(buf), n-off)]
		if err := fill(off, part); err != nil {
			return err
		}
		if err := WriteFloats(w, part); err != nil {
			return err
		}
	}
	return nil
}

// ReadFloats fills x from r, 4 bytes an element, little-endian (an error
// if r ends first: io.ErrUnexpectedEOF, or io.EOF before the first byte).
func ReadFloats(r io.Reader, x []float32) error {
	if native {
		if _, err := io.ReadFull(r, bytesOf(x)); err != nil {
			return err
		}
		return nil
	}
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
