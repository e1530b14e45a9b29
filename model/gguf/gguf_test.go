package gguf

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestHalfKnownAnswers(t *testing.T) {
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{1, 0x3C00}, {-2, 0xC000}, {0.5, 0x3800}, {65504, 0x7BFF}, {65520, 0x7C00}, {1e6, 0x7C00},
		{float32(math.Ldexp(1, -14)), 0x0400}, {float32(math.Ldexp(1, -24)), 0x0001}, {float32(math.Ldexp(1, -26)), 0x0000},
		{0.1, 0x2E66}, {0.33333334, 0x3555}, {float32(math.Inf(-1)), 0xFC00}, {0, 0}, {float32(math.Copysign(0, -1)), 0x8000},
		{1 + float32(math.Ldexp(1, -11)), 0x3C00}, // a tie: to even
		{1 + 3*float32(math.Ldexp(1, -11)), 0x3C02},
	} {
		if got := F32ToF16(c.f); got != c.h {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if h := F32ToF16(float32(math.NaN())); h&0x7C00 != 0x7C00 || h&0x3FF == 0 {
		t.Errorf("NaN → %#04x", h)
	}
	for _, c := range []struct {
		f float32
		h uint16
	}{{1, 0x3F80}, {-1, 0xBF80}, {math.Float32frombits(0x3F808000), 0x3F80}, {math.Float32frombits(0x3F818000), 0x3F82}, {math.Float32frombits(0x3F808001), 0x3F81}} {
		if got := F32ToBF16(c.f); got != c.h {
			t.Errorf("F32ToBF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
}

// Every half widens and narrows back to itself; narrowing picks the
// nearest half, checked against its neighbours in float64.
func TestHalfRoundTripAndNearest(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if f != f {
			continue
		}
		if got := F32ToF16(f); got != uint16(h) {
			t.Fatalf("%#04x → %g → %#04x", h, f, got)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		x := float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(9)-5)))
		h := F32ToF16(x)
		if h&0x7C00 == 0x7C00 {
			continue
		}
		err := math.Abs(float64(F16ToF32(h)) - float64(x))
		for _, n := range []uint16{h - 1, h + 1} {
			if n&0x7C00 == 0x7C00 || (n^h)&0x8000 != 0 {
				continue
			}
			if e := math.Abs(float64(F16ToF32(n)) - float64(x)); e < err {
				t.Fatalf("F32ToF16(%g) = %#04x (error %g), but %#04x is nearer (%g)", x, h, err, n, e)
			}
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, 4*Q8Block)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	x[5] = 0
	for _, typ := range []Type{F32, F16, BF16, Q8_0} {
		b, err := Encode(typ, x)
		if err != nil {
			t.Fatal(err)
		}
		y, err := Decode(typ, b, len(x))
		if err != nil {
			t.Fatal(err)
		}
		for blk := 0; blk < len(x); blk += Q8Block {
			var amax float64
			for _, v := range x[blk : blk+Q8Block] {
				amax = max(amax, math.Abs(float64(v)))
			}
			for i := blk; i < blk+Q8Block; i++ {
				var bound float64
				switch typ {
				case F16:
					bound = math.Abs(float64(x[i])) * math.Ldexp(1, -11)
				case BF16:
					bound = math.Abs(float64(x[i])) * math.Ldexp(1, -8)
				case Q8_0:
					bound = amax/127/2*(1+1e-3) + amax*1e-3 // half a step, plus the f16 scale's rounding
				}
				if d := math.Abs(float64(y[i]) - float64(x[i])); d > bound {
					t.Fatalf("%s: value %d: %g → %g (error %g > bound %g)", typ, i, x[i], y[i], d, bound)
				}
			}
		}
	}
	if _, err := Encode(Q8_0, x[:31]); err == nil {
		t.Fatal("Q8_0 of 31 values accepted")
	}
}

func sampleFile(t testing.TB) ([]byte, []KV, []Tensor) {
	kvs := []KV{
		{"general.architecture", "llama"}, {"u8", uint8(7)}, {"i8", int8(-3)}, {"u16", uint16(600)}, {"i16", int16(-600)},
		{"u32", uint32(1 << 30)}, {"i32", int32(-5)}, {"u64", uint64(1 << 40)}, {"i64", int64(-1 << 40)},
		{"f32", float32(1.5)}, {"f64", 2.25}, {"yes", true}, {"tokens", []string{"a", "ĠKorean", "한"}},
		{"types", []int32{1, 3, 6}}, {"scores", []float32{0, -1.5}},
	}
	w, _ := Encode(F32, []float32{1, 2, 3, 4, 5, 6})
	q := make([]float32, 64)
	for i := range q {
		q[i] = float32(i) - 30
	}
	qb, _ := Encode(Q8_0, q)
	hb, _ := Encode(F16, []float32{0.5, -0.25})
	tensors := []Tensor{{"w", []uint64{3, 2}, F32, w}, {"q", []uint64{32, 2}, Q8_0, qb}, {"h", []uint64{2}, F16, hb}}
	var buf bytes.Buffer
	if err := Write(&buf, kvs, tensors, 0); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), kvs, tensors
}

func TestWriteRead(t *testing.T) {
	b, kvs, tensors := sampleFile(t)
	f, err := Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || len(f.Keys) != len(kvs) || f.Alignment != 32 {
		t.Fatalf("%s, keys %v", f, f.Keys)
	}
	for i, kv := range kvs {
		if f.Keys[i] != kv.Key {
			t.Fatalf("key %d: %s, want %s", i, f.Keys[i], kv.Key)
		}
		got := f.KV[kv.Key]
		want := kv.Value
		if rv := reflect.ValueOf(want); rv.Kind() == reflect.Slice {
			var w []any
			for j := 0; j < rv.Len(); j++ {
				w = append(w, rv.Index(j).Interface())
			}
			want = w
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %#v, want %#v", kv.Key, got, want)
		}
	}
	for _, want := range tensors {
		got, ok := f.Tensor(want.Name)
		if !ok || !reflect.DeepEqual(got.Dims, want.Dims) || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("tensor %s: %+v", want.Name, got)
		}
	}
	// Known bytes: magic, version, counts, the first key.
	if string(b[:4]) != "GGUF" || b[4] != 3 || b[8] != 3 || b[16] != byte(len(kvs)) || string(b[32:52]) != "general.architecture" {
		t.Fatalf("header bytes % x", b[:56])
	}
	// Tensor data starts aligned; each tensor too.
	for _, tn := range f.Tensors {
		start := bytes.Index(b, tn.Data)
		if start%32 != 0 {
			t.Errorf("tensor %s at byte %d", tn.Name, start)
		}
	}
	// Same input, same bytes.
	again, _, _ := sampleFile(t)
	if !bytes.Equal(b, again) {
		t.Fatal("output not deterministic")
	}
}

func TestReadRejects(t *testing.T) {
	b, _, _ := sampleFile(t)
	cases := map[string][]byte{
		"not a GGUF":   append([]byte("GGML"), b[4:]...),
		"version 2":    append(append(append([]byte{}, b[:4]...), 2, 0, 0, 0), b[8:]...),
		"truncated":    b[:len(b)-5],
		"header only":  b[:30],
		"huge count":   append(append(append([]byte{}, b[:8]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), b[16:]...),
		"empty":        nil,
		"string chars": bytes.Replace(b, []byte{20, 0, 0, 0, 0, 0, 0, 0, 'g'}, []byte{20, 0, 0, 0, 0, 0, 0, 0x10, 'g'}, 1),
	}
	for name, c := range cases {
		if _, err := Read(c); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "gguf:") {
			t.Errorf("%s: error %q does not say gguf", name, err)
		}
	}
	if err := Write(&bytes.Buffer{}, nil, []Tensor{{"x", []uint64{3}, F32, make([]byte, 8)}}, 0); err == nil {
		t.Error("Write accepted 8 bytes for 3 F32 values")
	}
	if err := Write(&bytes.Buffer{}, []KV{{"a", 1}, {"a", 2}}, nil, 0); err == nil {
		t.Error("Write accepted a repeated key")
	}
	if err := Write(&bytes.Buffer{}, []KV{{"a", map[string]int{}}}, nil, 0); err == nil {
		t.Error("Write accepted a map value")
	}
}

func FuzzRead(f *testing.F) {
	b, _, _ := sampleFile(f)
	f.Add(b)
	f.Add(b[:100])
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Read(b)
		if err != nil {
			return
		}
		for _, tn := range g.Tensors {
			if _, err := Decode(tn.Type, tn.Data, int(tn.Elements())); err != nil && (tn.Type == F32 || tn.Type == F16 || tn.Type == BF16 || tn.Type == Q8_0) {
				t.Fatalf("accepted tensor %s does not decode: %v", tn.Name, err)
			}
		}
	})
}
