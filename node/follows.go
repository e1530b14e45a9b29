package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/internal/fsutil"
)

// FollowsFile, in a node's home, lists the runs its daemon follows
// (`fomnet mirror --follow` with a daemon running): a JSON array of run
// IDs. The daemon follows them again when it starts.
const FollowsFile = "follows.json"

// maxFollowsFile bounds follows.json.
const maxFollowsFile = 1 << 20

// DecodeFollows parses follows.json: an array of distinct run IDs.
func DecodeFollows(b []byte) ([]cid.Cid, error) {
	if len(b) > maxFollowsFile {
		return nil, fmt.Errorf("%s: %d bytes, the limit is %d", FollowsFile, len(b), maxFollowsFile)
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return nil, fmt.Errorf("%s: %w", FollowsFile, err)
	}
	seen := map[string]bool{}
	out := make([]cid.Cid, 0, len(ss))
	for i, s := range ss {
		c, err := cid.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("%s: entry %d, %q, is not a run ID: %v", FollowsFile, i, s, err)
		}
		if seen[c.String()] {
			return nil, fmt.Errorf("%s: run %s listed twice", FollowsFile, c)
		}
		seen[c.String()] = true
		out = append(out, c)
	}
	return out, nil
}

// follows are the runs a daemon follows in the background.
type follows struct {
	mu      sync.Mutex
	running map[string]context.CancelFunc
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// startFollows follows the runs in the home's follows.json (daemons).
func (n *Node) startFollows() error {
	n.fol.ctx, n.fol.cancel = context.WithCancel(context.Background())
	n.fol.running = map[string]context.CancelFunc{}
	runs, err := n.followed()
	if err != nil {
		return err
	}
	for _, r := range runs {
		n.followInBackground(r)
	}
	return nil
}

func (n *Node) followed() ([]cid.Cid, error) {
	b, err := os.ReadFile(filepath.Join(n.Home, FollowsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return DecodeFollows(b)
}

func (n *Node) saveFollowed(runs []cid.Cid) error {
	ss := make([]string, 0, len(runs))
	for _, r := range runs {
		ss = append(ss, r.String())
	}
	sort.Strings(ss)
	b, _ := json.MarshalIndent(ss, "", "  ")
	return fsutil.WriteFile(filepath.Join(n.Home, FollowsFile), append(b, '\n'))
}

// followInBackground starts following run unless it already is; the
// goroutine ends when the node closes or Unfollow stops it.
func (n *Node) followInBackground(run cid.Cid) {
	n.fol.mu.Lock()
	defer n.fol.mu.Unlock()
	if _, ok := n.fol.running[run.String()]; ok {
		return
	}
	ctx, cancel := context.WithCancel(n.fol.ctx)
	n.fol.running[run.String()] = cancel
	n.fol.wg.Add(1)
	go func() {
		defer n.fol.wg.Done()
		if err := n.FollowRun(ctx, run, FollowOptions{}); err != nil {
			n.logf("follow %s: %v", run, err)
		}
	}()
}

// stopFollows stops every background follower and waits for them.
func (n *Node) stopFollows() {
	if n.fol.cancel == nil {
		return
	}
	n.fol.cancel()
	n.fol.wg.Wait()
}

// Follow makes this daemon follow run (mirror its checkpoints as they
// appear, see FollowRun) in the background, now and after restarts, until
// Unfollow. Following a run twice is a no-op.
func (n *Node) Follow(ctx context.Context, run cid.Cid) error {
	if n.Host == nil {
		return ErrOffline
	}
	if n.fol.running == nil {
		return errors.New("follow: only a daemon follows runs in the background; without one, `fomnet mirror --follow` runs in the foreground")
	}
	runs, err := n.followed()
	if err != nil {
		return err
	}
	if !containsCID(runs, run) {
		if err := n.saveFollowed(append(runs, run)); err != nil {
			return err
		}
	}
	n.followInBackground(run)
	return nil
}

// Unfollow stops following run; what was mirrored stays pinned.
func (n *Node) Unfollow(ctx context.Context, run cid.Cid) error {
	runs, err := n.followed()
	if err != nil {
		return err
	}
	if !containsCID(runs, run) {
		return fmt.Errorf("run %s is not followed", run)
	}
	kept := runs[:0]
	for _, r := range runs {
		if !r.Equals(run) {
			kept = append(kept, r)
		}
	}
	if err := n.saveFollowed(kept); err != nil {
		return err
	}
	n.fol.mu.Lock()
	cancel := n.fol.running[run.String()]
	delete(n.fol.running, run.String())
	n.fol.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return nil
}

func containsCID(cs []cid.Cid, c cid.Cid) bool {
	for _, x := range cs {
		if x.Equals(c) {
			return true
		}
	}
	return false
}
