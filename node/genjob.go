package node

// A generation job run by the swarm (a job, job.go, whose units are the
// spec's shards): every node that takes part loads the job — spec, prompt
// set and generator checkpoint, each fetched by CID and checked — and
// generates the shards it ranks first for; a peer's shard is accepted
// after Sample of its records, generated again, give the same text.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/gen"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

const (
	maxGenSpec  = 64 << 10  // a job's spec
	maxGenShard = 256 << 20 // a shard's bytes
)

// GenJobOptions configure a node's part in a generation job.
type GenJobOptions struct {
	JobOptions
	Backend kernels.Backend // nil: a CPU backend of Threads threads
	Threads int
	Batch   int // sequences decoded at once (default 64; the output does not depend on it)
	// Sample is how many records of a peer's shard are generated again
	// before it is accepted (default 4): a shard with one wrong record
	// among n passes one node's check with probability 1 − Sample/n, and
	// every node checks every shard it did not generate itself.
	Sample int
}

// GenJobResult is a node's view of a finished generation job.
type GenJobResult struct {
	JobResult
	Generator string  `json:"generator"`
	Tokens    int     `json:"tokens"`       // tokens this node generated
	TokensPS  float64 `json:"tokens_per_s"` // Tokens / Seconds
}

// GenJob is a node's part in a generation job, open until Close.
type GenJob struct {
	*swarmJob
	Spec *gen.Spec
	g    *gen.Generator
	own  kernels.Backend // closed by Close when the job made it
	gw   *genWork
}

// LoadGenSpec fetches generation job id's spec and checks it: a dag-json
// block in the canonical encoding, so that its CID is the job's.
func (n *Node) LoadGenSpec(ctx context.Context, id cid.Cid) (*gen.Spec, error) {
	if id.Prefix().Codec != cid.DagJSON {
		return nil, fmt.Errorf("gen job %s: not a dag-json block", id)
	}
	blk, err := n.Store.FetchBlock(withStall(ctx), id)
	if err != nil {
		return nil, fmt.Errorf("gen job %s: %w", id, err)
	}
	return parseGenSpec(id, blk.RawData())
}

// parseGenSpec reads spec bytes that must be job id's canonical block.
func parseGenSpec(id cid.Cid, b []byte) (*gen.Spec, error) {
	if len(b) > maxGenSpec {
		return nil, fmt.Errorf("gen job %s: a spec of %d bytes", id, len(b))
	}
	s, err := gen.ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("gen job %s: %w", id, err)
	}
	if c, err := s.Encode(); err != nil || !bytes.Equal(c, b) {
		return nil, fmt.Errorf("gen job %s: not a spec in its canonical encoding", id)
	}
	return s, nil
}

// PublishGenJob stores the generation job in dir (spec.json and
// prompts.jsonl, as fomnet gen create writes them): the spec as its
// dag-json block and the prompts as a file, both pinned. It returns the
// job's CID. The generator checkpoint is added apart (fomnet add).
func (n *Node) PublishGenJob(ctx context.Context, dir string) (cid.Cid, error) {
	sb, err := os.ReadFile(filepath.Join(dir, "spec.json"))
	if err != nil {
		return cid.Undef, err
	}
	spec, err := gen.ParseSpec(sb)
	if err != nil {
		return cid.Undef, fmt.Errorf("%s: %w", dir, err)
	}
	b, err := spec.Encode()
	if err != nil {
		return cid.Undef, err
	}
	id, err := contentstore.BlockCID(contentstore.CodecDagJSON, b)
	if err != nil {
		return cid.Undef, err
	}
	pc, err := n.Store.Add(ctx, filepath.Join(dir, "prompts.jsonl"), contentstore.AddOptions{Pin: true, Name: "gen job " + id.String() + " prompts"})
	if err != nil {
		return cid.Undef, err
	}
	if pc.String() != spec.Prompts {
		return cid.Undef, fmt.Errorf("%s: prompts.jsonl is %s, the spec's prompts are %s", dir, pc, spec.Prompts)
	}
	if err := n.Store.PutBlock(ctx, id, b); err != nil {
		return cid.Undef, err
	}
	return id, n.Store.Pin(ctx, id, "gen job "+id.String())
}

// OpenGenJob loads generation job id — its spec, prompt set and generator
// checkpoint, fetched from the swarm and checked — and joins its topic.
// Run takes part; Close leaves.
func (n *Node) OpenGenJob(ctx context.Context, id cid.Cid, o GenJobOptions) (*GenJob, error) {
	if o.Sample <= 0 {
		o.Sample = 4
	}
	spec, err := n.LoadGenSpec(ctx, id)
	if err != nil {
		return nil, err
	}
	gj := &GenJob{Spec: spec}
	if gj.g, err = gj.load(ctx, n, o); err != nil {
		gj.closeBackend()
		return nil, fmt.Errorf("gen job %s: %w", id, err)
	}
	gj.gw = &genWork{g: gj.g, sample: o.Sample}
	if gj.swarmJob, err = n.openJob(id, gj.gw, o.JobOptions); err != nil {
		gj.closeBackend()
		return nil, err
	}
	return gj, nil
}

// load fetches the job's prompts and checkpoint and loads them.
func (gj *GenJob) load(ctx context.Context, n *Node, o GenJobOptions) (*gen.Generator, error) {
	pc, err := cid.Decode(gj.Spec.Prompts)
	if err != nil {
		return nil, fmt.Errorf("prompts %q: %w", gj.Spec.Prompts, err)
	}
	pb, err := n.fetchBounded(withStall(ctx), pc, 1<<32)
	if err != nil {
		return nil, fmt.Errorf("prompts: %w", err)
	}
	ps, err := gen.ReadPrompts(bytes.NewReader(pb))
	if err != nil {
		return nil, fmt.Errorf("prompts %s: %w", pc, err)
	}
	if len(ps) != gj.Spec.PromptCount {
		return nil, fmt.Errorf("prompts %s: %d prompts, the spec says %d", pc, len(ps), gj.Spec.PromptCount)
	}
	gc, err := cid.Decode(gj.Spec.Generator)
	if err != nil {
		return nil, fmt.Errorf("generator %q: %w", gj.Spec.Generator, err)
	}
	dir, cleanup, err := n.checkpointDir(ctx, gc)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	tb, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("generator %s has no tokenizer.json", gc)
	}
	tk, err := tokenizer.Parse(tb)
	if err != nil {
		return nil, err
	}
	be := o.Backend
	if be == nil {
		if be, err = cpu.New(cpu.Options{Threads: o.Threads}); err != nil {
			return nil, err
		}
		gj.own = be
	}
	m, _, err := model.Load(be, dir)
	if err != nil {
		return nil, fmt.Errorf("generator %s: %w", gc, err)
	}
	return &gen.Generator{M: m, Tok: tk, Spec: gj.Spec, Prompts: ps, Batch: o.Batch}, nil
}

// Run takes part in the job until this node holds every shard, generated
// here or checked, and returns its view. The node keeps repeating its
// claims until Close, so that peers still working can check its shards.
func (gj *GenJob) Run(ctx context.Context) (*GenJobResult, error) {
	r, err := gj.run(ctx)
	if err != nil {
		return nil, err
	}
	return &GenJobResult{JobResult: *r, Generator: gj.Spec.Generator, Tokens: gj.gw.tokens,
		TokensPS: float64(gj.gw.tokens) / max(r.Seconds, 1e-9)}, nil
}

// Close leaves the job's topic and stops its goroutines; idempotent.
func (gj *GenJob) Close() {
	gj.close()
	gj.closeBackend()
}

func (gj *GenJob) closeBackend() {
	if gj.own != nil {
		gj.own.Close()
		gj.own = nil
	}
}

// WriteShards writes the finished job's shards to dir as shard-K.jsonl
// and returns them as inputs of a data prepare recipe: synthetic, their
// generator the job's checkpoint, with the job's stage and licence.
func (gj *GenJob) WriteShards(ctx context.Context, r *GenJobResult, dir string) ([]sharding.Input, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var ins []sharding.Input
	for _, u := range r.Units {
		b, err := gj.n.readFile(ctx, cid.MustParse(u.CID))
		if err != nil {
			return nil, err
		}
		path, err := filepath.Abs(filepath.Join(dir, fmt.Sprintf("shard-%d.jsonl", u.Unit)))
		if err != nil {
			return nil, err
		}
		if err := fsutil.WriteFile(path, b); err != nil {
			return nil, err
		}
		ins = append(ins, sharding.Input{Path: path, Format: sharding.FormatJSONL, Field: "text", Source: "synthetic",
			Generator: gj.Spec.Generator, Licence: gj.Spec.Licence, Stage: gj.Spec.Stage})
	}
	return ins, nil
}

// genWork: a generation job's units are its shards.
type genWork struct {
	g      *gen.Generator
	sample int
	tokens int // generated here (Run's goroutine alone)
}

func (w *genWork) kind() string    { return "gen" }
func (w *genWork) units() int      { return w.g.Spec.Shards() }
func (w *genWork) maxBytes() int64 { return maxGenShard }

func (w *genWork) unitName(k int) string {
	lo, hi := w.g.Spec.Range(k)
	return fmt.Sprintf("shard %d (prompts %d–%d)", k, lo, hi)
}

func (w *genWork) make(_ context.Context, k int, out io.Writer) (string, error) {
	var tokens int
	b, err := w.g.Shard(k, func(n int) { tokens = n })
	w.tokens += tokens
	if err == nil {
		_, err = out.Write(b)
	}
	return fmt.Sprintf("%d tokens", tokens), err
}

func (w *genWork) verify(ctx context.Context, k int, u stored, seed uint64) (int, error) {
	b, err := u.bytes(ctx, maxGenShard)
	if err != nil {
		return 0, err
	}
	lo, hi := w.g.Spec.Range(k)
	return min(w.sample, hi-lo), w.g.Verify(k, b, w.sample, seed)
}

// settle generates again the first record where the versions differ (a
// version that does not parse is wrong as it is).
func (w *genWork) settle(ctx context.Context, k int, ua, ub stored) (error, error) {
	a, err := ua.bytes(ctx, maxGenShard)
	if err != nil {
		return err, err
	}
	b, err := ub.bytes(ctx, maxGenShard)
	if err != nil {
		return nil, err
	}
	var idx []int
	if i := w.g.FirstDifference(k, a, b); i >= 0 {
		idx = []int{i}
	}
	return w.g.Check(k, a, idx), w.g.Check(k, b, idx)
}

func (w *genWork) recheck(ctx context.Context, k int, u stored, index int) error {
	lo, hi := w.g.Spec.Range(k)
	if index != -1 && (index < lo || index >= hi) {
		return fmt.Errorf("%w: record %d, shard %d", errNotProof, index, k)
	}
	b, err := u.bytes(ctx, maxGenShard)
	if err != nil {
		return err
	}
	if index == -1 {
		return w.g.Check(k, b, nil)
	}
	return w.g.Check(k, b, []int{index})
}

func (w *genWork) fraud(err error) (int, bool) {
	var fp *gen.FraudProof
	if errors.As(err, &fp) {
		return fp.Index, true
	}
	return 0, false
}
