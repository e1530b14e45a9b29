package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/p2p"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A node's home directory:
//
//	config.toml    settings (see Config)
//	identity.key   ed25519 peer key, mode 0600
//	store/         content store: blocks/ (flatfs), pins.json, lock
//	api            address and token of the running daemon's API (0600)
const (
	ConfigFile   = "config.toml"
	IdentityFile = "identity.key"
	StoreDir     = "store"
	APIFile      = "api"
)

// Init creates a node home: the directory (0700), an identity and a
// commented config.toml. An existing config is never overwritten.
func Init(home string, cfg Config) (peer.ID, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	cfgPath := filepath.Join(home, ConfigFile)
	if _, err := os.Stat(cfgPath); err == nil {
		return "", fmt.Errorf("%s already exists: this home is initialised", cfgPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return "", err
	}
	k, err := p2p.LoadOrCreateIdentity(filepath.Join(home, IdentityFile))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(home, StoreDir), 0o755); err != nil {
		return "", err
	}
	if err := fsutil.WriteFile(cfgPath, cfg.Encode()); err != nil {
		return "", err
	}
	return peer.IDFromPrivateKey(k)
}

// Options start a node.
type Options struct {
	// Offline opens the store without starting a libp2p host.
	Offline bool
	// Listen and Bootstrap, when set, replace the config's addresses.
	Listen, Bootstrap []string
	// DHTMode, when set, replaces the config's DHT mode.
	DHTMode string
	// API serves the local API (the daemon does; one-shot commands don't).
	API bool
	// APIListen, when set, replaces the config's API address.
	APIListen string
	// Metrics, when set, replaces the config's metrics address.
	Metrics string
	// Logf receives the node's log lines, Debugf its routine ones (nil:
	// discarded).
	Logf, Debugf func(format string, args ...any)
}

// Node is a running fomnet node: its libp2p host (nil when offline) and
// content store.
type Node struct {
	Home     string
	Config   Config
	Identity crypto.PrivKey
	Host     *p2p.Host
	Store    *contentstore.Store
	// Metrics: the node's Prometheus metrics (served at /metrics).
	Metrics *Metrics

	logf    func(string, ...any)
	settled settledRuns // what this node answers StatusProtocol with
	api     *apiServer
	metrics *metricsServer
	ann     *announcer // daemons only
	fol     follows    // daemons only: runs followed in the background
	// timeline and views are what the dashboard draws from (dashview.go).
	timeline timeline
	views    roundViews

	closeOnce sync.Once
	closeErr  error
}

// Open starts the node in home.
func Open(ctx context.Context, home string, o Options) (*Node, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	cfg, err := LoadConfig(filepath.Join(home, ConfigFile))
	if err != nil {
		return nil, err
	}
	cfg.Override(o.Listen, o.Bootstrap, o.DHTMode, o.APIListen)
	if o.Metrics != "" {
		cfg.API.Metrics = o.Metrics
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k, err := p2p.LoadIdentity(filepath.Join(home, IdentityFile))
	if err != nil {
		return nil, err
	}
	n := &Node{Home: home, Config: cfg, Identity: k, logf: o.Logf}
	n.Metrics = newMetrics(n)
	if !o.Offline {
		n.Host, err = p2p.New(ctx, p2p.Options{
			Identity:     k,
			Listen:       cfg.Network.Listen,
			Announce:     cfg.Network.Announce,
			Bootstrap:    cfg.Network.Bootstrap,
			DHTMode:      cfg.Network.DHTMode,
			MDNS:         cfg.Network.MDNS,
			RelayService: cfg.Network.RelayService,
			StaticRelays: cfg.Network.StaticRelays,
			NATPortMap:   cfg.Network.NATPortMap,
			Reachability: cfg.Network.Reachability,
			MaxMemory:    int64(cfg.Resources.MaxMemoryMiB) << 20,
			MaxFD:        cfg.Resources.MaxFD,
			ConnLow:      cfg.Resources.ConnLow,
			ConnHigh:     cfg.Resources.ConnHigh,
			Logf:         o.Logf,
		})
		if err != nil {
			return nil, err
		}
		n.Host.SetStreamHandler(StatusProtocol, n.serveStatus)
	}
	n.Store, err = contentstore.Open(filepath.Join(home, StoreDir), contentstore.Options{Host: n.Host, Logf: o.Logf, Debugf: o.Debugf})
	if err != nil {
		n.Close()
		return nil, err
	}
	if o.API && n.Host != nil {
		if n.ann, err = startAnnouncer(n.Host, o.Logf); err != nil {
			n.Close()
			return nil, err
		}
		if err := n.startFollows(); err != nil {
			n.Close()
			return nil, err
		}
	}
	if cfg.API.Metrics != "" {
		if n.metrics, err = serveMetrics(n, cfg.API.Metrics); err != nil {
			n.Close()
			return nil, err
		}
	}
	if o.API && cfg.API.Listen != "" {
		if n.api, err = startAPI(n, cfg.API.Listen); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// APIAddr is the address the API listens on ("" when not serving).
func (n *Node) APIAddr() string {
	if n.api == nil {
		return ""
	}
	return n.api.addr
}

// Close stops the API, the store and the host, in that order, and waits
// for them. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.api != nil {
			errs = append(errs, n.api.close())
		}
		if n.metrics != nil {
			n.metrics.close()
		}
		n.stopFollows()
		if n.ann != nil {
			n.ann.close()
		}
		if n.Store != nil {
			errs = append(errs, n.Store.Close())
		}
		if n.Host != nil {
			errs = append(errs, n.Host.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// PeerInfo is a peer and its addresses.
type PeerInfo struct {
	ID    string   `json:"peer_id"`
	Addrs []string `json:"addrs"`
	// Reachability (this node's ID only): what AutoNAT concluded —
	// public, private or unknown.
	Reachability string `json:"reachability,omitempty"`
}

// ErrOffline is returned by operations that need the network on an
// offline node.
var ErrOffline = errors.New("this needs the network: start `fomnet daemon`, or run the command without a daemon so it starts a node")

// ID describes this node: peer ID and dialable addresses (offline: the
// configured listen addresses).
func (n *Node) ID(context.Context) (PeerInfo, error) {
	id, err := peer.IDFromPrivateKey(n.Identity)
	if err != nil {
		return PeerInfo{}, err
	}
	pi := PeerInfo{ID: id.String(), Addrs: []string{}}
	if n.Host != nil {
		for _, a := range n.Host.FullAddrs() {
			pi.Addrs = append(pi.Addrs, a.String())
		}
		pi.Reachability = n.Host.Reachability()
	} else {
		for _, a := range n.Config.Network.Listen {
			pi.Addrs = append(pi.Addrs, a+"/p2p/"+id.String())
		}
	}
	return pi, nil
}

// Peers lists connected peers.
func (n *Node) Peers(context.Context) ([]PeerInfo, error) {
	if n.Host == nil {
		return nil, ErrOffline
	}
	out := []PeerInfo{}
	for _, ai := range n.Host.Peers() {
		pi := PeerInfo{ID: ai.ID.String(), Addrs: []string{}}
		for _, a := range ai.Addrs {
			pi.Addrs = append(pi.Addrs, a.String())
		}
		out = append(out, pi)
	}
	return out, nil
}

// Connect dials a peer by multiaddr (ending in /p2p/<id>).
func (n *Node) Connect(ctx context.Context, addr string) (PeerInfo, error) {
	if n.Host == nil {
		return PeerInfo{}, ErrOffline
	}
	ai, err := n.Host.ConnectAddr(ctx, addr)
	if err != nil {
		return PeerInfo{}, fmt.Errorf("connect %s: %w", addr, err)
	}
	return PeerInfo{ID: ai.ID.String(), Addrs: []string{addr}}, nil
}

// Add imports a file or directory, pins it and provides it.
func (n *Node) Add(ctx context.Context, path string, pin bool, progress contentstore.Progress) (cid.Cid, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return cid.Undef, err
	}
	c, err := n.Store.Add(ctx, abs, contentstore.AddOptions{Pin: pin, Progress: progress})
	if err == nil && pin {
		n.announce(ctx, c, filepath.Base(abs))
	}
	return c, err
}

// announce tells the swarm (daemons only) that this node holds root.
func (n *Node) announce(ctx context.Context, root cid.Cid, name string) {
	if n.ann == nil {
		return
	}
	rep, err := n.Store.Verify(ctx, root)
	if err != nil || !rep.OK() {
		return
	}
	n.ann.publish(ctx, Announcement{CID: root.String(), Name: name, Bytes: rep.Bytes})
}

// Announced lists the latest announcements heard from other daemons
// (oldest first; empty unless this node is a daemon).
func (n *Node) Announced(context.Context) ([]Announcement, error) {
	if n.ann == nil {
		return []Announcement{}, nil
	}
	return n.ann.list(), nil
}

// Get fetches c and writes it to out.
func (n *Node) Get(ctx context.Context, c cid.Cid, out string, progress contentstore.Progress) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	return n.Store.Get(ctx, c, abs, progress)
}

// VerifyResult is Verify's answer in JSON form.
type VerifyResult struct {
	CID     string   `json:"cid"`
	OK      bool     `json:"ok"`
	Blocks  int      `json:"blocks"`
	Bytes   int64    `json:"bytes"`
	Missing []string `json:"missing"`
	Corrupt []string `json:"corrupt"`
	Pinned  bool     `json:"pinned"`
}

func (n *Node) result(rep contentstore.Report) VerifyResult {
	r := VerifyResult{CID: rep.Root.String(), OK: rep.OK(), Blocks: rep.Blocks, Bytes: rep.Bytes,
		Missing: []string{}, Corrupt: []string{}, Pinned: n.Store.IsPinned(rep.Root)}
	for _, c := range rep.Missing {
		r.Missing = append(r.Missing, c.String())
	}
	for _, c := range rep.Corrupt {
		r.Corrupt = append(r.Corrupt, c.String())
	}
	return r
}

// Verify checks the local copy of c.
func (n *Node) Verify(ctx context.Context, c cid.Cid) (VerifyResult, error) {
	rep, err := n.Store.Verify(ctx, c)
	if err != nil {
		return VerifyResult{}, err
	}
	return n.result(rep), nil
}

// Resolve reports whether c's root block is stored here or, online, can be
// fetched from a peer within 30 s (it is then stored).
func (n *Node) Resolve(ctx context.Context, c cid.Cid) (bool, error) {
	if ok, err := n.Store.Has(ctx, c); err != nil || ok {
		return ok, err
	}
	if n.Host == nil || len(n.Host.Network().Peers()) == 0 {
		return false, nil // nobody to fetch it from
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := n.Store.Block(fctx, c); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	return true, nil
}

// Mirror fetches c, verifies it (deleting and fetching again any block that
// turned out corrupt), pins it and provides it.
func (n *Node) Mirror(ctx context.Context, c cid.Cid, progress contentstore.Progress) (VerifyResult, error) {
	return n.mirrorAs(ctx, c, "mirror", progress)
}

// mirrorAs is Mirror with the pin's name.
func (n *Node) mirrorAs(ctx context.Context, c cid.Cid, name string, progress contentstore.Progress) (VerifyResult, error) {
	if n.Host == nil {
		return VerifyResult{}, ErrOffline
	}
	var rep contentstore.Report
	for attempt := 0; attempt < 2; attempt++ {
		if err := n.Store.Fetch(ctx, c, progress); err != nil {
			return VerifyResult{}, err
		}
		var err error
		if rep, err = n.Store.Verify(ctx, c); err != nil {
			return VerifyResult{}, err
		}
		if rep.OK() {
			break
		}
		n.logf("mirror %s: %s; fetching again", c, rep.Problem())
		if err := n.Store.Repair(ctx, rep); err != nil {
			return n.result(rep), err
		}
	}
	if !rep.OK() {
		return n.result(rep), fmt.Errorf("mirror %s: %s", c, rep.Problem())
	}
	if err := n.Store.Pin(ctx, c, name); err != nil {
		return n.result(rep), err
	}
	n.announce(ctx, c, name)
	return n.result(rep), nil
}

// ExportCAR writes c as a CARv2 file.
func (n *Node) ExportCAR(ctx context.Context, c cid.Cid, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	return n.Store.ExportCAR(ctx, c, abs)
}

// ImportResult is ImportCAR's answer in JSON form.
type ImportResult struct {
	Roots      []string `json:"roots"`
	Blocks     int      `json:"blocks"`
	Bytes      int64    `json:"bytes"`
	Incomplete []string `json:"incomplete"`
}

// ImportCAR imports a CAR file and pins its complete roots.
func (n *Node) ImportCAR(ctx context.Context, path string, pin bool) (ImportResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return ImportResult{}, err
	}
	defer f.Close()
	res, err := n.Store.ImportCAR(ctx, f, filepath.Base(path), pin)
	out := ImportResult{Blocks: res.Blocks, Bytes: res.Bytes, Roots: []string{}, Incomplete: []string{}}
	for _, c := range res.Roots {
		out.Roots = append(out.Roots, c.String())
	}
	for _, c := range res.Incomplete {
		out.Incomplete = append(out.Incomplete, c.String())
	}
	return out, err
}

// PinInfo is one pin in JSON form.
type PinInfo struct {
	CID  string `json:"cid"`
	Name string `json:"name,omitempty"`
}

// Pins lists the pins.
func (n *Node) Pins(context.Context) ([]PinInfo, error) {
	out := []PinInfo{}
	for _, p := range n.Store.Pins() {
		out = append(out, PinInfo{CID: p.CID.String(), Name: p.Name})
	}
	return out, nil
}

// Unpin removes a pin.
func (n *Node) Unpin(_ context.Context, c cid.Cid) error { return n.Store.Unpin(c) }

// GC removes unpinned blocks.
func (n *Node) GC(ctx context.Context) (contentstore.GCResult, error) { return n.Store.GC(ctx) }
