package gradsync

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sort"
)

// TopK keeps, in each chunk of Chunk elements, the k = ceil(Frac·Chunk)
// entries of largest magnitude and sends each as 2 bits — its sign and
// whether it is in the upper or lower half of the kept magnitudes — plus its
// index (ceil(log2 Chunk) bits, packed, ascending). Each chunk carries two float32
// magnitudes, the means of its lower and upper halves. Everything not kept,
// and the quantisation error of what is, goes back through error feedback
// (SparseLoCo-style).
type TopK struct {
	Chunk int
	Frac  float64
}

const magicTopK = "GTK\x01"

func (c TopK) Name() string { return "topk" }

func (c TopK) k(chunkLen int) int {
	return max(1, min(chunkLen, int(math.Ceil(c.Frac*float64(chunkLen)))))
}

func idxBits(chunk int) int { return max(1, bits.Len(uint(chunk-1))) }

func (c TopK) chunkBytes(chunkLen int) int {
	k := c.k(chunkLen)
	return 8 + (k*(2+idxBits(c.Chunk))+7)/8
}

func (c TopK) EncodedLen(n int) int {
	total := 16
	for c0 := 0; c0 < n; c0 += c.Chunk {
		total += c.chunkBytes(min(c.Chunk, n-c0))
	}
	return total
}

// bitWriter packs little-endian bit fields.
type bitWriter struct {
	buf  []byte
	acc  uint64
	nacc int
}

func (w *bitWriter) write(v uint64, n int) {
	w.acc |= v << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		w.buf = append(w.buf, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

func (w *bitWriter) flush() []byte {
	if w.nacc > 0 {
		w.buf = append(w.buf, byte(w.acc))
		w.acc, w.nacc = 0, 0
	}
	return w.buf
}

type bitReader struct {
	buf  []byte
	pos  int
	acc  uint64
	nacc int
}

func (r *bitReader) read(n int) (uint64, bool) {
	for r.nacc < n {
		if r.pos >= len(r.buf) {
			return 0, false
		}
		r.acc |= uint64(r.buf[r.pos]) << r.nacc
		r.pos++
		r.nacc += 8
	}
	v := r.acc & (1<<n - 1)
	r.acc >>= n
	r.nacc -= n
	return v, true
}

// kthLargest returns the k-th largest value of a (1-based k), reordering a.
func kthLargest(a []float32, k int) float32 {
	lo, hi, want := 0, len(a)-1, k-1 // index in descending order
	for lo < hi {
		mid := lo + (hi-lo)/2
		// median of three as pivot
		if a[mid] > a[lo] {
			a[mid], a[lo] = a[lo], a[mid]
		}
		if a[hi] > a[lo] {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if a[mid] > a[hi] {
			a[mid], a[hi] = a[hi], a[mid]
		}
		pivot := a[hi]
		i := lo
		for j := lo; j < hi; j++ {
			if a[j] > pivot {
				a[i], a[j] = a[j], a[i]
				i++
			}
		}
		a[i], a[hi] = a[hi], a[i]
		switch {
		case i == want:
			return a[i]
		case i < want:
			lo = i + 1
		default:
			hi = i - 1
		}
	}
	return a[lo]
}

// selectTop returns the indices (ascending) of the k largest values of mag,
// ties going to lower indices. The result depends only on the values.
func selectTop(mag []float32, k int, scratch []float32, out []int) []int {
	scratch = append(scratch[:0], mag...)
	t := kthLargest(scratch, k)
	out = out[:0]
	for i, m := range mag {
		if m > t {
			out = append(out, i)
		}
	}
	for i, m := range mag {
		if len(out) == k {
			break
		}
		if m == t {
			out = append(out, i)
		}
	}
	sortInts(out)
	return out
}

func sortInts(a []int) { sort.Ints(a) }

func (c TopK) Encode(dst []byte, x []float32) []byte {
	dst = header(dst, magicTopK, len(x))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(c.Chunk))
	dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(c.Frac)))
	ib := idxBits(c.Chunk)
	mag := make([]float32, c.Chunk)
	scratch := make([]float32, 0, c.Chunk)
	var kept, upper []int
	keptMag := make([]float32, 0, c.k(c.Chunk))
	isUpper := make([]bool, c.Chunk)
	for c0 := 0; c0 < len(x); c0 += c.Chunk {
		ch := x[c0:min(c0+c.Chunk, len(x))]
		k := c.k(len(ch))
		mag = mag[:len(ch)]
		for i, v := range ch {
			mag[i] = float32(math.Abs(float64(v)))
		}
		kept = selectTop(mag, k, scratch, kept)
		// The upper half (rounded up) of the kept magnitudes gets the
		// "high" level; the rest the "low" level.
		half := (k + 1) / 2
		keptMag = keptMag[:0]
		for _, i := range kept {
			keptMag = append(keptMag, mag[i])
		}
		upper = selectTop(keptMag, half, scratch, upper)
		for _, r := range upper {
			isUpper[kept[r]] = true
		}
		var hi, lo float64
		for _, i := range kept {
			if isUpper[i] {
				hi += float64(mag[i])
			} else {
				lo += float64(mag[i])
			}
		}
		hi /= float64(half)
		if k > half {
			lo /= float64(k - half)
		}
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(lo)))
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(hi)))
		w := bitWriter{buf: dst}
		for _, i := range kept {
			var code uint64
			if ch[i] < 0 {
				code |= 1
			}
			if isUpper[i] {
				code |= 2
				isUpper[i] = false
			}
			w.write(uint64(i), ib)
			w.write(code, 2)
		}
		dst = w.flush()
	}
	return dst
}

func (c TopK) Decode(dst []float32, b []byte) error {
	p, err := checkHeader(b, magicTopK, len(dst))
	if err != nil {
		return err
	}
	if len(p) < 8 {
		return fmt.Errorf("%w: topk parameters missing", ErrDecode)
	}
	d := TopK{Chunk: int(binary.LittleEndian.Uint32(p)), Frac: float64(math.Float32frombits(binary.LittleEndian.Uint32(p[4:])))}
	if d.Chunk < 2 || d.Chunk > 1<<16 || !(d.Frac > 0 && d.Frac <= 1) {
		return fmt.Errorf("%w: topk chunk %d / fraction %v out of range", ErrDecode, d.Chunk, d.Frac)
	}
	if want := d.EncodedLen(len(dst)); len(b) != want {
		return fmt.Errorf("%w: topk encoding of %d bytes; %d elements need %d", ErrDecode, len(b), len(dst), want)
	}
	p = p[8:]
	ib := idxBits(d.Chunk)
	clear(dst)
	for c0 := 0; c0 < len(dst); c0 += d.Chunk {
		n := min(d.Chunk, len(dst)-c0)
		lo := math.Float32frombits(binary.LittleEndian.Uint32(p))
		hi := math.Float32frombits(binary.LittleEndian.Uint32(p[4:]))
		if !(lo >= 0) || !(hi >= 0) || math.IsInf(float64(lo), 0) || math.IsInf(float64(hi), 0) {
			return fmt.Errorf("%w: topk chunk at %d has magnitudes %v, %v", ErrDecode, c0, lo, hi)
		}
		cb := d.chunkBytes(n)
		r := bitReader{buf: p[8:cb]}
		prev := -1
		for j := 0; j < d.k(n); j++ {
			i, ok1 := r.read(ib)
			code, ok2 := r.read(2)
			if !ok1 || !ok2 || int(i) >= n || int(i) <= prev {
				return fmt.Errorf("%w: topk chunk at %d: index %d out of order or range", ErrDecode, c0, i)
			}
			prev = int(i)
			v := lo
			if code&2 != 0 {
				v = hi
			}
			if code&1 != 0 {
				v = -v
			}
			dst[c0+int(i)] = v
		}
		p = p[cb:]
	}
	return nil
}
