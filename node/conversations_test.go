package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// A run on conversations (a dataset with a loss mask) trains through the
// swarm: every node ends on one checkpoint, the masked validation loss
// drops, and a run whose sequences do not fit the dataset's rows is
// refused when a node opens it.
func TestSwarmConversations(t *testing.T) {
	const n, rounds = 3, 3
	c := nodetest.New(t, n, nodetest.Options{})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var sb strings.Builder
	for i := range 300 {
		a, b := i%19+1, i%23+2
		fmt.Fprintf(&sb, `{"messages":[{"role":"user","content":"What is %d plus %d?"},{"role":"assistant","content":"%d plus %d is %d."}]}`+"\n", a, b, a, b, a+b)
		fmt.Fprintf(&sb, `{"instruction":"%d 더하기 %d는?","output":"%d 더하기 %d는 %d입니다."}`+"\n", a, b, a, b, a+b)
	}
	in := filepath.Join(dir, "chat.jsonl")
	os.WriteFile(in, []byte(sb.String()), 0o644)
	cfg := sharding.PrepareConfig{Inputs: []sharding.Input{{Path: in, Licence: "CC0-1.0", Stage: "sft"}}, Filters: sharding.DefaultFilters(),
		SeqLen: 32, ShardTokens: 4096}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	texts, _ := sharding.Texts(cfg.Inputs, false, 0, 0)
	tk, err := tokenizer.Train(ctx, texts, tokenizer.TrainConfig{Vocab: 320})
	if err != nil {
		t.Fatal(err)
	}
	ds := filepath.Join(dir, "ds")
	if _, err := sharding.Prepare(ctx, cfg, tk, ds, nil); err != nil {
		t.Fatal(err)
	}
	dsCID, err := c.Nodes[0].PublishDataset(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	mc, _ := model.Preset("tiny")
	sc := gradsync.DefaultConfig()
	sc.H, sc.Partitions, sc.RoundDeadline = 8, 2, 20*time.Second
	spec, err := node.NewRunSpecForModel("sft", mc, dsCID, rounds, sc, 5)
	if err != nil {
		t.Fatal(err)
	}
	spec.Stage, spec.Inner.Batch, spec.Inner.Seq, spec.Inner.Warmup = "sft", 4, 32, 2
	runID, err := c.Nodes[0].CreateRun(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var log checkpointLog
	ps := openAll(t, c, runID, n, func(_ int, e node.RoundEvent) { log.record(e) })
	start, _ := ps[0].ValLoss()
	for i, err := range runAll(ps, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, rounds) }) {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	log.agreed(t, rounds)
	sameBase(t, ps)
	end, _ := ps[0].ValLoss()
	t.Logf("masked validation loss %v → %v", start, end)
	if !(end["en"] < start["en"]) || !(end["ko"] < start["ko"]) {
		t.Fatalf("validation loss %v → %v", start, end)
	}
	long := *spec
	long.Name, long.Inner.Seq = "too long", 64
	longID, err := c.Nodes[0].CreateRun(ctx, &long)
	if err != nil {
		t.Fatal(err)
	}
	be, _ := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	if _, err := c.Nodes[1].OpenRun(ctx, longID, node.RunOptions{Backend: be}); err == nil || !strings.Contains(err.Error(), "rows of 32") {
		t.Fatalf("a run whose sequences outgrow the rows: %v", err)
	}
}
