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
		back := make([]float32, n)
		if err := ReadFloats(bytes.NewReader(want.Bytes()), back); err != nil {
			t.Fatal(err)
		}
		for i := range x {
			if math.Float32bits(back[i]) != math.Float32bits(x[i]) {
				t.Fatalf("%d floats: element %d read back as %v, not %v", n, i, back[i], x[i])
			}
		}
		if n > 0 && ReadFloats(bytes.NewReader(want.Bytes()[:4*n-1]), back) == nil {
			t.Fatalf("%d floats: read from a byte short", n)
		}
	}
}
