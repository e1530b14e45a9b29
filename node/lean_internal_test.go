package node

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
)

// A lean node encodes Δ a partition at a time while it reads its start
// from the checkpoint's file (in pieces of 1<<20 values cut at tensor
// ends, which the partitions cross both ways): the same bytes, and the
// same residuals after, as work's whole Δ encoded partition by partition,
// over two rounds (the second encodes with the first's residuals).
func TestEncodePartsMatchesWholeDelta(t *testing.T) {
	cfg, err := model.Preset("demo") // 5 M parameters: several pieces
	if err != nil {
		t.Fatal(err)
	}
	n := int(model.NumParams(cfg))
	ru := testRules(t, n, 7, "")
	ru.cfg = cfg
	start, local := make([]float32, n), make([]float32, n)
	for i := range start {
		start[i] = float32(i%101)*0.01 - 0.5
		local[i] = start[i] - float32((i*7)%13-6)*1e-3
	}
	dir := filepath.Join(t.TempDir(), "round")
	if err := model.SaveWeights(dir, cfg, start, nil); err != nil {
		t.Fatal(err)
	}
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	params := be.Alloc(n)
	be.Upload(params, local)
	newEFs := func() []*gradsync.ErrorFeedback {
		efs := make([]*gradsync.ErrorFeedback, len(ru.parts))
		for i, pr := range ru.parts {
			efs[i] = gradsync.NewErrorFeedback(ru.codec, pr.Size)
		}
		return efs
	}
	wantEFs, gotEFs := newEFs(), newEFs()
	for round := 1; round <= 2; round++ {
		delta := append([]float32(nil), local...)
		if err := ru.pseudoGradient(delta, weights{v: start}); err != nil {
			t.Fatal(err)
		}
		var want [][]byte
		for i, pr := range ru.parts {
			want = append(want, wantEFs[i].EncodeSent(nil, delta[pr.Offset:pr.Offset+pr.Size]))
		}
		got, err := ru.encodeParts(be, params, gotEFs, weights{file: filepath.Join(dir, "model.safetensors")},
			func(f func() error) error { return f() })
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("round %d partition %d: encoded differently from the whole Δ", round, i)
			}
		}
		we, err := EncodeEFState(round, wantEFs)
		if err != nil {
			t.Fatal(err)
		}
		ge, err := EncodeEFState(round, gotEFs)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(we, ge) {
			t.Fatalf("round %d: residuals differ", round)
		}
	}
}
