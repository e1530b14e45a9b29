package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrIgnore, returned by a Validator, drops a message without penalising
// its sender (for messages that are late or not yet useful rather than
// wrong). Any other error rejects the message and counts against the peer
// that forwarded it.
var ErrIgnore = errors.New("p2p: message ignored")

// Validator checks a message before it is delivered or forwarded. from is
// the message's signer (StrictSign makes it authentic).
type Validator func(ctx context.Context, from peer.ID, data []byte) error

// Message is a validated gossip message.
type Message struct {
	From peer.ID // author, authenticated by the message signature
	Data []byte
	env  *pb.Message // as received, signature included (see Signed)
}

// GossipCacheTTL is how long gossipsub peers keep offering a message
// (from their message caches) after it was sent: the history length in
// heartbeats, plus one.
var GossipCacheTTL = func() time.Duration {
	p := pubsub.DefaultGossipSubParams()
	return time.Duration(p.HistoryLength+1) * p.HeartbeatInterval
}()

// WaitGossipCachesExpired returns once GossipCacheTTL has passed since the
// host started (or ctx ends). A node that restarts under the same peer ID
// and rejoins a topic at once is offered its previous incarnation's
// messages from its peers' caches; pubsub refuses them as "from self" and
// penalises the honest peers that forwarded them, enough to cut them off
// after a burst. A node that knows it was in a topic a moment ago (a
// restarted participant) calls this before joining it again.
func (h *Host) WaitGossipCachesExpired(ctx context.Context) error {
	wait := time.Until(h.started.Add(GossipCacheTTL))
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Topic is one joined gossipsub topic.
type Topic struct {
	h    *Host
	name string
	t    *pubsub.Topic

	// Rejected counts messages the validator rejected, by reason.
	rejected *counter
}

// Join joins a topic with a validator (nil accepts every message of
// allowed size). Every payload larger than the host's MaxMessageSize is
// rejected before the validator runs, on the sending and the receiving side.
func (h *Host) Join(name string, v Validator) (*Topic, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.topics[name]; ok {
		return nil, fmt.Errorf("p2p: topic %q already joined", name)
	}
	tp := &Topic{h: h, name: name, rejected: newCounter()}
	limit := h.opts.MaxMessageSize
	err := h.PubSub.RegisterTopicValidator(name, func(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if len(m.Data) > limit {
			tp.rejected.add("oversized")
			return pubsub.ValidationReject
		}
		if v == nil {
			return pubsub.ValidationAccept
		}
		author, err := peer.IDFromBytes(m.From)
		if err != nil {
			tp.rejected.add("bad author")
			return pubsub.ValidationReject
		}
		switch err := v(ctx, author, m.Data); {
		case err == nil:
			return pubsub.ValidationAccept
		case errors.Is(err, ErrIgnore):
			return pubsub.ValidationIgnore
		default:
			tp.rejected.add(err.Error())
			h.opts.Logf("p2p: topic %s: rejected message from %s: %v", name, author, err)
			return pubsub.ValidationReject
		}
	})
	if err != nil {
		return nil, fmt.Errorf("p2p: topic %q validator: %w", name, err)
	}
	t, err := h.PubSub.Join(name)
	if err != nil {
		h.PubSub.UnregisterTopicValidator(name)
		return nil, fmt.Errorf("p2p: joining topic %q: %w", name, err)
	}
	if err := t.SetScoreParams(topicScoreParams()); err != nil {
		t.Close()
		h.PubSub.UnregisterTopicValidator(name)
		return nil, fmt.Errorf("p2p: topic %q score parameters: %w", name, err)
	}
	tp.t = t
	h.topics[name] = tp
	return tp, nil
}

// Name is the topic's name.
func (t *Topic) Name() string { return t.name }

// Rejections returns how many messages the topic's validation rejected, by
// reason.
func (t *Topic) Rejections() map[string]int { return t.rejected.snapshot() }

// Peers returns the peers known to be subscribed to the topic.
func (t *Topic) Peers() []peer.ID { return t.t.ListPeers() }

// Publish signs and sends data to the topic. With minPeers > 0 it first
// waits (until ctx ends) for that many subscribed peers to be known, so a
// message published right after joining is not lost: gossipsub learns
// about subscriptions from its peers, and a publish before that reaches no
// one. Flood publishing sends our own messages to every subscribed peer,
// not only the mesh.
func (t *Topic) Publish(ctx context.Context, data []byte, minPeers int) error {
	if len(data) > t.h.opts.MaxMessageSize {
		return fmt.Errorf("p2p: topic %s: message of %d bytes exceeds the limit of %d", t.name, len(data), t.h.opts.MaxMessageSize)
	}
	var opts []pubsub.PubOpt
	if minPeers > 0 {
		opts = append(opts, pubsub.WithReadiness(pubsub.MinTopicSize(minPeers)))
	}
	if err := t.t.Publish(ctx, data, opts...); err != nil {
		return fmt.Errorf("p2p: topic %s: publish: %w", t.name, err)
	}
	return nil
}

// WaitPeers blocks until at least n peers subscribed to the topic are
// known, or ctx ends.
func (t *Topic) WaitPeers(ctx context.Context, n int) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(t.t.ListPeers()) < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("p2p: topic %s: %d of %d peers: %w", t.name, len(t.t.ListPeers()), n, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Subscription delivers a topic's validated messages.
type Subscription struct{ s *pubsub.Subscription }

// Subscribe starts receiving the topic's messages, own messages included.
func (t *Topic) Subscribe() (*Subscription, error) {
	s, err := t.t.Subscribe()
	if err != nil {
		return nil, fmt.Errorf("p2p: topic %s: subscribe: %w", t.name, err)
	}
	return &Subscription{s}, nil
}

// Next blocks for the next message.
func (s *Subscription) Next(ctx context.Context) (Message, error) {
	m, err := s.s.Next(ctx)
	if err != nil {
		return Message{}, err
	}
	return Message{From: m.GetFrom(), Data: m.Data, env: m.Message}, nil
}

// Cancel stops the subscription.
func (s *Subscription) Cancel() { s.s.Cancel() }

// Close leaves the topic (subscriptions must be cancelled first; Close of
// the host does it for all topics).
func (t *Topic) Close() error {
	t.h.mu.Lock()
	if t.h.topics[t.name] != t {
		t.h.mu.Unlock()
		return nil
	}
	delete(t.h.topics, t.name)
	t.h.mu.Unlock()
	err := t.t.Close()
	t.h.PubSub.UnregisterTopicValidator(t.name)
	return err
}

// Peer scoring. Gossip peers are scored so that one that forwards invalid
// messages or misbehaves in the protocol is first no longer gossiped to,
// then not published to, then ignored (graylisted). Loopback is exempt from
// the same-IP penalty (tests and the demo run many peers on 127.0.0.1);
// otherwise more than 8 peers behind one IP start losing score.
func scoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		Topics:                      map[string]*pubsub.TopicScoreParams{},
		AppSpecificScore:            func(peer.ID) float64 { return 0 },
		AppSpecificWeight:           1,
		IPColocationFactorWeight:    -10,
		IPColocationFactorThreshold: 8,
		IPColocationFactorWhitelist: []*net.IPNet{
			{IP: net.IPv4(127, 0, 0, 0), Mask: net.CIDRMask(8, 32)},
			{IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)},
		},
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               30 * time.Minute,
	}
}

func scoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             -100,
		PublishThreshold:            -500,
		GraylistThreshold:           -1000,
		AcceptPXThreshold:           10,
		OpportunisticGraftThreshold: 5,
	}
}

// topicScoreParams rewards first deliveries and punishes invalid messages
// quadratically: n invalid messages cost n²; 23 put the sender below the
// publish threshold, 32 graylist it. The weight is low because pubsub also
// counts as invalid a node's own earlier messages that peers forward to it
// after it restarted under the same peer ID (see WaitGossipCachesExpired):
// a few such strays must not cut off the honest peers that forwarded them.
// The validator stops bad messages from spreading in any case; the score
// only cuts off a peer that keeps sending them.
func topicScoreParams() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		SkipAtomicValidation:           true,
		TopicWeight:                    1,
		TimeInMeshWeight:               0.01,
		TimeInMeshQuantum:              time.Second,
		TimeInMeshCap:                  300,
		FirstMessageDeliveriesWeight:   1,
		FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:      50,
		InvalidMessageDeliveriesWeight: -1,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(10 * time.Minute),
	}
}
