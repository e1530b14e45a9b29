package main

import (
	"strings"

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
