package le

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// WriteFloats writes what encoding/binary writes, across chunk boundaries.
func TestWriteFloats(t *testing.T) {
	for _, n := range []int{0, 1, chunk/4 - 1, chunk / 4, chunk/4 + 1, 3*chunk/4 + 7} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i)*0.37 - 11
		}
		copy(x, []float32{float32(math.Inf(-1)), float32(math.NaN()), float32(math.Copysign(0, -1))})
		var got, want bytes.Buffer
		if err := WriteFloats(&got, x); err != nil {
			t.Fatal(err)
		}
		binary.Write(&want, binary.LittleEndian, x)
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("%d floats: the bytes differ from encoding/binary's", n)
		}
	}
}
