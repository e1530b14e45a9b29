package node

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/ipfs/go-cid"
)

func TestConfigRoundTrip(t *testing.T) {
	c := DefaultConfig()
	c.Network.Bootstrap = []string{"/ip4/10.0.0.1/tcp/4101/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"}
	c.Network.MDNS = true
	c.Resources.ConnHigh = 300
	got, err := ParseConfig(c.Encode(), "config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Encode()) != string(c.Encode()) {
		t.Fatalf("round trip changed the config:\n%s\n---\n%s", got.Encode(), c.Encode())
	}
	if !bytes.Contains(c.Encode(), []byte("# ")) {
		t.Fatal("config has no comments")
	}
	// Missing keys keep defaults.
	got, err = ParseConfig([]byte("[network]\ndht_mode = \"client\"\n"), "c.toml")
	if err != nil || got.Network.DHTMode != "client" || got.Resources.MaxFD != DefaultConfig().Resources.MaxFD {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for bad, want := range map[string]string{
		"[network]\nlisen = []\n":                           "network.lisen",
		"[network]\ndht_mode = \"maybe\"\n":                 "network.dht_mode",
		"[network]\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\"]\n": "bootstrap",
		"[resources]\nmax_fd = 1\n":                         "resources.max_fd",
		"[resources]\nconn_low = 10\nconn_high = 5\n":       "conn_low",
		"[api]\nlisten = \"0.0.0.0:4102\"\n":                "loopback",
		"[network\n":                                        "c.toml",
		"[network]\nlisten = \"/ip4/0.0.0.0/tcp/1\"\n":      "c.toml",
	} {
		_, err := ParseConfig([]byte(bad), "c.toml")
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "c.toml") {
			t.Errorf("%q: error %v, want it to name %q and the file", bad, err, want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add(DefaultConfig().Encode())
	f.Add([]byte("[network]\ndht_mode = \"client\"\n"))
	f.Add([]byte("[api]\nlisten = \"\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b, "fuzz")
		if err != nil {
			return
		}
		again, err := ParseConfig(c.Encode(), "fuzz")
		if err != nil {
			t.Fatalf("re-parsing an accepted config: %v\n%s", err, c.Encode())
		}
		if string(again.Encode()) != string(c.Encode()) {
			t.Fatal("config changed on re-encoding")
		}
	})
}

func FuzzParseAPIFile(f *testing.F) {
	f.Add([]byte(`{"addr":"127.0.0.1:4102","token":"` + strings.Repeat("ab", 32) + `"}`))
	f.Add([]byte(`{"addr":"10.0.0.1:1","token":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		addr, _, err := ParseAPIFile(b, "fuzz")
		if err == nil && checkLoopback(addr) != nil {
			t.Fatalf("accepted non-loopback %q", addr)
		}
	})
}

func TestInitAndOfflineNode(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	id, err := Init(home, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(home, DefaultConfig()); err == nil {
		t.Fatal("second Init succeeded")
	}
	st, _ := os.Stat(filepath.Join(home, IdentityFile))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %#o", st.Mode().Perm())
	}
	n, err := Open(context.Background(), home, Options{Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	pi, _ := n.ID(context.Background())
	if pi.ID != id.String() || len(pi.Addrs) != 2 {
		t.Fatalf("offline id %+v", pi)
	}
	if _, err := n.Peers(context.Background()); err != ErrOffline {
		t.Fatalf("peers offline: %v", err)
	}
}

// The API refuses requests without the token.
func TestAPIToken(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	cfg := DefaultConfig()
	cfg.Network.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.API.Listen = "127.0.0.1:0"
	if _, err := Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	n, err := Open(context.Background(), home, Options{API: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	st, _ := os.Stat(filepath.Join(home, APIFile))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("api file mode %#o", st.Mode().Perm())
	}
	resp, err := http.Post("http://"+n.APIAddr()+"/api/v0/id", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %s", resp.Status)
	}
	// /metrics wants the token too.
	ab, _ := os.ReadFile(filepath.Join(home, APIFile))
	_, token, _ := ParseAPIFile(ab, APIFile)
	for _, tok := range []string{"", token} {
		req, _ := http.NewRequest("GET", "http://"+n.APIAddr()+"/metrics", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ok := resp.StatusCode == http.StatusOK && strings.Contains(string(body), "fomnet_peers_connected"); ok != (tok != "") {
			t.Fatalf("/metrics with token %q: %s", tok, resp.Status)
		}
	}
	cl, err := Dial(context.Background(), home)
	if err != nil {
		t.Fatal(err)
	}
	if pi, err := cl.ID(context.Background()); err != nil || pi.ID != n.Host.ID().String() {
		t.Fatalf("%+v %v", pi, err)
	}
	// Resolve through the API: a stored block resolves, an unknown one
	// does not (no peers to ask).
	stored, err := n.Store.AddReader(context.Background(), strings.NewReader("resolve me"), contentstore.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unknown, _ := cid.Decode("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
	for k, want := range map[cid.Cid]bool{stored: true, unknown: false} {
		if ok, err := cl.Resolve(context.Background(), k); err != nil || ok != want {
			t.Fatalf("resolve %s: %v %v, want %v", k, ok, err, want)
		}
	}
	n.Close()
	if _, err := os.Stat(filepath.Join(home, APIFile)); !os.IsNotExist(err) {
		t.Fatal("api file left after Close")
	}
	if _, err := Dial(context.Background(), home); err != ErrNoDaemon {
		t.Fatalf("Dial after Close: %v", err)
	}
}

func TestAnnouncementCodec(t *testing.T) {
	a := Announcement{CID: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", Name: "체크포인트", Bytes: 12, Peer: "ignored"}
	b, err := EncodeAnnouncement(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAnnouncement(b)
	if err != nil || got.CID != a.CID || got.Name != a.Name || got.Bytes != 12 || got.Peer != "" {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range []string{`{"cid":"x","bytes":1}`, `{"cid":"` + a.CID + `","bytes":-1}`,
		`{"cid":"` + a.CID + `","bytes":1,"extra":2}`, `{"cid":"` + a.CID + `","bytes":1}{}`, `[]`} {
		if _, err := DecodeAnnouncement([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := EncodeAnnouncement(Announcement{CID: a.CID, Name: strings.Repeat("x", 2000)}); err == nil {
		t.Fatal("oversized announcement encoded")
	}
}

func FuzzDecodeAnnouncement(f *testing.F) {
	f.Add([]byte(`{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"a","bytes":5}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAnnouncement(b)
		if err != nil {
			return
		}
		enc, err := EncodeAnnouncement(a)
		if err != nil {
			t.Fatalf("re-encoding an accepted announcement: %v", err)
		}
		if again, err := DecodeAnnouncement(enc); err != nil || again != a {
			t.Fatalf("round trip: %+v %v", again, err)
		}
	})
}

// A daemon follows runs in the background: Follow records the run in
// follows.json and starts a follower; a restarted daemon follows it again;
// Unfollow stops it. A node without the API cannot follow in the
// background.
func TestDaemonFollows(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	cfg := DefaultConfig()
	cfg.Network.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.API.Listen = "127.0.0.1:0"
	if _, err := Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	run, _ := cid.Decode("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
	open := func(api bool) *Node {
		n, err := Open(ctx, home, Options{API: api})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	running := func(n *Node) bool {
		n.fol.mu.Lock()
		defer n.fol.mu.Unlock()
		_, ok := n.fol.running[run.String()]
		return ok
	}
	n := open(true)
	cl, err := Dial(ctx, home)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // twice: a no-op the second time
		if err := cl.Follow(ctx, run); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(home, FollowsFile))
	if runs, err := DecodeFollows(b); err != nil || len(runs) != 1 || !runs[0].Equals(run) || !running(n) {
		t.Fatalf("follows.json %q (%v), running %v", b, err, running(n))
	}
	n.Close()
	n = open(true)
	if !running(n) {
		t.Fatal("a restarted daemon does not follow the run again")
	}
	if err := n.Unfollow(ctx, run); err != nil || running(n) {
		t.Fatalf("unfollow: %v, still running %v", err, running(n))
	}
	if err := n.Unfollow(ctx, run); err == nil {
		t.Fatal("unfollowing a run not followed succeeded")
	}
	n.Close()
	n = open(false)
	defer n.Close()
	if err := n.Follow(ctx, run); err == nil || !strings.Contains(err.Error(), "only a daemon") {
		t.Fatalf("follow without a daemon: %v", err)
	}
}

func TestDecodeFollows(t *testing.T) {
	c := "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
	for in, want := range map[string]string{
		`["` + c + `","` + c + `"]`: "listed twice",
		`["nope"]`:                  `entry 0, "nope"`,
		`{}`:                        "follows.json",
	} {
		if _, err := DecodeFollows([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

func FuzzDecodeFollows(f *testing.F) {
	f.Add([]byte(`["bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		runs, err := DecodeFollows(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, r := range runs {
			if !r.Defined() || seen[r.String()] {
				t.Fatalf("accepted %q as %v", b, runs)
			}
			seen[r.String()] = true
		}
	})
}

// --metrics serves /metrics alone, without a token, on loopback only; the
// config refuses another address by name.
func TestMetricsListener(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	cfg := DefaultConfig()
	cfg.Network.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	if _, err := Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), home, Options{Metrics: "0.0.0.0:0"}); err == nil || !strings.Contains(err.Error(), "api.metrics") {
		t.Fatalf("a metrics address reachable from other machines: %v", err)
	}
	n, err := Open(context.Background(), home, Options{Metrics: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for path, want := range map[string]int{"/metrics": http.StatusOK, "/api/v0/id": http.StatusNotFound} {
		resp, err := http.Get("http://" + n.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		if want == http.StatusOK && !strings.Contains(string(body), "go_goroutines") {
			t.Fatalf("GET /metrics: no Go runtime metrics in %.200s", body)
		}
	}
	n.Close()
	if _, err := http.Get("http://" + n.MetricsAddr() + "/metrics"); err == nil {
		t.Fatal("metrics still served after Close")
	}
}
