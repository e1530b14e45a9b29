package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/ipfs/go-cid"
)

// API is what fomnet commands ask of a node. *Node answers in-process;
// *Client asks a running daemon over its local HTTP API.
type API interface {
	ID(ctx context.Context) (PeerInfo, error)
	Peers(ctx context.Context) ([]PeerInfo, error)
	Connect(ctx context.Context, addr string) (PeerInfo, error)
	Add(ctx context.Context, path string, pin bool, progress contentstore.Progress) (cid.Cid, error)
	Get(ctx context.Context, c cid.Cid, out string, progress contentstore.Progress) error
	Verify(ctx context.Context, c cid.Cid) (VerifyResult, error)
	// Resolve reports whether c's root block is stored here or, online,
	// can be fetched from a peer (within 30 s).
	Resolve(ctx context.Context, c cid.Cid) (bool, error)
	Mirror(ctx context.Context, c cid.Cid, progress contentstore.Progress) (VerifyResult, error)
	// Follow and Unfollow start and stop a daemon's following of a run.
	Follow(ctx context.Context, run cid.Cid) error
	Unfollow(ctx context.Context, run cid.Cid) error
	ExportCAR(ctx context.Context, c cid.Cid, out string) error
	ImportCAR(ctx context.Context, path string, pin bool) (ImportResult, error)
	Pins(ctx context.Context) ([]PinInfo, error)
	Unpin(ctx context.Context, c cid.Cid) error
	GC(ctx context.Context) (contentstore.GCResult, error)
	Announced(ctx context.Context) ([]Announcement, error)
	PublishDataset(ctx context.Context, dir string) (cid.Cid, error)
	// PublishGenJob stores a generation job written by fomnet gen create
	// (genjob.go).
	PublishGenJob(ctx context.Context, dir string) (cid.Cid, error)
	CreateRun(ctx context.Context, spec *RunSpec) (cid.Cid, error)
	LoadRun(ctx context.Context, id cid.Cid) (*RunSpec, error)
	// Audit recomputes every round of the lineage ending at checkpoint ck
	// from round from on (audit.go); progress counts rounds.
	Audit(ctx context.Context, ck cid.Cid, o AuditOptions, progress contentstore.Progress) (*AuditReport, error)
	// CheckFraud re-checks a fraud proof by re-executing what it quotes.
	CheckFraud(ctx context.Context, proof cid.Cid) (*FraudCheck, error)
	// Lineage walks checkpoint ck's lineage through every stage (stage.go).
	Lineage(ctx context.Context, ck cid.Cid) ([]LineageStage, error)
	// CreateRecipe stores a recipe (recipe.go); LoadRecipe reads one.
	CreateRecipe(ctx context.Context, r *Recipe) (cid.Cid, error)
	LoadRecipe(ctx context.Context, id cid.Cid) (*Recipe, error)
	// DashboardLink is a one-time link that opens the daemon's dashboard
	// (dashboard.go).
	DashboardLink(ctx context.Context) (string, error)
	// Status summarises the node and its runs (`fomnet status`).
	Status(ctx context.Context) (*NodeStatus, error)
}

var (
	_ API = (*Node)(nil)
	_ API = (*Client)(nil)
)

// The local API: POST /api/v0/<op> with a JSON request; the answer is a
// stream of JSON lines, {"progress":[done,total]} and {"waiting":{…}} (what
// a fetch waits for) while the operation runs, then one {"result":…} or
// {"error":"…"}. Every request carries the token
// from the home's api file ("Authorization: Bearer <token>"), so only users
// who can read the node's home can drive it. Paths in requests are the
// daemon's: the CLI and the daemon share a machine.

type apiRequest struct {
	CID    string          `json:"cid,omitempty"`
	Path   string          `json:"path,omitempty"`
	Out    string          `json:"out,omitempty"`
	Addr   string          `json:"addr,omitempty"`
	Pin    bool            `json:"pin,omitempty"`
	Spec   json.RawMessage `json:"spec,omitempty"`
	From   int             `json:"from,omitempty"`   // audit's first round
	Sample float64         `json:"sample,omitempty"` // audit's share re-executed
	// Stall is the caller's contentstore.Wait.Stall (nanoseconds): the
	// daemon's fetches for the request wait as the caller's would.
	Stall time.Duration `json:"stall,omitempty"`
}

type apiEvent struct {
	Progress *[2]int64                `json:"progress,omitempty"`
	Waiting  *contentstore.WaitStatus `json:"waiting,omitempty"`
	Result   json.RawMessage          `json:"result,omitempty"`
	Error    string                   `json:"error,omitempty"`
}

// apiFileContent is the api file: where the daemon listens, and its token.
type apiFileContent struct {
	Addr  string `json:"addr"`
	Token string `json:"token"`
}

const maxAPIRequest = 64 << 10

type apiServer struct {
	addr  string
	token string
	file  string
	srv   *http.Server
	ln    net.Listener
	done  chan struct{}
	once  sync.Once
	err   error
	ui    sessions   // the dashboard's logins
	eval  *evaluator // the dashboard's validation losses
}

func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if !isLoopback(host) {
		return fmt.Errorf("%s is not a loopback address; the API must not be reachable from other machines", hostport)
	}
	return nil
}

// isLoopback: host is "localhost" or a loopback IP (brackets allowed).
func isLoopback(host string) bool {
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

func startAPI(n *Node, listen string) (*apiServer, error) {
	if err := checkLoopback(listen); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("api: listening on %s: %w", listen, err)
	}
	a := &apiServer{addr: ln.Addr().String(), token: randomHex(), file: filepath.Join(n.Home, APIFile), ln: ln, done: make(chan struct{}),
		eval: newEvaluator(n)}
	content, _ := json.Marshal(apiFileContent{Addr: a.addr, Token: a.token})
	if err := writePrivate(a.file, content); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v0/{op...}", func(w http.ResponseWriter, r *http.Request) { a.serve(n, w, r) })
	metrics := n.Metrics.Handler()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if a.authorized(w, r) {
			metrics.ServeHTTP(w, r)
		}
	})
	a.routeDashboard(n, mux)
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.logf("api: %v", err)
		}
	}()
	return a, nil
}

// writePrivate writes a 0600 file atomically (never readable by others,
// not even for a moment).
func writePrivate(path string, data []byte) error {
	return fsutil.WriteFilePrivate(path, data)
}

func (a *apiServer) close() error {
	a.once.Do(func() {
		os.Remove(a.file)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Shutdown waits for running requests; cancel them after the grace
		// period instead of waiting for long fetches.
		if err := a.srv.Shutdown(ctx); err != nil {
			a.srv.Close()
		}
		<-a.done
		a.eval.stop()
	})
	return a.err
}

// authorized says whether r carries the API token, answering 401 if not.
func (a *apiServer) authorized(w http.ResponseWriter, r *http.Request) bool {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+a.token)) != 1 {
		http.Error(w, "missing or wrong API token (read it from the node's api file)", http.StatusUnauthorized)
		return false
	}
	return true
}

func (a *apiServer) serve(n *Node, w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		return
	}
	var req apiRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAPIRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	op := r.PathValue("op")
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // results such as run specs must keep their exact bytes
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex
	var last time.Time
	progress := func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if now := time.Now(); now.Sub(last) >= 100*time.Millisecond || done == total {
			last = now
			enc.Encode(apiEvent{Progress: &[2]int64{done, total}})
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
	// The caller hears what the daemon's fetches wait for, and sets how
	// long they may stall.
	ctx := contentstore.WithWait(r.Context(), contentstore.Wait{Stall: req.Stall, Report: func(st contentstore.WaitStatus) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(apiEvent{Waiting: &st})
		if flusher != nil {
			flusher.Flush()
		}
	}})
	res, err := dispatch(ctx, n, op, req, progress)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		enc.Encode(apiEvent{Error: err.Error()})
		return
	}
	var buf bytes.Buffer
	renc := json.NewEncoder(&buf)
	renc.SetEscapeHTML(false)
	err = renc.Encode(res)
	raw := bytes.TrimRight(buf.Bytes(), "\n")
	if err != nil {
		enc.Encode(apiEvent{Error: err.Error()})
		return
	}
	enc.Encode(apiEvent{Result: raw})
}

func dispatch(ctx context.Context, n API, op string, req apiRequest, progress contentstore.Progress) (any, error) {
	needCID := func() (cid.Cid, error) {
		c, err := cid.Decode(req.CID)
		if err != nil {
			return cid.Undef, fmt.Errorf("cid %q: %w", req.CID, err)
		}
		return c, nil
	}
	switch op {
	case "id":
		return n.ID(ctx)
	case "peers":
		return n.Peers(ctx)
	case "connect":
		return n.Connect(ctx, req.Addr)
	case "add":
		c, err := n.Add(ctx, req.Path, req.Pin, progress)
		if err != nil {
			return nil, err
		}
		return c.String(), nil
	case "pins":
		return n.Pins(ctx)
	case "dashboard":
		return n.DashboardLink(ctx)
	case "status":
		return n.Status(ctx)
	case "gc":
		return n.GC(ctx)
	case "announced":
		return n.Announced(ctx)
	case "data/publish":
		c, err := n.PublishDataset(ctx, req.Path)
		if err != nil {
			return nil, err
		}
		return c.String(), nil
	case "gen/publish":
		c, err := n.PublishGenJob(ctx, req.Path)
		if err != nil {
			return nil, err
		}
		return c.String(), nil
	case "run/create":
		// A draft: CreateRun completes it (tokenizer, a stage's model)
		// and validates it.
		var spec *RunSpec
		err := decodeStrict(req.Spec, 1<<20, &spec)
		if err == nil && spec == nil {
			err = errors.New("run/create: no spec")
		}
		if err != nil {
			return nil, err
		}
		c, err := n.CreateRun(ctx, spec)
		if err != nil {
			return nil, err
		}
		return c.String(), nil
	case "car/import":
		return n.ImportCAR(ctx, req.Path, req.Pin)
	case "recipe/create":
		r, err := DecodeRecipe(req.Spec)
		if err != nil {
			return nil, err
		}
		c, err := n.CreateRecipe(ctx, r)
		if err != nil {
			return nil, err
		}
		return c.String(), nil
	}
	c, err := needCID()
	if err != nil {
		return nil, err
	}
	switch op {
	case "get":
		return true, n.Get(ctx, c, req.Out, progress)
	case "verify":
		return n.Verify(ctx, c)
	case "audit":
		return n.Audit(ctx, c, AuditOptions{From: req.From, Sample: req.Sample}, progress)
	case "fraud":
		return n.CheckFraud(ctx, c)
	case "lineage":
		return n.Lineage(ctx, c)
	case "recipe/show":
		r, err := n.LoadRecipe(ctx, c)
		if err != nil {
			return nil, err
		}
		b, _, err := EncodeRecipe(r)
		return json.RawMessage(b), err
	case "resolve":
		return n.Resolve(ctx, c)
	case "mirror":
		return n.Mirror(ctx, c, progress)
	case "follow":
		return true, n.Follow(ctx, c)
	case "unfollow":
		return true, n.Unfollow(ctx, c)
	case "car/export":
		return true, n.ExportCAR(ctx, c, req.Out)
	case "unpin":
		return true, n.Unpin(ctx, c)
	case "run/show":
		spec, err := n.LoadRun(ctx, c)
		if err != nil {
			return nil, err
		}
		b, _, err := EncodeRunSpec(spec)
		return json.RawMessage(b), err
	}
	return nil, fmt.Errorf("unknown API operation %q", op)
}

// ErrNoDaemon says no daemon is running on a home.
var ErrNoDaemon = errors.New("no fomnet daemon is running on this home")

// Client talks to a running daemon's local API.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// ParseAPIFile decodes a home's api file; name is its path, for errors.
func ParseAPIFile(data []byte, name string) (addr, token string, err error) {
	var f apiFileContent
	if len(data) > 4096 {
		return "", "", fmt.Errorf("api file %s: too large", name)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return "", "", fmt.Errorf("api file %s: %w", name, err)
	}
	if err := checkLoopback(f.Addr); err != nil {
		return "", "", fmt.Errorf("api file %s: %w", name, err)
	}
	if len(f.Token) != 64 || strings.Trim(f.Token, "0123456789abcdef") != "" {
		return "", "", fmt.Errorf("api file %s: malformed token", name)
	}
	return f.Addr, f.Token, nil
}

// Dial connects to the daemon running on home. It returns ErrNoDaemon
// (wrapped) when there is no api file or nothing answers at its address.
func Dial(ctx context.Context, home string) (*Client, error) {
	path := filepath.Join(home, APIFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, ErrNoDaemon
		}
		return nil, err
	}
	addr, token, err := ParseAPIFile(data, path)
	if err != nil {
		return nil, err
	}
	c := &Client{base: "http://" + addr + "/api/v0/", token: token, hc: &http.Client{}}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := c.ID(pctx); err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "connection refused") {
			return nil, fmt.Errorf("%w (stale api file %s: %v)", ErrNoDaemon, path, err)
		}
		return nil, err
	}
	return c, nil
}

func (c *Client) call(ctx context.Context, op string, req apiRequest, progress contentstore.Progress, out any) error {
	wait := contentstore.WaitOf(ctx)
	req.Stall = wait.Stall
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+op, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Authorization", "Bearer "+c.token)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("daemon API %s: %s: %s", op, resp.Status, strings.TrimSpace(string(msg)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var ev apiEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("daemon API %s: bad answer: %w", op, err)
		}
		switch {
		case ev.Progress != nil:
			if progress != nil {
				progress(ev.Progress[0], ev.Progress[1])
			}
		case ev.Waiting != nil:
			if wait.Report != nil {
				wait.Report(*ev.Waiting)
			}
		case ev.Error != "":
			return errors.New(ev.Error)
		case ev.Result != nil:
			if out == nil {
				return nil
			}
			return json.Unmarshal(ev.Result, out)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("daemon API %s: %w", op, err)
	}
	return fmt.Errorf("daemon API %s: the daemon closed the connection without an answer", op)
}

func (c *Client) ID(ctx context.Context) (PeerInfo, error) {
	var pi PeerInfo
	return pi, c.call(ctx, "id", apiRequest{}, nil, &pi)
}

func (c *Client) Peers(ctx context.Context) ([]PeerInfo, error) {
	var ps []PeerInfo
	return ps, c.call(ctx, "peers", apiRequest{}, nil, &ps)
}

func (c *Client) Connect(ctx context.Context, addr string) (PeerInfo, error) {
	var pi PeerInfo
	return pi, c.call(ctx, "connect", apiRequest{Addr: addr}, nil, &pi)
}

func (c *Client) Add(ctx context.Context, path string, pin bool, progress contentstore.Progress) (cid.Cid, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return cid.Undef, err
	}
	var s string
	if err := c.call(ctx, "add", apiRequest{Path: abs, Pin: pin}, progress, &s); err != nil {
		return cid.Undef, err
	}
	return cid.Decode(s)
}

func (c *Client) Get(ctx context.Context, k cid.Cid, out string, progress contentstore.Progress) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	return c.call(ctx, "get", apiRequest{CID: k.String(), Out: abs}, progress, nil)
}

func (c *Client) Verify(ctx context.Context, k cid.Cid) (VerifyResult, error) {
	var r VerifyResult
	return r, c.call(ctx, "verify", apiRequest{CID: k.String()}, nil, &r)
}

func (c *Client) Audit(ctx context.Context, k cid.Cid, o AuditOptions, progress contentstore.Progress) (*AuditReport, error) {
	var r AuditReport
	return &r, c.call(ctx, "audit", apiRequest{CID: k.String(), From: o.From, Sample: o.Sample}, progress, &r)
}

func (c *Client) CheckFraud(ctx context.Context, k cid.Cid) (*FraudCheck, error) {
	var r FraudCheck
	return &r, c.call(ctx, "fraud", apiRequest{CID: k.String()}, nil, &r)
}

func (c *Client) CreateRecipe(ctx context.Context, r *Recipe) (cid.Cid, error) {
	b, _, err := EncodeRecipe(r)
	if err != nil {
		return cid.Undef, err
	}
	var s string
	if err := c.call(ctx, "recipe/create", apiRequest{Spec: b}, nil, &s); err != nil {
		return cid.Undef, err
	}
	return cid.Decode(s)
}

func (c *Client) LoadRecipe(ctx context.Context, id cid.Cid) (*Recipe, error) {
	var raw json.RawMessage
	if err := c.call(ctx, "recipe/show", apiRequest{CID: id.String()}, nil, &raw); err != nil {
		return nil, err
	}
	return DecodeRecipe(raw)
}

func (c *Client) Lineage(ctx context.Context, k cid.Cid) ([]LineageStage, error) {
	var r []LineageStage
	return r, c.call(ctx, "lineage", apiRequest{CID: k.String()}, nil, &r)
}

func (c *Client) Resolve(ctx context.Context, k cid.Cid) (bool, error) {
	var ok bool
	return ok, c.call(ctx, "resolve", apiRequest{CID: k.String()}, nil, &ok)
}

func (c *Client) Mirror(ctx context.Context, k cid.Cid, progress contentstore.Progress) (VerifyResult, error) {
	var r VerifyResult
	return r, c.call(ctx, "mirror", apiRequest{CID: k.String()}, progress, &r)
}

func (c *Client) Follow(ctx context.Context, run cid.Cid) error {
	return c.call(ctx, "follow", apiRequest{CID: run.String()}, nil, nil)
}

func (c *Client) Unfollow(ctx context.Context, run cid.Cid) error {
	return c.call(ctx, "unfollow", apiRequest{CID: run.String()}, nil, nil)
}

func (c *Client) ExportCAR(ctx context.Context, k cid.Cid, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	return c.call(ctx, "car/export", apiRequest{CID: k.String(), Out: abs}, nil, nil)
}

func (c *Client) ImportCAR(ctx context.Context, path string, pin bool) (ImportResult, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return ImportResult{}, err
	}
	var r ImportResult
	return r, c.call(ctx, "car/import", apiRequest{Path: abs, Pin: pin}, nil, &r)
}

func (c *Client) DashboardLink(ctx context.Context) (string, error) {
	var s string
	return s, c.call(ctx, "dashboard", apiRequest{}, nil, &s)
}

func (c *Client) Status(ctx context.Context) (*NodeStatus, error) {
	var s NodeStatus
	return &s, c.call(ctx, "status", apiRequest{}, nil, &s)
}

func (c *Client) Pins(ctx context.Context) ([]PinInfo, error) {
	var ps []PinInfo
	return ps, c.call(ctx, "pins", apiRequest{}, nil, &ps)
}

func (c *Client) Unpin(ctx context.Context, k cid.Cid) error {
	return c.call(ctx, "unpin", apiRequest{CID: k.String()}, nil, nil)
}

func (c *Client) GC(ctx context.Context) (contentstore.GCResult, error) {
	var r contentstore.GCResult
	return r, c.call(ctx, "gc", apiRequest{}, nil, &r)
}

func (c *Client) Announced(ctx context.Context) ([]Announcement, error) {
	var as []Announcement
	return as, c.call(ctx, "announced", apiRequest{}, nil, &as)
}

func (c *Client) PublishDataset(ctx context.Context, dir string) (cid.Cid, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return cid.Undef, err
	}
	var s string
	if err := c.call(ctx, "data/publish", apiRequest{Path: abs}, nil, &s); err != nil {
		return cid.Undef, err
	}
	return cid.Decode(s)
}

func (c *Client) PublishGenJob(ctx context.Context, dir string) (cid.Cid, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return cid.Undef, err
	}
	var s string
	if err := c.call(ctx, "gen/publish", apiRequest{Path: abs}, nil, &s); err != nil {
		return cid.Undef, err
	}
	return cid.Decode(s)
}

func (c *Client) CreateRun(ctx context.Context, spec *RunSpec) (cid.Cid, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return cid.Undef, err
	}
	var s string
	if err := c.call(ctx, "run/create", apiRequest{Spec: b}, nil, &s); err != nil {
		return cid.Undef, err
	}
	return cid.Decode(s)
}

func (c *Client) LoadRun(ctx context.Context, id cid.Cid) (*RunSpec, error) {
	var raw json.RawMessage
	if err := c.call(ctx, "run/show", apiRequest{CID: id.String()}, nil, &raw); err != nil {
		return nil, err
	}
	return DecodeRunSpec(raw)
}
