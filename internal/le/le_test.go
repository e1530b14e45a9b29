package le

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// WriteFloats writes what encoding/binary writes, across chunk boundaries,
// as the machine's own bytes and converted (as on a big-endian machine).
func TestWriteFloats(t *testing.T) {
	defer func(was bool) { native = was }(native)
	for _, native = range []bool{native, false} {
		testWriteFloats(t)
	}
}

func testWriteFloats(t *testing.T) {
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
			t.Fatalf("%d floats (native %v): the bytes differ from encoding/binary's", n, native)
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

// WriteFilled asks for the elements in order, a chunk at a time, writes
// what WriteFloats writes, and stops at fill's error.
func TestWriteFilled(t *testing.T) {
	for _, n := range []int{0, 5, FillChunk, FillChunk + 3} {
		want := make([]float32, n)
		for i := range want {
			want[i] = float32(i)*0.37 - 11
		}
		var got, ref bytes.Buffer
		next := 0
		err := WriteFilled(&got, n, func(off int, dst []float32) error {
			if off != next || len(dst) == 0 || len(dst) > FillChunk {
				t.Fatalf("%d elements: asked for %d from %d, want from %d", n, len(dst), off, next)
			}
			next += copy(dst, want[off:])
			return nil
		})
		if err != nil || next != n {
			t.Fatalf("%d elements: %v after %d", n, err, next)
		}
		WriteFloats(&ref, want)
		if !bytes.Equal(got.Bytes(), ref.Bytes()) {
			t.Fatalf("%d elements: the bytes differ from WriteFloats'", n)
		}
	}
	stop := errors.New("stop")
	if err := WriteFilled(&bytes.Buffer{}, 9, func(int, []float32) error { return stop }); err != stop {
		t.Fatalf("fill's error: got %v", err)
	}
}

// copier copies what it is given into its bytes, from the start, as a
// file's write copies into the kernel.
type copier []byte

func (c copier) Write(p []byte) (int, error) { return copy(c, p), nil }

// BenchmarkFloats: 16M floats written into memory and read from it, as the
// machine's bytes and converted a chunk at a time.
func BenchmarkFloats(b *testing.B) {
	defer func(was bool) { native = was }(native)
	x := make([]float32, 1<<24)
	raw := make([]byte, 4*len(x))
	for _, nat := range []bool{true, false} {
		name := map[bool]string{true: "native", false: "converted"}[nat]
		b.Run("write/"+name, func(b *testing.B) {
			native = nat
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				WriteFloats(copier(raw), x)
			}
		})
		b.Run("read/"+name, func(b *testing.B) {
			native = nat
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				ReadFloats(bytes.NewReader(raw), x)
			}
		})
	}
}
