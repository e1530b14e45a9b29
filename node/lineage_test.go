package node_test

import (
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/fomnet/fomnet/node"
)

// Only checkpoint pins read back as checkpoints: a follower's lineage
// roots and evidence are pinned under other names (checkpoint ls once
// listed them as checkpoints).
func TestParseCheckpointPin(t *testing.T) {
	run, _ := cid.Decode("baguqeera4jhvjb75paqqquyhl5mc2as6y2i4u3ppbhgix2qppe26e5pxpwuq")
	name := node.CheckpointPin(run, 12)
	if got, r, ok := node.ParseCheckpointPin(name); !ok || got != run.String() || r != 12 {
		t.Fatalf("%q read back as %q %d %v", name, got, r, ok)
	}
	for _, other := range []string{name + " lineage", name + " evidence against 12D3KooW", "lineage of " + name, "run  round 1", "dataset ds"} {
		if _, _, ok := node.ParseCheckpointPin(other); ok {
			t.Errorf("%q read as a checkpoint pin", other)
		}
	}
}
