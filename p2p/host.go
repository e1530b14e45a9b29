package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ProtocolPrefix keeps fomnet's DHT apart from the public IPFS DHT: peers
// only route for peers of the same network.
const ProtocolPrefix = "/fomnet"

// DefaultPort is the TCP and UDP (QUIC) port a node listens on by default.
const DefaultPort = 4101

// DefaultMaxMessageSize is the largest gossipsub payload (bytes) every fomnet
// peer accepts. Gossip carries announcements (CIDs, signatures, small
// records); bulk data goes over bitswap. Peers must agree on it, so it is a
// network constant rather than a per-node setting users are invited to change.
const DefaultMaxMessageSize = 1 << 20

// rpcOverhead is the room left in a gossipsub RPC for the envelope of one
// message of the largest payload (sender, sequence number, signature, key,
// topic name, protobuf framing).
const rpcOverhead = 4 << 10

// Options configure a Host. The zero value of each field means its default.
type Options struct {
	// Identity is the peer's private key (required); see LoadOrCreateIdentity.
	Identity crypto.PrivKey
	// Listen are the multiaddrs to listen on. Default: TCP and QUIC on
	// DefaultPort on all IPv4 interfaces.
	Listen []string
	// Announce, if set, replaces the addresses this peer advertises (for a
	// node behind a port forward or with a public DNS name).
	Announce []string
	// Bootstrap are peers (multiaddrs ending in /p2p/<id>) to connect to at
	// start and to seed the DHT's routing table with.
	Bootstrap []string
	// DHTMode is "auto" (default: server once AutoNAT says we are reachable),
	// "server" or "client".
	DHTMode string
	// MDNS announces and finds peers on the local network.
	MDNS bool
	// RelayService lets this node relay for others (circuit relay v2); turn
	// it on for public nodes only.
	RelayService bool
	// StaticRelays are relay peers to reserve a slot on when this node is
	// not reachable from outside (circuit relay v2 client through AutoRelay).
	StaticRelays []string
	// Reachability overrides AutoNAT: "public" for a node known to be
	// reachable, "private" for one known to be behind a NAT (it then
	// reserves relay slots at once). Default "auto".
	Reachability string
	// NATPortMap asks the home router for a port mapping (UPnP / NAT-PMP).
	NATPortMap bool
	// MaxMemory (bytes) and MaxFD bound what the libp2p resource manager
	// lets connections and streams take. Defaults: 1 GiB and 512.
	MaxMemory int64
	MaxFD     int
	// ConnLow and ConnHigh are the connection manager's watermarks: above
	// ConnHigh connections it trims down to ConnLow. Defaults: 64 and 192.
	ConnLow, ConnHigh int
	// MaxMessageSize is the largest gossipsub payload; default
	// DefaultMaxMessageSize. Only tests change it.
	MaxMessageSize int
	// Logf receives the host's notable events (nil: discarded).
	Logf func(format string, args ...any)
}

func (o *Options) setDefaults() {
	if len(o.Listen) == 0 {
		o.Listen = []string{
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort),
			fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort),
		}
	}
	if o.DHTMode == "" {
		o.DHTMode = "auto"
	}
	if o.MaxMemory == 0 {
		o.MaxMemory = 1 << 30
	}
	if o.MaxFD == 0 {
		o.MaxFD = 512
	}
	if o.ConnLow == 0 {
		o.ConnLow = 64
	}
	if o.ConnHigh == 0 {
		o.ConnHigh = 192
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// ParseAddrs parses multiaddrs; what names the list in errors.
func ParseAddrs(what string, ss []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s address %q: %w", what, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// ParsePeerAddrs parses multiaddrs that end in /p2p/<peer id> and groups
// them by peer.
func ParsePeerAddrs(what string, ss []string) ([]peer.AddrInfo, error) {
	as, err := ParseAddrs(what, ss)
	if err != nil {
		return nil, err
	}
	for i, a := range as {
		if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
			return nil, fmt.Errorf("%s address %q: needs a /p2p/<peer id> part: %w", what, ss[i], err)
		}
	}
	return peer.AddrInfosFromP2pAddrs(as...)
}

func dhtMode(s string) (dht.ModeOpt, error) {
	switch s {
	case "auto":
		return dht.ModeAuto, nil
	case "server":
		return dht.ModeServer, nil
	case "client":
		return dht.ModeClient, nil
	}
	return 0, fmt.Errorf("dht mode %q: want auto, server or client", s)
}

// Host is a libp2p host with fomnet's DHT and gossipsub router.
type Host struct {
	host.Host
	DHT    *dht.IpfsDHT
	PubSub *pubsub.PubSub
	// Bandwidth counts the bytes of every stream by protocol.
	Bandwidth *metrics.BandwidthCounter
	// Link times the bulk transfers this peer downloads (link.go).
	Link *LinkMeter

	opts      Options
	bootstrap []peer.AddrInfo
	ctx       context.Context
	cancel    context.CancelFunc
	mdns      mdns.Service
	rcmgr     network.ResourceManager

	mu      sync.Mutex
	topics  map[string]*Topic
	started time.Time

	closeOnce sync.Once
	closeErr  error

	// reach is what AutoNAT last concluded (network.Reachability), kept
	// by watchReachability until reachDone closes.
	reach     atomic.Int32
	reachSub  event.Subscription
	reachDone chan struct{}

	// punchSince is when Meet first saw libp2p's hole punching service
	// running (zero before); guarded by mu.
	punchSince time.Time
}

// Reachability is what AutoNAT concluded about this host: "public",
// "private" (behind a NAT or firewall: reachable through relays and hole
// punching) or "unknown" (not yet, or forced by Options.Reachability).
func (h *Host) Reachability() string {
	switch network.Reachability(h.reach.Load()) {
	case network.ReachabilityPublic:
		return "public"
	case network.ReachabilityPrivate:
		return "private"
	}
	return "unknown"
}

// watchReachability follows AutoNAT's conclusions until the subscription
// closes (Close).
func (h *Host) watchReachability() error {
	sub, err := h.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		return err
	}
	h.reachSub, h.reachDone = sub, make(chan struct{})
	go func() {
		defer close(h.reachDone)
		for ev := range sub.Out() {
			h.reach.Store(int32(ev.(event.EvtLocalReachabilityChanged).Reachability))
		}
	}()
	return nil
}

// checkPortsFree refuses listen addresses whose TCP or UDP port another
// socket holds. libp2p listens with SO_REUSEPORT (for hole punching), so a
// second daemon on a taken port would start and share it; a plain listen,
// which the kernel refuses on a port held even with SO_REUSEPORT, asks
// first. Port 0 (any free port) needs no check.
func checkPortsFree(addrs []ma.Multiaddr) error {
	for _, a := range addrs {
		if len(a) < 2 {
			continue
		}
		na, err := manet.ToNetAddr(a[:2]) // /ip4/…/tcp/… of /ip4/…/udp/…/quic-v1 too
		if err != nil {
			continue // not IP/TCP or IP/UDP: nothing to check
		}
		var port int
		var probe func() (io.Closer, error)
		switch x := na.(type) {
		case *net.TCPAddr:
			port, probe = x.Port, func() (io.Closer, error) { return net.ListenTCP("tcp", x) }
		case *net.UDPAddr:
			port, probe = x.Port, func() (io.Closer, error) { return net.ListenUDP("udp", x) }
		default:
			continue
		}
		if port == 0 {
			continue
		}
		c, err := probe()
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("p2p: listen %s: port %d is in use by another process (another fomnet daemon?); give this node another port with --listen (tcp/0 and udp/0 pick free ones)", a, port)
			}
			return fmt.Errorf("p2p: listen %s: %w", a, err)
		}
		c.Close()
	}
	return nil
}

// New starts a host: TCP and QUIC transports, Noise and TLS security, yamux,
// the resource and connection managers, AutoNAT (client and service), hole
// punching and the relay v2 client, the Kademlia DHT under ProtocolPrefix
// and gossipsub. It connects to the bootstrap peers it can reach; a
// bootstrap peer that is down is logged, not fatal (it may come up later).
func New(ctx context.Context, opts Options) (*Host, error) {
	opts.setDefaults()
	if opts.Identity == nil {
		return nil, errors.New("p2p: Options.Identity is required")
	}
	if opts.ConnLow > opts.ConnHigh {
		return nil, fmt.Errorf("p2p: connection low watermark %d above high watermark %d", opts.ConnLow, opts.ConnHigh)
	}
	listen, err := ParseAddrs("listen", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	if err := checkPortsFree(listen); err != nil {
		return nil, err
	}
	announce, err := ParseAddrs("announce", opts.Announce)
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	boot, err := ParsePeerAddrs("bootstrap", opts.Bootstrap)
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	relays, err := ParsePeerAddrs("relay", opts.StaticRelays)
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	mode, err := dhtMode(opts.DHTMode)
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	switch opts.Reachability {
	case "", "auto", "public", "private":
	default:
		return nil, fmt.Errorf("p2p: reachability %q: want auto, public or private", opts.Reachability)
	}

	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Scale(opts.MaxMemory, opts.MaxFD)))
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(opts.ConnLow, opts.ConnHigh, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}

	link := NewLinkMeter()
	lopts := []libp2p.Option{
		libp2p.Identity(opts.Identity),
		libp2p.BandwidthReporter(link),
		libp2p.ListenAddrs(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.EnableNATService(),
		libp2p.EnableAutoNATv2(),
		libp2p.EnableHolePunching(),
		libp2p.EnableRelay(),
		libp2p.UserAgent("fomnet"),
		libp2p.DisableMetrics(),
	}
	if len(announce) > 0 {
		lopts = append(lopts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return announce }))
	}
	if opts.RelayService {
		lopts = append(lopts, libp2p.EnableRelayService())
	}
	if len(relays) > 0 {
		lopts = append(lopts, libp2p.EnableAutoRelayWithStaticRelays(relays))
	}
	if opts.NATPortMap {
		lopts = append(lopts, libp2p.NATPortMap())
	}
	switch opts.Reachability {
	case "", "auto":
	case "public":
		lopts = append(lopts, libp2p.ForceReachabilityPublic())
	case "private":
		lopts = append(lopts, libp2p.ForceReachabilityPrivate())
	}
	hst, err := libp2p.New(lopts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: starting host: %w", err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	h := &Host{Host: hst, Bandwidth: link.BandwidthCounter, Link: link, opts: opts, bootstrap: boot, ctx: hctx, cancel: cancel, rcmgr: rm, topics: map[string]*Topic{}, started: time.Now()}
	if err := h.watchReachability(); err != nil {
		h.Close()
		return nil, fmt.Errorf("p2p: reachability events: %w", err)
	}

	h.DHT, err = dht.New(hst,
		dht.ProtocolPrefix(ProtocolPrefix),
		dht.Mode(mode),
		dht.BootstrapPeers(boot...),
	)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("p2p: DHT: %w", err)
	}
	h.PubSub, err = pubsub.NewGossipSub(hctx, hst,
		pubsub.WithMaxMessageSize(opts.MaxMessageSize+rpcOverhead),
		pubsub.WithMessageSigning(true),
		pubsub.WithStrictSignatureVerification(true),
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerExchange(true),
		pubsub.WithPeerScore(scoreParams(), scoreThresholds()),
	)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("p2p: gossipsub: %w", err)
	}
	if opts.MDNS {
		h.mdns = mdns.NewMdnsService(hst, "fomnet", mdnsNotifee{h})
		if err := h.mdns.Start(); err != nil {
			h.Close()
			return nil, fmt.Errorf("p2p: mDNS: %w", err)
		}
	}
	if err := h.Bootstrap(ctx); err != nil {
		opts.Logf("p2p: %v", err)
	}
	return h, nil
}

// Bootstrap connects to the bootstrap peers (in parallel) and refreshes the
// DHT routing table. It fails only if there were bootstrap peers and none
// could be reached.
func (h *Host) Bootstrap(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(h.bootstrap))
	for i, ai := range h.bootstrap {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			errs[i] = h.Connect(cctx, ai)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("bootstrap peer %s: %w", ai.ID, errs[i])
			}
		}()
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			h.opts.Logf("p2p: %v", err)
		}
	}
	if err := h.DHT.Bootstrap(ctx); err != nil {
		return fmt.Errorf("DHT bootstrap: %w", err)
	}
	if len(h.bootstrap) > 0 && failed == len(h.bootstrap) {
		return fmt.Errorf("none of the %d bootstrap peers could be reached", failed)
	}
	return nil
}

// connectRetries is how many times Connect dials again after a failure.
const connectRetries = 3

// Connect connects to pi unless a connection to it exists: the libp2p
// host's Connect, retried. Two hosts that dial each other at once over TCP
// with reused ports (libp2p's default, which NAT traversal needs) can meet
// as one TCP connection, a simultaneous open, on which both ends start the
// security handshake as its initiator, and both dials fail ("noise: message
// is too short"). Each retry first waits a random 20–200 ms, so the two
// ends do not collide again, and clears the dial backoff the failure left.
// A connection the peer made meanwhile ends the retries.
func (h *Host) Connect(ctx context.Context, pi peer.AddrInfo) error {
	err := h.Host.Connect(ctx, pi)
	for try := 0; err != nil && try < connectRetries && ctx.Err() == nil; try++ {
		if h.Network().Connectedness(pi.ID) == network.Connected {
			return nil
		}
		wait := time.NewTimer(time.Duration(20+rand.IntN(180)) * time.Millisecond)
		select {
		case <-ctx.Done():
			wait.Stop()
			return err
		case <-wait.C:
		}
		if sw, ok := h.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(pi.ID)
		}
		err = h.Host.Connect(ctx, pi)
	}
	return err
}

// ConnectAddr connects to the peer at a multiaddr ending in /p2p/<id>.
func (h *Host) ConnectAddr(ctx context.Context, addr string) (peer.AddrInfo, error) {
	ais, err := ParsePeerAddrs("peer", []string{addr})
	if err != nil {
		return peer.AddrInfo{}, err
	}
	if ais[0].ID == h.ID() {
		return ais[0], fmt.Errorf("%s is this node", addr)
	}
	return ais[0], h.Connect(ctx, ais[0])
}

// Addrs returns the addresses this host can be dialled at, each with its
// /p2p/<id> suffix, as a user would pass to --bootstrap.
func (h *Host) FullAddrs() []ma.Multiaddr {
	ais, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	if err != nil {
		return nil
	}
	return ais
}

// Peers returns the peers this host has a connection to.
func (h *Host) Peers() []peer.AddrInfo {
	ids := h.Network().Peers()
	out := make([]peer.AddrInfo, 0, len(ids))
	for _, id := range ids {
		var addrs []ma.Multiaddr
		for _, c := range h.Network().ConnsToPeer(id) {
			addrs = append(addrs, c.RemoteMultiaddr())
		}
		out = append(out, peer.AddrInfo{ID: id, Addrs: addrs})
	}
	return out
}

// Close leaves all topics, stops the DHT, gossipsub and mDNS, and closes the
// host. It is idempotent and returns when everything has stopped.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		topics := make([]*Topic, 0, len(h.topics))
		for _, t := range h.topics {
			topics = append(topics, t)
		}
		h.mu.Unlock()
		for _, t := range topics {
			t.Close()
		}
		var errs []error
		if h.mdns != nil {
			errs = append(errs, h.mdns.Close())
		}
		if h.DHT != nil {
			errs = append(errs, h.DHT.Close())
		}
		h.cancel()
		if h.reachSub != nil {
			h.reachSub.Close()
			<-h.reachDone
		}
		errs = append(errs, h.Host.Close())
		errs = append(errs, h.rcmgr.Close())
		h.closeErr = errors.Join(errs...)
	})
	return h.closeErr
}

type mdnsNotifee struct{ h *Host }

func (n mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == n.h.ID() {
		return
	}
	ctx, cancel := context.WithTimeout(n.h.ctx, 10*time.Second)
	defer cancel()
	if err := n.h.Connect(ctx, ai); err != nil {
		n.h.opts.Logf("p2p: mDNS peer %s: %v", ai.ID, err)
	}
}
