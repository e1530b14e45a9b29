package simulate

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
)

func corpus(t *testing.T) (*model.Corpus, *model.Corpus) {
	c := &model.Corpus{}
	text := strings.Repeat("The cat sat on the mat. 고양이가 매트 위에 앉았다.\n\nA dog ran in the park. 개가 공원에서 뛰었다.\n\n", 60)
	if err := c.AddText("t", []byte(text), 320, model.ByteEOS); err != nil {
		t.Fatal(err)
	}
	return c.Split(0.1, model.ByteEOS)
}

// With one worker, H = 1, fp32, outer lr 1 and no momentum, DiLoCo is
// plain training: the outer step sets θ to the worker's parameters.
func TestDiLoCoDegeneratesToDDP(t *testing.T) {
	be := cpu.MustNew(cpu.Options{})
	defer be.Close()
	train, val := corpus(t)
	o := QuickOptions()
	o.Workers, o.Steps, o.Batch, o.Seq = 1, 20, 2, 32
	o.Sync.OuterLR, o.Sync.Momentum = 1, 0
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 1, Codec: "fp32"}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(rows[0].ValLoss - rows[1].ValLoss); d > 1e-4 {
		t.Fatalf("DDP %.6f vs DiLoCo(K=1,H=1) %.6f", rows[0].ValLoss, rows[1].ValLoss)
	}
	if rows[0].BytesPerWorker != 0 || rows[1].BytesPerWorker != 0 {
		t.Fatalf("one worker sends nothing, got %v and %v", rows[0].BytesPerWorker, rows[1].BytesPerWorker)
	}
}

// Byte accounting follows the documented formulas.
func TestBytesAccounting(t *testing.T) {
	be := cpu.MustNew(cpu.Options{})
	defer be.Close()
	train, val := corpus(t)
	o := QuickOptions()
	o.Workers, o.Steps, o.Batch, o.Seq = 4, 20, 1, 32
	o.Methods = []Method{{Name: "ddp"}, {Name: "diloco", H: 10, Codec: "topk"}}
	rows, err := Run(context.Background(), be, train, val, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := model.Preset(o.Preset)
	n := model.NumParams(c)
	if want := 20 * 2 * 0.75 * 4 * float64(n); rows[0].BytesPerWorker != want {
		t.Fatalf("DDP bytes %v, want %v", rows[0].BytesPerWorker, want)
	}
	codec, _ := gradsync.NewCodec("topk", o.Sync.Block, o.Sync.Chunk, o.Sync.TopKFrac)
	var agg int
	for _, p := range gradsync.Partitions(int(n), o.Sync.Partitions) {
		agg += codec.EncodedLen(p.Size)
	}
	if want := 2 * 0.75 * float64(codec.EncodedLen(int(n))+agg); rows[1].BytesPerWorker != want {
		t.Fatalf("DiLoCo bytes %v, want %v", rows[1].BytesPerWorker, want)
	}
	if rows[1].ReductionVsDDP < 100 {
		t.Fatalf("reduction %v", rows[1].ReductionVsDDP)
	}
}
