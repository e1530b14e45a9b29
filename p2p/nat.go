package p2p

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

// punchWait is how long Meet leaves a relayed connection to become direct
// before it makes it again: libp2p's hole punch tries a direct dial and
// then three punches of at most five seconds each.
const punchWait = 30 * time.Second

// Meet connects to a peer found through discovery (a run's provider
// record), the way a peer behind a NAT has to be met.
//
// A peer that advertises relay (/p2p-circuit) addresses said by doing so
// that AutoNAT found it unreachable: Meet dials it through its relay only,
// and libp2p's hole punching (DCUtR, which the peer starts when the relayed
// connection opens) upgrades that to a direct connection. A relayed
// connection alone is of no use here: libp2p marks it limited, and neither
// gossipsub nor bitswap sends over it. Dialling the peer's direct addresses
// as well would not reach it and, worse, would hold the very port pair the
// punch needs (the kernel keeps the unanswered SYN's socket; the punch's
// dial then falls back to a fresh port that the peer's NAT has no mapping
// for).
//
// The punch only starts on a connection that opens after both ends run
// the hole punching service, which libp2p starts once the host has learnt
// a public address of its own. So Meet dials through a relay only once
// this host runs it, and it closes and remakes a relayed connection that
// opened before this host ran it, or that is still relayed after
// punchWait. A peer already connected directly is left alone.
func (h *Host) Meet(ctx context.Context, ai peer.AddrInfo) error {
	switch h.Network().Connectedness(ai.ID) {
	case network.Connected:
		return nil
	case network.Limited:
		if !h.closeStaleRelayed(ai.ID) {
			return nil
		}
	}
	if len(ai.Addrs) == 0 {
		return errors.New("no address known for it")
	}
	if relayed := circuitAddrs(ai.Addrs); len(relayed) > 0 {
		if _, ok := h.punchReady(); !ok {
			return nil // not yet: the next discovery round meets it
		}
		ai.Addrs = relayed
		ctx = network.WithAllowLimitedConn(ctx, "meet a peer behind a NAT through its relay")
	}
	return h.Connect(ctx, ai)
}

// punchReady reports whether libp2p's hole punching service runs on this
// host (it registers its protocol when it starts) and since when Meet has
// known it.
func (h *Host) punchReady() (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.punchSince.IsZero() && slices.Contains(h.Mux().Protocols(), holepunch.Protocol) {
		h.punchSince = time.Now()
	}
	return h.punchSince, !h.punchSince.IsZero()
}

// closeStaleRelayed closes the relayed connections to p that no hole
// punch will upgrade any more (see Meet) and reports whether it closed any.
func (h *Host) closeStaleRelayed(p peer.ID) bool {
	since, ok := h.punchReady()
	if !ok {
		return false
	}
	closed := false
	for _, c := range h.Network().ConnsToPeer(p) {
		st := c.Stat()
		if st.Limited && (st.Opened.Before(since) || time.Since(st.Opened) > punchWait) {
			closed = c.Close() == nil || closed
		}
	}
	return closed
}

// circuitAddrs returns the relay addresses among addrs.
func circuitAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			out = append(out, a)
		}
	}
	return out
}
