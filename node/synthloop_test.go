package node

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
)

// TestSynthLoopCatchesCheat: in the demo's generation job a node that
// hands out shards whose records' text it changed — consistently, in
// canonical form, so only generating them again can tell — is convicted
// by the node that checks them, and the loop goes on with the shards an
// honest swarm makes.
func TestSynthLoopCatchesCheat(t *testing.T) {
	o := DemoOptions{Dir: t.TempDir(), Nodes: 2, Rounds: 1, H: 3, Preset: "tiny", Batch: 4, Seq: 64, Vocab: 320, Synthetic: 200,
		Codec: "int8", Seed: 1, SynthLoop: true, SynthPrompts: 128, SynthRounds: 1,
		NewBackend: func() (kernels.Backend, error) { return cpu.New(cpu.Options{Threads: 1}) }}
	honest, err := RunDemo(context.Background(), o)
	o.Progress = t.Logf
	if err != nil {
		t.Fatal(err)
	}
	o.Dir = t.TempDir()
	o.tamper = func(k int, b []byte) []byte {
		lines := bytes.SplitAfter(b, []byte("\n"))
		for i, l := range lines {
			l = bytes.Replace(l, []byte(`","text":"`), []byte(` 끝","text":"`), 1)
			lines[i] = bytes.Replace(l, []byte("\"}\n"), []byte(" 끝\"}\n"), 1)
		}
		return bytes.Join(lines, nil)
	}
	res, err := RunDemo(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Synth.Shards, honest.Synth.Shards) || res.Synth.Dataset != honest.Synth.Dataset {
		t.Errorf("with a cheat, shards %v and dataset %s; honest %v and %s", res.Synth.Shards, res.Synth.Dataset, honest.Synth.Shards, honest.Synth.Dataset)
	}
	if len(honest.Synth.Convicted) != 0 || len(res.Synth.Convicted) == 0 || !strings.Contains(res.Synth.Convicted[0], "node 0 convicted") ||
		!strings.Contains(res.Synth.Convicted[0], "completion differs") {
		t.Errorf("convicted: honest %v, with a cheat %v", honest.Synth.Convicted, res.Synth.Convicted)
	}
}
