package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/model/eval"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// DemoOptions configure RunDemo: a swarm of real nodes on 127.0.0.1 in
// this process training one run from the built-in corpus.
type DemoOptions struct {
	Dir       string // node homes and checkpoints (required)
	Nodes     int
	Rounds    int
	H         int
	Preset    string
	Batch     int
	Seq       int
	Vocab     int
	Synthetic int
	Codec     string
	Seed      uint64
	// Recipe, after pretraining, runs the rest of KORMo's recipe on the
	// same swarm: SFT on Instructions built-in instructions, then DPO on
	// Pairs built-in pairs, PostRounds rounds each, each stage a run from
	// the last checkpoint of the one before; EvalItems held-out
	// instructions are asked after each stage.
	Recipe                          bool
	PostRounds, Instructions, Pairs int
	PrefRounds                      int // the DPO stage's rounds (default PostRounds)
	EvalItems                       int
	// SynthLoop, after pretraining, has the swarm generate text from
	// SynthPrompts prompts with its checkpoint (a verified generation job)
	// and train a midtraining stage of SynthRounds rounds on the built-in
	// corpus mixed with it; --recipe then goes on from that stage.
	SynthLoop                 bool
	SynthPrompts, SynthRounds int
	// tamper, in tests, makes node 1 a cheat in the generation job: it
	// changes each shard it generates before it claims it.
	tamper func(shard int, b []byte) []byte
	// NewBackend starts each node's compute backend.
	NewBackend func() (kernels.Backend, error)
	// Hold, when set, is called with the result and a new one-time
	// dashboard link before the nodes stop: node 0's dashboard serves until
	// it returns (demo --dashboard).
	Hold func(res *DemoResult, link string)
	// Progress receives the demo's live lines.
	Progress func(format string, args ...any)
}

// DemoResult is what the demo prints at the end.
type DemoResult struct {
	RunID         string             `json:"run_id"`
	CheckpointCID string             `json:"checkpoint_cid"`
	Checkpoint    string             `json:"checkpoint_dir"`
	Rounds        int                `json:"rounds"`
	Nodes         int                `json:"nodes"`
	ValLossStart  map[string]float64 `json:"val_loss_start"`
	ValLossEnd    map[string]float64 `json:"val_loss_end"`
	BytesSent     uint64             `json:"bytes_sent"`
	BytesReceived uint64             `json:"bytes_received"`
	Compression   float64            `json:"compression"`
	SampleKO      string             `json:"sample_ko"`
	SampleEN      string             `json:"sample_en"`
	Seconds       float64            `json:"seconds"`
	// SpotChecks: contributions re-executed by another node (and how many
	// of them were fraud), taking SpotCheckSeconds against the nodes'
	// TrainSeconds of their own work.
	SpotChecks       int     `json:"spot_checks"`
	Frauds           int     `json:"frauds"`
	SpotCheckSeconds float64 `json:"spot_check_seconds"`
	TrainSeconds     float64 `json:"train_seconds"`
	// Stages (with Recipe): the held-out instruction scores after
	// pretraining and after each later stage, and a chat answer to one
	// question in each language from the last.
	Stages []DemoStage `json:"stages,omitempty"`
	ChatKO string      `json:"chat_ko,omitempty"`
	// Synth (with SynthLoop): the generation job and the stage trained on
	// its output.
	Synth  *DemoSynth `json:"synth,omitempty"`
	ChatEN string     `json:"chat_en,omitempty"`
}

// DemoStage is one stage of the demo's recipe, as evaluated after it.
type DemoStage struct {
	Stage         string                `json:"stage"`
	RunID         string                `json:"run_id"`
	CheckpointCID string                `json:"checkpoint_cid"`
	Instruct      []eval.InstructResult `json:"instruct"`
}

// demoKey derives node i's identity from the seed, so that the demo is
// reproducible to the byte: same peer IDs, same batches, same checkpoint
// CIDs (which node reduces what follows the download rates the nodes
// measure, which does not change what they compute).
func demoKey(seed uint64, i int) (crypto.PrivKey, error) {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seed)
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	sum := sha256.Sum256(append([]byte("fomnet demo identity"), b[:]...))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(sum[:]))
	return k, err
}

// RunDemo starts o.Nodes nodes, prepares the built-in bilingual corpus on
// node 0 (the seeder), creates a run and trains o.Rounds rounds on all
// nodes at once, reporting each round.
func RunDemo(ctx context.Context, o DemoOptions) (*DemoResult, error) {
	start := time.Now()
	logf := o.Progress
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if o.Nodes < 1 || o.Rounds < 1 || o.H < 1 {
		return nil, fmt.Errorf("demo: nodes, rounds and H must be positive")
	}
	nodes := make([]*Node, o.Nodes)
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	}()
	for i := range nodes {
		home := filepath.Join(o.Dir, fmt.Sprintf("node-%d", i))
		if _, err := os.Stat(filepath.Join(home, ConfigFile)); err != nil {
			k, err := demoKey(o.Seed, i)
			if err != nil {
				return nil, err
			}
			raw, _ := crypto.MarshalPrivateKey(k)
			if err := os.MkdirAll(home, 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(home, IdentityFile), raw, 0o600); err != nil {
				return nil, err
			}
			cfg := DefaultConfig()
			cfg.Network.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
			cfg.Network.DHTMode = "server"
			cfg.API.Listen = ""
			if _, err := Init(home, cfg); err != nil {
				return nil, err
			}
		}
		var boot []string
		if i > 0 {
			for _, a := range nodes[0].Host.FullAddrs() {
				boot = append(boot, a.String())
			}
		}
		// Node 0 serves its API on a free loopback port, for the dashboard.
		no := Options{Bootstrap: boot}
		if i == 0 {
			no.API, no.APIListen = true, "127.0.0.1:0"
		}
		n, err := Open(ctx, home, no)
		if err != nil {
			return nil, err
		}
		nodes[i] = n
	}
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			h := nodes[j].Host
			if _, err := nodes[i].Host.ConnectAddr(ctx, h.FullAddrs()[0].String()); err != nil {
				return nil, err
			}
		}
	}
	logf("%d nodes on 127.0.0.1: %s … (homes under %s)", len(nodes), nodes[0].Host.ID(), o.Dir)
	if link, err := nodes[0].DashboardLink(ctx); err == nil {
		logf("watch the run in a browser: %s (a one-time link; --dashboard keeps it serving after the demo)", link)
	}

	// The seeder prepares and publishes the dataset; the run names it.
	dsDir := filepath.Join(o.Dir, "dataset")
	os.RemoveAll(dsDir)
	prep, err := PrepareBuiltinDataset(ctx, dsDir, o.Vocab, o.Seq, o.Synthetic)
	if err != nil {
		return nil, err
	}
	var dsTokens int64
	for _, s := range prep.Manifest.Shards {
		dsTokens += s.Tokens
	}
	dsCID, err := nodes[0].PublishDataset(ctx, dsDir)
	if err != nil {
		return nil, err
	}
	logf("seeder prepared the built-in corpus: %d shards, %d tokens, dataset %s", len(prep.Manifest.Shards), dsTokens, dsCID)
	sc := gradsync.DefaultConfig()
	sc.H, sc.Codec, sc.RoundDeadline = o.H, o.Codec, time.Minute
	spec, err := NewRunSpec("fomnet demo", o.Preset, dsCID, o.Rounds, sc, o.Seed)
	if err != nil {
		return nil, err
	}
	spec.Inner.Batch, spec.Inner.Seq, spec.Inner.Warmup = o.Batch, o.Seq, min(o.H, 20)
	spec.Inner.MaxLR, spec.Inner.MinLR = 3e-3, 3e-4
	st, err := trainStage(ctx, nodes, spec, o, logf)
	if err != nil {
		return nil, err
	}
	defer st.close()
	parts := st.parts
	res := &DemoResult{RunID: st.runID.String(), CheckpointCID: parts[0].Base().String(), Rounds: o.Rounds, Nodes: len(nodes),
		Checkpoint:   filepath.Join(nodes[0].Home, "runs", st.runID.String(), fmt.Sprintf("round-%06d", o.Rounds)),
		ValLossStart: st.valStart, ValLossEnd: st.valEnd, BytesSent: st.sent, BytesReceived: st.recv,
		Compression: st.compression, SpotChecks: st.spot.SpotChecks, Frauds: st.spot.Frauds,
		SpotCheckSeconds: st.spot.SpotCheckSeconds, TrainSeconds: st.spot.TrainSeconds}
	tk, err := tokenizer.Parse(parts[0].tokJSON)
	if err != nil {
		return nil, err
	}
	m, err := parts[0].Model()
	if err != nil {
		return nil, err
	}
	sample := func(prompt string) (string, error) {
		gen, err := model.Generate(m, tk.Encode(prompt), model.SampleConfig{MaxTokens: 32, Window: o.Seq, Mask: tk.UTF8Mask()}, nil)
		if err != nil {
			return "", err
		}
		b, err := tk.Decode(gen)
		return prompt + string(b), err
	}
	// Prompts in the form of the synthetic dialogues, which most of the
	// demo's training tokens are: a model this small, trained for two
	// minutes, continues those; natural text stays beyond it.
	if res.SampleKO, err = sample("민수: 안녕하세요, 지영 씨."); err != nil {
		return nil, err
	}
	if res.SampleEN, err = sample("Sam: Hello, Hana."); err != nil {
		return nil, err
	}
	last := st
	if o.SynthLoop {
		mid, err := synthLoop(ctx, nodes, o, st, tk, logf)
		if mid != nil {
			defer mid.close()
		}
		if err != nil {
			return nil, err
		}
		res.Synth, last = mid.result, mid.stage
		res.CheckpointCID = mid.stage.parts[0].Base().String()
		res.Checkpoint = filepath.Join(nodes[0].Home, "runs", mid.stage.runID.String(), fmt.Sprintf("round-%06d", o.SynthRounds))
	}
	if o.Recipe {
		if err := postTrain(ctx, nodes, o, last, tk, res, logf); err != nil {
			return nil, err
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if o.Hold != nil {
		link, err := nodes[0].DashboardLink(ctx)
		if err != nil {
			return nil, err
		}
		o.Hold(res, link)
	}
	return res, nil
}

func mustParams(s *RunSpec) int64 {
	c, _ := s.ModelConfig()
	return model.NumParams(c)
}

func fmtLoss(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := ""
	for _, k := range keys {
		out += fmt.Sprintf("%s %.3f ", k, m[k])
	}
	return out
}

// demoStage is one run of the demo swarm, its participants open until
// close.
type demoStage struct {
	runID            cid.Cid
	parts            []*Participant
	valStart, valEnd map[string]float64
	sent, recv       uint64
	compression      float64
	spot             struct { // spot checks (and frauds found) and training
		SpotChecks, Frauds             int
		SpotCheckSeconds, TrainSeconds float64
	}
	closers []func()
}

func (s *demoStage) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// trainStage creates the run spec describes on the demo's nodes and trains
// it on all of them at once, reporting each round; every node must end on
// one checkpoint.
func trainStage(ctx context.Context, nodes []*Node, spec *RunSpec, o DemoOptions, logf func(string, ...any)) (_ *demoStage, err error) {
	st := &demoStage{}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	runID, err := nodes[0].CreateRun(ctx, spec)
	if err != nil {
		return nil, err
	}
	rounds, H := spec.Rounds, spec.Sync.H
	logf("run %s (%s): %s preset (%d parameters), %d rounds × H=%d inner steps of %d×%d tokens, %s codec", runID, spec.Stage, o.Preset,
		mustParams(spec), rounds, H, spec.Inner.Batch, spec.Inner.Seq, spec.Sync.Codec)

	type nodeState struct {
		loss    float32
		step    int
		enc     int
		raw     int
		ckpt    string
		adopted bool
	}
	var mu sync.Mutex
	states := make([]nodeState, len(nodes))
	reported := map[int]int{}
	var lastLine time.Time
	var encTotal, rawTotal int
	spot := &st.spot
	peerIdx := map[string]int{}
	for i, n := range nodes {
		peerIdx[n.Host.ID().String()] = i
	}
	traffic := func() (sent, recv uint64) {
		for _, n := range nodes {
			t := n.Store.Traffic()
			sent += t.BytesSent
			recv += t.BytesReceived
		}
		return
	}
	parts := make([]*Participant, len(nodes))
	for i, n := range nodes {
		be, err := o.NewBackend()
		if err != nil {
			return nil, err
		}
		st.closers = append(st.closers, func() { be.Close() })
		// KeepRounds: each node's working copies of older rounds go (their
		// checkpoints stay pinned), or --recipe's 70 rounds would leave
		// every round's weights and outer state twice on every node.
		p, err := n.OpenRun(ctx, runID, RunOptions{Backend: be, Expect: len(nodes), KeepRounds: 2, Logf: logf, Events: func(e RoundEvent) {
			mu.Lock()
			defer mu.Unlock()
			k := peerIdx[e.Peer]
			st := &states[k]
			switch e.Phase {
			case "train":
				st.loss, st.step = e.Loss, e.Step
				if time.Since(lastLine) > 3*time.Second {
					lastLine = time.Now()
					line := fmt.Sprintf("  round %d/%d  inner steps", e.Round, rounds)
					for _, s := range states {
						line += fmt.Sprintf("  %2d/%d loss %.3f", s.step, H, s.loss)
					}
					logf("%s", line)
				}
			case "contributed":
				st.enc, st.raw = e.EncodedBytes, e.RawBytes
				encTotal += e.EncodedBytes
				rawTotal += e.RawBytes
				spot.TrainSeconds += e.Seconds
			case "spot-check":
				spot.SpotChecks++
				spot.SpotCheckSeconds += e.Seconds
				verdict := "follows from its inputs"
				if e.Fraud {
					spot.Frauds++
					verdict = "FRAUD"
				}
				logf("  round %d: node %d re-executed contribution %s in %.1f s: %s", e.Round, k, e.CID, e.Seconds, verdict)
			case "checkpoint", "adopted":
				st.ckpt, st.adopted = e.CID, e.Phase == "adopted"
				reported[e.Round]++
				if reported[e.Round] == len(nodes) {
					cids := map[string]bool{}
					line := fmt.Sprintf("round %d/%d  loss", e.Round, rounds)
					for _, s := range states {
						line += fmt.Sprintf(" %.3f", s.loss)
						cids[s.ckpt] = true
					}
					sent, recv := traffic()
					agree := "all nodes agree"
					if len(cids) > 1 {
						agree = fmt.Sprintf("%d different checkpoints!", len(cids))
					}
					logf("%s  Δ %.1f MiB → %.2f MiB (%.1f×)  swarm sent %.1f MiB, received %.1f MiB  checkpoint %s (%s)",
						line, float64(st.raw)/(1<<20), float64(st.enc)/(1<<20), float64(st.raw)/float64(max(st.enc, 1)),
						float64(sent)/(1<<20), float64(recv)/(1<<20), e.CID, agree)
				}
			}
		}})
		if err != nil {
			return nil, err
		}
		st.closers = append(st.closers, p.Close)
		parts[i] = p
	}
	sent0, recv0 := traffic()
	valStart, err := parts[0].ValLoss()
	if err != nil {
		return nil, err
	}
	logf("genesis checkpoint %s on every node; validation %s %s", parts[0].Base(), lossName(spec), fmtLoss(valStart))

	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = p.RunRounds(rctx, rounds); errs[i] != nil {
				cancel() // one node failing stops the demo
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, p := range parts {
		if !p.Base().Equals(parts[0].Base()) {
			return nil, fmt.Errorf("node %d ended at checkpoint %s, node 0 at %s", i, p.Base(), parts[0].Base())
		}
	}
	valEnd, err := parts[0].ValLoss()
	if err != nil {
		return nil, err
	}
	sent, recv := traffic()
	st.runID, st.parts, st.valStart, st.valEnd = runID, parts, valStart, valEnd
	st.sent, st.recv, st.compression = sent-sent0, recv-recv0, float64(rawTotal)/float64(max(encTotal, 1))
	return st, nil
}

// lossName says what a run's validation loss is.
func lossName(spec *RunSpec) string {
	if pc, ok := spec.Pref(); ok {
		return pc.Objective + " loss"
	}
	return "loss"
}

// postTrain runs the rest of the recipe after the demo's pretraining: SFT
// on the built-in instructions from pretraining's last checkpoint, then
// DPO on the built-in pairs from SFT's (the SFT model its reference), each
// a run of the same swarm; the held-out instructions are scored after
// every stage, and the chat model answers a question in each language.
func postTrain(ctx context.Context, nodes []*Node, o DemoOptions, pre *demoStage, tk *tokenizer.Tokenizer, res *DemoResult, logf func(string, ...any)) error {
	var held []eval.Instruction
	for _, in := range sharding.Instructions(1, o.EvalItems, true) {
		held = append(held, eval.Instruction{Lang: in.Lang, AnswerLang: in.AnswerLang, Prompt: in.Prompt, Answer: in.Answer, Wrong: in.Wrong})
	}
	score := func(name string, st *demoStage) error {
		m, err := st.parts[0].Model()
		if err != nil {
			return err
		}
		rs, err := eval.Instructions(m, tk, held, 32)
		if err != nil {
			return err
		}
		res.Stages = append(res.Stages, DemoStage{Stage: name, RunID: st.runID.String(), CheckpointCID: st.parts[0].Base().String(), Instruct: rs})
		for _, r := range rs {
			logf("after %s, held-out instructions in %s: exact %.0f%%, answer language %.0f%%, prefers the right answer %.0f%% (%d items)",
				name, r.Language, 100*r.ExactMatch, 100*r.LanguageMatch, 100*r.PrefAccuracy, r.N)
		}
		return nil
	}
	if err := score("pretrain", pre); err != nil {
		return err
	}
	last := pre
	prefRounds := o.PrefRounds
	if prefRounds <= 0 {
		prefRounds = o.PostRounds
	}
	for _, stg := range []struct {
		name, objective     string
		instructions, pairs int
		rounds              int
		lr, beta, alpha     float64
	}{{"sft", "", o.Instructions, 0, o.PostRounds, 3e-3, 0, 0}, {"preference", model.ObjectiveDPO, 0, o.Pairs, prefRounds, 2e-4, 0.5, 20}} {
		dir := filepath.Join(o.Dir, "dataset-"+stg.name)
		os.RemoveAll(dir)
		cfg := sharding.PrepareConfig{Instructions: stg.instructions, Pairs: stg.pairs, SyntheticSeed: o.Seed,
			Filters: sharding.DefaultFilters(), SeqLen: o.Seq, ShardTokens: 1 << 16}
		if _, err := sharding.Prepare(ctx, cfg, tk, dir, nil); err != nil {
			return err
		}
		ds, err := nodes[0].PublishDataset(ctx, dir)
		if err != nil {
			return err
		}
		sc := gradsync.DefaultConfig()
		sc.H, sc.Codec, sc.RoundDeadline = o.H, o.Codec, time.Minute
		spec, err := NewRunSpec("fomnet demo "+stg.name, o.Preset, ds, stg.rounds, sc, o.Seed)
		if err != nil {
			return err
		}
		from := sharding.LinkTo(last.parts[0].Base())
		spec.From, spec.Stage, spec.Model = &from, stg.name, nil
		spec.Inner.Batch, spec.Inner.Seq, spec.Inner.Warmup = o.Batch+o.Batch%2, o.Seq, min(o.H, 10)
		spec.Inner.MaxLR, spec.Inner.MinLR = stg.lr, stg.lr/10
		if stg.objective != "" {
			spec.Inner.Objective, spec.Inner.Beta, spec.Inner.Alpha = stg.objective, stg.beta, stg.alpha
		}
		st, err := trainStage(ctx, nodes, spec, o, logf)
		if err != nil {
			return err
		}
		defer st.close()
		if err := score(stg.name, st); err != nil {
			return err
		}
		last = st
	}
	// The recipe's result is the chat model: its checkpoint is the demo's.
	res.CheckpointCID = last.parts[0].Base().String()
	res.Checkpoint = filepath.Join(nodes[0].Home, "runs", last.runID.String(), fmt.Sprintf("round-%06d", prefRounds))
	m, err := last.parts[0].Model()
	if err != nil {
		return err
	}
	end, _ := tk.SpecialID(tokenizer.EndTurn)
	ask := func(q string) (string, error) {
		prompt, err := tk.EncodeChat([]tokenizer.Message{{Role: tokenizer.RoleUser, Content: q}}, true)
		if err != nil {
			return "", err
		}
		out, err := model.Generate(m, prompt, model.SampleConfig{MaxTokens: 32, Window: o.Seq, Stop: []int32{end}, Mask: tk.UTF8Mask()}, nil)
		if err != nil {
			return "", err
		}
		b, err := tk.Decode(out)
		return q + " → " + string(b), err
	}
	for _, h := range held {
		var err error
		switch {
		case h.Lang == "ko" && res.ChatKO == "":
			res.ChatKO, err = ask(h.Prompt)
		case h.Lang == "en" && res.ChatEN == "":
			res.ChatEN, err = ask(h.Prompt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
