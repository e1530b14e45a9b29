package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gen"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// genFixture is a generation job of a tiny random-weight checkpoint
// (its text is noise, decoded exactly) over 30 bilingual prompts in
// shards of 4, written to dir: the checkpoint, spec.json, prompts.jsonl.
type genFixture struct {
	ckpt, spec, prompts string
	job                 cid.Cid
	want                []string // every shard's CID, generated here alone
}

func newGenFixture(t *testing.T) *genFixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	tk := builtinTokenizer(t)
	be := cpu.MustNew(cpu.Options{Threads: 1})
	defer be.Close()
	c, _ := model.Preset("tiny")
	c.Vocab = tk.Vocab()
	m, err := model.New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	tb, _ := tk.MarshalJSON()
	fx := &genFixture{ckpt: filepath.Join(dir, "ckpt"), spec: filepath.Join(dir, "spec.json"), prompts: filepath.Join(dir, "prompts.jsonl")}
	if err := m.Save(fx.ckpt, nil, model.File{Name: "tokenizer.json", Data: tb}); err != nil {
		t.Fatal(err)
	}
	var pb bytes.Buffer
	var ps []gen.Prompt
	for i := range 30 {
		p := gen.Prompt{Prompt: fmt.Sprintf("지영: %d번째 이야기를 들려줄게요.", i), Lang: "ko"}
		if i%3 == 2 {
			p = gen.Prompt{Prompt: fmt.Sprintf("Story %d begins", i), Lang: "en"}
		}
		ps = append(ps, p)
		fmt.Fprintf(&pb, "{\"prompt\":%q,\"lang\":%q}\n", p.Prompt, p.Lang)
	}
	os.WriteFile(fx.prompts, pb.Bytes(), 0o644)
	gc, _ := contentstore.PathCID(ctx, fx.ckpt)
	pc, _ := contentstore.FileCID(ctx, bytes.NewReader(pb.Bytes()))
	spec := &gen.Spec{Format: gen.SpecFormat, Generator: gc.String(), Prompts: pc.String(), PromptCount: len(ps),
		Sampling: gen.Sampling{Temperature: 0.9, TopP: 0.95, MaxTokens: 16, Seed: 9}, PerShard: 4, Stage: "midtrain", Licence: "CC0-1.0"}
	sb, _ := spec.Encode()
	os.WriteFile(fx.spec, sb, 0o644)
	id, err := spec.CID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fx.job = cid.MustParse(id)
	g := &gen.Generator{M: m, Tok: tk, Spec: spec, Prompts: ps, Batch: 5}
	for k := range spec.Shards() {
		b, err := g.Shard(k, nil)
		if err != nil {
			t.Fatal(err)
		}
		sc, _ := contentstore.FileCID(ctx, bytes.NewReader(b))
		fx.want = append(fx.want, sc.String())
	}
	return fx
}

// runGenJob publishes the job on node 0 of a fresh 3-node cluster and
// runs it on every node (opts[i] for node i; see runGenNodes for liar).
func runGenJob(t *testing.T, fx *genFixture, opts [3]node.GenJobOptions, liar int) [3]*node.GenJobResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := nodetest.New(t, 3, nodetest.Options{})
	cl.ConnectAll()
	var res [3]*node.GenJobResult
	copy(res[:], runGenNodes(ctx, t, fx, cl.Nodes, opts[:], liar))
	return res
}

// runGenNodes publishes the job on nodes[0] and runs it on every node at
// once (opts[i] for node i), each waiting for the others — except node
// liar (−1: none), which runs first and alone, making every shard itself
// (its lies then reach the others whatever the ranks), and whose errors
// are its own.
func runGenNodes(ctx context.Context, t *testing.T, fx *genFixture, nodes []*node.Node, opts []node.GenJobOptions, liar int) []*node.GenJobResult {
	t.Helper()
	publishGenJob(ctx, t, nodes[0], fx)
	jobs := make([]*node.GenJob, len(nodes))
	for i, n := range nodes {
		o := opts[i]
		o.Threads, o.Expect, o.Patience, o.Logf = 1, max(o.Expect, len(nodes)-1), max(o.Patience, 3*time.Second), t.Logf
		if i == liar {
			o.Expect, o.Patience = 0, time.Millisecond
		}
		j, err := n.OpenGenJob(ctx, fx.job, o)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		defer j.Close()
		jobs[i] = j
	}
	res := make([]*node.GenJobResult, len(nodes))
	runNodes(t, len(nodes), liar, func(i int) (err error) {
		res[i], err = jobs[i].Run(ctx)
		return err
	})
	return res
}

// publishGenJob stores the fixture's job and checkpoint on n.
func publishGenJob(ctx context.Context, t *testing.T, n *node.Node, fx *genFixture) {
	t.Helper()
	if _, err := n.Store.Add(ctx, fx.ckpt, contentstore.AddOptions{Pin: true}); err != nil {
		t.Fatal(err)
	}
	id, err := n.PublishGenJob(ctx, filepath.Dir(fx.spec))
	if err != nil || id != fx.job {
		t.Fatalf("published job %s (%v), want %s", id, err, fx.job)
	}
}

// runNodes runs run(i) for every node at once, but for node first (−1:
// none), which runs before the others start; first's errors are its own.
func runNodes(t *testing.T, n, first int, run func(i int) error) {
	t.Helper()
	if first >= 0 {
		run(first)
		time.Sleep(500 * time.Millisecond) // its claims reach the others
	}
	var wg sync.WaitGroup
	for i := range n {
		if i != first {
			wg.Go(func() {
				if err := run(i); err != nil {
					t.Errorf("node %d: %v", i, err)
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// TestGenJobLiars: a peer that gossips a fraud proof against an honest
// node's shard — a record that, generated again, is what the shard holds
// — is convicted by every node that checks the proof; a peer that claims a
// shard with bytes nobody serves is passed over after one fetch timeout
// (its shards generated by others); the job ends with the shards one
// machine generates alone.
func TestGenJobLiars(t *testing.T) {
	fx := newGenFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Fixed identities: each liar ranks first for some shards, so the
	// honest nodes wait for them (Patience) before they generate those,
	// and are still at work when the lies arrive.
	cl := nodetest.New(t, 4, nodetest.Options{KeySeed: 11})
	cl.ConnectAll()
	bogus, _ := contentstore.FileCID(ctx, strings.NewReader("nobody has this"))
	lies := []func(claim node.JobMsg, signed []byte) node.JobMsg{
		func(claim node.JobMsg, signed []byte) node.JobMsg {
			return node.JobMsg{Type: node.JobFraud, Job: claim.Job, Unit: claim.Unit, Claim: signed, Index: claim.Unit * 4}
		},
		func(claim node.JobMsg, _ []byte) node.JobMsg {
			return node.JobMsg{Type: node.JobClaim, Job: claim.Job, Unit: claim.Unit, CID: bogus.String()}
		},
	}
	lied := make(chan error, len(lies))
	for i, lie := range lies {
		topic, err := cl.Nodes[2+i].Host.Join(node.JobTopic("gen", fx.job), nil)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := topic.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Cancel()
		go func() {
			for {
				m, err := sub.Next(ctx)
				if err != nil {
					lied <- err
					return
				}
				claim, err := node.DecodeJobMsg(m.Data)
				if err != nil || claim.Type != node.JobClaim || m.From == cl.Nodes[3].Host.ID() {
					continue // an honest node's claim
				}
				signed, _ := m.Signed()
				b, _ := json.Marshal(lie(claim, signed))
				lied <- topic.Publish(ctx, b, 0)
				return
			}
		}()
	}
	o := node.GenJobOptions{JobOptions: node.JobOptions{Expect: 3, Timeout: 2 * time.Second}}
	res := runGenNodes(ctx, t, fx, cl.Nodes[:2], []node.GenJobOptions{o, o}, -1)
	for range lies {
		if err := <-lied; err != nil {
			t.Fatal(err)
		}
	}
	accuser, claimer := cl.Nodes[2].Host.ID().String(), cl.Nodes[3].Host.ID().String()
	for i, r := range res {
		if got := shardCIDs(r); !slices.Equal(got, fx.want) {
			t.Errorf("node %d's shards %v, want %v", i, got, fx.want)
		}
		if len(r.Convicted) != 1 || r.Convicted[0].Peer != accuser || !strings.Contains(r.Convicted[0].Why, "does not hold") {
			t.Errorf("node %d convicted %+v, want %s for a proof that does not hold", i, r.Convicted, accuser)
		}
		if !slices.Equal(r.Passed, []string{claimer}) {
			t.Errorf("node %d passed over %v, want %s, whose shard nobody serves", i, r.Passed, claimer)
		}
	}
}

func shardCIDs(r *node.GenJobResult) []string {
	var out []string
	for _, s := range r.Units {
		out = append(out, s.CID)
	}
	return out
}

// TestGenJob: three nodes on loopback run a generation job; every node
// ends with the shards one machine generates alone (so a re-run gives the
// same CIDs), the work spread over the nodes, every shard a node did not
// generate checked by it; and a node that hands out shards with altered
// text — consistently, in canonical form, so that only generating again
// tells — is convicted by both honest nodes, whose shards are still the
// job's.
func TestGenJob(t *testing.T) {
	fx := newGenFixture(t)
	res := runGenJob(t, fx, [3]node.GenJobOptions{}, -1)
	generated := 0
	for i, r := range res {
		if got := shardCIDs(r); !slices.Equal(got, fx.want) {
			t.Errorf("node %d's shards %v, want %v", i, got, fx.want)
		}
		if len(r.Convicted) != 0 {
			t.Errorf("node %d convicted honest peers: %v", i, r.Convicted)
		}
		if r.Made == len(fx.want) {
			t.Errorf("node %d generated every shard itself", i)
		}
		if r.Made < len(fx.want) && r.Checked == 0 {
			t.Errorf("node %d accepted peers' shards without checking any", i)
		}
		generated += r.Made
	}
	t.Logf("shards generated: %d for %d shards", generated, len(fx.want))

	// Node 1 lies: every record's completion gets a word added.
	var opts [3]node.GenJobOptions
	node.TamperJob(&opts[1].JobOptions, func(k int, b []byte) []byte {
		b = bytes.ReplaceAll(b, []byte(`","text":"`), []byte(` 끝","text":"`))
		return bytes.ReplaceAll(b, []byte("\"}\n"), []byte(" 끝\"}\n"))
	})
	res = runGenJob(t, fx, opts, 1)
	for _, i := range []int{0, 2} {
		r := res[i]
		if got := shardCIDs(r); !slices.Equal(got, fx.want) {
			t.Errorf("with a liar, node %d's shards %v, want %v", i, got, fx.want)
		}
		if len(r.Convicted) != 1 || !strings.Contains(r.Convicted[0].Why, "completion differs") {
			t.Errorf("node %d convicted %+v, want node 1 for a completion that differs", i, r.Convicted)
		}
	}
}

// TestGenJobResume: a node stopped in the middle of a job takes back, when
// it joins again, the shards it had made (pinned in its store) and makes
// only the rest.
func TestGenJobResume(t *testing.T) {
	fx := newGenFixture(t)
	ctx := context.Background()
	cl := nodetest.New(t, 1, nodetest.Options{})
	n := cl.Nodes[0]
	publishGenJob(ctx, t, n, fx)
	stop, cancel := context.WithCancel(ctx)
	o := node.GenJobOptions{Threads: 1, JobOptions: node.JobOptions{Logf: func(f string, a ...any) {
		if strings.Contains(f, "made here") {
			cancel() // stopped after its first shard
		}
	}}}
	j, err := n.OpenGenJob(ctx, fx.job, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Run(stop); err == nil {
		t.Fatal("a stopped job ended")
	}
	j.Close()
	o.Logf = t.Logf
	j, err = n.OpenGenJob(ctx, fx.job, o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	r, err := j.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := shardCIDs(r); !slices.Equal(got, fx.want) || r.Resumed != 1 || r.Made != len(fx.want)-1 {
		t.Fatalf("after a restart: shards %v (want %v), %d resumed, %d made", got, fx.want, r.Resumed, r.Made)
	}
}

// builtinTokenizer is a 320-token tokenizer of the built-in corpus.
func builtinTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	var texts []string
	for _, f := range sharding.Builtin() {
		texts = append(texts, strings.Split(string(f.Text), "\n\n")...)
	}
	tk, err := tokenizer.Train(context.Background(), slices.Values(texts), tokenizer.TrainConfig{Vocab: 320})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}
