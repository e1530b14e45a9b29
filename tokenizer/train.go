package tokenizer

import (
	"container/heap"
	"context"
	"fmt"
	"iter"
	"sort"

	"golang.org/x/text/unicode/norm"
)

// TrainConfig controls BPE training.
type TrainConfig struct {
	Vocab    int      // target vocabulary size, including bytes and specials
	MinFreq  int      // a pair must occur at least this often to be merged (default 2)
	Specials []string // special tokens (default DefaultSpecials)
	// Progress, if set, is called every 1000 merges with the merges done.
	Progress func(done, total int)
}

// Train learns merges from texts (NFC-normalised first) until the
// vocabulary reaches tc.Vocab or no pair occurs MinFreq times. Ties between
// equally frequent pairs go to the pair with the smaller ids, so the result
// depends only on the texts and the config.
func Train(ctx context.Context, texts iter.Seq[string], tc TrainConfig) (*Tokenizer, error) {
	if tc.Specials == nil {
		tc.Specials = DefaultSpecials
	}
	if tc.MinFreq <= 0 {
		tc.MinFreq = 2
	}
	t, err := newTokenizer(tc.Specials)
	if err != nil {
		return nil, err
	}
	if tc.Vocab < len(t.tokens) {
		return nil, fmt.Errorf("tokenizer: vocabulary %d is smaller than the %d byte and special tokens", tc.Vocab, len(t.tokens))
	}
	// Count pieces. Special-token text is cut out first, as in Encode, so
	// no merge can rebuild a special token's text.
	counts := map[string]int64{}
	for text := range texts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		text = norm.NFC.String(text)
		for len(text) > 0 {
			at, sp := t.nextSpecial(text)
			Split(text[:at], func(p string) { counts[p]++ })
			if sp < 0 {
				break
			}
			text = text[at+len(t.specials[sp]):]
		}
	}
	tr := newTrainer(counts)
	byBytes := map[string]int32{}
	for id, tok := range t.tokens {
		if id < 256 || id >= 256+len(t.specials) {
			byBytes[string(tok)] = int32(id)
		}
	}
	total := tc.Vocab - len(t.tokens)
	done := 0
	for len(t.tokens) < tc.Vocab {
		if done%1000 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if tc.Progress != nil && done > 0 {
				tc.Progress(done, total)
			}
		}
		p, n := tr.best()
		if n < int64(tc.MinFreq) {
			break
		}
		id := t.addMerge(p.a, p.b, byBytes)
		tr.apply(p, id)
		done++
	}
	return t, nil
}

// trainer holds the words (unique pieces) as symbol sequences with counts,
// the count of every adjacent pair, where each pair occurs, and a max-heap
// of pairs with lazily updated counts.
type trainer struct {
	words [][]int32
	freq  []int64
	pairs map[pair]int64
	where map[pair][]int32
	h     pairHeap
	stamp []int32 // per word: last merge that touched it (dedupes where)
	step  int32
}

func newTrainer(counts map[string]int64) *trainer {
	tr := &trainer{pairs: map[pair]int64{}, where: map[pair][]int32{}}
	// Words in sorted order so that where-lists (and thus nothing observable,
	// but memory layout and timing) are reproducible.
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for wi, k := range keys {
		w := make([]int32, len(k))
		for i := 0; i < len(k); i++ {
			w[i] = int32(k[i])
		}
		tr.words = append(tr.words, w)
		tr.freq = append(tr.freq, counts[k])
		for i := 0; i+1 < len(w); i++ {
			p := pair{w[i], w[i+1]}
			tr.pairs[p] += counts[k]
			tr.where[p] = append(tr.where[p], int32(wi))
		}
	}
	tr.stamp = make([]int32, len(tr.words))
	for p, n := range tr.pairs {
		tr.h = append(tr.h, pairCount{p, n})
	}
	heap.Init(&tr.h)
	return tr
}

// best returns the most frequent pair (smallest ids on ties) and its count.
func (tr *trainer) best() (pair, int64) {
	for tr.h.Len() > 0 {
		top := tr.h[0]
		cur := tr.pairs[top.p]
		if cur == top.n {
			return top.p, cur
		}
		heap.Pop(&tr.h)
		if cur > 0 {
			heap.Push(&tr.h, pairCount{top.p, cur})
		}
	}
	return pair{}, 0
}

// apply merges p into id in every word that has it, keeping pair counts
// and the heap up to date.
func (tr *trainer) apply(p pair, id int32) {
	tr.step++
	changed := map[pair]bool{}
	for _, wi := range tr.where[p] {
		if tr.stamp[wi] == tr.step {
			continue
		}
		tr.stamp[wi] = tr.step
		w, f := tr.words[wi], tr.freq[wi]
		has := false
		for i := 0; i+1 < len(w); i++ {
			if w[i] == p.a && w[i+1] == p.b {
				has = true
				break
			}
		}
		if !has {
			continue
		}
		for i := 0; i+1 < len(w); i++ {
			q := pair{w[i], w[i+1]}
			tr.pairs[q] -= f
			changed[q] = true
		}
		out := w[:0]
		for i := 0; i < len(w); i++ {
			if i+1 < len(w) && w[i] == p.a && w[i+1] == p.b {
				out = append(out, id)
				i++
				continue
			}
			out = append(out, w[i])
		}
		tr.words[wi] = out
		for i := 0; i+1 < len(out); i++ {
			q := pair{out[i], out[i+1]}
			tr.pairs[q] += f
			if q.a == id || q.b == id { // pairs without id were in this word before
				tr.where[q] = append(tr.where[q], wi)
			}
			changed[q] = true
		}
	}
	delete(tr.where, p)
	delete(tr.pairs, p)
	for q := range changed {
		if n := tr.pairs[q]; n > 0 {
			heap.Push(&tr.h, pairCount{q, n})
		} else {
			delete(tr.pairs, q)
			delete(tr.where, q)
		}
	}
}

type pairCount struct {
	p pair
	n int64
}

type pairHeap []pairCount

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].n != h[j].n {
		return h[i].n > h[j].n
	}
	if h[i].p.a != h[j].p.a {
		return h[i].p.a < h[j].p.a
	}
	return h[i].p.b < h[j].p.b
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairCount)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
