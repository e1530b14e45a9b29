package node

import (
	"strings"
	"testing"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
)

// testRules are the round rules of testRun over n parameters in parts
// partitions.
func testRules(t *testing.T, n, parts int, overlap string) *rules {
	t.Helper()
	spec := testRun(t)
	spec.Sync.Overlap, spec.Sync.Codec = overlap, "int4"
	codec, err := spec.Sync.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	return &rules{run: cid.MustParse(testCID1), spec: spec, sync: spec.Sync, codec: codec, parts: gradsync.Partitions(n, parts), n: n}
}

// An overlapped contribution's start is the checkpoint's weights less its
// prior contribution as decoded, partition by partition (against a loop
// over the decoded vector written out here), or as its author encoded it
// (EncodeSent's values, which spare the decoding); the weights stay as
// they were.
func TestOverlapStart(t *testing.T) {
	const n = 1000
	ru := testRules(t, n, 3, "local")
	from, delta := make([]float32, n), make([]float32, n)
	for i := range from {
		from[i], delta[i] = float32(i%17)*0.25-2, float32(i%7)*0.01-0.03
	}
	var prior [][]byte
	want, sent := append([]float32(nil), from...), append([]float32(nil), delta...)
	for _, pr := range ru.parts {
		enc := ru.codec.Encode(nil, delta[pr.Offset:pr.Offset+pr.Size])
		prior = append(prior, enc)
		gradsync.NewErrorFeedback(ru.codec, pr.Size).EncodeSent(nil, sent[pr.Offset:pr.Offset+pr.Size])
		d := make([]float32, pr.Size)
		if err := ru.codec.Decode(d, enc); err != nil {
			t.Fatal(err)
		}
		for k := range d {
			want[pr.Offset+k] = from[pr.Offset+k] - d[k]
		}
	}
	got, err := ru.overlapStart(from, prior, nil)
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := ru.overlapStart(from, prior, sent)
	for i := range got {
		if got[i] != want[i] || mine[i] != want[i] {
			t.Fatalf("start[%d] = %v, from the values sent %v, want %v", i, got[i], mine[i], want[i])
		}
	}
	if from[5] != float32(5%17)*0.25-2 {
		t.Fatal("overlapStart changed the checkpoint's weights")
	}
	if same, _ := ru.overlapStart(from, nil, nil); &same[0] == &from[0] || same[7] != from[7] {
		t.Fatal("without a prior the start must be a copy of the weights")
	}
	if _, err := ru.overlapStart(from, prior[:2], nil); err == nil {
		t.Fatal("a prior with a partition missing was taken")
	}
	prior[1] = prior[1][:len(prior[1])-1]
	if _, err := ru.overlapStart(from, prior, nil); err == nil || !strings.Contains(err.Error(), "partition 1") {
		t.Fatalf("a truncated partition: %v", err)
	}
}

// A contribution may name a start other than its base only in a run that
// overlaps rounds.
func TestAdmitStart(t *testing.T) {
	ps := testPeers(t, 1)
	for _, overlap := range []string{"", "local"} {
		ru := testRules(t, 1000, 1, overlap)
		base := cid.MustParse(testCID2)
		start := sharding.LinkTo(cid.MustParse(testCID1))
		c := &Contribution{Format: ContributionFormat, Run: sharding.LinkTo(ru.run), Round: 2, Base: sharding.LinkTo(base),
			Peer: ps[0].String(), Tokens: ru.spec.RoundTokens(2), Codec: "int4", Params: 1000,
			Partitions: []sharding.Link{sharding.LinkTo(cid.MustParse(testCID1))}, State: sharding.LinkTo(cid.MustParse(testCID1))}
		if reason, err := ru.admit(c, 2, base); err != nil {
			t.Fatalf("overlap %q: a sequential contribution refused: %s %v", overlap, reason, err)
		}
		c.Start = &start
		reason, err := ru.admit(c, 2, base)
		if (err == nil) != (overlap != "") || (err != nil && reason != RejectRound) {
			t.Fatalf("overlap %q: a contribution with a start: %s %v", overlap, reason, err)
		}
		b, _, err := EncodeContribution(c)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DecodeContribution(b); err != nil || *got.Start != start {
			t.Fatalf("start did not round-trip: %+v %v", got, err)
		}
	}
}
