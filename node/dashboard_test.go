package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
)

// The dashboard's door: pages need a session (from a one-time link) or
// the API token; a link works once; the session cookie cannot drive the
// POST API; another site's name for 127.0.0.1 is not answered; every page
// carries a CSP that keeps it to the daemon.
func TestDashboardAuth(t *testing.T) {
	c := nodetest.New(t, 1, nodetest.Options{API: true, Isolated: true})
	nd := c.Nodes[0]
	base := "http://" + nd.APIAddr()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string, mod func(*http.Request)) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader("{}"))
		if mod != nil {
			mod(req)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/api/node", "/ui/api/runs"} {
		if got := do("GET", p, nil).StatusCode; got != http.StatusUnauthorized {
			t.Errorf("GET %s without a session: %d, want 401", p, got)
		}
	}
	if got := do("GET", "/ui/login?code=00", nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("login with a made-up code: %d, want 401", got)
	}
	link, err := nd.DashboardLink(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(link)
	login := do("GET", u.RequestURI(), nil)
	if login.StatusCode != http.StatusSeeOther || login.Header.Get("Location") != "/ui/" {
		t.Fatalf("login: %d to %q, want 303 to /ui/", login.StatusCode, login.Header.Get("Location"))
	}
	var sess *http.Cookie
	for _, ck := range login.Cookies() {
		if ck.Name == "fomnet_session" {
			sess = ck
		}
	}
	if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v: want HttpOnly and SameSite=Strict", sess)
	}
	if got := do("GET", u.RequestURI(), nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("the link used a second time: %d, want 401", got)
	}
	withCookie := func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sess.Name, Value: sess.Value}) }
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/style.css", "/ui/api/node", "/ui/api/runs"} {
		resp := do("GET", p, withCookie)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the session: %d", p, resp.StatusCode)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: CSP %q", p, csp)
		}
	}
	if got := do("POST", "/api/v0/id", withCookie).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("POST /api/v0/id with the session cookie alone: %d, want 401", got)
	}
	if got := do("GET", "/ui/api/node", func(r *http.Request) { withCookie(r); r.Host = "attacker.example:80" }).StatusCode; got != http.StatusMisdirectedRequest {
		t.Errorf("GET with Host attacker.example: %d, want 421", got)
	}
	var token string
	b, _ := os.ReadFile(filepath.Join(c.Homes[0], node.APIFile))
	var af struct{ Token string }
	json.Unmarshal(b, &af)
	token = af.Token
	if got := do("GET", "/ui/api/runs", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }).StatusCode; got != http.StatusOK {
		t.Errorf("GET /ui/api/runs with the API token: %d", got)
	}
	if got := do("GET", "/ui/api/runs", func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("GET /ui/api/runs with a wrong token: %d, want 401", got)
	}
}

// chromium finds Debian's chromium (.ci/run installs it).
func chromium(t *testing.T) string {
	for _, p := range []string{os.Getenv("FOMNET_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := exec.LookPath(p); err == nil {
				return p
			}
		}
	}
	t.Skip("no chromium (Debian's package chromium; .ci/run installs it)")
	return ""
}

// A real headless Chromium against a daemon that follows a real 3-node
// run: the run page loads through a one-time link (which leaves the
// address bar), its loss chart has one point per settled round with the
// validation losses the run's participants computed of the same
// checkpoints, a new round appears without a reload, a request without
// the token or session is refused, and the page never asks anything of
// another origin (its CSP refuses it). FOMNET_SCREENSHOT=FILE saves the
// page (docs/dashboard.png).
func TestDashboardBrowser(t *testing.T) {
	exe := chromium(t)
	const trainers, rounds = 3, 2
	c := nodetest.New(t, trainers+1, nodetest.Options{API: true})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	spec := smallRun(t, c, rounds)
	runID, err := c.Nodes[0].CreateRun(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	follower := c.Nodes[trainers]
	if err := follower.Follow(ctx, runID); err != nil {
		t.Fatal(err)
	}
	var ps []*node.Participant
	for i := range trainers {
		ps = append(ps, openOne(t, c.Nodes[i], runID, trainers, func(node.RoundEvent) {}))
	}
	want := map[int]float64{} // round → validation loss "en", as participant 0 computed it
	evalEN := func(r int) {
		vl, err := ps[0].ValLoss()
		if err != nil {
			t.Fatal(err)
		}
		want[r] = vl["en"]
	}
	evalEN(0)
	train := func(upto int) {
		for i, err := range runAll(ps, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, upto) }) {
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
		}
		evalEN(upto)
		waitSettled(t, follower, runID, upto, ps[0].Base())
	}
	train(1)

	link, err := follower.DashboardLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	origin := "http://" + follower.APIAddr()
	bctx, stop := browser(t, ctx, exe)
	defer stop()
	var mu sync.Mutex
	var requests []string
	if err := chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requests = append(requests, e.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(bctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#app h1"))); err != nil {
		t.Fatal(err)
	}
	if loc, err := chromedp.Run(bctx, chromedp.Location()); err != nil || loc != origin+"/ui/" {
		t.Errorf("after the login link the page is at %q (%v), want %s/ui/ (no code in the address)", loc, err, origin)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(origin+"/ui/#/run/"+runID.String()), chromedp.WaitVisible(chromedp.CSS("#chart-loss"))); err != nil {
		t.Fatal(err)
	}
	checkPoints(t, bctx, want, 1)
	train(2) // the page stays open
	checkPoints(t, bctx, want, 2)

	// Every request the page made was to the daemon.
	mu.Lock()
	for _, u := range requests {
		if !strings.HasPrefix(u, origin+"/") {
			t.Errorf("the page requested %s, outside %s", u, origin)
		}
	}
	n := len(requests)
	mu.Unlock()
	if n < 3 {
		t.Errorf("only %d requests seen", n)
	}
	// A fetch to another origin is refused by the page's CSP.
	blocked, err := chromedp.Run(bctx, chromedp.Evaluate[string](`fetch("http://192.0.2.1/x").then(() => "reached", e => "blocked: " + e)`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(blocked, "blocked") {
		t.Errorf("a fetch to another origin: %s", blocked)
	}
	if f := os.Getenv("FOMNET_SCREENSHOT"); f != "" {
		if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900), chromedp.Sleep(time.Second)); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Without the session or the token: refused.
	resp, err := http.Get(origin + "/ui/api/run/" + runID.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET the run without a session: %d, want 401", resp.StatusCode)
	}
}

// browser starts a headless Chromium that reaches nothing but loopback by
// itself (the flags a closed network needs).
func browser(t *testing.T, ctx context.Context, exe string) (context.Context, func()) {
	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.WindowSize(1280, 900)}
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	return bctx, func() { bcancel(); acancel() }
}

// waitSettled waits (within a minute) until the follower has settled on
// round r's checkpoint ck.
func waitSettled(t *testing.T, nd *node.Node, run cid.Cid, r int, ck cid.Cid) {
	t.Helper()
	f := filepath.Join(nd.Home, "runs", run.String(), fmt.Sprintf("round-%06d.cid", r))
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(f)
		if strings.TrimSpace(string(b)) == ck.String() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower has not settled round %d (%s) within a minute: %s holds %q", r, ck, f, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkPoints waits (within a minute, the page polling on its own) until
// the loss chart's "en" series has a point for each round 0..upto, and
// checks each against want.
func checkPoints(t *testing.T, bctx context.Context, want map[int]float64, upto int) {
	t.Helper()
	var pts [][2]string
	deadline := time.Now().Add(time.Minute)
	for {
		var err error
		pts, err = chromedp.Run(bctx, chromedp.Evaluate[[][2]string](`[...document.querySelectorAll('#chart-loss circle.point[data-series="en"]')].map(c => [c.dataset.x, c.dataset.y])`))
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) == upto+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(pts) != upto+1 {
		t.Fatalf("the loss chart has %d points of en, want %d (rounds 0..%d)", len(pts), upto+1, upto)
	}
	for i, p := range pts {
		x, _ := strconv.Atoi(p[0])
		y, err := strconv.ParseFloat(p[1], 64)
		if x != i || err != nil || y != want[x] {
			t.Errorf("point %d: round %s loss %s, want round %d loss %v", i, p[0], p[1], i, want[i])
		}
	}
}
