package sharding

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// Mixture weights groups of one stage. A group's weight is how many times
// each of its shards is visited per epoch: 1 keeps the natural share, 2
// doubles it, 0.5 visits each shard with probability one half (decided per
// shard and epoch by hash), 0 leaves the group out. Groups are matched by
// prefix, longest first, so "pretrain/ko" weights every pretrain Korean
// group; shards no weight matches get Default.
type Mixture struct {
	Stage   string             `json:"stage"`
	Weights map[string]float64 `json:"weights"`
	Default float64            `json:"default"`
}

// Validate checks the weights.
func (m Mixture) Validate() error {
	for g, w := range m.Weights {
		if !(w >= 0) || math.IsInf(w, 0) {
			return fmt.Errorf("mixture: weight %v of %q must be finite and non-negative", w, g)
		}
	}
	if !(m.Default >= 0) || math.IsInf(m.Default, 0) {
		return fmt.Errorf("mixture: default weight %v must be finite and non-negative", m.Default)
	}
	return nil
}

func (m Mixture) weight(group string) float64 {
	best, w := -1, m.Default
	for g, x := range m.Weights {
		if len(g) > best && (group == g || len(group) > len(g) && group[:len(g)] == g && group[len(g)] == '/') {
			best, w = len(g), x
		}
	}
	return w
}

// Item is one visit of a shard in an epoch.
type Item struct {
	Shard int // index into the manifest's shards
	Copy  int // which visit of the shard in this epoch (0, 1, …)
}

// hash64 is the first 8 bytes of SHA-256 over the length-prefixed parts:
// the same on every machine, so anyone can recompute schedules.
func hash64(parts ...string) uint64 {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return binary.LittleEndian.Uint64(h.Sum(nil))
}

func unit(x uint64) float64 { return float64(x>>11) / (1 << 53) }

// EpochItems lists the visits of one epoch of a stage in their training
// order: each shard of the stage appears as often as its group's weight
// says, in an order shuffled by hashing (run, stage, epoch, shard, copy).
// It is a pure function of its arguments.
func EpochItems(run string, shards []ShardEntry, mix Mixture, epoch int) []Item {
	type keyed struct {
		it  Item
		key uint64
	}
	var ks []keyed
	e := strconv.Itoa(epoch)
	for i, s := range shards {
		if s.Stage != mix.Stage {
			continue
		}
		w := mix.weight(s.Group)
		n := int(w)
		if frac := w - float64(n); frac > 0 && unit(hash64("copies", run, mix.Stage, e, s.CID.CID)) < frac {
			n++
		}
		for c := 0; c < n; c++ {
			ks = append(ks, keyed{Item{i, c}, hash64("order", run, mix.Stage, e, s.CID.CID, strconv.Itoa(c))})
		}
	}
	sort.Slice(ks, func(a, b int) bool {
		if ks[a].key != ks[b].key {
			return ks[a].key < ks[b].key
		}
		return ks[a].it.Shard < ks[b].it.Shard || ks[a].it.Shard == ks[b].it.Shard && ks[a].it.Copy < ks[b].it.Copy
	})
	out := make([]Item, len(ks))
	for i, k := range ks {
		out[i] = k.it
	}
	return out
}

// Schedule assigns the epochs' items to rounds and peers. Round r takes
// the next PerRound items of the epoch sequence (epochs follow each other),
// whoever takes part, so every item is trained exactly once per epoch as
// long as each round has a participant, however peers come and go. Within
// a round each item goes to a participant by rendezvous hashing with
// bounded load: each peer gets at most ⌈items/participants⌉ items.
//
// Everything is a pure function of (run, manifest, mixture, PerRound,
// round, participants): the round record lists the participants, so
// anyone can recompute who trained on what.
type Schedule struct {
	Run      string
	Shards   []ShardEntry
	Mixture  Mixture
	PerRound int // items per round

	cache map[int][]Item
}

// NewSchedule checks the arguments and sizes an epoch.
func NewSchedule(run string, shards []ShardEntry, mix Mixture, perRound int) (*Schedule, error) {
	if err := mix.Validate(); err != nil {
		return nil, err
	}
	if perRound <= 0 {
		return nil, fmt.Errorf("schedule: items per round %d must be positive", perRound)
	}
	s := &Schedule{Run: run, Shards: shards, Mixture: mix, PerRound: perRound, cache: map[int][]Item{}}
	if len(s.epoch(0)) == 0 {
		return nil, fmt.Errorf("schedule: stage %q has no shards with a positive weight", mix.Stage)
	}
	return s, nil
}

func (s *Schedule) epoch(e int) []Item {
	if items, ok := s.cache[e]; ok {
		return items
	}
	if len(s.cache) > 4 {
		clear(s.cache)
	}
	items := EpochItems(s.Run, s.Shards, s.Mixture, e)
	s.cache[e] = items
	return items
}

// RoundItems returns the items of round r with their epoch. Epoch lengths
// can differ (fractional weights), so the position of round r is found by
// walking epochs from the start.
func (s *Schedule) RoundItems(r int) []Item {
	pos := r * s.PerRound
	var out []Item
	for e := 0; len(out) < s.PerRound; e++ {
		items := s.epoch(e)
		if pos >= len(items) {
			pos -= len(items)
			continue
		}
		take := min(len(items)-pos, s.PerRound-len(out))
		out = append(out, items[pos:pos+take]...)
		pos = 0
	}
	return out
}

// Assign maps each participant to its items for round r. Participants are
// peer IDs; their order does not matter.
func (s *Schedule) Assign(r int, participants []string) map[string][]Item {
	out := map[string][]Item{}
	if len(participants) == 0 {
		return out
	}
	peers := append([]string(nil), participants...)
	sort.Strings(peers)
	items := s.RoundItems(r)
	limit := (len(items) + len(peers) - 1) / len(peers)
	load := map[string]int{}
	rs := strconv.Itoa(r)
	type scored struct {
		peer  string
		score uint64
	}
	sc := make([]scored, len(peers))
	for _, it := range items {
		id := s.Shards[it.Shard].CID.CID + "#" + strconv.Itoa(it.Copy)
		for i, p := range peers {
			sc[i] = scored{p, hash64("assign", s.Run, s.Mixture.Stage, rs, id, p)}
		}
		sort.Slice(sc, func(a, b int) bool {
			return sc[a].score > sc[b].score || sc[a].score == sc[b].score && sc[a].peer < sc[b].peer
		})
		for _, c := range sc {
			if load[c.peer] < limit {
				load[c.peer]++
				out[c.peer] = append(out[c.peer], it)
				break
			}
		}
	}
	return out
}
