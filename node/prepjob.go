package node

// A split preparation run by the swarm (a job, job.go, whose units are a
// plan's parts): the job is a directory holding plan.json — with every
// input's CID (sharding.Plan.AddCIDs) — and tokenizer.json. Every node
// that takes part fetches the plan, the inputs of the parts it makes or
// checks (each checked against the plan's size and SHA-256), and makes
// the pieces of the parts it ranks first for; a peer's piece is accepted
// after sharding.CheckPiece: the cheap stages re-executed on every
// document, the full analysis on a Share of them. With every piece held,
// each node merges them into the dataset — the dataset one machine
// preparing the same inputs makes.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

const (
	maxPlanFile = 64 << 20 // plan.json, tokenizer.json
	maxPiece    = 1 << 36  // a piece's bytes
)

// PrepJobOptions configure a node's part in a preparation job.
type PrepJobOptions struct {
	JobOptions
	Threads int // analysis threads (0: GOMAXPROCS)
	// Share of a peer's piece's documents analysed again in full before
	// it is accepted (default 0.01; every document gets the cheap stages).
	Share float64
	// Out is the dataset's directory (default: under the node's home).
	Out string
}

// PrepJobResult is a node's view of a finished preparation job.
type PrepJobResult struct {
	JobResult
	Dataset string `json:"dataset"` // the merged dataset's CID
	Dir     string `json:"dir"`     // where it was written
}

// PrepJob is a node's part in a preparation job, open until Close.
type PrepJob struct {
	*swarmJob
	Plan    *sharding.Plan
	tk      *tokenizer.Tokenizer
	pw      *prepWork
	scratch string
	out     string
}

// OpenPrepJob loads preparation job id — its plan and tokenizer, fetched
// and checked — and joins its topic. Run takes part; Close leaves.
func (n *Node) OpenPrepJob(ctx context.Context, id cid.Cid, o PrepJobOptions) (*PrepJob, error) {
	if o.Share <= 0 {
		o.Share = 0.01
	}
	pl, tk, err := n.loadPlan(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("prep job %s: %w", id, err)
	}
	pj := &PrepJob{Plan: pl, tk: tk, scratch: filepath.Join(n.Home, "prep", id.String()), out: o.Out}
	if pj.out == "" {
		pj.out = pj.defaultOut()
	}
	pj.pw = &prepWork{n: n, pl: pl, tk: tk, threads: o.Threads, share: o.Share, dir: filepath.Join(pj.scratch, "inputs"), fetched: map[int]bool{}}
	if pj.swarmJob, err = n.openJob(id, pj.pw, o.JobOptions); err != nil {
		return nil, err
	}
	return pj, nil
}

// defaultOut is where the dataset goes without PrepJobOptions.Out.
func (pj *PrepJob) defaultOut() string { return filepath.Join(pj.scratch, "dataset") }

// loadPlan fetches a job directory's plan and tokenizer.
func (n *Node) loadPlan(ctx context.Context, id cid.Cid) (*sharding.Plan, *tokenizer.Tokenizer, error) {
	read := func(name string) ([]byte, error) {
		c, err := n.Store.Lookup(withStall(ctx), id, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return n.fetchBounded(withStall(ctx), c, maxPlanFile)
	}
	pb, err := read("plan.json")
	if err != nil {
		return nil, nil, err
	}
	pl, err := sharding.ParsePlan(pb)
	if err != nil {
		return nil, nil, err
	}
	if len(pl.InputCIDs) != len(pl.Config.Inputs) {
		return nil, nil, fmt.Errorf("the plan names %d input CIDs for %d inputs (made without --swarm?)", len(pl.InputCIDs), len(pl.Config.Inputs))
	}
	tb, err := read("tokenizer.json")
	if err != nil {
		return nil, nil, err
	}
	tk, err := tokenizer.Parse(tb)
	if err != nil {
		return nil, nil, err
	}
	return pl, tk, nil
}

// Run takes part in the job until this node holds every piece, made here
// or checked, then merges them into the dataset.
func (pj *PrepJob) Run(ctx context.Context) (*PrepJobResult, error) {
	r, err := pj.run(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(pj.scratch, "pieces")
	os.RemoveAll(dir) // a killed run's
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var pieces []string
	for _, u := range r.Units {
		path := filepath.Join(dir, strconv.Itoa(u.Unit))
		if err := pj.n.Store.WriteOut(ctx, cid.MustParse(u.CID), path); err != nil {
			return nil, err
		}
		pieces = append(pieces, path)
	}
	if pj.out == pj.defaultOut() {
		os.RemoveAll(pj.out) // this job's own, from an earlier run; a directory given is never removed
	}
	p, err := sharding.Merge(ctx, pj.Plan, pj.tk, pieces, pj.out, nil)
	if err != nil {
		return nil, err
	}
	pj.o.Logf("%s: %d pieces merged → dataset %s", pj.name(), len(pieces), p.CID)
	return &PrepJobResult{JobResult: *r, Dataset: p.CID.String(), Dir: pj.out}, nil
}

// Close leaves the job's topic and removes the fetched inputs; the
// dataset stays.
func (pj *PrepJob) Close() {
	pj.close()
	os.RemoveAll(pj.pw.dir)
}

// prepWork: a preparation job's units are its plan's parts.
type prepWork struct {
	n       *Node
	pl      *sharding.Plan
	tk      *tokenizer.Tokenizer
	threads int
	share   float64
	dir     string       // fetched inputs
	fetched map[int]bool // inputs fetched and checked (Run's goroutine alone)
}

func (w *prepWork) kind() string          { return "prep" }
func (w *prepWork) units() int            { return len(w.pl.Parts) }
func (w *prepWork) maxBytes() int64       { return maxPiece }
func (w *prepWork) unitName(k int) string { return fmt.Sprintf("part %d", k) }

// inputs fetches the inputs of part k this node lacks, checks each
// against the plan's size and SHA-256, and reads the part from them.
func (w *prepWork) inputs(ctx context.Context, k int) error {
	for _, r := range w.pl.Parts[k] {
		i := r.Input
		if i >= len(w.pl.Config.Inputs) || w.fetched[i] {
			continue
		}
		c, err := cid.Decode(w.pl.InputCIDs[i])
		if err != nil {
			return fmt.Errorf("input %d: %w", i, err)
		}
		path := filepath.Join(w.dir, strconv.Itoa(i))
		if err := os.MkdirAll(w.dir, 0o755); err != nil {
			return err
		}
		if err := w.n.Store.Fetch(withStall(ctx), c, nil); err != nil {
			return fmt.Errorf("input %d (%s): %w", i, c, err)
		}
		os.Remove(path)
		if err := w.n.Store.WriteOut(ctx, c, path); err != nil {
			return fmt.Errorf("input %d (%s): %w", i, c, err)
		}
		if err := sameDigest(path, w.pl.Inputs[i]); err != nil {
			return fmt.Errorf("input %d (%s): %w", i, c, err)
		}
		w.pl.UseLocal(i, path)
		w.fetched[i] = true
	}
	return nil
}

// sameDigest checks a fetched input against the plan's record of it.
func sameDigest(path string, rec sharding.InputRecord) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != rec.Bytes || sum != rec.SHA256 {
		return fmt.Errorf("%d bytes, sha256 %s; the plan digested %s as %d bytes, sha256 %s", n, sum, rec.Name, rec.Bytes, rec.SHA256)
	}
	return nil
}

func (w *prepWork) make(ctx context.Context, k int, out io.Writer) (string, error) {
	if err := w.inputs(ctx, k); err != nil {
		return "", err
	}
	return "a piece", sharding.PreparePart(ctx, w.pl, w.tk, k, w.threads, out)
}

// check streams unit u through CheckPiece.
func (w *prepWork) check(ctx context.Context, k int, u stored, full func(in, line int) bool) (int, error) {
	if err := w.inputs(ctx, k); err != nil {
		return 0, err
	}
	r, err := u.open(ctx)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return sharding.CheckPiece(ctx, w.pl, w.tk, k, w.threads, r, full)
}

func (w *prepWork) verify(ctx context.Context, k int, u stored, seed uint64) (int, error) {
	return w.check(ctx, k, u, sharding.SampleDocs(w.share, seed))
}

// settle analyses both versions in full: whichever is not the part's.
func (w *prepWork) settle(ctx context.Context, k int, a, b stored) (error, error) {
	all := func(int, int) bool { return true }
	_, errA := w.check(ctx, k, a, all)
	_, errB := w.check(ctx, k, b, all)
	return errA, errB
}

func (w *prepWork) recheck(ctx context.Context, k int, u stored, index int) error {
	_, err := w.check(ctx, k, u, func(in, line int) bool { return sharding.DocIndex(in, line) == index })
	return err
}

func (w *prepWork) fraud(err error) (int, bool) {
	if f, ok := sharding.IsPieceFraud(err); ok {
		return f.Doc(), true
	}
	return 0, false
}
