package gradsync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	o := NewOuterOptimizer(DefaultConfig(), 50)
	o.Step(randVec(r, 50, 1), randVec(r, 50, 0.1))
	b, _ := o.MarshalBinary()
	// The format as the package doc spells it, written independently.
	var w bytes.Buffer
	w.WriteString(magicOuter)
	for _, v := range []any{o.LR, o.Momentum, uint32(len(o.Buf)), o.Buf} {
		binary.Write(&w, binary.LittleEndian, v)
	}
	if !bytes.Equal(w.Bytes(), b) {
		t.Fatalf("MarshalBinary wrote %d bytes, not the format's %d", len(b), w.Len())
	}
	streamed := NewOuterOptimizer(DefaultConfig(), 50)
	if _, err := streamed.ReadFrom(bytes.NewReader(b)); err != nil || !slices.Equal(streamed.Buf, o.Buf) || streamed.LR != o.LR {
		t.Fatalf("ReadFrom: %v", err)
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(slices.Clone(b), 0), b[:10]} {
		if _, err := NewOuterOptimizer(DefaultConfig(), 50).ReadFrom(bytes.NewReader(bad)); err == nil {
			t.Errorf("ReadFrom took %d bytes of a %d-byte state", len(bad), len(b))
		}
	}
	if _, err := NewOuterOptimizer(DefaultConfig(), 49).ReadFrom(bytes.NewReader(b)); err == nil {
		t.Error("ReadFrom took 50 momenta for 49 parameters")
	}
	var back OuterOptimizer
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if back.LR != o.LR || back.Momentum != o.Momentum || !slices.Equal(back.Buf, o.Buf) {
		t.Fatal("outer state changed in a round trip")
	}
	c, _ := NewCodec("int8", 16, 0, 0)
	ef := NewErrorFeedback(c, 50)
	ef.Encode(nil, randVec(r, 50, 1))
	eb, _ := ef.MarshalBinary()
	ef2 := NewErrorFeedback(c, 50)
	if err := ef2.UnmarshalBinary(eb); err != nil || !slices.Equal(ef2.Residual, ef.Residual) {
		t.Fatalf("residual round trip: %v", err)
	}
	if err := NewErrorFeedback(c, 49).UnmarshalBinary(eb); err == nil {
		t.Fatal("residual of another length accepted")
	}
	if err := back.UnmarshalBinary(b[:len(b)-1]); err == nil {
		t.Fatal("truncated outer state accepted")
	}
}

// FuzzStateDecode: saved states from disk are decoded or rejected.
func FuzzStateDecode(f *testing.F) {
	o := NewOuterOptimizer(DefaultConfig(), 4)
	b, _ := o.MarshalBinary()
	f.Add(b)
	c, _ := NewCodec("fp32", 0, 0, 0)
	eb, _ := NewErrorFeedback(c, 4).MarshalBinary()
	f.Add(eb)
	f.Fuzz(func(t *testing.T, b []byte) {
		var o OuterOptimizer
		err := o.UnmarshalBinary(b)
		if err == nil && (o.LR <= 0 || o.Momentum >= 1) {
			t.Fatalf("accepted lr %v momentum %v", o.LR, o.Momentum)
		}
		// Read streamed into 4 momenta, it is taken exactly when it holds 4.
		s := NewOuterOptimizer(DefaultConfig(), 4)
		_, serr := s.ReadFrom(bytes.NewReader(b))
		if (serr == nil) != (err == nil && len(o.Buf) == 4) ||
			serr == nil && (!slices.Equal(s.Buf, o.Buf) || s.LR != o.LR || s.Momentum != o.Momentum) {
			t.Fatalf("ReadFrom: %v; UnmarshalBinary: %v (%d momenta)", serr, err, len(o.Buf))
		}
		// Read a range at a time, likewise.
		got := make([]float32, 4)
		rerr := errors.New("not opened")
		if or, oerr := NewOuterReader(bytes.NewReader(b), int64(len(b)), 4); oerr == nil {
			rerr = errors.Join(or.ReadAt(got[:1], 0), or.ReadAt(got[1:], 1))
		}
		if (rerr == nil) != (serr == nil) || rerr == nil && !slices.Equal(got, s.Buf) {
			t.Fatalf("OuterReader: %v; ReadFrom: %v", rerr, serr)
		}
		NewErrorFeedback(c, 4).UnmarshalBinary(b)
	})
}

// A state written and read a range at a time is WriteTo's and ReadFrom's,
// and Advance is Step's momentum.
func TestOuterStreamed(t *testing.T) {
	const n = 1<<20 + 3 // more than one of WriteOuter's chunks
	r := rand.New(rand.NewPCG(5, 5))
	o := NewOuterOptimizer(DefaultConfig(), n)
	w, d := randVec(r, n, 1), randVec(r, n, 0.1)
	a := o.Clone()
	o.Step(w, d)
	a.Advance(d)
	if !slices.Equal(a.Buf, o.Buf) {
		t.Fatal("Advance's momentum is not Step's")
	}
	want, _ := o.MarshalBinary()
	var got bytes.Buffer
	if err := WriteOuter(&got, o.LR, o.Momentum, n, func(off int, dst []float32) error {
		copy(dst, o.Buf[off:])
		return nil
	}); err != nil || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("WriteOuter wrote other bytes than WriteTo (%v)", err)
	}
	or, err := NewOuterReader(bytes.NewReader(want), int64(len(want)), n)
	if err != nil || or.LR != o.LR || or.Momentum != o.Momentum {
		t.Fatalf("NewOuterReader: %v", err)
	}
	back := make([]float32, n)
	for off := 0; off < n; off += 300007 {
		if err := or.ReadAt(back[off:min(n, off+300007)], off); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(back, o.Buf) {
		t.Fatal("OuterReader read other momenta")
	}
	if err := or.ReadAt(back[:2], n-1); err == nil {
		t.Error("OuterReader read past the end")
	}
	bad := slices.Clone(want)
	binary.LittleEndian.PutUint32(bad[16+4*7:], 0x7fc00000) // NaN at 7
	ob, _ := NewOuterReader(bytes.NewReader(bad), int64(len(bad)), n)
	if err := ob.ReadAt(back[:10], 0); err == nil || !strings.Contains(err.Error(), "non-finite value at 7") {
		t.Errorf("a NaN momentum: %v", err)
	}
	if _, err := NewOuterReader(bytes.NewReader(want), int64(len(want))-1, n); err == nil {
		t.Error("OuterReader took a short file")
	}
	if _, err := NewOuterReader(bytes.NewReader(want), int64(len(want)), n-1); err == nil {
		t.Error("OuterReader took n momenta for n-1")
	}
}
