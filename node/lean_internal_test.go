package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// A state on disk moves on a partition at a time (nextOnDisk), reading
// its base's files in pieces the partitions cross, to the same files as
// the state in memory (outerStep); an outer step that overflows is
// refused as in memory, and leaves no checkpoint.
func TestNextOnDiskMatchesMemory(t *testing.T) {
	cfg, err := model.Preset("demo")
	if err != nil {
		t.Fatal(err)
	}
	n := int(model.NumParams(cfg))
	ru := testRules(t, n, 7, "")
	ru.cfg = cfg
	global, delta := make([]float32, n), make([]float32, n)
	outer := &gradsync.OuterOptimizer{LR: 0.7, Momentum: 0.9, Buf: make([]float32, n)}
	for i := range global {
		global[i] = float32(i%101)*0.01 - 0.5
		outer.Buf[i] = float32(i%37)*1e-3 - 0.02
		delta[i] = float32((i*7)%13-6) * 1e-3
	}
	// (the base is written by model.SaveWeights, independently of any
	// vectors' fill)
	save := func(dir string, v vectors, global []float32) error {
		f := model.File{Name: "outer.bin", Write: v.outer}
		if global != nil {
			return model.SaveWeights(dir, cfg, global, nil, f)
		}
		return model.SaveWeightsFrom(dir, cfg, v.fill, nil, f)
	}
	tmp := t.TempDir()
	base := filepath.Join(tmp, "base")
	if err := save(base, memVectors(global, outer), global); err != nil {
		t.Fatal(err)
	}
	encode := func(d []float32) [][]byte {
		var encs [][]byte
		for _, pr := range ru.parts {
			encs = append(encs, ru.codec.Encode(nil, d[pr.Offset:pr.Offset+pr.Size]))
		}
		return encs
	}
	encs := encode(delta)
	v, done, err := ru.nextOnDisk(base, 3, encs)
	if err != nil {
		t.Fatal(err)
	}
	if err := save(filepath.Join(tmp, "disk"), v, nil); err != nil {
		t.Fatal(err)
	}
	done()
	if err := ru.outerStep(global, outer, 3, encs); err != nil {
		t.Fatal(err)
	}
	if err := save(filepath.Join(tmp, "mem"), memVectors(global, outer), nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"model.safetensors", "outer.bin"} {
		a, _ := os.ReadFile(filepath.Join(tmp, "disk", name))
		b, _ := os.ReadFile(filepath.Join(tmp, "mem", name))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s: %d bytes from disk, %d from memory, not the same", name, len(a), len(b))
		}
	}
	// fp32 aggregates that take a weight past float32's range.
	if ru.codec, err = gradsync.NewCodec("fp32", 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	delta[n-5] = -3e38
	v, done, err = ru.nextOnDisk(base, 3, encode(delta))
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	err = save(filepath.Join(tmp, "inf"), v, nil)
	if reasonOf(err) != RejectNonFinite || !strings.Contains(err.Error(), fmt.Sprintf("weight %d is +Inf", n-5)) {
		t.Fatalf("an overflowing outer step: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "inf")); !os.IsNotExist(err) {
		t.Fatalf("a refused checkpoint was left: %v", err)
	}
}
