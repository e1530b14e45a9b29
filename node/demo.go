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

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
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
	// NewBackend starts each node's compute backend.
	NewBackend func() (kernels.Backend, error)
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
}

// demoKey derives node i's identity from the seed, so that the demo is
// reproducible to the byte: same peer IDs, same batches, same reducers,
// same checkpoint CIDs.
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
		n, err := Open(ctx, home, Options{Bootstrap: boot})
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
	runID, err := nodes[0].CreateRun(ctx, spec)
	if err != nil {
		return nil, err
	}
	logf("run %s: %s preset (%d parameters), %d rounds × H=%d inner steps of %d×%d tokens, %s codec", runID, o.Preset,
		mustParams(spec), o.Rounds, o.H, o.Batch, o.Seq, o.Codec)

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
	var spot DemoResult // its spot-check counts
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
		defer be.Close()
		p, err := n.OpenRun(ctx, runID, RunOptions{Backend: be, Expect: len(nodes), Logf: logf, Events: func(e RoundEvent) {
			mu.Lock()
			defer mu.Unlock()
			k := peerIdx[e.Peer]
			st := &states[k]
			switch e.Phase {
			case "train":
				st.loss, st.step = e.Loss, e.Step
				if time.Since(lastLine) > 3*time.Second {
					lastLine = time.Now()
					line := fmt.Sprintf("  round %d/%d  inner steps", e.Round, o.Rounds)
					for _, s := range states {
						line += fmt.Sprintf("  %2d/%d loss %.3f", s.step, o.H, s.loss)
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
					line := fmt.Sprintf("round %d/%d  loss", e.Round, o.Rounds)
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
		defer p.Close()
		parts[i] = p
	}
	sent0, recv0 := traffic()
	valStart, err := parts[0].ValLoss()
	if err != nil {
		return nil, err
	}
	logf("genesis checkpoint %s on every node; validation loss %s", parts[0].Base(), fmtLoss(valStart))

	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = p.RunRounds(rctx, o.Rounds); errs[i] != nil {
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
	res := &DemoResult{RunID: runID.String(), CheckpointCID: parts[0].Base().String(), Rounds: o.Rounds, Nodes: len(nodes),
		Checkpoint:   filepath.Join(nodes[0].Home, "runs", runID.String(), fmt.Sprintf("round-%06d", o.Rounds)),
		ValLossStart: valStart, ValLossEnd: valEnd, BytesSent: sent - sent0, BytesReceived: recv - recv0,
		Compression: float64(rawTotal) / float64(max(encTotal, 1)), SpotChecks: spot.SpotChecks, Frauds: spot.Frauds,
		SpotCheckSeconds: spot.SpotCheckSeconds, TrainSeconds: spot.TrainSeconds}
	tk, err := tokenizer.Parse(parts[0].tokJSON)
	if err != nil {
		return nil, err
	}
	m := parts[0].Model()
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
	res.Seconds = time.Since(start).Seconds()
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
