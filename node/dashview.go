package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/internal/svgchart"
	"github.com/fomnet/fomnet/model"
)

// What the dashboard shows (dashboard.go), read from the node's store and
// home: a run's history comes from the round records of the checkpoints
// this node settled on (each verified by recomputation before it was
// settled), so a follower that mirrored a finished run draws all of it.
// Nothing here is what a peer says of itself: the validation losses are
// computed here from each checkpoint's weights (dasheval.go), authors are
// read from the contribution blocks the round records link.

// NodeView is the dashboard's node page.
type NodeView struct {
	PeerInfo
	Peers       []PeerInfo            `json:"peers"`
	StoreBlocks int                   `json:"store_blocks"`
	StoreBytes  int64                 `json:"store_bytes"`
	Pins        []PinInfo             `json:"pins"`
	Bitswap     contentstore.Traffic  `json:"bitswap"`
	P2PBytes    map[string][2]float64 `json:"p2p_bytes"` // protocol group → [received, sent]
}

func (n *Node) nodeView(ctx context.Context) NodeView {
	v := NodeView{Peers: []PeerInfo{}, P2PBytes: map[string][2]float64{}}
	v.PeerInfo, _ = n.ID(ctx)
	if n.Host != nil {
		v.Peers, _ = n.Peers(ctx)
		v.P2PBytes = p2pBytes(n.Host)
	}
	v.StoreBlocks, v.StoreBytes = n.Metrics.collector.storeSize()
	v.Pins, _ = n.Pins(ctx)
	v.Bitswap = n.Store.Traffic()
	return v
}

// RunSummary is a run in the dashboard's list.
type RunSummary struct {
	Run     string `json:"run"`
	Name    string `json:"name"`
	Stage   string `json:"stage"`
	Rounds  int    `json:"rounds"`  // the spec's
	Settled int    `json:"settled"` // the newest round this node settled on
	// Checkpoint is that round's checkpoint.
	Checkpoint string `json:"checkpoint"`
	Following  bool   `json:"following"`
}

// runsView lists the runs with a directory in HOME/runs, by run ID.
func (n *Node) runsView(ctx context.Context) ([]RunSummary, error) {
	ents, err := os.ReadDir(filepath.Join(n.Home, "runs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	following := map[string]bool{}
	if fs, err := n.followed(); err == nil {
		for _, r := range fs {
			following[r.String()] = true
		}
	}
	out := []RunSummary{}
	for _, e := range ents {
		id, err := cid.Decode(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		spec, err := n.localSpec(ctx, id)
		if err != nil {
			continue
		}
		s := RunSummary{Run: id.String(), Name: spec.Name, Stage: spec.Stage, Rounds: spec.Rounds, Settled: -1, Following: following[id.String()]}
		if rs := settledRounds(n.runDir(id)); len(rs) > 0 {
			last := rs[len(rs)-1]
			s.Settled, s.Checkpoint = last.round, last.ck.String()
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Run > out[j].Run })
	return out, nil
}

func (n *Node) runDir(id cid.Cid) string { return filepath.Join(n.Home, "runs", id.String()) }

// localSpec loads a run spec this node holds (no fetch: the dashboard
// draws what is here).
func (n *Node) localSpec(ctx context.Context, id cid.Cid) (*RunSpec, error) {
	if ok, _ := n.Store.Has(ctx, id); !ok {
		return nil, fmt.Errorf("run %s: its spec is not in this node's store", id)
	}
	b, err := n.Store.Block(ctx, id)
	if err != nil {
		return nil, err
	}
	return DecodeRunSpec(b.RawData())
}

type settledRound struct {
	round int
	ck    cid.Cid
	at    time.Time
}

var roundCIDRE = regexp.MustCompile(`^round-(\d{6})\.cid$`)

// settledRounds reads the round-NNNNNN.cid files of a run's directory
// (they stay when old round directories are pruned), by round.
func settledRounds(dir string) []settledRound {
	ents, _ := os.ReadDir(dir)
	var out []settledRound
	for _, e := range ents {
		m := roundCIDRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		r, _ := strconv.Atoi(m[1])
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		ck, err := cid.Decode(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		info, _ := e.Info()
		var at time.Time
		if info != nil {
			at = info.ModTime()
		}
		out = append(out, settledRound{r, ck, at})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].round < out[j].round })
	return out
}

// RunView is the dashboard's run page.
type RunView struct {
	RunSummary
	Dataset string `json:"dataset"`
	From    string `json:"from,omitempty"` // the checkpoint a stage starts from
	// FromRun and FromRound: the run and round of From, when this node
	// holds that run (the stage before, in a recipe).
	FromRun   string `json:"from_run,omitempty"`
	FromRound int    `json:"from_round,omitempty"`
	Params    int    `json:"params"`
	H         int    `json:"h"`
	Batch     int    `json:"batch"`
	Seq       int    `json:"seq"`
	Codec     string `json:"codec"`
	// Points: one per round this node settled on, genesis (0) first.
	Points []RoundView `json:"points"`
	// ValNote says why validation losses are missing, if they are.
	ValNote string `json:"val_note,omitempty"`
	// Phases: this node's own phase durations in the run's rounds (a
	// follower has none).
	Phases []PhaseTiming `json:"phases"`
	// Charts are SVG: loss, tokens, bytes, phases.
	Charts map[string]string `json:"charts"`
}

// RoundView is one settled round.
type RoundView struct {
	Round      int       `json:"round"`
	Checkpoint string    `json:"checkpoint"`
	SettledAt  time.Time `json:"settled_at"`
	// Tokens the included contributions trained; Bytes of their encoded
	// pseudo-gradients (those this node holds).
	Tokens        int64              `json:"tokens"`
	Bytes         int64              `json:"bytes"`
	Contributions []ContributionView `json:"contributions"`
	Excluded      []string           `json:"excluded,omitempty"`
	// Val: validation loss per language and language/source, computed
	// here from the checkpoint (absent until evaluated).
	Val map[string]float64 `json:"val,omitempty"`
}

// ContributionView is one input of a round.
type ContributionView struct {
	CID      string `json:"cid"`
	Author   string `json:"author,omitempty"` // "" when the block is not here
	Included bool   `json:"included"`
	Bytes    int64  `json:"bytes"`
	// Rejected: partition → why an aggregate left it out.
	Rejected map[int]string `json:"rejected,omitempty"`
}

// PhaseTiming is how long one phase of one round took on this node.
type PhaseTiming struct {
	Round   int     `json:"round"`
	Phase   string  `json:"phase"`
	Seconds float64 `json:"seconds"`
}

// timeline keeps each run's phase timings (the newest maxTimeline).
type timeline struct {
	mu   sync.Mutex
	runs map[string][]PhaseTiming
}

const maxTimeline = 4096

func (t *timeline) add(run cid.Cid, pt PhaseTiming) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.runs == nil {
		t.runs = map[string][]PhaseTiming{}
	}
	l := append(t.runs[run.String()], pt)
	if len(l) > maxTimeline {
		l = l[len(l)-maxTimeline:]
	}
	t.runs[run.String()] = l
}

func (t *timeline) get(run cid.Cid) []PhaseTiming {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]PhaseTiming{}, t.runs[run.String()]...)
}

// roundViews caches the views of settled checkpoints (a checkpoint's
// record never changes), validation losses apart.
type roundViews struct {
	mu sync.Mutex
	m  map[string]RoundView
}

func (n *Node) runView(ctx context.Context, id cid.Cid) (*RunView, error) {
	spec, err := n.localSpec(ctx, id)
	if err != nil {
		return nil, err
	}
	v := &RunView{RunSummary: RunSummary{Run: id.String(), Name: spec.Name, Stage: spec.Stage, Rounds: spec.Rounds, Settled: -1},
		Dataset: spec.Dataset.CID, H: spec.Sync.H, Batch: spec.Inner.Batch, Seq: spec.Inner.Seq, Codec: spec.Sync.Codec,
		Points: []RoundView{}, Phases: n.timeline.get(id)}
	if spec.From != nil {
		v.From = spec.From.CID
		v.FromRun, v.FromRound = n.whoseCheckpoint(v.From)
	}
	if cfg, err := spec.ModelConfig(); err == nil {
		v.Params = int(model.NumParams(cfg))
	}
	for _, s := range settledRounds(n.runDir(id)) {
		rv, err := n.roundView(ctx, spec, s)
		if err != nil {
			return nil, err
		}
		v.Points = append(v.Points, rv)
		v.Settled, v.Checkpoint = s.round, s.ck.String()
	}
	v.ValNote = n.api.eval.fill(id, v.Points)
	v.Charts = runCharts(v)
	return v, nil
}

// whoseCheckpoint finds the run (held here) and round of checkpoint ck.
func (n *Node) whoseCheckpoint(ck string) (string, int) {
	ents, _ := os.ReadDir(filepath.Join(n.Home, "runs"))
	for _, e := range ents {
		for _, s := range settledRounds(filepath.Join(n.Home, "runs", e.Name())) {
			if s.ck.String() == ck {
				return e.Name(), s.round
			}
		}
	}
	return "", 0
}

func (n *Node) roundView(ctx context.Context, spec *RunSpec, s settledRound) (RoundView, error) {
	n.views.mu.Lock()
	rv, ok := n.views.m[s.ck.String()]
	n.views.mu.Unlock()
	if ok {
		return rv, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctx = contentstore.WithWait(ctx, contentstore.Wait{Stall: 5 * time.Second})
	rec, err := n.readRoundRecord(ctx, s.ck)
	if err != nil {
		return RoundView{}, fmt.Errorf("round %d's checkpoint %s: %w", s.round, s.ck, err)
	}
	rv = RoundView{Round: s.round, Checkpoint: s.ck.String(), SettledAt: s.at, Contributions: []ContributionView{}}
	included := map[int]bool{}
	for _, i := range rec.includedIndices() {
		included[i] = true
	}
	for i, l := range rec.Contributions {
		c := ContributionView{CID: l.CID, Included: included[i], Rejected: rec.Rejected[l.CID]}
		c.Author, c.Bytes = n.contributionHere(ctx, l.CID)
		if c.Included {
			rv.Bytes += c.Bytes
		}
		rv.Contributions = append(rv.Contributions, c)
	}
	if s.round > 0 {
		rv.Tokens = int64(len(included)) * spec.RoundTokens(s.round)
	}
	for _, e := range rec.Excluded {
		rv.Excluded = append(rv.Excluded, e.Peer)
	}
	n.views.mu.Lock()
	if n.views.m == nil {
		n.views.m = map[string]RoundView{}
	}
	n.views.m[s.ck.String()] = rv
	n.views.mu.Unlock()
	return rv, nil
}

// contributionHere reads a contribution's author and the size of its
// partitions from this node's store (nothing is fetched: "" and 0 if the
// blocks are not here).
func (n *Node) contributionHere(ctx context.Context, k string) (string, int64) {
	c, err := cid.Decode(k)
	if err != nil {
		return "", 0
	}
	if ok, _ := n.Store.Has(ctx, c); !ok {
		return "", 0
	}
	b, err := n.Store.Block(ctx, c)
	if err != nil {
		return "", 0
	}
	con, err := DecodeContribution(b.RawData())
	if err != nil {
		return "", 0
	}
	var size int64
	for _, l := range con.Partitions {
		if pc, err := l.Cid(); err == nil {
			if s, err := n.Store.DeclaredSize(ctx, pc, 1<<40); err == nil {
				size += s
			}
		}
	}
	return con.Peer, size
}

// runCharts draws the run page's charts.
func runCharts(v *RunView) map[string]string {
	splits := map[string][]svgchart.Point{}
	var tokens, bytes []svgchart.Point
	for _, p := range v.Points {
		for k, l := range p.Val {
			splits[k] = append(splits[k], svgchart.Point{X: p.Round, Y: l})
		}
		if p.Round > 0 {
			tokens = append(tokens, svgchart.Point{X: p.Round, Y: float64(p.Tokens)})
			bytes = append(bytes, svgchart.Point{X: p.Round, Y: float64(p.Bytes)})
		}
	}
	keys := make([]string, 0, len(splits))
	for k := range splits {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { // languages, then language/source
		ci, cj := strings.Contains(keys[i], "/"), strings.Contains(keys[j], "/")
		if ci != cj {
			return !ci
		}
		return keys[i] < keys[j]
	})
	var loss []svgchart.Series
	for _, k := range keys {
		loss = append(loss, svgchart.Series{Name: k, Points: splits[k]})
	}
	phases := map[string][]svgchart.Point{}
	var order []string
	for _, pt := range v.Phases {
		if phases[pt.Phase] == nil {
			order = append(order, pt.Phase)
		}
		phases[pt.Phase] = append(phases[pt.Phase], svgchart.Point{X: pt.Round, Y: pt.Seconds})
	}
	var timing []svgchart.Series
	for _, ph := range order {
		timing = append(timing, svgchart.Series{Name: ph, Points: phases[ph]})
	}
	timingTitle := "This node's round phases"
	if len(timing) == 0 { // a follower: the time between the checkpoints it settled
		var gaps []svgchart.Point
		for i := 1; i < len(v.Points); i++ {
			if a, b := v.Points[i-1], v.Points[i]; b.Round == a.Round+1 && a.Round > 0 {
				gaps = append(gaps, svgchart.Point{X: b.Round, Y: b.SettledAt.Sub(a.SettledAt).Seconds()})
			}
		}
		timing = []svgchart.Series{{Name: "between checkpoints", Points: gaps}}
		timingTitle = "Round time, as this node settled them"
	}
	return map[string]string{
		"loss": svgchart.Line(svgchart.Chart{ID: "chart-loss", Title: "Validation loss (nats/token)", XLabel: "round", YLabel: "loss",
			Empty: "no checkpoint evaluated yet"}, loss),
		"tokens": svgchart.Line(svgchart.Chart{ID: "chart-tokens", Title: "Tokens trained per round", XLabel: "round", YLabel: "tokens", Zero: true},
			[]svgchart.Series{{Name: "tokens", Points: tokens}}),
		"bytes": svgchart.Stacked(svgchart.Chart{ID: "chart-bytes", Title: "Pseudo-gradient bytes per round (included)", XLabel: "round", YLabel: "bytes",
			Empty: "no contributions held here"}, []svgchart.Series{{Name: "included", Points: bytes}}),
		"phases": svgchart.Stacked(svgchart.Chart{ID: "chart-phases", Title: timingTitle, XLabel: "round", YLabel: "seconds",
			Empty: "no two consecutive rounds settled here yet"}, timing),
	}
}

// NodeStatus is `fomnet status`: the node and its runs on one screen.
type NodeStatus struct {
	PeerInfo
	Peers       int                   `json:"peers"`
	StoreBlocks int                   `json:"store_blocks"`
	StoreBytes  int64                 `json:"store_bytes"`
	Pins        int                   `json:"pins"`
	Bitswap     contentstore.Traffic  `json:"bitswap"`
	P2PBytes    map[string][2]float64 `json:"p2p_bytes"`
	Runs        []RunStatus           `json:"runs"`
}

// RunStatus is one run in NodeStatus.
type RunStatus struct {
	RunSummary
	// SettledAt is when this node settled its newest round; RoundSeconds
	// the mean time between its last (up to five) settled rounds, and
	// ETASeconds what the rounds left take at that pace (0: unknown).
	SettledAt    time.Time `json:"settled_at"`
	RoundSeconds float64   `json:"round_seconds,omitempty"`
	ETASeconds   float64   `json:"eta_seconds,omitempty"`
	// Phase is this node's last finished phase ("round 4: collect"), or
	// "following" for a run it follows without training.
	Phase string `json:"phase,omitempty"`
	// Contributions included in the newest round.
	Contributions int `json:"contributions"`
	// Val is the newest validation loss this node computed for the run
	// (the dashboard's), per split.
	Val map[string]float64 `json:"val,omitempty"`
}

// Status summarises the node and the runs it holds.
func (n *Node) Status(ctx context.Context) (*NodeStatus, error) {
	nv := n.nodeView(ctx)
	st := &NodeStatus{PeerInfo: nv.PeerInfo, Peers: len(nv.Peers), StoreBlocks: nv.StoreBlocks, StoreBytes: nv.StoreBytes,
		Pins: len(nv.Pins), Bitswap: nv.Bitswap, P2PBytes: nv.P2PBytes, Runs: []RunStatus{}}
	runs, err := n.runsView(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range runs {
		id, _ := cid.Decode(r.Run)
		rs := RunStatus{RunSummary: r}
		settled := settledRounds(n.runDir(id))
		if k := len(settled); k > 0 {
			rs.SettledAt = settled[k-1].at
			if w := min(k-1, 5); w > 0 {
				rs.RoundSeconds = settled[k-1].at.Sub(settled[k-1-w].at).Seconds() / float64(w)
				rs.ETASeconds = rs.RoundSeconds * float64(max(0, r.Rounds-r.Settled))
			}
			if spec, err := n.localSpec(ctx, id); err == nil {
				if rv, err := n.roundView(ctx, spec, settled[k-1]); err == nil {
					for _, c := range rv.Contributions {
						if c.Included {
							rs.Contributions++
						}
					}
				}
			}
			for i := k - 1; i >= 0 && rs.Val == nil; i-- {
				if b, err := os.ReadFile(evalPath(n.Home, r.Run, settled[i].ck.String())); err == nil {
					json.Unmarshal(b, &rs.Val)
				}
			}
		}
		if tl := n.timeline.get(id); len(tl) > 0 {
			rs.Phase = fmt.Sprintf("round %d: %s", tl[len(tl)-1].Round, tl[len(tl)-1].Phase)
		} else if r.Following {
			rs.Phase = "following"
		}
		st.Runs = append(st.Runs, rs)
	}
	return st, nil
}
