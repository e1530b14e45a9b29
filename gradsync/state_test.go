package gradsync

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
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
		if _, serr := s.ReadFrom(bytes.NewReader(b)); (serr == nil) != (err == nil && len(o.Buf) == 4) ||
			serr == nil && (!slices.Equal(s.Buf, o.Buf) || s.LR != o.LR || s.Momentum != o.Momentum) {
			t.Fatalf("ReadFrom: %v; UnmarshalBinary: %v (%d momenta)", serr, err, len(o.Buf))
		}
		NewErrorFeedback(c, 4).UnmarshalBinary(b)
	})
}
