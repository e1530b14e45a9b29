package node

import (
	"fmt"
	"math"
	"testing"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/ipfs/go-cid"
)

// Spot checks pick each contribution with the run's probability and
// spread the verifying evenly over the other members, never the author;
// an audit's sample is drawn apart from them.
func TestSpotVerifier(t *testing.T) {
	members := testPeers(t, 4)
	const n, q = 40000, 0.1
	picked, inSample := 0, 0
	load := map[string]int{}
	both := 0
	for i := range n {
		ck, _ := contentstore.BlockCID(contentstore.CodecRaw, []byte(fmt.Sprint("checkpoint ", i/4)))
		k, _ := contentstore.BlockCID(contentstore.CodecRaw, []byte(fmt.Sprint("contribution ", i)))
		author := members[i%4]
		v, ok := spotVerifier(ck, k, author, members, q)
		if ok {
			picked++
			load[v.String()]++
			if v == author {
				t.Fatalf("contribution %d: its author verifies it", i)
			}
		}
		if sampled(ck, k, q) {
			inSample++
			if ok {
				both++
			}
		}
	}
	// Binomial: σ = √(n q (1−q)) = 60; 5σ bounds.
	for what, got := range map[string]int{"spot-checked": picked, "audit-sampled": inSample} {
		if math.Abs(float64(got)-n*q) > 300 {
			t.Errorf("%s %d of %d, want about %v", what, got, n, n*q)
		}
	}
	if math.Abs(float64(both)-n*q*q) > 5*math.Sqrt(n*q*q) {
		t.Errorf("%d picked by both draws; independent ones give about %v", both, n*q*q)
	}
	for id, l := range load {
		if math.Abs(float64(l)-float64(picked)/4) > 0.1*float64(picked)/4 {
			t.Errorf("member %s verifies %d of %d", id, l, picked)
		}
	}
	// Alone, an author has no verifier; share 0 checks nothing, 1 all.
	ck, k := cid.MustParse(testCID1), cid.MustParse(testCID2)
	if _, ok := spotVerifier(ck, k, members[0], members[:1], 1); ok {
		t.Error("a lone member verified")
	}
	if _, ok := spotVerifier(ck, k, members[0], members, 0); ok {
		t.Error("share 0 checked")
	}
	if _, ok := spotVerifier(ck, k, members[0], members, 1); !ok {
		t.Error("share 1 did not check")
	}
}
