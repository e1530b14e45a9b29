package cuda

import (
	"runtime"
	"sync"
)

// thread runs functions in order on one goroutine locked to its OS thread,
// where a CUDA context is current. A caller either waits for its function
// (do: allocations, copies from Go memory, anything returning a value) or
// only queues it (post: kernel launches), so the launching goroutine goes on
// preparing the next launch while this one calls the driver, instead of
// handing the thread over and back for every kernel.
//
// A posted function's error is kept, later posted functions are skipped
// (as the Backend skips device work after a failure), and the next do
// returns it; the error should name what failed, since it surfaces later.
type thread struct {
	work chan func()
	done chan struct{}
	once sync.Once
	err  error // the first posted function's error, touched only on the thread
}

// threadQueue is how many posted functions may wait before post blocks.
const threadQueue = 256

// startThread starts the thread and runs init on it; on init's error the
// thread runs fini, ends, and the error is returned. fini runs on the thread
// when it closes too.
func startThread(init func() error, fini func()) (*thread, error) {
	t := &thread{work: make(chan func(), threadQueue), done: make(chan struct{})}
	errc := make(chan error, 1)
	go t.loop(init, fini, errc)
	if err := <-errc; err != nil {
		<-t.done
		return nil, err
	}
	return t, nil
}

func (t *thread) loop(init func() error, fini func(), errc chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	defer close(t.done)
	if err := init(); err != nil {
		fini()
		errc <- err
		return
	}
	errc <- nil
	for f := range t.work {
		f()
	}
	fini()
}

// do runs f on the thread after everything queued before it and waits. It
// returns the error of an earlier posted function if there was one (f runs
// anyway: a free must still free), else f's.
func (t *thread) do(f func() error) error {
	var err error
	ch := make(chan struct{})
	t.work <- func() {
		err = f()
		if t.err != nil {
			err, t.err = t.err, nil
		}
		close(ch)
	}
	<-ch
	return err
}

// post queues f without waiting for it.
func (t *thread) post(f func() error) {
	t.work <- func() {
		if t.err == nil {
			t.err = f()
		}
	}
}

// close ends the thread once its queue has run. Idempotent.
func (t *thread) close() {
	t.once.Do(func() {
		close(t.work)
		<-t.done
	})
}
