package node

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// Flow control of a run's round messages. The topic's reader files every
// message into its sender's queue at once, training or not, so pubsub never
// backs up and drops honest messages; a sender that floods fills only its
// own queue, and the participant takes messages round-robin across senders.
// Before that, the topic validator holds each sender to a message rate.

const (
	// maxQueued bounds one sender's queued messages; more are dropped.
	maxQueued = 256
	// msgRate and msgBurst limit one sender's messages on a run's topic
	// (an honest node repeats its round's messages every quarter deadline:
	// a contribution, its aggregates, a checkpoint).
	msgRate  = 100
	msgBurst = 400
	// maxPending bounds the messages a round keeps for its later phases.
	maxPending = 4096
)

// Flow-control drops, counted beside the other rejections.
const (
	DropQueueFull = "queue_full"   // a sender's queue was full
	DropRate      = "rate_limited" // a sender exceeded msgRate
	DropPending   = "pending_full" // a round kept too many for later
	DropStanding  = "no_standing"  // an aggregate or checkpoint from a peer with no part in the round
)

type mailbox struct {
	mu     sync.Mutex
	queues map[peer.ID][]inMsg
	order  []peer.ID // senders with queued messages, served in turn
	next   int
	ready  chan struct{} // signalled while messages are queued
	drop   func(reason string)
}

func newMailbox(drop func(string)) *mailbox {
	return &mailbox{queues: map[peer.ID][]inMsg{}, ready: make(chan struct{}, 1), drop: drop}
}

func (mb *mailbox) signal() {
	select {
	case mb.ready <- struct{}{}:
	default:
	}
}

// put queues a message; a sender's messages beyond maxQueued are dropped.
func (mb *mailbox) put(im inMsg) {
	mb.mu.Lock()
	q := mb.queues[im.from]
	full := len(q) >= maxQueued
	if !full {
		if len(q) == 0 {
			mb.order = append(mb.order, im.from)
		}
		mb.queues[im.from] = append(q, im)
	}
	mb.mu.Unlock()
	if full {
		mb.drop(DropQueueFull)
		return
	}
	mb.signal()
}

// get takes the next message, senders in turn; ok is false when none is
// queued. While messages remain, ready stays signalled.
func (mb *mailbox) get() (im inMsg, ok bool) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if len(mb.order) == 0 {
		return im, false
	}
	mb.next %= len(mb.order)
	from := mb.order[mb.next]
	q := mb.queues[from]
	im, q = q[0], q[1:]
	if len(q) == 0 {
		delete(mb.queues, from)
		mb.order = append(mb.order[:mb.next], mb.order[mb.next+1:]...)
	} else {
		mb.queues[from] = q
		mb.next++
	}
	if len(mb.order) > 0 {
		mb.signal()
	}
	return im, true
}

// limiter holds each sender of a run's topic to msgRate messages a second.
type limiter struct {
	mu  sync.Mutex
	per map[peer.ID]*rate.Limiter
}

func (l *limiter) allow(from peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.per == nil {
		l.per = map[peer.ID]*rate.Limiter{}
	}
	lim := l.per[from]
	if lim == nil {
		if len(l.per) >= 4*MaxParticipants {
			clear(l.per) // forget idle senders rather than grow
		}
		lim = rate.NewLimiter(msgRate, msgBurst)
		l.per[from] = lim
	}
	return lim.Allow()
}
