package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fomnet/fomnet/p2p"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// AnnounceTopic is the gossipsub topic on which daemons announce the roots
// they pin (added or mirrored), so that users can see what the swarm holds
// and mirror it. Runs use topics of their own.
const AnnounceTopic = "fomnet/announce/1"

// Announcement says that its (signing) peer holds and serves a pinned DAG.
type Announcement struct {
	CID  string `json:"cid"`
	Name string `json:"name,omitempty"`
	// Bytes is the DAG's total block size.
	Bytes int64 `json:"bytes"`
	// Peer is filled in on receipt from the message's signature.
	Peer string `json:"peer,omitempty"`
	// Seen is when this node received it (not sent).
	Seen time.Time `json:"seen,omitempty"`
}

const maxAnnouncement = 1024

// EncodeAnnouncement serialises a for the topic (without Peer and Seen).
func EncodeAnnouncement(a Announcement) ([]byte, error) {
	a.Peer, a.Seen = "", time.Time{}
	if _, err := cid.Decode(a.CID); err != nil {
		return nil, fmt.Errorf("announcement: cid %q: %w", a.CID, err)
	}
	b, err := json.Marshal(struct {
		CID   string `json:"cid"`
		Name  string `json:"name,omitempty"`
		Bytes int64  `json:"bytes"`
	}{a.CID, a.Name, a.Bytes})
	if err != nil {
		return nil, err
	}
	if len(b) > maxAnnouncement {
		return nil, fmt.Errorf("announcement of %s: %d bytes, limit %d (shorten the name)", a.CID, len(b), maxAnnouncement)
	}
	return b, nil
}

// DecodeAnnouncement parses and checks one announcement message.
func DecodeAnnouncement(b []byte) (Announcement, error) {
	var a Announcement
	if len(b) > maxAnnouncement {
		return a, fmt.Errorf("announcement: %d bytes, limit %d", len(b), maxAnnouncement)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var w struct {
		CID   string `json:"cid"`
		Name  string `json:"name"`
		Bytes int64  `json:"bytes"`
	}
	if err := dec.Decode(&w); err != nil {
		return a, fmt.Errorf("announcement: %w", err)
	}
	if dec.More() {
		return a, fmt.Errorf("announcement: trailing data")
	}
	c, err := cid.Decode(w.CID)
	if err != nil {
		return a, fmt.Errorf("announcement: cid %q: %w", w.CID, err)
	}
	if w.Bytes < 0 {
		return a, fmt.Errorf("announcement: negative size %d", w.Bytes)
	}
	if !utf8.ValidString(w.Name) || len(w.Name) > 255 {
		return a, fmt.Errorf("announcement: name is not UTF-8 of at most 255 bytes")
	}
	return Announcement{CID: c.String(), Name: w.Name, Bytes: w.Bytes}, nil
}

// announcer publishes this node's pins and remembers the latest
// announcements heard from others.
type announcer struct {
	topic *p2p.Topic
	sub   *p2p.Subscription
	self  peer.ID
	logf  func(string, ...any)

	mu     sync.Mutex
	recent []Announcement // newest last, at most maxRecent

	cancel context.CancelFunc
	done   chan struct{}
}

const maxRecent = 256

func startAnnouncer(h *p2p.Host, logf func(string, ...any)) (*announcer, error) {
	t, err := h.Join(AnnounceTopic, func(_ context.Context, _ peer.ID, data []byte) error {
		_, err := DecodeAnnouncement(data)
		return err
	})
	if err != nil {
		return nil, err
	}
	sub, err := t.Subscribe()
	if err != nil {
		t.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &announcer{topic: t, sub: sub, self: h.ID(), logf: logf, cancel: cancel, done: make(chan struct{})}
	go a.loop(ctx)
	return a, nil
}

func (a *announcer) loop(ctx context.Context) {
	defer close(a.done)
	for {
		m, err := a.sub.Next(ctx)
		if err != nil {
			return
		}
		if m.From == a.self {
			continue
		}
		ann, err := DecodeAnnouncement(m.Data)
		if err != nil {
			continue // the validator already refused it
		}
		ann.Peer, ann.Seen = m.From.String(), time.Now().UTC()
		a.mu.Lock()
		a.recent = append(a.recent, ann)
		if len(a.recent) > maxRecent {
			a.recent = append(a.recent[:0:0], a.recent[len(a.recent)-maxRecent:]...)
		}
		a.mu.Unlock()
		a.logf("announce: %s holds %s (%s, %d bytes)", ann.Peer, ann.CID, ann.Name, ann.Bytes)
	}
}

func (a *announcer) publish(ctx context.Context, ann Announcement) {
	b, err := EncodeAnnouncement(ann)
	if err != nil {
		a.logf("announce: %v", err)
		return
	}
	// No readiness wait: with no subscribed peer there is no one to tell,
	// and flood publishing reaches every peer that is subscribed.
	if err := a.topic.Publish(ctx, b, 0); err != nil {
		a.logf("announce: %v", err)
	}
}

func (a *announcer) list() []Announcement {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Announcement, len(a.recent))
	copy(out, a.recent)
	return out
}

func (a *announcer) close() {
	a.cancel()
	a.sub.Cancel()
	<-a.done
	a.topic.Close()
}
