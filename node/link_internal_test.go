package node

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A member that announces a download rate under half the members' median
// is never first in a partition's line while faster members are there; it
// comes after them and before the non-members. Unknown rates (0) change
// nothing, and a member claiming an absurd rate is first in no more
// partitions than the hash order gives it anyway.
func TestReducerOrderByLink(t *testing.T) {
	ps := testPeers(t, 6)
	members, other := ps[:5], ps[5]
	p := &Participant{id: cid.MustParse(testCID1), self: ps[0], members: members, parts: gradsync.Partitions(4096, 64)}
	admitted := map[peer.ID]*input{}
	for _, id := range ps {
		admitted[id] = &input{}
	}
	firsts := func(claims map[peer.ID]int64) map[peer.ID]int {
		n := map[peer.ID]int{}
		for pi, line := range p.reducerOrder(3, admitted, false, claims) {
			if len(line) != len(ps) || line[len(line)-1] != other {
				t.Fatalf("partition %d: line %v; the non-member %s last", pi, line, other)
			}
			n[line[0]]++
		}
		return n
	}
	plain := firsts(nil)
	if len(plain) != len(members) {
		t.Fatalf("without rates, first in line: %v", plain)
	}
	if got := firsts(map[peer.ID]int64{ps[1]: 5e6, ps[2]: 6e6}); !maps.Equal(got, plain) {
		t.Fatalf("rates above the floor reordered the lines: %v, %v", got, plain)
	}
	slow := map[peer.ID]int64{ps[0]: 6e6, ps[1]: 6e6, ps[2]: 5e6, ps[3]: 2e6, ps[4]: 7e6}
	for pi, line := range p.reducerOrder(3, admitted, false, slow) {
		if line[len(members)-1] != ps[3] {
			t.Fatalf("partition %d: %s (2 MB/s, floor 3) is at %d in %v, want last of the members", pi, ps[3], slices.Index(line, ps[3]), line)
		}
	}
	liar := map[peer.ID]int64{ps[0]: 6e6, ps[1]: maxDown, ps[2]: 5e6, ps[3]: 6e6, ps[4]: 7e6}
	if got := firsts(liar); got[ps[1]] != plain[ps[1]] {
		t.Fatalf("a member claiming %d B/s is first in %d partitions; the hash order gives it %d", int64(maxDown), got[ps[1]], plain[ps[1]])
	}
}

// A deadline passing while contributions arrive is stretched by their
// time at the measured rate, with half again for margin and a second,
// never past another deadline; without a rate, or nothing arriving, not
// at all.
func TestTransferTime(t *testing.T) {
	ru := testRules(t, 100_000, 4, "")
	p := &Participant{parts: ru.parts, codec: ru.codec, sync: ru.sync}
	p.sync.RoundDeadline = time.Minute
	one := 0
	for _, pr := range p.parts {
		one += p.codec.EncodedLen(pr.Size)
	}
	if p.transferTime(3) != 0 {
		t.Fatal("no rate measured, yet a wait")
	}
	p.down = float64(one) // one contribution a second
	if got := p.transferTime(0); got != 0 {
		t.Fatalf("nothing arriving: %v", got)
	}
	if got, want := p.transferTime(4), 7*time.Second; got != want {
		t.Fatalf("4 contributions at one a second: %v, want %v", got, want)
	}
	if got := p.transferTime(1000); got != time.Minute {
		t.Fatalf("1000 contributions: %v, want the deadline", got)
	}
}
