package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
	"github.com/fomnet/fomnet/sharding"
)

// TestPrepJob: a preparation split in 3 parts, run by 3 nodes on
// loopback (inputs and plan fetched by CID from the node that added
// them), gives every node the dataset one machine prepares from the same
// inputs; a node that hands out damaged pieces is convicted by the others,
// whose dataset is still that one.
func TestPrepJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var txt, tsv strings.Builder
	for i := range 3 {
		for _, f := range sharding.Builtin() {
			txt.Write(f.Text)
			txt.WriteString("\n\n")
		}
		for _, d := range sharding.Synthetic(uint64(i+1), 300) {
			txt.WriteString(d.Text + "\n\n")
		}
		fmt.Fprintf(&tsv, "Copy %d of the file.\t파일의 사본 %d.\nOpen the file.\t파일을 엽니다.\n", i, i)
	}
	inputs := []string{filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.tsv")}
	os.WriteFile(inputs[0], []byte(txt.String()), 0o644)
	os.WriteFile(inputs[1], []byte(tsv.String()), 0o644)
	tk := builtinTokenizer(t)
	cfg := sharding.PrepareConfig{Filters: sharding.DefaultFilters(), SeqLen: 64, ShardTokens: 4000}
	for _, p := range inputs {
		cfg.Inputs = append(cfg.Inputs, sharding.Input{Path: p, Licence: "CC0-1.0"})
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	want, err := sharding.Prepare(ctx, cfg, tk, filepath.Join(dir, "whole"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := sharding.MakePlan(ctx, cfg, tk, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := pl.AddCIDs(ctx); err != nil {
		t.Fatal(err)
	}
	planDir := filepath.Join(dir, "plan")
	os.MkdirAll(planDir, 0o755)
	pb, _ := pl.Encode()
	tb, _ := tk.MarshalJSON()
	os.WriteFile(filepath.Join(planDir, "plan.json"), pb, 0o644)
	os.WriteFile(filepath.Join(planDir, "tokenizer.json"), tb, 0o644)

	run := func(opts [3]node.PrepJobOptions, liar int) [3]*node.PrepJobResult {
		cl := nodetest.New(t, 3, nodetest.Options{})
		cl.ConnectAll()
		var id cid.Cid
		for _, p := range append([]string{planDir}, inputs...) {
			c, err := cl.Nodes[0].Store.Add(ctx, p, contentstore.AddOptions{Pin: true})
			if err != nil {
				t.Fatal(err)
			}
			if p == planDir {
				id = c
			}
		}
		var jobs [3]*node.PrepJob
		for i, n := range cl.Nodes {
			o := opts[i]
			o.Threads, o.Expect, o.Patience, o.Logf = 1, 2, 3*time.Second, t.Logf
			if i == liar {
				o.Expect, o.Patience = 0, time.Millisecond
			}
			j, err := n.OpenPrepJob(ctx, id, o)
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			defer j.Close()
			jobs[i] = j
		}
		var res [3]*node.PrepJobResult
		runNodes(t, 3, liar, func(i int) (err error) {
			res[i], err = jobs[i].Run(ctx)
			return err
		})
		return res
	}
	res := run([3]node.PrepJobOptions{}, -1)
	made := 0
	for i, r := range res {
		if r.Dataset != want.CID.String() || len(r.Convicted) != 0 {
			t.Errorf("node %d: dataset %s (convicted %v), one machine %s", i, r.Dataset, r.Convicted, want.CID)
		}
		made += r.Made
	}
	if made < 3 || res[0].Made == 3 && res[1].Made == 3 {
		t.Errorf("pieces made: %d, %d, %d", res[0].Made, res[1].Made, res[2].Made)
	}

	var opts [3]node.PrepJobOptions
	node.TamperJob(&opts[1].JobOptions, func(k int, b []byte) []byte { return b[:len(b)-1] })
	res = run(opts, 1)
	for _, i := range []int{0, 2} {
		r := res[i]
		if r.Dataset != want.CID.String() {
			t.Errorf("with a liar, node %d: dataset %s, one machine %s", i, r.Dataset, want.CID)
		}
		if len(r.Convicted) != 1 || !strings.Contains(r.Convicted[0].Why, "piece of part") {
			t.Errorf("node %d convicted %+v, want node 1", i, r.Convicted)
		}
	}
}
