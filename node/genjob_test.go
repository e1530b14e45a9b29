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
	var texts []string
	for _, f := range sharding.Builtin() {
		texts = append(texts, strings.Split(string(f.Text), "\n\n")...)
	}
	tk, err := tokenizer.Train(ctx, slices.Values(texts), tokenizer.TrainConfig{Vocab: 320})
	if err != nil {
		t.Fatal(err)
	}
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
// runs it on every node at once (opts[i] for node i).
func runGenJob(t *testing.T, fx *genFixture, opts [3]node.GenJobOptions) [3]*node.GenJobResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := nodetest.New(t, 3, nodetest.Options{})
	cl.ConnectAll()
	var res [3]*node.GenJobResult
	copy(res[:], runGenNodes(ctx, t, fx, cl.Nodes, opts[:]))
	return res
}

// runGenNodes publishes the job on nodes[0] and runs it on every node at
// once (opts[i] for node i), each waiting for the others.
func runGenNodes(ctx context.Context, t *testing.T, fx *genFixture, nodes []*node.Node, opts []node.GenJobOptions) []*node.GenJobResult {
	t.Helper()
	for _, p := range []string{fx.ckpt, fx.spec, fx.prompts} {
		if _, err := nodes[0].Store.Add(ctx, p, contentstore.AddOptions{Pin: true}); err != nil {
			t.Fatal(err)
		}
	}
	jobs := make([]*node.GenJob, len(nodes))
	for i, n := range nodes {
		o := opts[i]
		o.Threads, o.Expect, o.Patience, o.Logf = 1, max(o.Expect, len(nodes)-1), max(o.Patience, 3*time.Second), t.Logf
		j, err := n.OpenGenJob(ctx, fx.job, o)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		defer j.Close()
		jobs[i] = j
	}
	res := make([]*node.GenJobResult, len(nodes))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			r, err := j.Run(ctx)
			if err != nil {
				t.Errorf("node %d: %v", i, err)
			}
			res[i] = r
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return res
}

// TestGenJobFalseProof: a peer that gossips a fraud proof against an
// honest node's shard — a record that, generated again, is what the shard
// holds — is convicted by every node that checks the proof, and the job
// ends with the shards one machine generates alone.
func TestGenJobFalseProof(t *testing.T) {
	fx := newGenFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Fixed identities: the liar, node 2, ranks first for some shards, so
	// the honest nodes wait for it (Patience) before they generate them,
	// and are still at work when its proof arrives.
	cl := nodetest.New(t, 3, nodetest.Options{KeySeed: 11})
	cl.ConnectAll()
	topic, err := cl.Nodes[2].Host.Join(node.GenTopic(fx.job), nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	lied := make(chan error, 1)
	go func() {
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				lied <- err
				return
			}
			claim, err := node.DecodeGenMsg(m.Data)
			if err != nil || claim.Type != node.GenMsgClaim {
				continue
			}
			signed, _ := m.Signed()
			b, _ := json.Marshal(node.GenMsg{Type: node.GenMsgFraud, Job: claim.Job, Shard: claim.Shard, Claim: signed, Index: claim.Shard * 4})
			lied <- topic.Publish(ctx, b, 0)
			return
		}
	}()
	res := runGenNodes(ctx, t, fx, cl.Nodes[:2], []node.GenJobOptions{{Expect: 2}, {Expect: 2}})
	if err := <-lied; err != nil {
		t.Fatal(err)
	}
	liar := cl.Nodes[2].Host.ID().String()
	for i, r := range res {
		if got := shardCIDs(r); !slices.Equal(got, fx.want) {
			t.Errorf("node %d's shards %v, want %v", i, got, fx.want)
		}
		if len(r.Convicted) != 1 || r.Convicted[0].Peer != liar || !strings.Contains(r.Convicted[0].Why, "does not hold") {
			t.Errorf("node %d convicted %+v, want the liar %s for a proof that does not hold", i, r.Convicted, liar)
		}
	}
}

func shardCIDs(r *node.GenJobResult) []string {
	var out []string
	for _, s := range r.Shards {
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
	res := runGenJob(t, fx, [3]node.GenJobOptions{})
	generated := 0
	for i, r := range res {
		if got := shardCIDs(r); !slices.Equal(got, fx.want) {
			t.Errorf("node %d's shards %v, want %v", i, got, fx.want)
		}
		if len(r.Convicted) != 0 {
			t.Errorf("node %d convicted honest peers: %v", i, r.Convicted)
		}
		if r.Generated == len(fx.want) {
			t.Errorf("node %d generated every shard itself", i)
		}
		if r.Generated < len(fx.want) && r.Checked == 0 {
			t.Errorf("node %d accepted peers' shards without checking any", i)
		}
		generated += r.Generated
	}
	t.Logf("shards generated: %d for %d shards", generated, len(fx.want))

	// Node 1 lies: every record's completion gets a word added.
	var opts [3]node.GenJobOptions
	node.TamperGen(&opts[1], func(k int, b []byte) []byte {
		b = bytes.ReplaceAll(b, []byte(`","text":"`), []byte(` 끝","text":"`))
		return bytes.ReplaceAll(b, []byte("\"}\n"), []byte(" 끝\"}\n"))
	})
	opts[1].Patience = time.Hour // the liar keeps its own version
	res = runGenJob(t, fx, opts)
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
