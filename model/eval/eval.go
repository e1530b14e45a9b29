package eval

import (
	"fmt"
	"math"
	"sort"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

// Group is text of one language and source, as rows of SeqLen+1 token
// ids (inputs then the last target), padded with pad.
type Group struct {
	Language, Source string
	Rows             [][]int32
}

// Result is the loss of one group.
type Result struct {
	Language string  `json:"language"`
	Source   string  `json:"source"`
	Tokens   int64   `json:"tokens"` // targets scored
	Bytes    int64   `json:"bytes"`  // UTF-8 bytes the targets spell
	Loss     float64 `json:"loss"`   // mean negative log-likelihood, nats per token
	PPL      float64 `json:"ppl"`
	BPB      float64 `json:"bpb"` // bits per byte
}

// Loss scores every row of every group (batch rows at a time) and returns
// one Result per group, sorted by language then source. Rows of a group
// must share one length, at most the model's max_seq + 1.
func Loss(m *model.Model, tk *tokenizer.Tokenizer, groups []Group, batch int, pad int32) ([]Result, error) {
	if batch < 1 {
		batch = 1
	}
	var out []Result
	for _, g := range groups {
		if len(g.Rows) == 0 {
			continue
		}
		T := len(g.Rows[0]) - 1
		if T < 1 || T > m.Config.MaxSeq {
			return nil, fmt.Errorf("eval: %s/%s rows of %d tokens (the model takes 2 to %d)", g.Language, g.Source, T+1, m.Config.MaxSeq+1)
		}
		r := Result{Language: g.Language, Source: g.Source}
		var nll float64
		tokens := make([]int32, 0, batch*T)
		targets := make([]int32, 0, batch*T)
		flush := func() error {
			if len(tokens) == 0 {
				return nil
			}
			b := len(tokens) / T
			n := 0
			for _, t := range targets {
				if t != kernels.IgnoreIndex {
					n++
				}
			}
			if n > 0 {
				l, err := m.Forward(tokens, targets, b, T, false)
				if err != nil {
					return err
				}
				nll += float64(l) * float64(n)
			}
			tokens, targets = tokens[:0], targets[:0]
			return nil
		}
		for _, row := range g.Rows {
			if len(row) != T+1 {
				return nil, fmt.Errorf("eval: %s/%s: a row of %d tokens among rows of %d", g.Language, g.Source, len(row), T+1)
			}
			for i := 0; i < T; i++ {
				in, tg := row[i], row[i+1]
				if in == pad {
					in = int32(m.Config.EOS) // padding after the text: never a scored context
				}
				if in < 0 || int(in) >= m.Config.Vocab {
					return nil, fmt.Errorf("eval: token %d outside the model's vocabulary %d", in, m.Config.Vocab)
				}
				tokens = append(tokens, in)
				if tg == pad || tg < 0 || int(tg) >= m.Config.Vocab {
					targets = append(targets, kernels.IgnoreIndex)
					continue
				}
				targets = append(targets, tg)
				r.Tokens++
				if !tk.IsSpecial(tg) {
					b, _ := tk.Token(tg)
					r.Bytes += int64(len(b))
				}
			}
			if len(tokens) == batch*T {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
		if err := flush(); err != nil {
			return nil, err
		}
		if r.Tokens == 0 {
			continue
		}
		r.Loss = nll / float64(r.Tokens)
		r.PPL = math.Exp(r.Loss)
		if r.Bytes > 0 {
			r.BPB = nll / math.Ln2 / float64(r.Bytes)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Language < out[j].Language || out[i].Language == out[j].Language && out[i].Source < out[j].Source
	})
	return out, nil
}

// Rows packs documents (token ids, each ending with eos) into rows of
// seq+1 tokens, the next row starting with the last token of the previous
// one (so every token but the first is a target once); the last row is
// padded with pad.
func Rows(docs [][]int32, seq int, pad int32) [][]int32 {
	var stream []int32
	for _, d := range docs {
		stream = append(stream, d...)
	}
	var rows [][]int32
	for start := 0; start+1 < len(stream); start += seq {
		row := make([]int32, seq+1)
		n := copy(row, stream[start:min(len(stream), start+seq+1)])
		for i := n; i < len(row); i++ {
			row[i] = pad
		}
		rows = append(rows, row)
	}
	return rows
}
