package node_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// A stage is a run that starts from another run's checkpoint: two nodes
// pretrain, then fine-tune on conversations from the pretraining's last
// checkpoint. The SFT run's genesis holds that checkpoint's weights, and
// the lineage walks from the SFT's last checkpoint through both runs to
// the pretraining genesis. A stage spec that cannot start from its
// checkpoint is refused with a clear error.
func TestStages(t *testing.T) {
	const n, rounds = 2, 2
	c := nodetest.New(t, n, nodetest.Options{})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pre, dsDir := smallRunDir(t, c, rounds)
	preID, err := c.Nodes[0].CreateRun(ctx, pre)
	if err != nil {
		t.Fatal(err)
	}
	ps := openAll(t, c, preID, n, func(int, node.RoundEvent) {})
	for i, err := range runAll(ps, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, rounds) }) {
		if err != nil {
			t.Fatalf("pretraining, node %d: %v", i, err)
		}
	}
	last := ps[0].Base()

	// SFT data with the pretraining's tokenizer.
	tb, err := os.ReadFile(filepath.Join(dsDir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	sftCID := conversationsDataset(t, c.Nodes[0], tb)
	sft := *pre
	sft.Name, sft.Stage, sft.Dataset, sft.Tokenizer = "sft", "sft", sharding.LinkTo(sftCID), nil
	from := sharding.LinkTo(last)
	sft.From = &from
	sft.Model = nil // the checkpoint's, completed by CreateRun
	sftID, err := c.Nodes[1].CreateRun(ctx, &sft)
	if err != nil {
		t.Fatal(err)
	}
	var log checkpointLog
	ss := openAll(t, c, sftID, n, func(_ int, e node.RoundEvent) { log.record(e) })
	genesis := ss[0].Base()
	mc, _ := pre.ModelConfig()
	weights := func(ck cid.Cid) []byte {
		w, _, err := model.ReadWeights(mc, fileOf(t, c.Nodes[0], ck, "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		binary.Write(&b, binary.LittleEndian, w)
		return b.Bytes()
	}
	if !bytes.Equal(weights(genesis), weights(last)) {
		t.Fatalf("the SFT genesis %s does not hold the weights of %s", genesis, last)
	}
	for i, err := range runAll(ss, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, rounds) }) {
		if err != nil {
			t.Fatalf("SFT, node %d: %v", i, err)
		}
	}
	log.agreed(t, rounds)
	sameBase(t, ss)

	// The lineage, walked on a node, newest first.
	stages, err := c.Nodes[1].Lineage(ctx, ss[1].Base())
	if err != nil {
		t.Fatal(err)
	}
	want := []node.LineageStage{
		{Run: sftID.String(), Stage: "sft", Name: "sft", Rounds: rounds, Last: ss[1].Base().String(), First: genesis.String()},
		{Run: preID.String(), Stage: "pretrain", Name: "test", Rounds: rounds, Last: last.String()},
	}
	if len(stages) != 2 {
		t.Fatalf("lineage %+v", stages)
	}
	want[1].First = stages[1].First
	for i := range want {
		if stages[i].Dataset == "" {
			t.Fatalf("lineage stage %d names no dataset", i)
		}
		want[i].Dataset, want[i].Generators = stages[i].Dataset, stages[i].Generators
		if !reflect.DeepEqual(stages[i], want[i]) {
			t.Fatalf("lineage stage %d: %+v, want %+v", i, stages[i], want[i])
		}
	}

	// Specs that cannot start from their checkpoint.
	wider, _ := model.Preset("tiny")
	wider.Vocab, wider.Dim = 512, 2*wider.Dim
	hf, _ := model.MarshalHFConfig(wider)
	ds, _ := pre.Dataset.Cid()
	nowhere, _ := cid.Decode("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")
	for _, tc := range []struct {
		name string
		edit func(s *node.RunSpec)
		want string
	}{
		{"a dataset as base", func(s *node.RunSpec) { l := sharding.LinkTo(ds); s.From = &l }, "not a checkpoint"},
		{"another shape", func(s *node.RunSpec) { s.Model = hf }, "is not the run's"},
		{"another tokenizer", func(s *node.RunSpec) {
			s.Dataset = sharding.LinkTo(conversationsDataset(t, c.Nodes[0], nil))
		}, "tokenizer.json is not the dataset's"},
		{"a base nobody has", func(s *node.RunSpec) { l := sharding.LinkTo(nowhere); s.From = &l }, nowhere.String()},
	} {
		s := sft
		s.Tokenizer, s.Model = nil, nil
		tc.edit(&s)
		wctx := contentstore.WithWait(ctx, contentstore.Wait{Stall: 2 * time.Second})
		_, err := c.Nodes[0].CreateRun(wctx, &s)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// conversationsDataset prepares and publishes on nd a small conversations
// dataset with tokenizer tb (nil: one trained on the conversations).
func conversationsDataset(t *testing.T, nd *node.Node, tb []byte) cid.Cid {
	t.Helper()
	var sb strings.Builder
	for i := range 200 {
		a, b := i%19+1, i%23+2
		fmt.Fprintf(&sb, `{"messages":[{"role":"user","content":"What is %d plus %d?"},{"role":"assistant","content":"%d."}]}`+"\n", a, b, a+b)
	}
	return jsonlDataset(t, nd, tb, sb.String(), "sft")
}

// jsonlDataset prepares JSONL records of stage into a dataset of rows of
// 32 tokens with tokenizer tb (nil: one trained on them) and publishes it
// on nd.
func jsonlDataset(t *testing.T, nd *node.Node, tb []byte, records, stage string) cid.Cid {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	in := filepath.Join(dir, "data.jsonl")
	if err := os.WriteFile(in, []byte(records), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := sharding.PrepareConfig{Inputs: []sharding.Input{{Path: in, Licence: "CC0-1.0", Stage: stage}}, Filters: sharding.DefaultFilters(),
		SeqLen: 32, ShardTokens: 4096}
	var tk *tokenizer.Tokenizer
	var err error
	if tb != nil {
		tk, err = tokenizer.Parse(tb)
	} else {
		texts, _ := sharding.Texts(cfg.Inputs, false, 0, 0)
		tk, err = tokenizer.Train(ctx, texts, tokenizer.TrainConfig{Vocab: 300})
	}
	if err != nil {
		t.Fatal(err)
	}
	ds := filepath.Join(dir, "ds")
	if _, err := sharding.Prepare(ctx, cfg, tk, ds, nil); err != nil {
		t.Fatal(err)
	}
	k, err := nd.PublishDataset(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fileOf reads the file name of the directory ck from nd's store.
func fileOf(t *testing.T, nd *node.Node, ck cid.Cid, name string) []byte {
	t.Helper()
	ctx := context.Background()
	f, err := nd.Store.Lookup(ctx, ck, name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := nd.Store.Open(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A preference stage through the swarm: from a pretrained checkpoint, two
// nodes train DPO (and, in another run, SimPO) on pairs whose rejected
// answer is a refusal; the held-out pairs' preference accuracy rises from
// chance to most, the margin grows, and the nodes agree. The nodes'
// identities are fixed (KeySeed): they decide the shards each trains on,
// and with random ones one draw in CI left the Korean pairs' accuracy at
// 0.38 (stop 48; 320 draws here passed), so the figures are now the same
// on every machine and a failure can be replayed.
func TestSwarmPreference(t *testing.T) {
	const n, rounds = 2, 3
	c := nodetest.New(t, n, nodetest.Options{KeySeed: 33})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pre, dsDir := smallRunDir(t, c, 1)
	preID, err := c.Nodes[0].CreateRun(ctx, pre)
	if err != nil {
		t.Fatal(err)
	}
	ps := openAll(t, c, preID, n, func(int, node.RoundEvent) {})
	for i, err := range runAll(ps, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, 1) }) {
		if err != nil {
			t.Fatalf("pretraining, node %d: %v", i, err)
		}
	}
	tb, err := os.ReadFile(filepath.Join(dsDir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	pairs := pairsDataset(t, c.Nodes[0], tb)
	for _, obj := range []struct {
		name        string
		beta, gamma float64
	}{{"dpo", 0.5, 0}, {"simpo", 2, 0.2}} {
		spec := *pre
		spec.Name, spec.Stage, spec.Dataset, spec.Tokenizer, spec.Rounds = "prefer", "preference", sharding.LinkTo(pairs), nil, rounds
		from := sharding.LinkTo(ps[0].Base())
		spec.From = &from
		spec.Inner.Objective, spec.Inner.Beta, spec.Inner.Gamma = obj.name, obj.beta, obj.gamma
		spec.Inner.Batch, spec.Inner.MaxLR, spec.Inner.MinLR = 4, 3e-3, 3e-3
		id, err := c.Nodes[0].CreateRun(ctx, &spec)
		if err != nil {
			t.Fatal(err)
		}
		var log checkpointLog
		ss := openAll(t, c, id, n, func(_ int, e node.RoundEvent) { log.record(e) })
		before, err := ss[0].ValPreference()
		if err != nil {
			t.Fatal(err)
		}
		for i, err := range runAll(ss, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, rounds) }) {
			if err != nil {
				t.Fatalf("%s, node %d: %v", obj.name, i, err)
			}
		}
		log.agreed(t, rounds)
		t.Logf("%s: contributions per round %v, deadlines passed %v", obj.name, log.counts, log.deadlines)
		sameBase(t, ss)
		after, err := ss[1].ValPreference()
		if err != nil {
			t.Fatal(err)
		}
		for _, lang := range []string{"en", "ko"} {
			b, a := before[lang], after[lang]
			t.Logf("%s %s: %d held-out pairs, accuracy %.2f → %.2f, margin %.3f → %.3f, loss %.3f → %.3f", obj.name, lang, a.Pairs, b.Accuracy, a.Accuracy, b.Margin, a.Margin, b.Loss, a.Loss)
			if a.Pairs == 0 || a.Accuracy < 0.9 || !(a.Margin > b.Margin) || !(a.Loss < b.Loss) {
				t.Errorf("%s %s: accuracy %.2f → %.2f, margin %.3f → %.3f", obj.name, lang, b.Accuracy, a.Accuracy, b.Margin, a.Margin)
			}
		}
	}
}

// pairsDataset prepares and publishes on nd preference pairs (tokenizer
// tb), in English and Korean: the chosen answer gives the sum, the
// rejected one refuses.
func pairsDataset(t *testing.T, nd *node.Node, tb []byte) cid.Cid {
	t.Helper()
	var sb strings.Builder
	for i := range 200 {
		a, b := i%19+1, i%23+2
		fmt.Fprintf(&sb, `{"prompt":"What is %d plus %d?","chosen":"%d.","rejected":"I do not know."}`+"\n", a, b, a+b)
		fmt.Fprintf(&sb, `{"prompt":"%d 더하기 %d는?","chosen":"%d입니다.","rejected":"모르겠습니다."}`+"\n", a, b, a+b)
	}
	return jsonlDataset(t, nd, tb, sb.String(), "preference")
}

// A recipe of two stages, run by two nodes with RunRecipe: both derive
// the same SFT run from the recipe and pretraining's last checkpoint, end
// on one checkpoint, and its lineage walks through both stages. Recipes
// that cannot chain are refused, naming the stage.
func TestRecipe(t *testing.T) {
	const n = 2
	c := nodetest.New(t, n, nodetest.Options{})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pre, dsDir := smallRunDir(t, c, 2)
	tb, err := os.ReadFile(filepath.Join(dsDir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	sft := *pre
	sft.Name, sft.Stage, sft.Dataset, sft.Tokenizer, sft.Rounds = "sft", "sft", sharding.LinkTo(conversationsDataset(t, c.Nodes[0], tb)), nil, 2
	r := &node.Recipe{Format: node.RecipeFormat, Name: "two stages", Stages: []node.RunSpec{*pre, sft}}
	id, err := c.Nodes[0].CreateRecipe(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	finals := make([]cid.Cid, n)
	runs := make([][]cid.Cid, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			be, err := cpu.New(cpu.Options{Threads: 1})
			if err != nil {
				errs[i] = err
				return
			}
			defer be.Close()
			finals[i], errs[i] = nd.RunRecipe(ctx, id, node.RunOptions{Backend: be, Expect: n}, nil, func(st node.RecipeStage) {
				runs[i] = append(runs[i], st.Run)
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	if !finals[0].Equals(finals[1]) || !slices.Equal(runs[0], runs[1]) || len(runs[0]) != 2 {
		t.Fatalf("nodes ended on %v after runs %v", finals, runs)
	}
	stages, err := c.Nodes[1].Lineage(ctx, finals[1])
	if err != nil || len(stages) != 2 || stages[0].Run != runs[0][1].String() || stages[1].Run != runs[0][0].String() {
		t.Fatalf("lineage %+v: %v", stages, err)
	}
	for _, tc := range []struct {
		name string
		edit func(r *node.Recipe)
		want string
	}{
		{"a later stage with from", func(r *node.Recipe) { l := sharding.LinkTo(finals[0]); r.Stages[1].From = &l }, "stage 2 (sft) names from"},
		{"no model", func(r *node.Recipe) { r.Stages[1].Model = nil }, "stage 2 (sft) has no model"},
		{"dpo first", func(r *node.Recipe) { r.Stages[0].Inner.Objective, r.Stages[0].Inner.Beta = "dpo", 0.1 }, "stage 1: run: inner objective dpo needs from"},
		{"no stages", func(r *node.Recipe) { r.Stages = nil }, "0 stages"},
	} {
		bad := *r
		bad.Stages = slices.Clone(r.Stages)
		tc.edit(&bad)
		if _, err := c.Nodes[0].CreateRecipe(ctx, &bad); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
