package node

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/gradsync"
)

func testEFs() []*gradsync.ErrorFeedback {
	c, _ := gradsync.NewCodec("int8", 4, 4096, 1.0/32)
	efs := []*gradsync.ErrorFeedback{gradsync.NewErrorFeedback(c, 5), gradsync.NewErrorFeedback(c, 3)}
	for i, e := range efs {
		for j := range e.Residual {
			e.Residual[j] = float32(i*10+j) / 7
		}
	}
	return efs
}

func TestEFStateRoundTrip(t *testing.T) {
	efs := testEFs()
	b, err := EncodeEFState(7, efs)
	if err != nil {
		t.Fatal(err)
	}
	got := testEFs()
	for _, e := range got {
		clear(e.Residual)
	}
	r, err := DecodeEFState(b, got)
	if err != nil || r != 7 {
		t.Fatalf("round %d, %v", r, err)
	}
	for i := range efs {
		if !equalF32(efs[i].Residual, got[i].Residual) {
			t.Fatalf("partition %d: %v vs %v", i, got[i].Residual, efs[i].Residual)
		}
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(append([]byte{}, b...), 0), []byte("FOMEFST1"), bytes.Replace(b, []byte("FOMEFST1"), []byte("XXXXXXXX"), 1)} {
		if _, err := DecodeEFState(bad, testEFs()); err == nil {
			t.Errorf("accepted %d bytes of damaged state", len(bad))
		}
	}
	if _, err := DecodeEFState(b, testEFs()[:1]); err == nil {
		t.Error("accepted state for another partitioning")
	}
}

func equalF32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzDecodeEFState(f *testing.F) {
	b, _ := EncodeEFState(3, testEFs())
	f.Add(b)
	f.Add([]byte("FOMEFST1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		efs := testEFs()
		r, err := DecodeEFState(b, efs)
		if err != nil {
			return
		}
		again, err := EncodeEFState(r, efs)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted state does not re-encode to itself: %v", err)
		}
	})
}

func testWorkerState() *workerState {
	return &workerState{step: 12, mom: []float32{1, -2, 3.5, 0, 1e-30, 7, 8, 9}, vel: []float32{0, 1, 2, 3, 4, 5, 6, 1e30},
		round: 4, efs: testEFs()}
}

// A worker state reads back as written; every truncation and a model of
// another size are refused with what is wrong.
func TestWorkerStateRoundTrip(t *testing.T) {
	s := testWorkerState()
	b, err := encodeWorkerState(s)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != workerStateSize(8, s.efs) {
		t.Fatalf("%d bytes, workerStateSize says %d", len(b), workerStateSize(8, s.efs))
	}
	got, err := decodeWorkerState(b, 8, testEFs())
	if err != nil {
		t.Fatal(err)
	}
	if got.step != 12 || got.round != 4 || !equalF32(got.mom, s.mom) || !equalF32(got.vel, s.vel) ||
		!equalF32(got.efs[1].Residual, s.efs[1].Residual) {
		t.Fatalf("read back %+v", got)
	}
	for n := 0; n < len(b); n += 7 {
		if _, err := decodeWorkerState(b[:n], 8, testEFs()); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", n)
		}
	}
	if _, err := decodeWorkerState(b, 9, testEFs()); err == nil || !strings.Contains(err.Error(), "9 parameters") {
		t.Fatalf("another model's size: %v", err)
	}
}

func FuzzDecodeWorkerState(f *testing.F) {
	b, _ := encodeWorkerState(testWorkerState())
	f.Add(b)
	f.Add([]byte("FOMWKST1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeWorkerState(b, 8, testEFs())
		if err != nil {
			return
		}
		again, err := encodeWorkerState(s)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted state does not re-encode to itself: %v", err)
		}
	})
}
