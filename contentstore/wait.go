package contentstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
)

// ErrStalled ends a fetch that received nothing for its Wait's Stall.
// Its errors read "contentstore: fetching <cid>: nothing received for …".
var ErrStalled = errors.New("nothing received")

// Wait says how a fetch waits for the network, carried by its context
// (WithWait): Stall, if > 0, ends it with ErrStalled once nothing has
// arrived for that long; Report, if set, hears what it waits for after
// reportAfter without a block, and every reportEvery after that.
type Wait struct {
	Stall  time.Duration
	Report func(WaitStatus)
}

// WaitStatus is what a fetch is waiting for, and what it has to go on.
type WaitStatus struct {
	Root      cid.Cid       `json:"root"`
	Blocks    int           `json:"blocks"`    // blocks received so far
	Providers int           `json:"providers"` // providers the DHT named (not counting this node)
	Peers     int           `json:"peers"`     // peers connected
	Idle      time.Duration `json:"idle"`      // since the last block (or the start)
}

func (w WaitStatus) String() string {
	return fmt.Sprintf("waiting for %s: nothing received for %s; %s", w.Root, w.Idle.Round(time.Second), w.facts())
}

func (w WaitStatus) facts() string {
	return fmt.Sprintf("%d blocks received, %d providers found, %d peers connected", w.Blocks, w.Providers, w.Peers)
}

type waitKey struct{}

// WithWait returns ctx carrying w for the fetches made under it.
func WithWait(ctx context.Context, w Wait) context.Context {
	return context.WithValue(ctx, waitKey{}, w)
}

// WaitOf returns the Wait ctx carries (zero: wait silently, until ctx ends).
func WaitOf(ctx context.Context) Wait {
	w, _ := ctx.Value(waitKey{}).(Wait)
	return w
}

// How often a waiting fetch says so.
var (
	reportAfter = 5 * time.Second
	reportEvery = 10 * time.Second
)

// watch is one fetch's watchdog: arrived counts blocks, providers the
// DHT's answers; it reports and ends the fetch (through cancel, with
// ErrStalled as the cause) as its context's Wait says.
type watch struct {
	root      cid.Cid
	peers     func() int
	blocks    atomic.Int64
	providers atomic.Int64
	last      atomic.Int64 // unix nanoseconds of the last block
	stop      chan struct{}
	wg        sync.WaitGroup
}

// startWatch starts the watchdog of a fetch of root under ctx; the
// returned context ends when the fetch stalls. stop ends the watchdog.
func (s *Store) startWatch(ctx context.Context, root cid.Cid) (context.Context, *watch, func()) {
	w := WaitOf(ctx)
	wt := &watch{root: root, stop: make(chan struct{}), peers: func() int { return 0 }}
	if s.host != nil {
		wt.peers = func() int { return len(s.host.Network().Peers()) }
	}
	wt.last.Store(time.Now().UnixNano())
	ctx, cancel := context.WithCancelCause(ctx)
	if w.Stall <= 0 && w.Report == nil {
		return ctx, wt, func() { cancel(nil) }
	}
	wt.wg.Add(1)
	go func() {
		defer wt.wg.Done()
		tick := time.NewTicker(min(time.Second, max(w.Stall/4, 10*time.Millisecond)))
		defer tick.Stop()
		next := reportAfter
		for {
			select {
			case <-wt.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			st := wt.status()
			if w.Stall > 0 && st.Idle >= w.Stall {
				cancel(fmt.Errorf("%w for %s: %s", ErrStalled, w.Stall, st.facts()))
				return
			}
			if st.Idle < reportAfter {
				next = reportAfter
			} else if w.Report != nil && st.Idle >= next {
				w.Report(st)
				next += reportEvery
			}
		}
	}()
	return ctx, wt, func() { close(wt.stop); wt.wg.Wait(); cancel(nil) }
}

// arrived records a block.
func (wt *watch) arrived() {
	wt.blocks.Add(1)
	wt.last.Store(time.Now().UnixNano())
}

func (wt *watch) status() WaitStatus {
	return WaitStatus{Root: wt.root, Blocks: int(wt.blocks.Load()), Providers: int(wt.providers.Load()), Peers: wt.peers(),
		Idle: time.Since(time.Unix(0, wt.last.Load()))}
}

// stalled turns a fetch error under a stalled context into the stall's
// cause (what the fetch waited for).
func stalled(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
		return cause
	}
	return err
}
