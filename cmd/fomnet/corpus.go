package main

import (
	"strings"

	"github.com/fomnet/fomnet/gradsync/simulate"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
)

// addBuiltin adds the built-in bilingual corpus and, when synthetic > 0,
// that many documents of the synthetic generator (seeded) to corpus, as
// byte-level text.
func addBuiltin(corpus *model.Corpus, c model.Config, synthetic int, seed uint64) error {
	for _, f := range sharding.Builtin() {
		if err := corpus.AddText(f.Name, f.Text, c.Vocab, int32(c.EOS)); err != nil {
			return err
		}
	}
	if synthetic <= 0 {
		return nil
	}
	var sb strings.Builder
	for _, d := range sharding.Synthetic(seed, synthetic) {
		sb.WriteString(d.Text)
		sb.WriteString("\n\n")
	}
	return corpus.AddText(sharding.SynthGenerator, []byte(sb.String()), c.Vocab, int32(c.EOS))
}

// benchCorpus is bench sync's data, by source: the built-in natural text
// and any natural files (read as `data prepare` reads them: text, .tsv,
// .jsonl, .parquet), and the synthetic documents. Each file is split on its
// own with 10% held out, so that the held-out natural text is a share of
// every natural file and not the tail of the stream. The held-out sources
// are "natural" and, where there are synthetic documents, "generated"; val
// is both together.
func benchCorpus(c model.Config, synthetic int, natural []string) (train, val *model.Corpus, sources []simulate.Source, err error) {
	var trains, nat []*model.Corpus
	split := func(name string, text []byte) (*model.Corpus, error) {
		one := &model.Corpus{}
		if err := one.AddText(name, text, c.Vocab, int32(c.EOS)); err != nil {
			return nil, err
		}
		tr, va := one.Split(0.1, int32(c.EOS))
		trains = append(trains, tr)
		return va, nil
	}
	for _, f := range sharding.Builtin() {
		va, err := split(f.Name, f.Text)
		if err != nil {
			return nil, nil, nil, err
		}
		nat = append(nat, va)
	}
	for _, path := range natural {
		var sb strings.Builder
		if _, err := sharding.ReadDocs([]string{path}, sharding.IngestOptions{}, func(d sharding.Doc) error {
			sb.WriteString(d.Text)
			sb.WriteString("\n\n")
			return nil
		}); err != nil {
			return nil, nil, nil, err
		}
		va, err := split(path, []byte(sb.String()))
		if err != nil {
			return nil, nil, nil, err
		}
		nat = append(nat, va)
	}
	sources = append(sources, simulate.Source{Name: "natural", Val: concatCorpora(nat...)})
	if synthetic > 0 {
		var sb strings.Builder
		for _, d := range sharding.Synthetic(1, synthetic) {
			sb.WriteString(d.Text)
			sb.WriteString("\n\n")
		}
		va, err := split(sharding.SynthGenerator, []byte(sb.String()))
		if err != nil {
			return nil, nil, nil, err
		}
		sources = append(sources, simulate.Source{Name: "generated", Val: va})
	}
	var vals []*model.Corpus
	for _, s := range sources {
		vals = append(vals, s.Val)
	}
	return concatCorpora(trains...), concatCorpora(vals...), sources, nil
}

// concatCorpora is one token stream of cs, in order.
func concatCorpora(cs ...*model.Corpus) *model.Corpus {
	out := &model.Corpus{}
	for _, c := range cs {
		out.Tokens = append(out.Tokens, c.Tokens...)
		out.Docs += c.Docs
	}
	return out
}
