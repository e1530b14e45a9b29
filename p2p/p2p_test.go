package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"google.golang.org/protobuf/proto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	relayclient "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
)

func TestIdentityPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "identity.key")
	k1, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %#o, want 0600", st.Mode().Perm())
	}
	k2, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equals(k2) {
		t.Fatal("reloaded key differs")
	}
	if k1.Type() != crypto.Ed25519 {
		t.Fatalf("key type %v", k1.Type())
	}
}

func TestIdentityRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	k, _ := LoadOrCreateIdentity(filepath.Join(dir, "good.key"))
	raw, _ := crypto.MarshalPrivateKey(k)

	open := filepath.Join(dir, "open.key")
	os.WriteFile(open, raw, 0o644)
	if _, err := LoadOrCreateIdentity(open); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	if _, err := LoadOrCreateIdentity(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Fatalf("garbage key: %v", err)
	}
	// A garbage key is never replaced by a fresh one.
	if b, _ := os.ReadFile(garbage); string(b) != "not a key" {
		t.Fatal("garbage key file was overwritten")
	}
	rsa, _, _ := crypto.GenerateECDSAKeyPair(bytes.NewReader(bytes.Repeat([]byte{7}, 4096)))
	rraw, _ := crypto.MarshalPrivateKey(rsa)
	if _, err := DecodeIdentity(rraw, "ecdsa.key"); err == nil || !strings.Contains(err.Error(), "ed25519") {
		t.Fatalf("ECDSA key: %v", err)
	}
}

func FuzzDecodeIdentity(f *testing.F) {
	k, _, _ := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{1}, 64)))
	raw, _ := crypto.MarshalPrivateKey(k)
	f.Add(raw)
	f.Add([]byte{})
	f.Add(raw[:10])
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := DecodeIdentity(b, "fuzz")
		if err == nil && k.Type() != crypto.Ed25519 {
			t.Fatal("accepted a non-ed25519 key")
		}
	})
}

// newHosts starts n hosts on 127.0.0.1 (TCP only, random ports) with the
// given gossip limit and connects each to the first.
func newHosts(t *testing.T, n int, maxMsg int) []*Host {
	t.Helper()
	ctx := context.Background()
	hs := make([]*Host, n)
	for i := range hs {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := New(ctx, Options{
			Identity:       k,
			Listen:         []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
			DHTMode:        "server",
			MaxMessageSize: maxMsg,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		hs[i] = h
	}
	for _, h := range hs[1:] {
		if err := h.Connect(ctx, peer.AddrInfo{ID: hs[0].ID(), Addrs: hs[0].Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	return hs
}

func TestHostBootstrapAndClose(t *testing.T) {
	hs := newHosts(t, 1, 0)
	ctx := context.Background()
	k, _, _ := crypto.GenerateEd25519Key(nil)
	var boot []string
	for _, a := range hs[0].FullAddrs() {
		boot = append(boot, a.String())
	}
	h, err := New(ctx, Options{Identity: k, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Peers()) != 1 || h.Peers()[0].ID != hs[0].ID() {
		t.Fatalf("peers after bootstrap: %v", h.Peers())
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Bad options are reported by name.
	for _, o := range []Options{
		{Identity: k, Listen: []string{"/ip4/1.2.3"}},
		{Identity: k, Bootstrap: []string{"/ip4/127.0.0.1/tcp/1"}},
		{Identity: k, DHTMode: "sometimes"},
		{},
	} {
		if _, err := New(ctx, o); err == nil {
			t.Fatalf("New(%+v) succeeded", o)
		}
	}
}

func TestConnectAddr(t *testing.T) {
	hs := newHosts(t, 2, 0)
	ctx := context.Background()
	// Connect over QUIC explicitly to exercise the second transport.
	var quicAddr string
	for _, a := range hs[0].FullAddrs() {
		if strings.Contains(a.String(), "quic-v1") {
			quicAddr = a.String()
		}
	}
	if quicAddr == "" {
		t.Fatal("no QUIC address")
	}
	hs[1].Network().ClosePeer(hs[0].ID())
	if _, err := hs[1].ConnectAddr(ctx, quicAddr); err != nil {
		t.Fatal(err)
	}
	if _, err := hs[1].ConnectAddr(ctx, "/ip4/127.0.0.1/tcp/1"); err == nil {
		t.Fatal("address without /p2p accepted")
	}
	self := hs[1].FullAddrs()[0].String()
	if _, err := hs[1].ConnectAddr(ctx, self); err == nil {
		t.Fatal("connecting to self accepted")
	}
}

// A message published right after joining and connecting reaches every
// subscriber: Publish waits for the peers' subscriptions, and flood
// publishing does not wait for the mesh to form.
func TestGossipFirstMessageNotLost(t *testing.T) {
	hs := newHosts(t, 4, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	subs := make([]*Subscription, len(hs))
	topics := make([]*Topic, len(hs))
	for i, h := range hs {
		tp, err := h.Join("fomnet/test", nil)
		if err != nil {
			t.Fatal(err)
		}
		topics[i] = tp
		if subs[i], err = tp.Subscribe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := topics[0].Publish(ctx, []byte("first"), len(hs)-1); err != nil {
		t.Fatal(err)
	}
	for i, s := range subs {
		m, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("host %d: %v", i, err)
		}
		if string(m.Data) != "first" || m.From != hs[0].ID() {
			t.Fatalf("host %d got %q from %s", i, m.Data, m.From)
		}
	}
}

// The payload limit holds on both sides: a message of exactly the limit is
// delivered, one byte more is refused by Publish, and a peer configured
// with a larger limit cannot push a larger message onto us.
func TestGossipSizeLimit(t *testing.T) {
	const limit = 64 << 10
	hs := newHosts(t, 2, limit)
	big := newHosts(t, 1, 4*limit)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := big.Connect(ctx, peer.AddrInfo{ID: hs[1].ID(), Addrs: hs[1].Addrs()}); err != nil {
		t.Fatal(err)
	}
	t0, _ := hs[0].Join("sz", nil)
	t1, _ := hs[1].Join("sz", nil)
	tb, _ := big.Join("sz", nil)
	sub, _ := t1.Subscribe()
	if _, err := t0.Subscribe(); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Subscribe(); err != nil {
		t.Fatal(err)
	}

	atLimit := bytes.Repeat([]byte{'a'}, limit)
	if err := t0.Publish(ctx, atLimit, 1); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil || len(m.Data) != limit {
		t.Fatalf("message at the limit: %d bytes, %v", len(m.Data), err)
	}
	if err := t0.Publish(ctx, append(atLimit, 'b'), 1); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("publish above the limit: %v", err)
	}

	if err := tb.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// One byte over: it fits the RPC frame, and the receiver's own check
	// rejects it (and counts it).
	if err := tb.Publish(ctx, append(atLimit, 'c'), 1); err != nil {
		t.Fatal(err)
	}
	for t1.Rejections()["oversized"] == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("oversized message not rejected: %v", t1.Rejections())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Far over: the RPC reader drops it (and the stream it came on).
	if err := tb.Publish(ctx, bytes.Repeat([]byte{'c'}, 2*limit), 1); err != nil {
		t.Fatal(err)
	}
	if err := t0.Publish(ctx, []byte("small"), 1); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for the small message: %v", err)
		}
		if len(m.Data) > limit {
			t.Fatalf("received a %d-byte message above the %d limit", len(m.Data), limit)
		}
		if string(m.Data) == "small" {
			break
		}
	}
}

func TestGossipValidator(t *testing.T) {
	hs := newHosts(t, 2, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errBad := errors.New("starts with x")
	v := func(_ context.Context, from peer.ID, data []byte) error {
		if from == "" {
			return errors.New("no author")
		}
		if bytes.HasPrefix(data, []byte("x")) {
			return errBad
		}
		if bytes.HasPrefix(data, []byte("i")) {
			return ErrIgnore
		}
		return nil
	}
	t0, _ := hs[0].Join("v", nil)
	t1, _ := hs[1].Join("v", v)
	sub, _ := t1.Subscribe()
	if _, err := t0.Subscribe(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"xbad", "ignored", "good"} {
		if err := t0.Publish(ctx, []byte(s), 1); err != nil {
			t.Fatal(err)
		}
	}
	m, err := sub.Next(ctx)
	if err != nil || string(m.Data) != "good" {
		t.Fatalf("got %q, %v; want only the good message", m.Data, err)
	}
	// Validation runs concurrently; the rejection may be counted after the
	// good message is delivered.
	for t1.Rejections()[errBad.Error()] != 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("rejections %v", t1.Rejections())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if r := t1.Rejections(); len(r) != 1 {
		t.Fatalf("rejections %v", r)
	}
	if _, err := hs[1].Join("v", nil); err == nil {
		t.Fatal("joined the same topic twice")
	}
}

// Two hosts that dial each other at the same moment both succeed. Over TCP
// with reused ports the two dials can meet as one connection on which both
// ends are initiators, and the security handshake fails; Connect must not
// report that as a failure to connect when a connection to the peer exists
// or can still be made. Pairs are tried many times because the race is rare.
func TestSimultaneousConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const pairs = 40
	for p := 0; p < pairs; p++ {
		var hs [2]*Host
		for i := range hs {
			k, _, _ := crypto.GenerateEd25519Key(nil)
			h, err := New(ctx, Options{Identity: k, Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			hs[i] = h
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range hs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := hs[1-i]
				errs[i] = hs[i].Connect(ctx, peer.AddrInfo{ID: o.ID(), Addrs: o.Addrs()})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("pair %d, host %d: %v", p, i, err)
			}
		}
		for _, h := range hs { // Close is idempotent: the cleanup closes them again
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A node behind a NAT reaches the swarm through a relay (circuit relay
// v2): it reserves a slot on a public node running the relay service, and
// another node connects to it through the relay. (AutoRelay, which makes
// the reservation by itself for "private" nodes, drops loopback relay
// addresses as unroutable, so on 127.0.0.1 the reservation is made here.)
func TestRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	newHost := func(o Options) *Host {
		k, _, _ := crypto.GenerateEd25519Key(nil)
		o.Identity = k
		o.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		h, err := New(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	relay := newHost(Options{RelayService: true, Reachability: "public"})
	relayAddr := relay.FullAddrs()[0].String()
	private := newHost(Options{Reachability: "private"})
	rinfo := peer.AddrInfo{ID: relay.ID(), Addrs: relay.Addrs()}
	if err := private.Connect(ctx, rinfo); err != nil {
		t.Fatal(err)
	}
	if _, err := relayclient.Reserve(ctx, private.Host, rinfo); err != nil {
		t.Fatalf("reservation: %v", err)
	}
	circuit := relayAddr + "/p2p-circuit/p2p/" + private.ID().String()
	other := newHost(Options{})
	if _, err := other.ConnectAddr(ctx, circuit); err != nil {
		t.Fatalf("connect through %s: %v", circuit, err)
	}
	conns := other.Network().ConnsToPeer(private.ID())
	if len(conns) == 0 || !strings.Contains(conns[0].RemoteMultiaddr().String(), "p2p-circuit") {
		t.Fatalf("connections %v", conns)
	}
	// Meet dials a peer that advertises a relay address through the relay
	// only, though a direct address is listed too (on loopback a dial to it
	// would succeed; behind a NAT it would hold the port pair the hole
	// punch needs), and only once hole punching runs here, which needs a
	// public address (announced here, as none is observed on loopback).
	circ, err := ma.NewMultiaddr(relayAddr + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	natted := peer.AddrInfo{ID: private.ID(), Addrs: append(private.Addrs(), circ)}
	early := newHost(Options{})
	if err := early.Meet(ctx, natted); err != nil {
		t.Fatal(err)
	}
	if got := early.Network().Connectedness(private.ID()); got != network.NotConnected {
		t.Fatalf("Meet before hole punching runs: %v, want no connection yet", got)
	}
	meeter := newHost(Options{Announce: []string{"/ip4/11.77.0.9/tcp/4101"}})
	for _, ok := meeter.punchReady(); !ok; _, ok = meeter.punchReady() {
		if ctx.Err() != nil {
			t.Fatal("hole punching never started on a host with a public address")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := meeter.Meet(ctx, natted); err != nil {
		t.Fatal(err)
	}
	if got := meeter.Network().Connectedness(private.ID()); got != network.Limited {
		t.Fatalf("after Meet: %v, want only the relayed connection (limited)", got)
	}
	// A peer without relay addresses is simply connected.
	if err := meeter.Meet(ctx, peer.AddrInfo{ID: relay.ID(), Addrs: relay.Addrs()}); err != nil {
		t.Fatal(err)
	}
	if got := meeter.Network().Connectedness(relay.ID()); got != network.Connected {
		t.Fatalf("Meet of a public peer: %v", got)
	}
	if _, err := New(ctx, Options{Identity: private.Peerstore().PrivKey(private.ID()), Reachability: "sometimes"}); err == nil {
		t.Fatal("bad reachability accepted")
	}
}

// A node that restarts under the same peer ID while its peers still hold
// its last messages in their gossip caches is offered those messages
// again; pubsub refuses them as "from self" and counts each against the
// honest peer that forwarded it. The score must tolerate that: after the
// restart, messages flow both ways.
func TestGossipAfterQuickRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys := make([]crypto.PrivKey, 3)
	hs := make([]*Host, 3)
	start := func(i int) {
		h, err := New(ctx, Options{Identity: keys[i], Listen: []string{"/ip4/127.0.0.1/tcp/0"}, DHTMode: "server"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		hs[i] = h
	}
	for i := range hs {
		keys[i], _, _ = crypto.GenerateEd25519Key(nil)
		start(i)
	}
	connect := func(i, j int) {
		if err := hs[i].Connect(ctx, peer.AddrInfo{ID: hs[j].ID(), Addrs: hs[j].Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	connect(0, 1)
	connect(0, 2)
	connect(1, 2)
	topics := make([]*Topic, 3)
	subs := make([]*Subscription, 3)
	got := make([]chan string, 3) // every message a host receives, read at once
	join := func(i int) {
		var err error
		if topics[i], err = hs[i].Join("fomnet/test", nil); err != nil {
			t.Fatal(err)
		}
		if subs[i], err = topics[i].Subscribe(); err != nil {
			t.Fatal(err)
		}
		ch, s := make(chan string, 1000), subs[i]
		got[i] = ch
		go func() {
			for {
				m, err := s.Next(ctx)
				if err != nil {
					return
				}
				ch <- string(m.Data)
			}
		}()
	}
	for i := range hs {
		join(i)
	}
	for i := range hs {
		if err := topics[i].WaitPeers(ctx, 2); err != nil {
			t.Fatal(err)
		}
	}
	// Host 2 publishes a burst and goes away at once.
	for k := range 30 {
		if err := topics[2].Publish(ctx, fmt.Appendf(nil, "old %d", k), 0); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	subs[2].Cancel()
	topics[2].Close()
	hs[2].Close()
	start(2)
	connect(2, 0)
	connect(2, 1)
	if err := hs[2].WaitGossipCachesExpired(ctx); err != nil {
		t.Fatal(err)
	}
	join(2)
	if err := topics[2].WaitPeers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Let the peers' caches offer host 2 its old messages (a few heartbeats).
	time.Sleep(3 * time.Second)
	for k := range 5 {
		for i := range hs {
			if err := topics[i].Publish(ctx, fmt.Appendf(nil, "new %d %d", i, k), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range hs {
		want := map[string]bool{}
		for j := range hs {
			for k := range 5 {
				want[fmt.Sprintf("new %d %d", j, k)] = true
			}
		}
		timeout := time.After(20 * time.Second)
		for len(want) > 0 {
			select {
			case m := <-got[i]:
				delete(want, m)
			case <-timeout:
				t.Fatalf("host %d: %d messages missing: %v", i, len(want), want)
			}
		}
	}
}

// A received message's signed envelope opens anywhere to its author,
// topic and data; a changed byte of the data, another author, or a cut
// envelope does not open.
func TestSignedEnvelope(t *testing.T) {
	hs := newHosts(t, 2, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var topics []*Topic
	for _, h := range hs {
		tp, err := h.Join("fomnet/signed", nil)
		if err != nil {
			t.Fatal(err)
		}
		topics = append(topics, tp)
	}
	if _, err := topics[0].Subscribe(); err != nil {
		t.Fatal(err)
	}
	sub, err := topics[1].Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	if err := topics[0].Publish(ctx, []byte("aggregate 7"), 1); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env, err := m.Signed()
	if err != nil {
		t.Fatal(err)
	}
	from, topic, data, err := OpenSigned(env)
	if err != nil || from != hs[0].ID() || topic != "fomnet/signed" || string(data) != "aggregate 7" {
		t.Fatalf("opened: %s %q %q %v", from, topic, data, err)
	}
	var e pb.Message
	if err := proto.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	forged := func(f func(*pb.Message)) []byte {
		c := proto.CloneOf(&e)
		f(c)
		b, _ := proto.Marshal(c)
		return b
	}
	other := []byte(hs[1].ID())
	for name, b := range map[string][]byte{
		"changed data":   forged(func(c *pb.Message) { c.Data = []byte("aggregate 8") }),
		"another author": forged(func(c *pb.Message) { c.From = other }),
		"no signature":   forged(func(c *pb.Message) { c.Signature = nil }),
		"cut":            env[:len(env)-3],
	} {
		if _, _, _, err := OpenSigned(b); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

// signedSeed is an envelope signed as pubsub signs one (a seed for the
// fuzzer, with no network).
func signedSeed(t testing.TB) []byte {
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	topic := "fomnet/run/x"
	m := &pb.Message{From: []byte(id), Data: []byte(`{"type":"aggregate"}`), Seqno: []byte{0, 0, 0, 1}, Topic: &topic}
	body, _ := proto.Marshal(m)
	if m.Signature, err = k.Sign(append([]byte(pubsub.SignPrefix), body...)); err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(m)
	if from, _, _, err := OpenSigned(b); err != nil || from != id {
		t.Fatalf("seed does not open: %s %v", from, err)
	}
	return b
}

func FuzzOpenSigned(f *testing.F) {
	f.Add(signedSeed(f))
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		from, _, _, err := OpenSigned(b)
		if err == nil && from == "" {
			t.Fatal("opened with no author")
		}
	})
}

// A second host on a TCP or UDP port another host holds fails to start,
// naming the port (libp2p's port reuse would let both listen); port 0
// always starts.
func TestListenPortInUse(t *testing.T) {
	first := newHosts(t, 1, 0)[0]
	k, _, _ := crypto.GenerateEd25519Key(nil)
	for _, a := range first.Addrs() {
		if _, err := New(context.Background(), Options{Identity: k, Listen: []string{a.String()}}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
			t.Fatalf("second host on %s: %v", a, err)
		} else {
			t.Log(err)
		}
	}
}
