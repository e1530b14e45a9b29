package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the fomnet binary: with FOMNET_TEST_CLI set it
// runs the command line in os.Args and exits, so tests about processes
// (kill -9, restarts) run the real CLI in processes of their own.
func TestMain(m *testing.M) {
	if os.Getenv("FOMNET_TEST_CLI") == "1" {
		main()
	}
	os.Exit(m.Run())
}

var churnLong = flag.Bool("churn.long", false, "TestChurnProcesses: twelve rounds, a joiner killed and restarted in each")

// proc is a fomnet process of the test binary; its stderr lines are kept
// and matched as they come.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  strings.Builder // stdout, written under ow
	ow   *lockedWriter
	mu   sync.Mutex
	errs []string // stderr lines
	seen chan struct{}
	done chan error
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: exec.Command(exe, args...), seen: make(chan struct{}, 1), done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), "FOMNET_TEST_CLI=1")
	p.ow = &lockedWriter{w: &p.out}
	p.cmd.Stdout = p.ow
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.errs = append(p.errs, sc.Text())
			p.mu.Unlock()
			select {
			case p.seen <- struct{}{}:
			default:
			}
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
		}
	})
	return p
}

// waitFor waits (up to limit) for a stderr line containing s.
func (p *proc) waitFor(s string, limit time.Duration) {
	p.t.Helper()
	deadline := time.After(limit)
	for i := 0; ; {
		p.mu.Lock()
		for ; i < len(p.errs); i++ {
			if strings.Contains(p.errs[i], s) {
				p.mu.Unlock()
				return
			}
		}
		p.mu.Unlock()
		select {
		case <-p.seen:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			p.t.Fatalf("%s: no %q on stderr after %v:\n%s", p.name, s, limit, p.stderr())
		}
	}
}

func (p *proc) stdout() string {
	p.ow.mu.Lock()
	defer p.ow.mu.Unlock()
	return p.out.String()
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.errs, "\n")
}

// kill9 kills the process as a crash would.
func (p *proc) kill9() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// wait waits (up to limit) for the process to exit and returns its stdout.
func (p *proc) wait(limit time.Duration) string {
	p.t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Fatalf("%s: %v\n%s", p.name, err, p.stderr())
		}
	case <-time.After(limit):
		p.t.Fatalf("%s: still running after %v:\n%s", p.name, limit, p.stderr())
	}
	return p.stdout()
}

// Churn across real processes: a seeding daemon, four `fomnet join`
// processes and a follower (`fomnet mirror --follow`). One joiner is
// killed with SIGKILL in the middle of a round and started again, another
// is killed for good. Every surviving joiner ends on one checkpoint CID,
// the follower holds every round of it, and every checkpoint on every
// disk verifies. -churn.long kills and restarts a joiner in every round of
// a longer run.
func TestChurnProcesses(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("processes: not in -short runs or under the race detector")
	}
	rounds, deadline := 4, "8s"
	if *churnLong {
		rounds = 12
	}
	seed := initHome(t, "--dht-mode", "server")
	daemon := startProc(t, "daemon", "daemon", "--home", seed)
	daemon.waitFor("ready", 30*time.Second)
	boot := ""
	for limit := time.Now().Add(10 * time.Second); boot == ""; time.Sleep(50 * time.Millisecond) {
		for _, a := range strings.Fields(daemon.stdout()) {
			if strings.Contains(a, "/tcp/") {
				boot = a
			}
		}
		if boot == "" && time.Now().After(limit) {
			t.Fatalf("the daemon printed no TCP address: %q", daemon.stdout())
		}
	}
	ds := filepath.Join(t.TempDir(), "ds")
	if _, errs, code := fomnet(t, "data", "prepare", "--builtin", "--synthetic", "200", "--vocab", "320", "--seq", "32", "--out", ds); code != 0 {
		t.Fatal(errs)
	}
	out, errs, code := fomnet(t, "run", "create", "--home", seed, "--data", ds, "--preset", "tiny", "--rounds", fmt.Sprint(rounds),
		"--h", "4", "--batch", "2", "--seq", "32", "--deadline", deadline, "--json")
	var created map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil {
		t.Fatalf("run create: %d %q %s", code, out, errs)
	}
	run := created["run_id"]

	const n = 4
	homes := make([]string, n)
	joiners := make([]*proc, n)
	join := func(i int) *proc {
		return startProc(t, fmt.Sprintf("joiner %d", i), "join", run, "--home", homes[i], "--bootstrap", boot,
			"--dht-mode", "server", "--expect", fmt.Sprint(n), "--threads", "1")
	}
	for i := range homes {
		homes[i] = initHome(t)
		joiners[i] = join(i)
	}
	followHome := initHome(t)
	follower := startProc(t, "follower", "mirror", "--follow", run, "--home", followHome, "--bootstrap", boot)

	// Joiner 1 dies mid-round 2 (its contribution out, the round not
	// settled) and comes back; joiner 2 dies in round 3 for good.
	joiners[1].waitFor("round 2  contributed", 2*time.Minute)
	joiners[1].kill9()
	t.Log("joiner 1 killed in round 2")
	joiners[1] = join(1)
	joiners[2].waitFor("round 3  step", 3*time.Minute)
	joiners[2].kill9()
	t.Log("joiner 2 killed for good in round 3")
	if *churnLong {
		for r := 4; r < rounds; r++ {
			k := []int{0, 1, 3}[r%3]
			joiners[k].waitFor(fmt.Sprintf("round %d  contributed", r), 3*time.Minute)
			joiners[k].kill9()
			t.Logf("joiner %d killed in round %d", k, r)
			joiners[k] = join(k)
		}
	}
	final := ""
	for _, i := range []int{0, 1, 3} {
		got := strings.TrimSpace(joiners[i].wait(5 * time.Minute))
		if i == 0 {
			final = got
		}
		if got == "" || got != final {
			t.Fatalf("joiner %d ended on %q, joiner 0 on %q", i, got, final)
		}
	}
	t.Logf("every surviving joiner ended on %s", final)

	// The follower holds every round, the last one the joiners'.
	for limit := time.Now().Add(time.Minute); !strings.Contains(follower.stderr(), fmt.Sprintf("mirrored round %d, %s", rounds, final)); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatalf("the follower did not mirror round %d, %s:\n%s", rounds, final, follower.stderr())
		}
	}
	follower.cmd.Process.Signal(syscall.SIGTERM)
	follower.wait(30 * time.Second)
	daemon.cmd.Process.Signal(syscall.SIGTERM)
	daemon.wait(30 * time.Second)
	checkHoldsRun(t, followHome, run, rounds, final)
	for _, i := range []int{0, 1, 3} {
		checkHoldsRun(t, homes[i], run, rounds, final)
	}
}

// checkHoldsRun: home holds run's checkpoint of every round from 1 to
// rounds, the last being final, each intact block by block.
func checkHoldsRun(t *testing.T, home, run string, rounds int, final string) {
	t.Helper()
	out, errs, code := fomnet(t, "checkpoint", "ls", run, "--home", home, "--json")
	if code != 0 {
		t.Fatalf("checkpoint ls on %s: %s", home, errs)
	}
	var cks []struct {
		Round int    `json:"round"`
		CID   string `json:"cid"`
	}
	if err := json.Unmarshal([]byte(out), &cks); err != nil {
		t.Fatalf("checkpoint ls: %v in %q", err, out)
	}
	byRound := map[int]string{}
	for _, c := range cks {
		byRound[c.Round] = c.CID
	}
	for r := 1; r <= rounds; r++ {
		k := byRound[r]
		if k == "" {
			t.Fatalf("%s holds no checkpoint of round %d: %v", home, r, byRound)
		}
		if _, errs, code := fomnet(t, "verify", k, "--home", home); code != 0 {
			t.Fatalf("%s: round %d checkpoint %s: %s", home, r, k, errs)
		}
	}
	if byRound[rounds] != final {
		t.Fatalf("%s: round %d is %s, the run ended on %s", home, rounds, byRound[rounds], final)
	}
}
