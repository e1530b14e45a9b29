package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
)

// The dashboard: a page the daemon serves on its API address (GET /ui/),
// drawing the node and the runs it holds from what its store and home
// hold (dashview.go). Its assets are embedded, its charts drawn here as
// SVG (internal/svgchart), and its Content-Security-Policy lets the page
// reach nothing but the daemon.
//
// A browser has no API token: `fomnet dashboard` (API op "dashboard")
// asks the daemon for a one-time link, /ui/login?code=…, valid for
// loginTTL and for one use, which trades the code for a session cookie
// (HttpOnly, SameSite=Strict) and redirects to /ui/, so no secret stays in
// the address bar or the history. The page's reads (GET /ui/api/…) take
// the cookie or the API token; nothing the page can do changes the node,
// and the POST API still takes the token alone, so a cookie cannot be
// ridden across sites to drive the node.

//go:embed dashboard
var dashboardFiles embed.FS

const (
	loginTTL      = 10 * time.Minute
	sessionCookie = "fomnet_session"
	maxSessions   = 64
	dashboardCSP  = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

// sessions are the dashboard's one-time login codes and browser sessions.
type sessions struct {
	mu     sync.Mutex
	codes  map[string]time.Time // code → expiry
	active map[string]time.Time // session → created
}

func randomHex() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// code makes a one-time login code.
func (s *sessions) code() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.codes == nil {
		s.codes, s.active = map[string]time.Time{}, map[string]time.Time{}
	}
	for c, exp := range s.codes {
		if now.After(exp) {
			delete(s.codes, c)
		}
	}
	c := randomHex()
	s.codes[c] = now.Add(loginTTL)
	return c
}

// redeem spends code, returning a new session ("" if the code is unknown,
// spent or expired). The oldest session goes past maxSessions.
func (s *sessions) redeem(code string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.codes[code]
	if !ok || code == "" {
		return ""
	}
	delete(s.codes, code)
	if time.Now().After(exp) {
		return ""
	}
	if len(s.active) >= maxSessions {
		var oldest string
		for k, t := range s.active {
			if oldest == "" || t.Before(s.active[oldest]) {
				oldest = k
			}
		}
		delete(s.active, oldest)
	}
	sess := randomHex()
	s.active[sess] = time.Now()
	return sess
}

func (s *sessions) valid(sess string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.active {
		if subtle.ConstantTimeCompare([]byte(k), []byte(sess)) == 1 {
			return true
		}
	}
	return false
}

// DashboardLink returns a one-time link that opens the dashboard in a
// browser (daemons only).
func (n *Node) DashboardLink(ctx context.Context) (string, error) {
	if n.api == nil {
		return "", fmt.Errorf("this node serves no API (start `fomnet daemon`)")
	}
	return "http://" + n.api.addr + "/ui/login?code=" + n.api.ui.code(), nil
}

// routeDashboard adds the dashboard's pages to the API's mux.
func (a *apiServer) routeDashboard(n *Node, mux *http.ServeMux) {
	static, _ := fs.Sub(dashboardFiles, "dashboard")
	files := http.FileServerFS(static)
	page := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", dashboardCSP)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Referrer-Policy", "no-referrer")
			w.Header().Set("Cache-Control", "no-store")
			if !loopbackHost(r.Host) {
				http.Error(w, "the dashboard answers on its loopback address only", http.StatusMisdirectedRequest)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /ui/login", page(func(w http.ResponseWriter, r *http.Request) {
		sess := a.ui.redeem(r.URL.Query().Get("code"))
		if sess == "" {
			http.Error(w, "this login link is unknown, used or expired: run `fomnet dashboard` for a new one", http.StatusUnauthorized)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sess, Path: "/ui/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	}))
	mux.HandleFunc("GET /ui/{file...}", page(func(w http.ResponseWriter, r *http.Request) {
		if a.session(w, r) {
			r.URL.Path = "/" + r.PathValue("file")
			files.ServeHTTP(w, r)
		}
	}))
	api := func(view func(ctx context.Context, r *http.Request) (any, error)) http.HandlerFunc {
		return page(func(w http.ResponseWriter, r *http.Request) {
			if !a.session(w, r) {
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			v, err := view(ctx, r)
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		})
	}
	mux.HandleFunc("GET /ui/api/node", api(func(ctx context.Context, _ *http.Request) (any, error) { return n.nodeView(ctx), nil }))
	mux.HandleFunc("GET /ui/api/runs", api(func(ctx context.Context, _ *http.Request) (any, error) { return n.runsView(ctx) }))
	mux.HandleFunc("GET /ui/api/run/{id}", api(func(ctx context.Context, r *http.Request) (any, error) {
		id, err := cid.Decode(r.PathValue("id"))
		if err != nil {
			return nil, fmt.Errorf("run %q: %w", r.PathValue("id"), err)
		}
		return n.runView(ctx, id)
	}))
}

// session says whether r comes from a dashboard session (or carries the
// API token), answering 401 if not.
func (a *apiServer) session(w http.ResponseWriter, r *http.Request) bool {
	if c, err := r.Cookie(sessionCookie); err == nil && a.ui.valid(c.Value) {
		return true
	}
	if r.Header.Get("Authorization") != "" {
		return a.authorized(w, r)
	}
	http.Error(w, "no dashboard session: open the link `fomnet dashboard` prints", http.StatusUnauthorized)
	return false
}

// loopbackHost: the Host header names a loopback address (so a page of
// another site, its name rebound to 127.0.0.1, is not answered).
func loopbackHost(hostport string) bool {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		hostport = h
	}
	return isLoopback(hostport)
}
