package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
)

// The dashboard's validation losses: this node evaluates each settled
// checkpoint on the run's held-out rows (the split every participant
// uses, Participant.ValLoss) itself, rather than believing a number a
// peer put in a message. The evaluator works in the background, one
// checkpoint at a time and only for checkpoints a page asked for, and
// keeps what it computed in HOME/dashboard/<run>/<checkpoint>.json, so
// each checkpoint is evaluated once. A run whose dataset is larger than
// maxEvalDataset is not evaluated unless this node already holds it.

const maxEvalDataset = 512 << 20

type evalJob struct{ run, ck cid.Cid }

type evaluator struct {
	n *Node

	mu      sync.Mutex
	queue   []evalJob
	queued  map[string]bool
	notes   map[string]string // run → why it has no validation loss
	wake    chan struct{}
	started bool
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}

	// The worker's: the run whose data and model are loaded.
	cur   cid.Cid
	curP  *Participant
	close func()
}

func newEvaluator(n *Node) *evaluator {
	e := &evaluator{n: n, queued: map[string]bool{}, notes: map[string]string{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e
}

// stop ends the worker and waits for it. Idempotent.
func (e *evaluator) stop() {
	e.cancel()
	e.mu.Lock()
	started := e.started
	e.started = true // none after this
	e.mu.Unlock()
	if started {
		<-e.done
	} else {
		close(e.done)
	}
}

func (e *evaluator) path(run, ck cid.Cid) string {
	return evalPath(e.n.Home, run.String(), ck.String())
}

// evalPath is where a checkpoint's validation losses are kept.
func evalPath(home, run, ck string) string {
	return filepath.Join(home, "dashboard", run, ck+".json")
}

// fill sets the validation losses of the points already computed and
// queues the others; it returns why some are missing ("" if none are).
func (e *evaluator) fill(run cid.Cid, points []RoundView) string {
	missing := 0
	for i := range points {
		ck, err := cid.Decode(points[i].Checkpoint)
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(e.path(run, ck)); err == nil && json.Unmarshal(b, &points[i].Val) == nil {
			continue
		}
		missing++
		e.enqueue(evalJob{run, ck})
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if note := e.notes[run.String()]; note != "" {
		return note
	}
	if missing > 0 {
		return fmt.Sprintf("evaluating %d checkpoints on the held-out rows…", missing)
	}
	return ""
}

func (e *evaluator) enqueue(j evalJob) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx.Err() != nil || e.queued[j.ck.String()] || e.notes[j.run.String()] != "" {
		return
	}
	if !e.started {
		e.started = true
		go e.loop()
	}
	e.queued[j.ck.String()] = true
	e.queue = append(e.queue, j)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *evaluator) next() (evalJob, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.queue) == 0 {
		return evalJob{}, false
	}
	j := e.queue[0]
	e.queue = e.queue[1:]
	return j, true
}

func (e *evaluator) loop() {
	defer close(e.done)
	defer e.unload()
	for {
		j, ok := e.next()
		if !ok {
			select {
			case <-e.ctx.Done():
				return
			case <-e.wake:
				continue
			}
		}
		err := e.evaluate(j)
		e.mu.Lock()
		delete(e.queued, j.ck.String())
		if err != nil && e.ctx.Err() == nil {
			e.notes[j.run.String()] = err.Error()
			e.n.logf("dashboard: run %s: no validation loss: %v", j.run, err)
		}
		e.mu.Unlock()
	}
}

// evaluate computes and stores one checkpoint's validation losses.
func (e *evaluator) evaluate(j evalJob) error {
	p, err := e.participant(j.run)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	f, err := e.n.Store.Lookup(ctx, j.ck, "model.safetensors")
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", j.ck, err)
	}
	r, err := e.n.Store.Open(ctx, f)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", j.ck, err)
	}
	defer r.Close()
	// The weights go from the store to the model a piece at a time: a
	// large model's are never held here.
	w, err := model.NewWeightsReader(p.cfg, contentstore.NewFileAt(r), int64(r.Size()), "model.safetensors")
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", j.ck, err)
	}
	val, err := p.valLoss(weights{open: w})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", j.ck, err)
	}
	b, _ := json.Marshal(val)
	if err := os.MkdirAll(filepath.Dir(e.path(j.run, j.ck)), 0o755); err != nil {
		return err
	}
	return fsutil.WriteFile(e.path(j.run, j.ck), b)
}

// participant loads run's spec, dataset and model (not its directory:
// the evaluator only reads), keeping one run loaded at a time.
func (e *evaluator) participant(run cid.Cid) (*Participant, error) {
	if e.curP != nil && e.cur.Equals(run) {
		return e.curP, nil
	}
	e.unload()
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Minute)
	defer cancel()
	spec, err := e.n.localSpec(ctx, run)
	if err != nil {
		return nil, err
	}
	ds, err := spec.Dataset.Cid()
	if err != nil {
		return nil, err
	}
	head, err := e.n.loadDatasetHead(ctx, ds, nil)
	if err != nil {
		return nil, err
	}
	var size int64
	for _, s := range head.Manifest.Shards {
		size += s.Bytes
	}
	if size > maxEvalDataset {
		for _, s := range head.Manifest.Shards {
			c, err := s.CID.Cid()
			if err != nil {
				return nil, err
			}
			if ok, _ := e.n.Store.Has(ctx, c); !ok {
				return nil, fmt.Errorf("its dataset %s is %d MiB and not on this node; `fomnet mirror %s` to see validation losses", ds, size>>20, ds)
			}
		}
	}
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		return nil, err
	}
	p, err := e.n.newParticipant(ctx, run, RunOptions{Backend: be, Logf: func(string, ...any) {}}, false)
	if err != nil {
		be.Close()
		return nil, err
	}
	e.cur, e.curP, e.close = run, p, func() { be.Close() }
	return p, nil
}

func (e *evaluator) unload() {
	if e.close != nil {
		e.close()
	}
	e.cur, e.curP, e.close = cid.Undef, nil, nil
}
