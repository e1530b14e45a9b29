package node

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
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

// testWorkerState is a worker state of 8 parameters, fp32 or (eight) 8-bit
// moments with two block scales, and its shape.
func testWorkerState(eight bool) (*workerState, stateShape) {
	s := &workerState{opt: model.OptimState{Step: 12, M: []float32{1, -2, 3.5, 0, 1e-30, 7, 8, 9}, V: []float32{0, 1, 2, 3, 4, 5, 6, 1e30}},
		round: 4, efs: testEFs()}
	if eight {
		s.opt = model.OptimState{Step: 12, M8: []byte{1, 2, 3, 255, 0, 7, 8, 9}, V8: []byte{0, 1, 2, 3, 4, 5, 6, 240}, MS: []float32{0.5, 2}, VS: []float32{1e-3, 0}}
		return s, stateShape{8, 2}
	}
	return s, stateShape{n: 8}
}

// A worker state reads back as written; every truncation, a model of
// another size and moments held the other way are refused with what is
// wrong.
func TestWorkerStateRoundTrip(t *testing.T) {
	for _, eight := range []bool{false, true} {
		s, sh := testWorkerState(eight)
		b, err := encodeWorkerState(s)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != workerStateSize(sh, s.efs) {
			t.Fatalf("%d bytes, workerStateSize says %d", len(b), workerStateSize(sh, s.efs))
		}
		got, err := decodeWorkerState(b, sh, testEFs())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.opt, s.opt) || got.round != 4 || !equalF32(got.efs[1].Residual, s.efs[1].Residual) {
			t.Fatalf("read back %+v", got)
		}
		for n := 0; n < len(b); n += 7 {
			if _, err := decodeWorkerState(b[:n], sh, testEFs()); err == nil {
				t.Fatalf("truncated to %d bytes: accepted", n)
			}
		}
		other := sh
		other.n++
		if _, err := decodeWorkerState(b, other, testEFs()); err == nil || !strings.Contains(err.Error(), "9 parameters") {
			t.Fatalf("another model's size: %v", err)
		}
		other = stateShape{n: 8}
		if !eight {
			other.k = 2
		}
		if _, err := decodeWorkerState(b, other, testEFs()); err == nil || !strings.Contains(err.Error(), "bad magic") {
			t.Fatalf("moments held the other way: %v", err)
		}
	}
}

func FuzzDecodeWorkerState(f *testing.F) {
	for _, eight := range []bool{false, true} {
		s, _ := testWorkerState(eight)
		b, _ := encodeWorkerState(s)
		f.Add(b, eight)
	}
	f.Add([]byte("FOMWKST1"), false)
	f.Add([]byte("FOMWKST2"), true)
	f.Fuzz(func(t *testing.T, b []byte, eight bool) {
		_, sh := testWorkerState(eight)
		s, err := decodeWorkerState(b, sh, testEFs())
		if err != nil {
			return
		}
		again, err := encodeWorkerState(s)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted state does not re-encode to itself: %v", err)
		}
	})
}

// A worker state whose moments are a model's writes the bytes of its host
// copy, and reads back into another model's moments (fp32 and 8-bit);
// a model holding its moments the other way, or a state cut short, is an
// error.
func TestWorkerStateStreamsWithModel(t *testing.T) {
	be := cpu.MustNew(cpu.Options{Threads: 1})
	defer be.Close()
	c, _ := model.Preset("tiny")
	for _, eight := range []bool{false, true} {
		m, err := model.NewWith(be, c, model.Options{AdamW8: eight})
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		tokens := make([]int32, 2*16)
		for i := range tokens {
			tokens[i] = int32(i*7) % int32(c.Vocab)
		}
		for range 2 {
			m.ZeroGrad()
			if _, err := m.Accumulate(tokens, tokens, 2, 16, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Step(1e-2, model.DefaultOptim()); err != nil {
				t.Fatal(err)
			}
		}
		want, err := encodeWorkerState(&workerState{opt: m.OptimState(), round: 4, efs: testEFs()})
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodeWorkerState(&workerState{in: m, round: 4, efs: testEFs()})
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("8-bit %v: streamed from the model: %d bytes (%v), its copy %d", eight, len(got), err, len(want))
		}
		sh := modelShape(m)
		back, _ := model.NewWith(be, c, model.Options{AdamW8: eight})
		s, err := readWorkerState(bytes.NewReader(want), sh, testEFs(), back)
		if err != nil || s.in != back || !s.opt.Zero() || s.round != 4 || !reflect.DeepEqual(back.OptimState(), m.OptimState()) {
			t.Fatalf("8-bit %v: read into a model: %v", eight, err)
		}
		if _, err := readWorkerState(bytes.NewReader(want[:len(want)-100]), sh, testEFs(), back); err == nil {
			t.Fatalf("8-bit %v: a state cut short read into a model", eight)
		}
		other, _ := model.NewWith(be, c, model.Options{AdamW8: !eight})
		if _, err := readWorkerState(bytes.NewReader(want), sh, testEFs(), other); err == nil || !strings.Contains(err.Error(), "cannot hold") {
			t.Fatalf("8-bit %v: read into a model holding moments the other way: %v", eight, err)
		}
	}
}
