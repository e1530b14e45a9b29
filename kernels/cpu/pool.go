package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// task is one parallel operation. run computes items [lo, hi) on the given
// worker (0 is the calling goroutine). Tasks are long-lived structs owned by
// the Backend so that starting one allocates nothing.
type task interface {
	run(worker, lo, hi int)
}

// pool runs tasks on a fixed set of goroutines. The caller of run is worker 0
// and takes part in the work. A pool is driven by one goroutine at a time.
//
// A training step issues hundreds of short operations back to back, and
// waking a parked goroutine costs tens of microseconds, so idle workers spin
// (yielding) for spinFor before they park, and the caller spins while it
// waits for the last worker. Parking uses a per-worker state word and a
// one-slot channel: whoever flips the state from parked to running owns the
// wake-up.
type pool struct {
	n       int
	gen     atomic.Uint64 // bumped once per job
	pending atomic.Int64  // helpers that have not finished the current job
	state   []atomic.Int32
	wake    []chan struct{}
	quit    chan struct{}
	closing atomic.Bool
	exit    sync.WaitGroup

	t     task
	items int
	grain int
	next  atomic.Int64
}

const (
	running int32 = iota
	parked
)

// spinFor is how long an idle worker polls for new work before parking.
const spinFor = 100 * time.Microsecond

func newPool(n int) *pool {
	p := &pool{n: n, quit: make(chan struct{})}
	p.state = make([]atomic.Int32, n-1)
	p.wake = make([]chan struct{}, n-1)
	for i := range p.wake {
		p.wake[i] = make(chan struct{}, 1)
		p.exit.Add(1)
		go p.loop(i+1, p.gen.Load())
	}
	return p
}

func (p *pool) loop(w int, seen uint64) {
	defer p.exit.Done()
	st, wake := &p.state[w-1], p.wake[w-1]
	for {
		start := time.Now()
		for p.gen.Load() == seen {
			if p.closing.Load() {
				return
			}
			if time.Since(start) < spinFor {
				runtime.Gosched()
				continue
			}
			st.Store(parked)
			if p.gen.Load() != seen || p.closing.Load() {
				if !st.CompareAndSwap(parked, running) {
					<-wake // run already flipped us and sent the token
				}
				continue
			}
			select {
			case <-wake:
			case <-p.quit:
				return
			}
			start = time.Now()
		}
		seen++ // run waits for every helper before the next job, so gen moved by one
		p.work(w)
		p.pending.Add(-1)
	}
}

func (p *pool) work(w int) {
	for {
		c := int(p.next.Add(1) - 1)
		lo := c * p.grain
		if lo >= p.items {
			return
		}
		p.t.run(w, lo, min(lo+p.grain, p.items))
	}
}

// run splits [0, items) into chunks of grain items and computes them on the
// pool. It returns when every chunk is done.
func (p *pool) run(t task, items, grain int) {
	if items <= 0 {
		return
	}
	grain = max(grain, 1)
	if p.n == 1 || items <= grain {
		t.run(0, 0, items)
		return
	}
	p.t, p.items, p.grain = t, items, grain
	p.next.Store(0)
	p.pending.Store(int64(p.n - 1))
	p.gen.Add(1)
	for i := range p.state {
		if p.state[i].CompareAndSwap(parked, running) {
			p.wake[i] <- struct{}{}
		}
	}
	p.work(0)
	for p.pending.Load() != 0 {
		runtime.Gosched()
	}
	p.t = nil
}

// close stops the workers and waits for them.
func (p *pool) close() {
	p.closing.Store(true)
	close(p.quit)
	p.exit.Wait()
}
