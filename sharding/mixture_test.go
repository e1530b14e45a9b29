package sharding

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func fakeShards(groups map[string]int) []ShardEntry {
	var out []ShardEntry
	for _, g := range []string{"pretrain/ko/natural", "pretrain/ko/synthetic/gen", "pretrain/en/natural", "sft/ko/natural"} {
		for i := 0; i < groups[g]; i++ {
			stage := g[:len("pretrain")]
			if g[:3] == "sft" {
				stage = "sft"
			}
			out = append(out, ShardEntry{CID: Link{fmt.Sprintf("bafy-%s-%d", g, i)}, Group: g, Provenance: Provenance{Stage: stage}})
		}
	}
	return out
}

func TestEpochWeights(t *testing.T) {
	shards := fakeShards(map[string]int{"pretrain/ko/natural": 10, "pretrain/ko/synthetic/gen": 20, "pretrain/en/natural": 40, "sft/ko/natural": 5})
	mix := Mixture{Stage: "pretrain", Weights: map[string]float64{"pretrain/ko": 2, "pretrain/en": 0.5}, Default: 1}
	counts := map[string]int{}
	const epochs = 200
	for e := 0; e < epochs; e++ {
		for _, it := range EpochItems("run", shards, mix, e) {
			counts[shards[it.Shard].Group]++
		}
	}
	if counts["sft/ko/natural"] != 0 {
		t.Fatal("another stage's shards were scheduled")
	}
	if counts["pretrain/ko/natural"] != 2*10*epochs || counts["pretrain/ko/synthetic/gen"] != 2*20*epochs {
		t.Fatalf("Korean visits %v, want weight 2", counts)
	}
	if en := float64(counts["pretrain/en/natural"]) / epochs; en < 18 || en > 22 {
		t.Fatalf("English visits %.1f per epoch, want about 20 (weight 0.5 of 40)", en)
	}
	a, b := EpochItems("run", shards, mix, 3), EpochItems("run", shards, mix, 3)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("epoch order is not a pure function")
	}
	if c := EpochItems("run", shards, mix, 4); fmt.Sprint(a) == fmt.Sprint(c) {
		t.Fatal("epochs 3 and 4 have the same order")
	}
}

// TestCoverageUnderChurn: with peers joining and leaving every round, each
// epoch's items are trained exactly once, no peer gets more than its
// bounded share, and the assignment can be recomputed from the round's
// participants alone.
func TestCoverageUnderChurn(t *testing.T) {
	shards := fakeShards(map[string]int{"pretrain/ko/natural": 13, "pretrain/en/natural": 24})
	mix := Mixture{Stage: "pretrain", Default: 1}
	const perRound = 8
	sched, err := NewSchedule("run-1", shards, mix, perRound)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	all := make([]string, 20)
	for i := range all {
		all[i] = fmt.Sprintf("12D3KooPeer%02d", i)
	}
	seen := map[Item]int{}
	epochLen := len(EpochItems("run-1", shards, mix, 0))
	rounds := 3 * epochLen / perRound // three epochs (epoch 0 is whole: 37 items)
	visits := 0
	for round := 0; round < rounds; round++ {
		var parts []string
		for _, p := range all {
			if r.IntN(3) > 0 { // each peer present two rounds in three
				parts = append(parts, p)
			}
		}
		if len(parts) == 0 {
			parts = all[:1]
		}
		asg := sched.Assign(round, parts)
		items := sched.RoundItems(round)
		limit := (len(items) + len(parts) - 1) / len(parts)
		got := 0
		for p, its := range asg {
			if len(its) > limit {
				t.Fatalf("round %d: %s has %d items, limit %d", round, p, len(its), limit)
			}
			got += len(its)
			for _, it := range its {
				if round*perRound < epochLen && (round+1)*perRound <= epochLen {
					seen[it]++
				}
			}
		}
		if got != len(items) {
			t.Fatalf("round %d: %d of %d items assigned", round, got, len(items))
		}
		visits += got
		// Recomputing from the participants alone, in another order, gives
		// the same answer.
		rev := append([]string(nil), parts...)
		for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
			rev[i], rev[j] = rev[j], rev[i]
		}
		if fmt.Sprint(sched.Assign(round, rev)) != fmt.Sprint(asg) {
			t.Fatalf("round %d: assignment depends on participant order", round)
		}
	}
	full := epochLen / perRound * perRound // items of epoch 0 in whole rounds
	if len(seen) != full {
		t.Fatalf("epoch 0: %d distinct items trained in whole rounds, want %d", len(seen), full)
	}
	for it, n := range seen {
		if n != 1 {
			t.Fatalf("item %+v trained %d times in epoch 0", it, n)
		}
	}
	if visits != rounds*perRound {
		t.Fatalf("%d visits over %d rounds", visits, rounds)
	}
}

func TestScheduleErrors(t *testing.T) {
	shards := fakeShards(map[string]int{"pretrain/en/natural": 2})
	if _, err := NewSchedule("r", shards, Mixture{Stage: "sft", Default: 1}, 2); err == nil {
		t.Error("stage without shards accepted")
	}
	if _, err := NewSchedule("r", shards, Mixture{Stage: "pretrain", Default: -1}, 2); err == nil {
		t.Error("negative weight accepted")
	}
	if _, err := NewSchedule("r", shards, Mixture{Stage: "pretrain", Default: 1}, 0); err == nil {
		t.Error("zero items per round accepted")
	}
}
