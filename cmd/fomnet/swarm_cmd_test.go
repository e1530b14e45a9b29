package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fomnet/fomnet/node"
)

// syncBuffer is a bytes.Buffer safe to write from the daemon's goroutine
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func initHome(t *testing.T, extra ...string) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	out, errs, code := fomnet(t, append([]string{"init", "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--json"}, extra...)...)
	if code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	var r map[string]string
	if err := json.Unmarshal([]byte(out), &r); err != nil || r["peer_id"] == "" {
		t.Fatalf("init --json: %q %v", out, err)
	}
	return home
}

// startDaemon runs `fomnet daemon` in-process until the test ends and
// returns its multiaddrs.
func startDaemon(t *testing.T, home string) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int)
	go func() { done <- run(ctx, []string{"daemon", "--home", home}, &out, &errb) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("daemon exit %d: %s", code, errb.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(errb.String(), "ready") {
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start: %s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return strings.Fields(out.String())
}

func TestSwarmCommands(t *testing.T) {
	a := initHome(t)
	addrs := startDaemon(t, a)
	if len(addrs) == 0 || !strings.Contains(addrs[0], "/p2p/") {
		t.Fatalf("daemon printed %q", addrs)
	}
	if _, errs, code := fomnet(t, "daemon", "--home", a); code == 0 || !strings.Contains(errs, "already runs") {
		t.Fatalf("second daemon: %d %s", code, errs)
	}

	// id --json through the daemon gives the live addresses.
	out, errs, code := fomnet(t, "id", "--home", a, "--json")
	var id node.PeerInfo
	if code != 0 || json.Unmarshal([]byte(out), &id) != nil || id.ID == "" || len(id.Addrs) == 0 || id.Addrs[0] != addrs[0] {
		t.Fatalf("id: %d %q %s", code, out, errs)
	}

	// add through the daemon.
	dir := filepath.Join(t.TempDir(), "ckpt")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	big := bytes.Repeat([]byte("fomnet 한국어 english "), 200000)
	os.WriteFile(filepath.Join(dir, "model.bin"), big, 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "config.json"), []byte(`{"x":1}`), 0o644)
	out, errs, code = fomnet(t, "add", "--home", a, dir, "--json")
	var added map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &added) != nil || !strings.HasPrefix(added["cid"], "bafy") {
		t.Fatalf("add: %d %q %s", code, out, errs)
	}
	root := added["cid"]

	// get on another home with no daemon: a node starts for the command,
	// joins through the daemon and fetches.
	b := initHome(t)
	got := filepath.Join(t.TempDir(), "got")
	out, errs, code = fomnet(t, "get", "--home", b, "--bootstrap", addrs[0], "--listen", "/ip4/127.0.0.1/tcp/0", root, "-o", got)
	if code != 0 {
		t.Fatalf("get: %d %s", code, errs)
	}
	if g, _ := os.ReadFile(filepath.Join(got, "model.bin")); !bytes.Equal(g, big) {
		t.Fatal("fetched model.bin differs")
	}
	if _, errs, code := fomnet(t, "verify", "--home", b, root); code != 0 {
		t.Fatalf("verify after get: %s", errs)
	}

	// verify, pin ls, car export through the daemon; import offline elsewhere.
	out, _, code = fomnet(t, "verify", "--home", a, root, "--json")
	var vr node.VerifyResult
	if code != 0 || json.Unmarshal([]byte(out), &vr) != nil || !vr.OK || !vr.Pinned {
		t.Fatalf("verify: %d %q", code, out)
	}
	car := filepath.Join(t.TempDir(), "x.car")
	if _, errs, code := fomnet(t, "car", "export", "--home", a, root, "-o", car); code != 0 {
		t.Fatalf("car export: %s", errs)
	}
	c := initHome(t)
	out, errs, code = fomnet(t, "car", "import", "--home", c, car, "--json")
	var ir node.ImportResult
	if code != 0 || json.Unmarshal([]byte(out), &ir) != nil || len(ir.Roots) != 1 || ir.Roots[0] != root {
		t.Fatalf("car import: %d %q %s", code, out, errs)
	}
	out, _, _ = fomnet(t, "pin", "ls", "--home", c, "--json")
	if !strings.Contains(out, root) {
		t.Fatalf("pin ls: %q", out)
	}

	// mirror on home c (no daemon) with --exit; peers and connect through
	// the daemon.
	if _, errs, code := fomnet(t, "mirror", "--home", c, "--exit", "--bootstrap", addrs[0], "--listen", "/ip4/127.0.0.1/tcp/0", root); code != 0 {
		t.Fatalf("mirror: %s", errs)
	}
	out, _, code = fomnet(t, "peers", "--home", a, "--json")
	var peers []node.PeerInfo
	if code != 0 || json.Unmarshal([]byte(out), &peers) != nil {
		t.Fatalf("peers: %q", out)
	}
	if _, errs, code := fomnet(t, "peers", "--home", c); code == 0 || !strings.Contains(errs, "network") {
		t.Fatalf("peers without a daemon: %d %s", code, errs)
	}
	if _, errs, code := fomnet(t, "connect", "--home", a, "/ip4/127.0.0.1/tcp/1/p2p/"+id.ID); code == 0 {
		t.Fatalf("connect to self succeeded: %s", errs)
	}

	out, _, code = fomnet(t, "announced", "--home", a, "--json")
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(out), "[") {
		t.Fatalf("announced: %d %q", code, out)
	}

	// pin rm + gc empties the store of that DAG.
	if _, errs, code := fomnet(t, "pin", "rm", "--home", c, root); code != 0 {
		t.Fatal(errs)
	}
	out, _, code = fomnet(t, "gc", "--home", c, "--json")
	var gc map[string]int64
	if code != 0 || json.Unmarshal([]byte(out), &gc) != nil || gc["removed"] == 0 {
		t.Fatalf("gc: %q", out)
	}
	if _, _, code := fomnet(t, "verify", "--home", c, root); code != 1 {
		t.Fatalf("verify of a collected DAG: exit %d, want 1", code)
	}
}

func TestSwarmUsageErrors(t *testing.T) {
	home := initHome(t)
	for _, args := range [][]string{
		{"get", "--home", home, "not-a-cid"},
		{"get", "--home", home},
		{"verify", "--home", home, "bafy", "extra"},
		{"add", "--home", home},
		{"mirror", "--home", home},
		{"mirror", "--follow", "--home", home, "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"},
		{"mirror", "--follow", "--home", home, "not-a-run"},
		{"car", "export", "--home", home, "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"},
		{"init", "--home", filepath.Join(t.TempDir(), "x"), "--listen", "/ip4/nope"},
	} {
		if _, errs, code := fomnet(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errs)
		}
	}
	if _, errs, code := fomnet(t, "init", "--home", home); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("init twice: %d %s", code, errs)
	}
	if _, errs, code := fomnet(t, "announced", "--home", home); code != 1 || !strings.Contains(errs, "running daemon") {
		t.Fatalf("announced without a daemon: %d %s", code, errs)
	}
	if _, errs, code := fomnet(t, "add", "--home", filepath.Join(t.TempDir(), "none"), "x"); code != 1 || !strings.Contains(errs, "fomnet init") {
		t.Fatalf("add without init: %d %s", code, errs)
	}
}

// Several homes on one machine: with init's defaults (but for the swarm
// port) their daemons run side by side, each API on its own free port;
// a home whose swarm port another daemon holds refuses to start.
func TestSeveralHomes(t *testing.T) {
	var homes []string
	for i := 0; i < 2; i++ {
		home := filepath.Join(t.TempDir(), "home")
		if _, errs, code := fomnet(t, "init", "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0"); code != 0 {
			t.Fatal(errs)
		}
		homes = append(homes, home)
	}
	addrs := startDaemon(t, homes[0])
	startDaemon(t, homes[1])
	apis := map[string]bool{}
	for _, h := range homes {
		b, err := os.ReadFile(filepath.Join(h, node.APIFile))
		if err != nil {
			t.Fatal(err)
		}
		apis[string(b)] = true
		if out, errs, code := fomnet(t, "id", "--home", h); code != 0 || out == "" {
			t.Fatalf("id through the daemon of %s: %d %s", h, code, errs)
		}
	}
	if len(apis) != 2 {
		t.Fatalf("api files %v", apis)
	}
	taken := filepath.Join(t.TempDir(), "home")
	port := addrs[0][:strings.Index(addrs[0], "/p2p/")]
	if _, errs, code := fomnet(t, "init", "--home", taken, "--listen", port); code != 0 {
		t.Fatal(errs)
	}
	if _, errs, code := fomnet(t, "daemon", "--home", taken); code != 1 || !strings.Contains(errs, "in use by another process") {
		t.Fatalf("daemon on a taken port: exit %d, %s", code, errs)
	}
}

// Waits for content nobody has end after --timeout with what they waited
// for — get and join on a node of their own, get through a daemon, and
// get with a bootstrap peer that is down — and --timeout 0 is accepted.
func TestFetchTimeouts(t *testing.T) {
	const nobody = "bafkreieclk6xdqavcz5z5vpigrrwpdd5pbohykserogq46zmr7e43rgotu"
	const run = "baguqeeray6hhkilzy6fhl4iw6r36n5nahkjftgpsbbdux2hh6oet6xgs4eqq"
	alone, daemon := initHome(t), initHome(t)
	startDaemon(t, daemon)
	for _, args := range [][]string{
		{"get", nobody, "--home", alone, "-o", filepath.Join(t.TempDir(), "x")},
		{"join", run, "--home", alone},
		{"get", nobody, "--home", daemon, "-o", filepath.Join(t.TempDir(), "x")},
		{"get", nobody, "--home", alone, "--bootstrap", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWEesXSV9tHJvnrVMhQcujHAJ51VRxvbgLAZaPuQAW2S9v"},
		{"run", "show", run, "--home", alone},
		{"audit", nobody, "--home", alone},
		{"audit", nobody, "--home", daemon},
		{"checkpoint", "verify", nobody, "--home", alone},
	} {
		_, errs, code := fomnet(t, append(args, "--timeout", "1s")...)
		if code != 1 || !strings.Contains(errs, "nothing received for 1s") || !strings.Contains(errs, "providers found") {
			t.Errorf("%v: exit %d, %s", args, code, errs)
		}
	}
	// Through the daemon, what its fetch waits for reaches the caller.
	if _, errs, code := fomnet(t, "get", nobody, "--home", daemon, "--timeout", "6s"); code != 1 ||
		!strings.Contains(errs, "fomnet: waiting for "+nobody+": nothing received for 5s") {
		t.Errorf("get through the daemon: exit %d, %s", code, errs)
	}
	if _, errs, code := fomnet(t, "get", nobody, "--home", alone, "--timeout", "-1s"); code != 2 {
		t.Errorf("--timeout -1s: exit %d, %s", code, errs)
	}
}

// A run over the CLI: a daemon seeds the dataset and the run spec; two
// nodes join from their own homes and agree on every checkpoint.
func TestRunCommands(t *testing.T) {
	// The seeding daemon is a DHT server, as a swarm's bootstrap node
	// should be; the joiners find each other through it.
	a := initHome(t, "--dht-mode", "server")
	addrs := startDaemon(t, a)
	ds := filepath.Join(t.TempDir(), "ds")
	if _, errs, code := fomnet(t, "data", "prepare", "--builtin", "--synthetic", "200", "--vocab", "320", "--seq", "32", "--out", ds); code != 0 {
		t.Fatal(errs)
	}
	out, errs, code := fomnet(t, "run", "create", "--home", a, "--data", ds, "--preset", "tiny", "--rounds", "2", "--h", "3",
		"--warmup-rounds", "1", "--warmup-h", "2", "--batch", "2", "--seq", "32", "--warmup", "1", "--deadline", "20s", "--json")
	var created map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || !strings.HasPrefix(created["run_id"], "bagu") {
		t.Fatalf("run create: %d %q %s", code, out, errs)
	}
	run := created["run_id"]
	out, errs, code = fomnet(t, "run", "show", "--home", a, run, "--json")
	var spec node.RunSpec
	if code != 0 || json.Unmarshal([]byte(out), &spec) != nil || spec.Rounds != 2 || spec.Sync.H != 3 ||
		spec.Sync.WarmupRounds != 1 || spec.Sync.WarmupH != 2 {
		t.Fatalf("run show: %d %q %s", code, out, errs)
	}
	if _, _, code := fomnet(t, "run", "create", "--home", a, "--data", "nope"); code != 2 {
		t.Fatalf("bad --data: exit %d", code)
	}
	// Defaults fit the run: a 4-step run on the tiny preset (context 128)
	// gets a warm-up of a tenth of its steps and seq 64.
	if out, errs, code := fomnet(t, "run", "create", "--home", a, "--data", ds, "--preset", "tiny", "--rounds", "2", "--h", "2", "--json"); code != 0 {
		t.Fatalf("run create with default warm-up and seq: exit %d, %s", code, errs)
	} else if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	} else if out, errs, code := fomnet(t, "run", "show", "--home", a, created["run_id"], "--json"); code != 0 || json.Unmarshal([]byte(out), &spec) != nil ||
		spec.Inner.Warmup != 0 || spec.Inner.Seq != 128 {
		t.Fatalf("run show: %d %+v %s", code, spec.Inner, errs)
	}
	// Bad arguments are refused before the dataset is published: a fresh
	// home holds nothing afterwards.
	fresh := initHome(t)
	if _, errs, code := fomnet(t, "run", "create", "--home", fresh, "--data", ds, "--preset", "tiny", "--seq", "4096"); code != 2 || !strings.Contains(errs, "seq") {
		t.Fatalf("--seq 4096 on tiny: exit %d, %s", code, errs)
	}
	if out, errs, code := fomnet(t, "pin", "ls", "--home", fresh, "--json"); code != 0 || strings.Contains(out, "dataset") {
		t.Fatalf("after a refused run create, the home pins %s (%s)", out, errs)
	}
	// An empty dataset is refused at run create.
	empty := filepath.Join(t.TempDir(), "empty")
	os.MkdirAll(empty, 0o755)
	man, _ := os.ReadFile(filepath.Join(ds, "manifest.json"))
	var m map[string]any
	json.Unmarshal(man, &m)
	m["shards"] = []any{}
	man, _ = json.Marshal(m)
	os.WriteFile(filepath.Join(empty, "manifest.json"), man, 0o644)
	if _, errs, code := fomnet(t, "run", "create", "--home", fresh, "--data", empty, "--preset", "tiny"); code != 2 || !strings.Contains(errs, "empty") {
		t.Fatalf("an empty dataset: exit %d, %s", code, errs)
	}
	if _, errs, code := fomnet(t, "run", "create", "--home", a, "--data", ds, "--warmup-rounds", "2"); code != 2 || !strings.Contains(errs, "warmup_h") {
		t.Fatalf("--warmup-rounds without --warmup-h: exit %d, %s", code, errs)
	}
	if _, errs, code := fomnet(t, "run", "create", "--home", a, "--data", ds, "--beta1", "1.5"); code != 2 || !strings.Contains(errs, "beta1") {
		t.Fatalf("--beta1 1.5: exit %d, %s", code, errs)
	}
	if out, errs, code := fomnet(t, "run", "create", "--home", a, "--data", ds, "--preset", "tiny", "--seq", "32", "--beta2", "0.99"); code != 0 {
		t.Fatalf("--beta2 0.99: exit %d, %s", code, errs)
	} else if shown, errs, code := fomnet(t, "run", "show", "--home", a, strings.TrimSpace(out)); code != 0 || !strings.Contains(shown, "β 0.9, 0.99") {
		t.Fatalf("run show of a --beta2 0.99 run: exit %d, %q %s", code, shown, errs)
	}

	homes := []string{initHome(t), initHome(t)}
	results := make([]string, 2)
	var wg sync.WaitGroup
	for i, h := range homes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, errs, code := fomnet(t, "join", run, "--home", h, "--bootstrap", addrs[0], "--dht-mode", "server", "--expect", "2", "--threads", "1", "--linger", "0")
			if code != 0 {
				t.Errorf("join %d: %s", i, errs)
			}
			results[i] = strings.TrimSpace(out)
		}()
	}
	// While it trains, a joining node answers status through its API
	// (the store is its: the command cannot open it itself). Ask only once
	// its api file is there: a status that opened the store itself while
	// the join starts would take the store from it.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(filepath.Join(homes[0], node.APIFile)); err != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		out, _, code := fomnet(t, "status", "--home", homes[0], "--json")
		var st node.NodeStatus
		if code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Reachability != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("status never answered through the joining node: %d %q", code, out)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	if results[0] == "" || results[0] != results[1] {
		t.Fatalf("joiners ended at %q and %q", results[0], results[1])
	}
	out, _, code = fomnet(t, "checkpoint", "ls", "--home", homes[0], run, "--json")
	var rows []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 3 || rows[2]["cid"] != results[0] {
		t.Fatalf("checkpoint ls: %q", out)
	}
	checkStatus(t, a, homes[0], run, results[0])
	runStages(t, homes[0], ds, run, results[0])
	// The seeding daemon follows the run in the background, and stops.
	if out, errs, code := fomnet(t, "mirror", "--follow", "--home", a, run); code != 0 || !strings.Contains(out, "follows run "+run) {
		t.Fatalf("mirror --follow through the daemon: %d %q %s", code, out, errs)
	}
	if _, errs, code := fomnet(t, "mirror", "--unfollow", "--home", a, run); code != 0 {
		t.Fatalf("mirror --unfollow: %d %s", code, errs)
	}
	if _, errs, code := fomnet(t, "mirror", "--unfollow", "--home", a, run); code != 1 || !strings.Contains(errs, "not followed") {
		t.Fatalf("mirror --unfollow twice: %d %s", code, errs)
	}
}

// runStages creates a stage from checkpoint last (of run, held in home)
// over the CLI, and walks last's lineage.
func runStages(t *testing.T, home, ds, run, last string) {
	t.Helper()
	if _, errs, code := fomnet(t, "run", "create", "--home", home, "--data", ds, "--from", last, "--rounds", "1", "--h", "2",
		"--batch", "2", "--seq", "32", "--warmup", "1"); code != 1 || !strings.Contains(errs, `stage "sft" on dataset`) {
		t.Fatalf("an SFT stage on pretraining data: %d %s", code, errs)
	}
	// Continued pretraining from the run's last checkpoint.
	out, errs, code := fomnet(t, "run", "create", "--home", home, "--data", ds, "--from", last, "--stage", "pretrain", "--rounds", "1", "--h", "2",
		"--batch", "2", "--seq", "32", "--warmup", "1", "--json")
	var created map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil {
		t.Fatalf("run create --from: %d %q %s", code, out, errs)
	}
	out, errs, code = fomnet(t, "run", "show", "--home", home, created["run_id"], "--json")
	var spec node.RunSpec
	if code != 0 || json.Unmarshal([]byte(out), &spec) != nil || spec.Stage != "pretrain" || spec.From == nil || spec.From.CID != last {
		t.Fatalf("run show of a stage: %d %q %s", code, out, errs)
	}
	if _, err := spec.ModelConfig(); err != nil {
		t.Fatalf("the stage's model: %v", err)
	}
	if _, errs, code := fomnet(t, "run", "create", "--home", home, "--data", ds, "--from", last, "--rope-theta", "1e6"); code != 2 || !strings.Contains(errs, "--preset") {
		t.Fatalf("--rope-theta with --from alone: exit %d, %s", code, errs)
	}
	if _, errs, code := fomnet(t, "run", "create", "--home", home, "--data", ds, "--from", run, "--stage", "pretrain", "--seq", "32"); code != 1 || !strings.Contains(errs, "not a checkpoint") {
		t.Fatalf("--from a run ID: exit %d, %s", code, errs)
	}
	out, errs, code = fomnet(t, "checkpoint", "lineage", "--home", home, last, "--json")
	var stages []node.LineageStage
	if code != 0 || json.Unmarshal([]byte(out), &stages) != nil || len(stages) != 1 || stages[0].Run != run || stages[0].Rounds != 2 || stages[0].Stage != "pretrain" {
		t.Fatalf("checkpoint lineage: %d %q %s", code, out, errs)
	}
	// A recipe of the run and the stage; joined alone, it resumes the
	// finished run and trains the stage derived from its last checkpoint.
	out, errs, code = fomnet(t, "recipe", "create", "--home", home, "--name", "two", run, created["run_id"])
	recipe := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(recipe, "bagu") {
		t.Fatalf("recipe create: %d %q %s", code, out, errs)
	}
	if out, errs, code := fomnet(t, "recipe", "show", "--home", home, recipe); code != 0 || !strings.Contains(out, "stage 1's last checkpoint") {
		t.Fatalf("recipe show: %d %q %s", code, out, errs)
	}
	out, errs, code = fomnet(t, "join", recipe, "--home", home, "--expect", "1", "--threads", "1", "--linger", "0")
	if code != 0 || !strings.Contains(errs, "stage 2 (pretrain)") {
		t.Fatalf("join RECIPE: %d %q %s", code, out, errs)
	}
	out, errs, code = fomnet(t, "checkpoint", "lineage", "--home", home, strings.TrimSpace(out), "--json")
	if code != 0 || json.Unmarshal([]byte(out), &stages) != nil || len(stages) != 2 || stages[1].Run != run || stages[0].Run == run {
		t.Fatalf("the recipe's lineage: %d %q %s", code, out, errs)
	}
	if _, errs, code := fomnet(t, "recipe", "create", "--home", home); code != 2 || !strings.Contains(errs, "at least one stage") {
		t.Fatalf("recipe create without stages: %d %s", code, errs)
	}
}

// checkStatus: `fomnet status` of a joiner's home (no daemon) shows the
// run it trained, settled at its last checkpoint with both contributions;
// `fomnet dashboard` prints a one-time link from a daemon and explains
// itself without one.
func checkStatus(t *testing.T, daemonHome, home, run, last string) {
	t.Helper()
	out, errs, code := fomnet(t, "status", "--home", home, "--json")
	var st node.NodeStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Runs) != 1 {
		t.Fatalf("status --json: %d %q %s", code, out, errs)
	}
	if r := st.Runs[0]; r.Run != run || r.Settled != 2 || r.Rounds != 2 || r.Checkpoint != last || r.Contributions != 2 || r.RoundSeconds <= 0 {
		t.Errorf("status of the run: %+v", r)
	}
	if out, errs, code := fomnet(t, "status", "--home", home); code != 0 || !strings.Contains(out, "round    2 of 2") || !strings.Contains(out, last) {
		t.Errorf("status: %d %q %s", code, out, errs)
	}
	if out, errs, code := fomnet(t, "dashboard", "--home", daemonHome); code != 0 || !strings.HasPrefix(out, "http://127.0.0.1:") || !strings.Contains(out, "/ui/login?code=") {
		t.Errorf("dashboard through the daemon: %d %q %s", code, out, errs)
	}
	if _, errs, code := fomnet(t, "dashboard", "--home", home); code != 1 || !strings.Contains(errs, "fomnet daemon") {
		t.Errorf("dashboard without a daemon: %d %s", code, errs)
	}
}
