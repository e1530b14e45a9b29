package node

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/fomnet/fomnet/p2p"
)

// Config is a node's config.toml.
type Config struct {
	Network   NetworkConfig   `toml:"network"`
	Resources ResourcesConfig `toml:"resources"`
	API       APIConfig       `toml:"api"`
}

// NetworkConfig: addresses, discovery and NAT traversal.
type NetworkConfig struct {
	Listen       []string `toml:"listen"`
	Announce     []string `toml:"announce"`
	Bootstrap    []string `toml:"bootstrap"`
	DHTMode      string   `toml:"dht_mode"`
	MDNS         bool     `toml:"mdns"`
	RelayService bool     `toml:"relay_service"`
	StaticRelays []string `toml:"static_relays"`
	NATPortMap   bool     `toml:"nat_port_map"`
	Reachability string   `toml:"reachability"`
}

// ResourcesConfig bounds what the libp2p stack may use.
type ResourcesConfig struct {
	MaxMemoryMiB int `toml:"max_memory_mib"`
	MaxFD        int `toml:"max_fd"`
	ConnLow      int `toml:"conn_low"`
	ConnHigh     int `toml:"conn_high"`
}

// APIConfig is the local API the CLI uses while a daemon runs.
type APIConfig struct {
	// Listen is a loopback host:port ("127.0.0.1:0" picks a free port; the
	// address in use is written to the file "api" in the node's home).
	Listen string `toml:"listen"`
	// Metrics, when set, is a loopback host:port serving /metrics without
	// a token, for Prometheus (metrics hold no secrets); the daemon also
	// serves /metrics on Listen, behind the API token.
	Metrics string `toml:"metrics"`
}

// DefaultConfig is what `fomnet init` writes.
func DefaultConfig() Config {
	return Config{
		Network: NetworkConfig{
			Listen: []string{
				fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", p2p.DefaultPort),
				fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", p2p.DefaultPort),
			},
			Announce:     []string{},
			Bootstrap:    []string{},
			DHTMode:      "auto",
			StaticRelays: []string{},
			Reachability: "auto",
		},
		Resources: ResourcesConfig{MaxMemoryMiB: 1024, MaxFD: 512, ConnLow: 64, ConnHigh: 192},
		API:       APIConfig{Listen: "127.0.0.1:0"}, // a free port: several homes on one machine
	}
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if len(c.Network.Listen) == 0 {
		return errors.New("network.listen: at least one address is needed")
	}
	if _, err := p2p.ParseAddrs("network.listen", c.Network.Listen); err != nil {
		return err
	}
	if _, err := p2p.ParseAddrs("network.announce", c.Network.Announce); err != nil {
		return err
	}
	if _, err := p2p.ParsePeerAddrs("network.bootstrap", c.Network.Bootstrap); err != nil {
		return err
	}
	if _, err := p2p.ParsePeerAddrs("network.static_relays", c.Network.StaticRelays); err != nil {
		return err
	}
	switch c.Network.DHTMode {
	case "auto", "server", "client":
	default:
		return fmt.Errorf("network.dht_mode: %q is not auto, server or client", c.Network.DHTMode)
	}
	switch c.Network.Reachability {
	case "auto", "public", "private":
	default:
		return fmt.Errorf("network.reachability: %q is not auto, public or private", c.Network.Reachability)
	}
	r := c.Resources
	if r.MaxMemoryMiB < 64 || r.MaxMemoryMiB > 1<<20 {
		return fmt.Errorf("resources.max_memory_mib: %d is outside 64..1048576", r.MaxMemoryMiB)
	}
	if r.MaxFD < 32 || r.MaxFD > 1<<20 {
		return fmt.Errorf("resources.max_fd: %d is outside 32..1048576", r.MaxFD)
	}
	if r.ConnLow < 1 || r.ConnHigh < r.ConnLow {
		return fmt.Errorf("resources.conn_low %d / conn_high %d: need 1 <= conn_low <= conn_high", r.ConnLow, r.ConnHigh)
	}
	if c.API.Listen != "" {
		if err := checkLoopback(c.API.Listen); err != nil {
			return fmt.Errorf("api.listen: %w", err)
		}
	}
	if c.API.Metrics != "" {
		if err := checkLoopback(c.API.Metrics); err != nil {
			return fmt.Errorf("api.metrics: %w", err)
		}
	}
	return nil
}

// Override replaces the fields given (non-empty) on a command line.
func (c *Config) Override(listen, bootstrap []string, dhtMode, apiListen string) {
	if len(listen) > 0 {
		c.Network.Listen = listen
	}
	if len(bootstrap) > 0 {
		c.Network.Bootstrap = bootstrap
	}
	if dhtMode != "" {
		c.Network.DHTMode = dhtMode
	}
	if apiListen != "" {
		c.API.Listen = apiListen
	}
}

// maxConfigSize bounds what ParseConfig reads.
const maxConfigSize = 1 << 20

// ParseConfig decodes config.toml over the defaults (a missing key keeps its
// default) and validates it. Unknown keys are errors, so a typo never
// silently falls back to a default. name is the file's path, for errors.
func ParseConfig(data []byte, name string) (Config, error) {
	c := DefaultConfig()
	if len(data) > maxConfigSize {
		return c, fmt.Errorf("config %s: %d bytes is more than the %d allowed", name, len(data), maxConfigSize)
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return c, fmt.Errorf("config %s: unknown keys: %s", name, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", name, err)
	}
	return c, nil
}

// LoadConfig reads and parses the config file at path.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Config{}, fmt.Errorf("no config at %s: run `fomnet init` first (or pass --home)", path)
		}
		return Config{}, err
	}
	return ParseConfig(data, path)
}

// Encode renders c as a commented config.toml.
func (c Config) Encode() []byte {
	var b strings.Builder
	list := func(ss []string) string {
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	fmt.Fprintf(&b, `# fomnet node configuration. Every key is optional: a missing one takes
# its default. Unknown keys are errors.

[network]
# Multiaddrs to listen on: TCP and QUIC (UDP) by default.
listen = %s
# Addresses to advertise instead of the listen addresses (a public IP or DNS
# name behind a port forward), e.g. ["/dns4/node.example.org/tcp/4101"].
announce = %s
# Peers to join the swarm through: multiaddrs ending in /p2p/<peer id>.
bootstrap = %s
# DHT mode: "auto" (server once reachable from outside), "server", "client".
dht_mode = %q
# Find peers on the local network with mDNS.
mdns = %t
# Relay traffic for peers behind NATs (circuit relay v2). Public nodes only.
relay_service = %t
# Relays to reserve a slot on when this node is not reachable from outside.
static_relays = %s
# Ask the home router for a port mapping (UPnP / NAT-PMP).
nat_port_map = %t
# "auto" lets AutoNAT find out whether others can dial this node; "private"
# (behind a NAT: use relays and hole punching at once) or "public" override it.
reachability = %q

[resources]
# Limits for the libp2p resource manager.
max_memory_mib = %d
max_fd = %d
# Connection manager watermarks: above conn_high, trim down to conn_low.
conn_low = %d
conn_high = %d

[api]
# Local API used by fomnet commands while a daemon runs. Loopback only;
# port 0 picks a free port each start (written to the home's api file,
# which fomnet commands read); "" turns it off.
listen = %q
`, list(c.Network.Listen), list(c.Network.Announce), list(c.Network.Bootstrap), c.Network.DHTMode,
		c.Network.MDNS, c.Network.RelayService, list(c.Network.StaticRelays), c.Network.NATPortMap, c.Network.Reachability,
		c.Resources.MaxMemoryMiB, c.Resources.MaxFD, c.Resources.ConnLow, c.Resources.ConnHigh, c.API.Listen)
	return []byte(b.String())
}

// DefaultHome is $FOMNET_HOME, else ~/.fomnet.
func DefaultHome() string {
	if h := os.Getenv("FOMNET_HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".fomnet")
	}
	return ".fomnet"
}
