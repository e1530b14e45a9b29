package gradsync

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	o := NewOuterOptimizer(DefaultConfig(), 50)
	o.Step(randVec(r, 50, 1), randVec(r, 50, 0.1))
	b, _ := o.MarshalBinary()
	var w bytes.Buffer
	if n, err := o.WriteTo(&w); err != nil || n != int64(len(b)) || !bytes.Equal(w.Bytes(), b) {
		t.Fatalf("WriteTo wrote %d bytes (%v), not MarshalBinary's %d", n, err, len(b))
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
		if o.UnmarshalBinary(b) == nil && (o.LR <= 0 || o.Momentum >= 1) {
			t.Fatalf("accepted lr %v momentum %v", o.LR, o.Momentum)
		}
		NewErrorFeedback(c, 4).UnmarshalBinary(b)
	})
}
