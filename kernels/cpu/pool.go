package cpu

import (
	"sync"
	"sync/atomic"
)

// task is one parallel operation. run computes items [lo, hi) on the given
// worker (0 is the calling goroutine). Tasks are long-lived structs owned by
// the Backend so that starting one allocates nothing.
type task interface {
	run(worker, lo, hi int)
}

// pool runs tasks on a fixed set of goroutines. The caller of run is worker 0
// and takes part in the work. A pool is driven by one goroutine at a time.
type pool struct {
	n     int // workers including the caller
	wake  []chan struct{}
	quit  chan struct{}
	exit  sync.WaitGroup
	busy  sync.WaitGroup
	t     task
	items int
	grain int
	next  atomic.Int64
}

func newPool(n int) *pool {
	p := &pool{n: n, quit: make(chan struct{})}
	p.wake = make([]chan struct{}, n-1)
	for i := range p.wake {
		p.wake[i] = make(chan struct{}, 1)
		p.exit.Add(1)
		go p.loop(i + 1)
	}
	return p
}

func (p *pool) loop(w int) {
	defer p.exit.Done()
	for {
		select {
		case <-p.wake[w-1]:
			p.work(w)
			p.busy.Done()
		case <-p.quit:
			return
		}
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
	chunks := (items + grain - 1) / grain
	if p.n == 1 || chunks == 1 {
		t.run(0, 0, items)
		return
	}
	p.t, p.items, p.grain = t, items, grain
	p.next.Store(0)
	helpers := min(p.n-1, chunks-1)
	p.busy.Add(helpers)
	for i := 0; i < helpers; i++ {
		p.wake[i] <- struct{}{}
	}
	p.work(0)
	p.busy.Wait()
	p.t = nil
}

// close stops the workers and waits for them.
func (p *pool) close() {
	close(p.quit)
	p.exit.Wait()
}
