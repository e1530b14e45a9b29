package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gen"
	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// DemoSynth is what the demo's synthetic-data loop did.
type DemoSynth struct {
	Job        string   `json:"job"`       // the generation job's CID
	Generator  string   `json:"generator"` // the pretraining checkpoint that wrote the text
	Shards     []string `json:"shards"`    // the generated shards' CIDs
	Records    int      `json:"records"`
	Tokens     int      `json:"tokens"`
	TokensPerS float64  `json:"tokens_per_s"`
	Verified   int      `json:"verified"` // records of peers' shards the nodes generated again
	// Convicted: the peers a node convicted, for a shard or a proof that
	// generating again refuted (none in an honest swarm).
	Convicted []string `json:"convicted"`
	Dataset   string   `json:"dataset"` // the mixture the next stage trains on
	// GeneratedShare is the share of the mixture's tokens that the
	// generator wrote (the manifest's totals: source synthetic, generator
	// this checkpoint).
	GeneratedShare float64            `json:"generated_share"`
	RunID          string             `json:"run_id"`
	CheckpointCID  string             `json:"checkpoint_cid"`
	ValLossStart   map[string]float64 `json:"val_loss_start"`
	ValLossEnd     map[string]float64 `json:"val_loss_end"`
}

// synthStage is the loop's result and its midtraining stage (open until
// close).
type synthStage struct {
	result *DemoSynth
	stage  *demoStage
}

func (s *synthStage) close() {
	if s.stage != nil {
		s.stage.close()
	}
}

// synthPrompts are the loop's prompt set: openings of dialogues, three in
// four Korean.
func synthPrompts(n int) []gen.Prompt {
	koNames := []string{"민수", "지영", "서준", "하나", "도윤", "수아", "예준", "지우"}
	enNames := []string{"Sam", "Hana", "Seojun", "Mina", "Alex", "Jun", "Yuna", "Leo"}
	koOpen := []string{"안녕하세요", "오늘 날씨가 어때요?", "주말에 뭐 했어요?", "점심 먹었어요?", "어디에 가요?"}
	enOpen := []string{"Hello", "How is the weather today?", "What did you do on the weekend?", "Where are you going?"}
	out := make([]gen.Prompt, n)
	for i := range out {
		if i%4 == 3 {
			out[i] = gen.Prompt{Prompt: enNames[i/4%8] + ": " + enOpen[i/32%4], Lang: "en"}
		} else {
			out[i] = gen.Prompt{Prompt: koNames[i%8] + ": " + koOpen[i/8%5], Lang: "ko"}
		}
	}
	return out
}

// synthLoop is KORMo's loop at demo size: the swarm runs a generation
// job with the checkpoint it pretrained (every node takes part: shards by
// rendezvous, each peer's shard checked by generating a sample of it
// again; genjob.go), the seeder prepares the shards with the built-in
// corpus into a dataset whose manifest names the generator, and the swarm
// trains a midtraining stage from the checkpoint on that mixture.
func synthLoop(ctx context.Context, nodes []*Node, o DemoOptions, pre *demoStage, tk *tokenizer.Tokenizer, logf func(string, ...any)) (*synthStage, error) {
	dir := filepath.Join(o.Dir, "synth")
	os.RemoveAll(dir)
	var pb bytes.Buffer
	prompts := synthPrompts(o.SynthPrompts)
	for _, p := range prompts {
		b, _ := json.Marshal(p)
		pb.Write(append(b, '\n'))
	}
	pc, err := contentstore.FileCID(ctx, bytes.NewReader(pb.Bytes()))
	if err != nil {
		return nil, err
	}
	generator := pre.parts[0].Base()
	spec := &gen.Spec{Format: gen.SpecFormat, Generator: generator.String(), Prompts: pc.String(), PromptCount: len(prompts),
		Sampling: gen.Sampling{Temperature: 0.8, TopP: 0.95, MaxTokens: 64, Seed: o.Seed}, PerShard: 32, Stage: "midtrain", Licence: sharding.BuiltinLicence}
	sb, err := spec.Encode()
	if err != nil {
		return nil, err
	}
	jobDir := filepath.Join(dir, "job")
	if err := fsutil.WriteDir(jobDir, map[string][]byte{"spec.json": sb, "prompts.jsonl": pb.Bytes()}); err != nil {
		return nil, err
	}
	job, err := nodes[0].PublishGenJob(ctx, jobDir)
	if err != nil {
		return nil, err
	}
	logf("generation job %s: %d prompts, %d shards, generator %s (the pretrained checkpoint)", job, len(prompts), spec.Shards(), generator)
	start := time.Now()
	results, inputs, err := runGenJob(ctx, nodes, job, o, dir, logf)
	if err != nil {
		return nil, err
	}
	res := &DemoSynth{Job: job.String(), Generator: generator.String(), Convicted: []string{}}
	for i, r := range results {
		res.Tokens += r.Tokens
		res.Verified += r.Checked
		for _, c := range r.Convicted {
			res.Convicted = append(res.Convicted, fmt.Sprintf("node %d convicted %s: %s", i, c.Peer, c.Why))
		}
	}
	for _, s := range results[0].Units {
		res.Shards = append(res.Shards, s.CID)
	}
	res.Records = spec.PromptCount
	cfg := sharding.PrepareConfig{Builtin: true, Synthetic: o.Synthetic, SyntheticSeed: o.Seed,
		Filters: sharding.DefaultFilters(), SeqLen: o.Seq, ShardTokens: 1 << 16, Inputs: inputs}
	res.TokensPerS = float64(res.Tokens) / time.Since(start).Seconds()
	dsDir := filepath.Join(o.Dir, "dataset-midtrain")
	os.RemoveAll(dsDir)
	prep, err := sharding.Prepare(ctx, cfg, tk, dsDir, nil)
	if err != nil {
		return nil, err
	}
	var all, synth int64
	for _, t := range prep.Manifest.Shards {
		all += t.Tokens
		if t.Generator == spec.Generator {
			synth += t.Tokens
		}
	}
	res.GeneratedShare = float64(synth) / float64(max(all, 1))
	ds, err := nodes[0].PublishDataset(ctx, dsDir)
	if err != nil {
		return nil, err
	}
	res.Dataset = ds.String()
	logf("midtraining mixture %s: %.0f%% of its %d tokens written by %s, the rest the built-in corpus", ds, 100*res.GeneratedShare, all, generator)
	sc := gradsync.DefaultConfig()
	sc.H, sc.Codec, sc.RoundDeadline = o.H, o.Codec, time.Minute
	rs, err := NewRunSpec("fomnet demo midtrain", o.Preset, ds, o.SynthRounds, sc, o.Seed)
	if err != nil {
		return nil, err
	}
	from := sharding.LinkTo(generator)
	rs.From, rs.Stage, rs.Model = &from, "midtrain", nil
	rs.Inner.Batch, rs.Inner.Seq, rs.Inner.Warmup = o.Batch, o.Seq, min(o.H, 10)
	rs.Inner.MaxLR, rs.Inner.MinLR = 1e-4, 1e-5
	st, err := trainStage(ctx, nodes, rs, o, logf)
	if err != nil {
		return nil, err
	}
	res.RunID, res.CheckpointCID = st.runID.String(), st.parts[0].Base().String()
	res.ValLossStart, res.ValLossEnd = st.valStart, st.valEnd
	return &synthStage{result: res, stage: st}, nil
}

// runGenJob runs generation job job on every node at once (each waiting
// for the others) and writes the seeder's shards to dir; it returns each
// node's view and the shards as inputs of a dataset.
func runGenJob(ctx context.Context, nodes []*Node, job cid.Cid, o DemoOptions, dir string, logf func(string, ...any)) ([]*GenJobResult, []sharding.Input, error) {
	jobs := make([]*GenJob, len(nodes))
	defer func() {
		for _, j := range jobs {
			if j != nil {
				j.Close()
			}
		}
	}()
	for i, n := range nodes {
		be, err := o.NewBackend()
		if err != nil {
			return nil, nil, err
		}
		defer be.Close()
		jo := GenJobOptions{Backend: be, Batch: 64, JobOptions: JobOptions{Expect: len(nodes) - 1, Patience: 30 * time.Second, Logf: func(f string, a ...any) {
			logf("node %d: "+f, append([]any{i}, a...)...)
		}}}
		if o.tamper != nil && i == 1 {
			jo.tamper = o.tamper
		}
		if jobs[i], err = n.OpenGenJob(ctx, job, jo); err != nil {
			return nil, nil, fmt.Errorf("node %d: %w", i, err)
		}
	}
	results := make([]*GenJobResult, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() { results[i], errs[i] = j.Run(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	inputs, err := jobs[0].WriteShards(ctx, results[0], dir)
	return results, inputs, err
}
