package node

import (
	"bytes"
	"errors"
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

// After a restart the log says why the residuals are dropped, naming the
// file and the rounds, never with a nil error in it.
func TestEFMismatchMessage(t *testing.T) {
	for _, c := range []struct {
		er, r int
		err   error
		want  string
	}{
		{5, 4, nil, "contribution to round 5, which it holds no checkpoint of"},
		{3, 4, nil, "older than its newest checkpoint (round 4"},
		{0, 4, errors.New("gradsync: malformed encoding"), "unreadable: gradsync: malformed encoding"},
	} {
		msg := efMismatch("home/ef-state.bin", c.er, c.r, c.err)
		if strings.Contains(msg, "nil") || !strings.Contains(msg, c.want) || !strings.Contains(msg, "home/ef-state.bin") {
			t.Errorf("round %d state, round %d checkpoint, %v: %q", c.er, c.r, c.err, msg)
		}
	}
}
