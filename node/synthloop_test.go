package node

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/gen"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
)

// TestSynthLoopCatchesCheat: in the demo's generation job a node that
// hands out a shard whose records' text it changed — consistently, in
// canonical form, so only generating them again can tell — is caught by
// the node that checks the shard, with a fraud proof naming a record. (A
// sample is checked: one changed record among 32 escapes a check of 4 with
// probability 7/8.)
func TestSynthLoopCatchesCheat(t *testing.T) {
	o := DemoOptions{Dir: t.TempDir(), Nodes: 2, Rounds: 1, H: 3, Preset: "tiny", Batch: 4, Seq: 64, Vocab: 320, Synthetic: 200,
		Codec: "int8", Seed: 1, SynthLoop: true, SynthPrompts: 40, SynthRounds: 1,
		NewBackend: func() (kernels.Backend, error) { return cpu.New(cpu.Options{Threads: 1}) }}
	o.tamper = func(k int, b []byte) []byte {
		if k != 1 {
			return b
		}
		lines := bytes.SplitAfter(b, []byte("\n"))
		for i, l := range lines {
			l = bytes.Replace(l, []byte(`","text":"`), []byte(` 끝","text":"`), 1)
			lines[i] = bytes.Replace(l, []byte("\"}\n"), []byte(" 끝\"}\n"), 1)
		}
		return bytes.Join(lines, nil)
	}
	_, err := RunDemo(context.Background(), o)
	var fp *gen.FraudProof
	if !errors.As(err, &fp) || fp.Shard != 1 || fp.Index < 32 || fp.Index >= 40 || !strings.Contains(fp.Reason, "completion differs") {
		t.Fatalf("demo with a cheating producer: %v", err)
	}
}
