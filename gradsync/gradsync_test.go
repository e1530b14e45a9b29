package gradsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	return x
}

func codecs(t testing.TB) []Codec {
	var out []Codec
	for _, name := range []string{"fp32", "int8", "int4", "topk", "int2"} {
		c, err := NewCodec(name, 64, 256, 1.0/16)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func TestCodecRoundTripBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 63, 64, 1000, 4097} {
		x := randVec(r, n, 1)
		x[0] = 0
		for _, c := range codecs(t) {
			b := c.Encode(nil, x)
			if len(b) != c.EncodedLen(n) {
				t.Fatalf("%s n=%d: %d bytes, EncodedLen says %d", c.Name(), n, len(b), c.EncodedLen(n))
			}
			got := make([]float32, n)
			for i := range got {
				got[i] = float32(math.NaN())
			}
			if err := c.Decode(got, b); err != nil {
				t.Fatalf("%s n=%d: %v", c.Name(), n, err)
			}
			switch c := c.(type) {
			case FP32:
				for i := range x {
					if got[i] != x[i] {
						t.Fatalf("fp32 changed element %d", i)
					}
				}
			case Int8:
				checkBlockError(t, "int8", x, got, c.Block, 127)
			case Int4:
				checkBlockError(t, "int4", x, got, c.Block, 7)
			case Int2:
				checkTernary(t, x, got, c.Block)
			case TopK:
				for c0 := 0; c0 < n; c0 += c.Chunk {
					end := min(c0+c.Chunk, n)
					k := c.k(end - c0)
					nz := 0
					var minKept, maxDropped float64 = math.Inf(1), 0
					for i := c0; i < end; i++ {
						if got[i] != 0 {
							nz++
							if (got[i] > 0) != (x[i] > 0) {
								t.Fatalf("topk flipped the sign of %d", i)
							}
							minKept = math.Min(minKept, math.Abs(float64(x[i])))
						} else {
							maxDropped = math.Max(maxDropped, math.Abs(float64(x[i])))
						}
					}
					if nz != k && !(nz == k-1 && x[c0] == 0) {
						t.Fatalf("topk kept %d of chunk at %d, want %d", nz, c0, k)
					}
					if maxDropped > minKept {
						t.Fatalf("topk dropped %g but kept %g", maxDropped, minKept)
					}
				}
			}
		}
	}
}

// checkBlockError: blockwise absmax quantisation to ±levels errs by at most
// half a step, absmax/(2·levels), per element.
func checkBlockError(t *testing.T, name string, x, got []float32, block int, levels float64) {
	t.Helper()
	for b0 := 0; b0 < len(x); b0 += block {
		end := min(b0+block, len(x))
		var amax float64
		for _, v := range x[b0:end] {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		for i := b0; i < end; i++ {
			if e := math.Abs(float64(got[i] - x[i])); e > amax/(2*levels)*1.0001 {
				t.Fatalf("%s error %g at %d exceeds absmax/%v = %g", name, e, i, 2*levels, amax/(2*levels))
			}
		}
	}
}

// checkTernary: each int2 element decodes to 0 or ±(the block's mean
// magnitude), with x's sign, and to 0 exactly when |x| < scale/2.
func checkTernary(t *testing.T, x, got []float32, block int) {
	t.Helper()
	for b0 := 0; b0 < len(x); b0 += block {
		blk := x[b0:min(b0+block, len(x))]
		var sum float64
		for _, v := range blk {
			sum += math.Abs(float64(v))
		}
		scale := float32(sum / float64(len(blk)))
		for i, v := range blk {
			g := got[b0+i]
			switch {
			case math.Abs(float64(v/scale)) < 0.5:
				if g != 0 {
					t.Fatalf("int2 element %d: %v decoded as %v, want 0 (scale %v)", b0+i, v, g, scale)
				}
			case v > 0 && g != scale, v < 0 && g != -scale:
				t.Fatalf("int2 element %d: %v decoded as %v, want ±%v", b0+i, v, g, scale)
			}
		}
	}
}

// TestInt2Malformed: the decoder refuses the code the encoder never writes,
// non-zero padding and bad scales.
func TestInt2Malformed(t *testing.T) {
	c := Int2{Block: 4}
	good := c.Encode(nil, []float32{1, -1, 0.1, 2, 3})
	dst := make([]float32, 5)
	if err := c.Decode(dst, good); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func([]byte){
		"code 2":  func(b []byte) { b[len(b)-2] = 0b10 },
		"padding": func(b []byte) { b[len(b)-1] |= 0b100 },
		"scale":   func(b []byte) { binary.LittleEndian.PutUint32(b[12:], math.Float32bits(float32(math.Inf(1)))) },
		"neg":     func(b []byte) { binary.LittleEndian.PutUint32(b[12:], math.Float32bits(-1)) },
	} {
		b := append([]byte(nil), good...)
		mut(b)
		if err := c.Decode(dst, b); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: %v, want ErrDecode", name, err)
		}
	}
	if err := c.Decode(dst, good[:len(good)-1]); !errors.Is(err, ErrDecode) {
		t.Errorf("short: %v, want ErrDecode", err)
	}
}

func TestBytesPerParam(t *testing.T) {
	const n = 1 << 20
	for name, want := range map[string][2]float64{"fp32": {4, 4.0001}, "int8": {1.0156, 1.0157}, "int4": {0.5156, 0.5157}, "int2": {0.2656, 0.2657}, "topk": {0.056, 0.057}} {
		c, _ := NewCodec(name, 256, 4096, 1.0/32)
		if b := BytesPerParam(c, n); b < want[0] || b > want[1] {
			t.Errorf("%s: %.4f bytes/param, want [%v, %v]", name, b, want[0], want[1])
		}
	}
}

// TestErrorFeedback: over many rounds the decoded sum tracks the true sum;
// the gap is exactly the final residual (nothing is lost, only delayed).
func TestErrorFeedback(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	const n, rounds = 5000, 30
	for _, c := range codecs(t) {
		ef, twin := NewErrorFeedback(c, n), NewErrorFeedback(c, n)
		sumTrue, sumDec := make([]float64, n), make([]float64, n)
		dec := make([]float32, n)
		for i := 0; i < rounds; i++ {
			d := randVec(r, n, 0.01)
			b := ef.Encode(nil, d)
			if err := c.Decode(dec, b); err != nil {
				t.Fatal(err)
			}
			// EncodeSent: the same bytes and residual, and what they decode to.
			sent := slices.Clone(d)
			if tb := twin.EncodeSent(nil, sent); !slices.Equal(tb, b) || !bitsEqual(sent, dec) || !bitsEqual(twin.Residual, ef.Residual) {
				t.Fatalf("%s round %d: EncodeSent differs from Encode then Decode", c.Name(), i)
			}
			for j := range d {
				sumTrue[j] += float64(d[j])
				sumDec[j] += float64(dec[j])
			}
		}
		var gap, resid, tot float64
		for j := range sumTrue {
			gap += math.Abs(sumTrue[j] - sumDec[j] - float64(ef.Residual[j]))
			resid += math.Abs(float64(ef.Residual[j]))
			tot += math.Abs(sumTrue[j])
		}
		if gap > 1e-4*tot {
			t.Errorf("%s: decoded sum misses the true sum by %g beyond the residual", c.Name(), gap)
		}
		if c.Name() == "fp32" && resid != 0 {
			t.Errorf("fp32 left a residual")
		}
		if c.Name() != "fp32" && resid > tot {
			t.Errorf("%s: residual %g grew past the signal %g", c.Name(), resid, tot)
		}
	}
}

func bitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// TestInt4MatchesReference holds Int4 to a plain element-by-element
// version of its format (the one it was written as): the same bytes for
// every input — zero, infinite and NaN blocks, odd lengths, every block
// size — and the same values or the same error from any payload.
func TestInt4MatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 12))
	specials := []float32{0, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e-45, -3e38, 7, -7}
	halves := []float32{7, 3.5, -3.5, 0.5, -0.5, 1.5, -2.5, 6.5, -6.5, 0.49999997, -0.49999997} // ties round away from zero
	if got, want := (Int4{Block: 11}).Encode(nil, halves), int4Reference(11, halves); !slices.Equal(got, want) {
		t.Fatalf("ties: % x, reference % x", got, want)
	}
	for _, block := range []int{1, 2, 3, 64, 256} {
		for _, n := range []int{0, 1, 2, 3, 7, 255, 256, 257, 1001} {
			c := Int4{Block: block}
			for trial := range 4 {
				x := randVec(r, n, math.Pow(10, float64(r.IntN(8)-6)))
				for i := range x {
					switch {
					case trial == 1 && (i/block)%3 == 0:
						x[i] = 0 // whole zero blocks
					case trial >= 2 && r.IntN(50) == 0:
						x[i] = specials[r.IntN(len(specials))]
					}
				}
				got, want := c.Encode(nil, x), int4Reference(block, x)
				if !slices.Equal(got, want) {
					t.Fatalf("block %d, n %d, trial %d: encoding differs from the reference", block, n, trial)
				}
				if trial == 3 && len(got) > 12 { // and any payload decodes alike
					for i := 12; i < len(got); i++ {
						got[i] ^= byte(r.IntN(256))
					}
				}
				a, b := make([]float32, n), make([]float32, n)
				ea, eb := c.Decode(a, got), int4DecodeReference(b, got)
				if fmt.Sprint(ea) != fmt.Sprint(eb) || (ea == nil && !bitsEqual(a, b)) {
					t.Fatalf("block %d, n %d, trial %d: decode %v, reference %v", block, n, trial, ea, eb)
				}
			}
		}
	}
}

func int4Reference(block int, x []float32) []byte {
	dst := header(nil, magicInt4, len(x))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(block))
	var scales []float32
	for b0 := 0; b0 < len(x); b0 += block {
		var amax float32
		for _, v := range x[b0:min(b0+block, len(x))] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		scales = append(scales, amax/7)
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(amax/7))
	}
	var cur byte
	for i, v := range x {
		var q float64
		if scale := scales[i/block]; scale > 0 {
			q = math.Round(float64(v * (1 / scale)))
		}
		nib := byte(int8(max(-7, min(7, q)))) & 0x0f
		if i%2 == 0 {
			cur = nib
		} else {
			dst = append(dst, cur|nib<<4)
		}
	}
	if len(x)%2 == 1 {
		dst = append(dst, cur)
	}
	return dst
}

func int4DecodeReference(dst []float32, b []byte) error {
	block, p, err := blockPayload(b, magicInt4, "int4", len(dst), (len(dst)+1)/2)
	if err != nil {
		return err
	}
	nb := (len(dst) + block - 1) / block
	scales, vals := p[:4*nb], p[4*nb:]
	for i := range dst {
		scale := math.Float32frombits(binary.LittleEndian.Uint32(scales[4*(i/block):]))
		if !(scale >= 0) || math.IsInf(float64(scale*7), 0) {
			return fmt.Errorf("%w: int4 block of element %d has scale %v", ErrDecode, i, scale)
		}
		nib := vals[i/2]
		if i%2 == 1 {
			nib >>= 4
		}
		q := int8(nib<<4) >> 4
		if q == -8 {
			return fmt.Errorf("%w: int4 value -8 at %d (the encoder never writes it)", ErrDecode, i)
		}
		dst[i] = float32(q) * scale
	}
	if len(dst)%2 == 1 && vals[len(vals)-1]>>4 != 0 {
		return fmt.Errorf("%w: int4 padding nibble is not zero", ErrDecode)
	}
	return nil
}

func TestDecodeRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	x := randVec(r, 300, 1)
	for _, c := range codecs(t) {
		good := c.Encode(nil, x)
		dst := make([]float32, len(x))
		for name, b := range map[string][]byte{
			"empty":     nil,
			"truncated": good[:len(good)-1],
			"extended":  append(append([]byte(nil), good...), 0),
			"magic":     append([]byte("XXXX"), good[4:]...),
		} {
			if err := c.Decode(dst, b); err == nil {
				t.Errorf("%s %s: accepted", c.Name(), name)
			}
		}
		if err := c.Decode(make([]float32, len(x)+1), good); err == nil {
			t.Errorf("%s: wrong destination length accepted", c.Name())
		}
	}
	bad := Int8{Block: 64}.Encode(nil, x)
	bad[16] = 0x80 // -128
	if err := (Int8{Block: 64}).Decode(make([]float32, len(x)), bad); err == nil {
		t.Error("int8 -128 accepted")
	}
}

// FuzzDecode: each decoder rejects or decodes finite values; never panics.
func FuzzDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(4, 4))
	x := randVec(r, 100, 1)
	for i, c := range codecs(f) {
		f.Add(uint8(i), c.Encode(nil, x))
	}
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		cs := codecs(t)
		c := cs[int(which)%len(cs)]
		dst := make([]float32, 100)
		if err := c.Decode(dst, b); err != nil {
			return
		}
		for i, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%s decoded a non-finite value at %d", c.Name(), i)
			}
		}
	})
}

func contribs(r *rand.Rand, k, n int) []Contribution {
	var cs []Contribution
	for i := 0; i < k; i++ {
		cs = append(cs, Contribution{ID: fmt.Sprintf("peer-%d", i), Tokens: int64(1000 + 100*i), Delta: randVec(r, n, 0.1)})
	}
	return cs
}

// TestAggregateOrderIndependent: any arrival order gives the same bits.
func TestAggregateOrderIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	cs := contribs(r, 7, 513)
	for _, agg := range []string{"mean-clip", "trimmed-mean", "centered-clip"} {
		cfg := DefaultConfig()
		cfg.Aggregation = agg
		ref := make([]float32, 513)
		if _, ok := Aggregate(cfg, ref, cs); !ok {
			t.Fatal("no quorum")
		}
		for trial := 0; trial < 5; trial++ {
			p := append([]Contribution(nil), cs...)
			r.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
			got := make([]float32, 513)
			Aggregate(cfg, got, p)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
					t.Fatalf("%s: order changes element %d", agg, i)
				}
			}
		}
	}
}

// weightedMean is the float64 token-weighted mean of the contributions.
func weightedMean(cs []Contribution) []float64 {
	var w float64
	for _, c := range cs {
		w += float64(c.Tokens)
	}
	out := make([]float64, len(cs[0].Delta))
	for _, c := range cs {
		for i, v := range c.Delta {
			out[i] += float64(c.Tokens) / w * float64(v)
		}
	}
	return out
}

// TestMeanClipMatchesReference: without clipping, mean-clip is the
// token-weighted mean (float64 reference).
func TestMeanClipMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	cs := contribs(r, 4, 200)
	cfg := DefaultConfig()
	cfg.Aggregation, cfg.ClipMultiple = "mean-clip", 100
	got := make([]float32, 200)
	rep, _ := Aggregate(cfg, got, cs)
	if rep.Clipped != 0 || len(rep.Included) != 4 {
		t.Fatalf("report %+v", rep)
	}
	want := weightedMean(cs)
	for i := range got {
		if math.Abs(want[i]-float64(got[i])) > 1e-6 {
			t.Fatalf("element %d: %v, want %v", i, got[i], want[i])
		}
	}
}

// TestTrimmedMeanMatchesReference: the default rule against a float64
// reference written from its definition (per coordinate, drop ⌈0.2·n⌉ of
// the lowest and of the highest values, average the rest), for n = 2…7.
func TestTrimmedMeanMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 7))
	for n := 2; n <= 7; n++ {
		cs := contribs(r, n, 64)
		got := make([]float32, 64)
		if _, ok := Aggregate(DefaultConfig(), got, cs); !ok {
			t.Fatal("no quorum")
		}
		drop := int(math.Ceil(0.2 * float64(n)))
		if 2*drop >= n {
			drop = (n - 1) / 2
		}
		for i := range got {
			var col []float64
			for _, c := range cs {
				col = append(col, float64(c.Delta[i]))
			}
			slices.Sort(col)
			var want float64
			for _, v := range col[drop : n-drop] {
				want += v / float64(n-2*drop)
			}
			if math.Abs(want-float64(got[i])) > 1e-6 {
				t.Fatalf("n %d, element %d: %v, want %v", n, i, got[i], want)
			}
		}
	}
}

// TestTrimmedMeanOrderFree: the trimmed mean's bits do not depend on the
// order contributions arrive in (sorted sums above two, a commutative sum
// of two), untrimmed or trimmed, with signed zeros, values of every
// magnitude and large ones that cancel.
func TestTrimmedMeanOrderFree(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	for n := 1; n <= 6; n++ {
		cs := contribs(r, n, 256)
		for j, c := range cs {
			for i := range c.Delta {
				switch {
				case i%4 == 0:
					c.Delta[i] = float32(math.Copysign(0, float64(r.IntN(2)*2-1)))
				case i%4 == 1:
					c.Delta[i] *= float32(math.Ldexp(1, r.IntN(80)-40))
				case i%4 == 2 && j < 2: // ±2⁴⁰ cancel: what the others add survives in some orders only
					c.Delta[i] = float32(1-2*j) * 0x1p40
				}
			}
		}
		for _, trim := range []float64{0, 0.2} {
			want := make([]float32, 256)
			trimmedMean(want, cs, trim)
			for range 4 {
				r.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
				got := make([]float32, 256)
				trimmedMean(got, cs, trim)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("n %d, trim %v, element %d: %v in one order, %v in another", n, trim, i, want[i], got[i])
					}
				}
			}
		}
	}
}

func TestAggregateRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	cs := contribs(r, 5, 100)
	nan := randVec(r, 100, 0.1)
	nan[3] = float32(math.NaN())
	huge := randVec(r, 100, 100)
	cs = append(cs,
		Contribution{ID: "short", Tokens: 10, Delta: make([]float32, 99)},
		Contribution{ID: "nan", Tokens: 10, Delta: nan},
		Contribution{ID: "huge", Tokens: 10, Delta: huge},
		Contribution{ID: "zero-tokens", Tokens: 0, Delta: randVec(r, 100, 0.1)},
		cs[0])
	rep, ok := Aggregate(DefaultConfig(), make([]float32, 100), cs)
	if !ok {
		t.Fatal("no quorum")
	}
	want := map[string]string{"short": RejectLength, "nan": RejectNonFinite, "huge": RejectNorm, "zero-tokens": RejectTokens, "peer-0": RejectDup}
	for id, reason := range want {
		if rep.Rejected[id] != reason {
			t.Errorf("%s: rejected as %q, want %q", id, rep.Rejected[id], reason)
		}
	}
	if len(rep.Included) != 5 {
		t.Errorf("included %v", rep.Included)
	}
	cfg := DefaultConfig()
	cfg.Quorum = 3
	if _, ok := Aggregate(cfg, make([]float32, 100), cs[:2]); ok {
		t.Error("two contributions met a quorum of three")
	}
}

// TestAggregateDropsCopies: through every codec, scaled copies of another
// contribution and zero updates are left out — of a copy and its original
// the smaller counts, neither when one is turned against the other —
// while honest contributions that agree closely (one direction plus 2% of
// their own) all count; all-zero partitions are kept.
func TestAggregateDropsCopies(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	shared := randVec(r, 1024, 0.1)
	for _, c := range codecs(t) {
		var cs []Contribution
		for i := 0; i < 5; i++ {
			d := make([]float32, len(shared))
			for j := range d {
				d[j] = shared[j] + float32(r.NormFloat64()*0.002)
			}
			out := make([]float32, len(d))
			if err := c.Decode(out, c.Encode(nil, d)); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, Contribution{ID: fmt.Sprintf("honest-%d", i), Tokens: 1, Delta: out})
		}
		// What a copier's bytes decode to: the original's values, scaled.
		scaled := func(d []float32, k float32) []float32 {
			out := make([]float32, len(d))
			for j, v := range d {
				out[j] = k * v
			}
			return out
		}
		cs = append(cs,
			Contribution{ID: "lazy-1.1", Tokens: 1, Delta: scaled(cs[0].Delta, 1.1)},
			Contribution{ID: "lazy-8", Tokens: 1, Delta: scaled(cs[0].Delta, 8)},
			Contribution{ID: "lazy-neg", Tokens: 1, Delta: scaled(cs[1].Delta, -2)},
			Contribution{ID: "lazy-same", Tokens: 1, Delta: cs[2].Delta},
			Contribution{ID: "lazy-zero", Tokens: 1, Delta: make([]float32, len(shared))},
			Contribution{ID: "a-smaller-copy", Tokens: 1, Delta: scaled(cs[3].Delta, 0.5)})
		rep, ok := Aggregate(DefaultConfig(), make([]float32, len(shared)), cs)
		if !ok {
			t.Fatalf("%s: no quorum", c.Name())
		}
		want := map[string]string{"lazy-1.1": RejectCopy, "lazy-8": RejectCopy, "lazy-neg": RejectCopy, "honest-1": RejectCopy,
			"lazy-same": RejectCopy, "lazy-zero": RejectZero, "honest-3": RejectCopy}
		if !maps.Equal(rep.Rejected, want) {
			t.Errorf("%s: rejected %v, want %v", c.Name(), rep.Rejected, want)
		}
	}
	zeros := []Contribution{{ID: "a", Tokens: 1, Delta: make([]float32, 8)}, {ID: "b", Tokens: 1, Delta: make([]float32, 8)}}
	if rep, ok := Aggregate(DefaultConfig(), make([]float32, 8), zeros); !ok || len(rep.Included) != 2 {
		t.Errorf("all-zero partition: %+v, %v", rep, ok)
	}
}

// TestRobustAggregation: one attacker sends a scaled Δ (just under the
// rejection threshold); robust rules stay close to the honest mean.
func TestRobustAggregation(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	base := randVec(r, 300, 0.1)
	var cs []Contribution
	for i := 0; i < 6; i++ {
		d := make([]float32, 300)
		for j := range d {
			d[j] = base[j] + float32(r.NormFloat64()*0.01)
		}
		cs = append(cs, Contribution{ID: fmt.Sprintf("h%d", i), Tokens: 100, Delta: d})
	}
	evil := make([]float32, 300)
	for j := range evil {
		evil[j] = -8 * base[j]
	}
	cs = append(cs, Contribution{ID: "evil", Tokens: 100, Delta: evil})
	for _, agg := range []string{"mean-clip", "trimmed-mean", "centered-clip"} {
		cfg := DefaultConfig()
		cfg.Aggregation = agg
		got := make([]float32, 300)
		Aggregate(cfg, got, cs)
		var dist, norm float64
		for j := range got {
			dist += math.Pow(float64(got[j]-base[j]), 2)
			norm += math.Pow(float64(base[j]), 2)
		}
		if rel := math.Sqrt(dist / norm); rel > 0.45 {
			t.Errorf("%s: %.2f relative distance from the honest mean", agg, rel)
		}
	}
}

// TestRobustAggregationCrafted: one attacker among n sends a
// crafted-but-plausible Δ (its own, of the right norm in the opposite
// direction; in the right direction slightly scaled; the honest mean minus one standard
// deviation per coordinate, "a little is enough") or a crude one (−8·Δ).
// Every robust rule keeps the aggregate pointing the honest way (cosine
// with the honest mean above 0.5) at 0.4 to 1.5 times its length; the
// plain mean does not (the test can fail).
func TestRobustAggregationCrafted(t *testing.T) {
	const dim = 2000
	for _, honest := range []int{3, 7} {
		r := rand.New(rand.NewPCG(9, uint64(honest)))
		base := randVec(r, dim, 0.1)
		var cs []Contribution
		sum, sq := make([]float64, dim), make([]float64, dim)
		for i := 0; i < honest; i++ {
			d := make([]float32, dim)
			for j := range d {
				d[j] = base[j] + float32(r.NormFloat64()*0.1) // noise as large as the signal
				sum[j] += float64(d[j])
				sq[j] += float64(d[j]) * float64(d[j])
			}
			cs = append(cs, Contribution{ID: fmt.Sprintf("h%d", i), Tokens: 100, Delta: d})
		}
		mean := make([]float32, dim)
		for j := range mean {
			mean[j] = float32(sum[j] / float64(honest))
		}
		// The attacker's own honest Δ, which it turns (another's, scaled,
		// would be left out as a copy: TestAggregateDropsCopies).
		own := make([]float32, dim)
		for j := range own {
			own[j] = base[j] + float32(r.NormFloat64()*0.1)
		}
		attacks := []struct {
			name string
			f    func(j int) float32
		}{
			{"opposite", func(j int) float32 { return -own[j] }},
			{"inflated", func(j int) float32 { return 1.5 * own[j] }},
			{"alie", func(j int) float32 {
				mu := sum[j] / float64(honest)
				return float32(mu - math.Sqrt(max(sq[j]/float64(honest)-mu*mu, 0)))
			}},
			{"scaled", func(j int) float32 { return -8 * own[j] }},
		}
		for _, a := range attacks {
			name, f := a.name, a.f
			evil := make([]float32, dim)
			for j := range evil {
				evil[j] = f(j)
			}
			all := append(slices.Clone(cs), Contribution{ID: "evil", Tokens: 100, Delta: evil})
			for _, agg := range []string{"mean-clip", "trimmed-mean", "centered-clip", "mean"} {
				cfg := DefaultConfig()
				cfg.Aggregation = agg
				got := make([]float32, dim)
				Aggregate(cfg, got, all)
				cos, ratio := cosine(got, mean, norm(got), norm(mean)), norm(got)/norm(mean)
				t.Logf("%d honest, %s, %s: cosine %.3f, length %.2f× the honest mean's", honest, name, agg, cos, ratio)
				held := cos >= 0.5 && ratio >= 0.4 && ratio <= 1.5
				if robust := agg != "mean"; robust && !held {
					t.Errorf("%d honest, %s: %s moved to cosine %.3f, length %.2f×", honest, name, agg, cos, ratio)
				} else if !robust && name == "scaled" && held {
					t.Errorf("%d honest: the plain mean withstood −8·Δ (cosine %.3f): the attack is too weak to test anything", honest, cos)
				}
			}
		}
	}
}

func norm(a []float32) float64 {
	var s float64
	for _, v := range a {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}

func TestOuterStep(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const n = 100
	p := randVec(r, n, 1)
	ref := make([]float64, n)
	for i := range p {
		ref[i] = float64(p[i])
	}
	buf := make([]float64, n)
	o := NewOuterOptimizer(DefaultConfig(), n)
	for s := 0; s < 5; s++ {
		d := randVec(r, n, 0.1)
		o.Step(p, d)
		for i := range ref {
			buf[i] = 0.9*buf[i] + float64(d[i])
			ref[i] -= 0.7 * (float64(d[i]) + 0.9*buf[i])
		}
	}
	for i := range p {
		if math.Abs(float64(p[i])-ref[i]) > 1e-5 {
			t.Fatalf("element %d: %v, want %v", i, p[i], ref[i])
		}
	}
}

func TestConfigAndPartitions(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.H, c.Codec, c.Momentum = 0, "zip", 1
	if err := c.Validate(); err == nil {
		t.Fatal("bad config accepted")
	}
	c = DefaultConfig()
	c.WarmupRounds = 2
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "warmup_h") {
		t.Fatalf("warmup rounds without warmup_h: %v", err)
	}
	c.WarmupH, c.H = 5, 40
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.Overlap = "eager" },
		func(c *Config) { c.CloseCore = 1.5 },
		func(c *Config) { c.CloseCore, c.CloseSlack = 0.75, -1 },
		func(c *Config) { c.CloseSlack = math.Inf(1) },
	} {
		b := c
		bad(&b)
		if err := b.Validate(); err == nil || !strings.Contains(err.Error(), "overlap") && !strings.Contains(err.Error(), "close_") {
			t.Fatalf("%+v: %v", b, err)
		}
	}
	if _, ok := c.CloseRule(); ok {
		t.Fatal("a close rule without close_core")
	}
	c.CloseCore, c.CloseSlack, c.RoundDeadline = 0.75, 0.25, time.Minute
	if r, ok := c.CloseRule(); !ok || r != (CloseRule{Core: 0.75, Slack: 0.25, Deadline: time.Minute}) {
		t.Fatalf("close rule %+v %v", r, ok)
	}
	start := 0
	for r, want := range []int{5, 5, 40, 40} {
		if got := c.RoundH(r); got != want {
			t.Fatalf("round %d: H %d, want %d", r, got, want)
		}
		if got := c.RoundStart(r); got != start {
			t.Fatalf("round %d starts at %d, want %d", r, got, start)
		}
		start += want
	}
	ps := Partitions(10, 3)
	if len(ps) != 3 || ps[0].Size != 4 || ps[2].Offset+ps[2].Size != 10 {
		t.Fatalf("partitions %+v", ps)
	}
}

func BenchmarkEncode10M(b *testing.B) {
	r := rand.New(rand.NewPCG(10, 10))
	x := randVec(r, 10_000_000, 0.01)
	for _, name := range []string{"fp32", "int8", "int4", "int2", "topk"} {
		c, _ := NewCodec(name, 256, 4096, 1.0/32)
		buf := make([]byte, 0, c.EncodedLen(len(x)))
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				buf = c.Encode(buf[:0], x)
			}
			b.ReportMetric(BytesPerParam(c, len(x)), "bytes/param")
		})
	}
}

// BenchmarkAggregate: one partition of 1M parameters from 8 contributions
// by each rule, and the copy check alone (one pass over each delta), side
// by side.
func BenchmarkAggregate(b *testing.B) {
	r := rand.New(rand.NewPCG(11, 11))
	cs := contribs(r, 8, 1<<20)
	dst := make([]float32, 1<<20)
	for _, agg := range []string{"mean", "mean-clip", "trimmed-mean", "centered-clip"} {
		cfg := DefaultConfig()
		cfg.Aggregation = agg
		b.Run(agg, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				Aggregate(cfg, dst, cs)
			}
		})
	}
	b.Run("trimmed-mean-of-2", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			trimmedMean(dst, cs[:2], 0.2)
		}
	})
	norms := map[string]float64{}
	for _, c := range cs {
		norms[c.ID] = norm(c.Delta)
	}
	b.Run("copy-check", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			dropCopies(slices.Clone(cs), norms, map[string]string{})
		}
	})
}

// "mean" is the undefended token-weighted mean: nothing clipped or rejected.
func TestPlainMean(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 12))
	cs := contribs(r, 4, 50)
	huge := randVec(r, 50, 100)
	cs = append(cs, Contribution{ID: "huge", Tokens: 1000, Delta: huge})
	cfg := DefaultConfig()
	cfg.Aggregation = "mean"
	got := make([]float32, 50)
	rep, ok := Aggregate(cfg, got, cs)
	if !ok || len(rep.Included) != 5 || rep.Clipped != 0 {
		t.Fatalf("report %+v", rep)
	}
	want := weightedMean(cs)
	for i := range got {
		if math.Abs(want[i]-float64(got[i])) > 1e-4 {
			t.Fatalf("element %d: %v, want %v", i, got[i], want[i])
		}
	}
}

// BenchmarkInt4: the codec against the element-by-element reference it
// must match (TestInt4MatchesReference), and error feedback's Encode
// beside EncodeSent, on a vector the demo preset's size.
func BenchmarkInt4(b *testing.B) {
	r := rand.New(rand.NewPCG(13, 13))
	x := randVec(r, 5_050_000, 0.01)
	c := Int4{Block: 256}
	enc := c.Encode(nil, x)
	dst, y := make([]float32, len(x)), make([]float32, len(x))
	ef, sent := NewErrorFeedback(c, len(x)), NewErrorFeedback(c, len(x))
	for _, bc := range []struct {
		name string
		f    func()
	}{
		{"encode", func() { c.Encode(enc[:0], x) }},
		{"encode-reference", func() { int4Reference(c.Block, x) }},
		{"decode", func() { c.Decode(dst, enc) }},
		{"decode-reference", func() { int4DecodeReference(dst, enc) }},
		{"ef-encode", func() { ef.Encode(nil, x) }},
		{"ef-encode-sent", func() { copy(y, x); sent.EncodeSent(nil, y) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				bc.f()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(x)), "ns/param")
		})
	}
}
