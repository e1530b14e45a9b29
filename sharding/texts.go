package sharding

import (
	"errors"
	"iter"
)

// Texts streams the documents of inputs (then the built-in corpus and
// synthetic documents when asked) as plain texts, for training a tokenizer.
// The returned function reports what was read (documents, bytes and the
// skipped malformed records of the inputs) and any read error, once the
// sequence has ended; stopping the sequence early is not an error.
func Texts(inputs []Input, builtin bool, synthetic int, seed uint64) (iter.Seq[string], func() (IngestStats, error)) {
	var (
		readErr error
		total   IngestStats
	)
	stop := errors.New("stop")
	seq := func(yield func(string) bool) {
		for _, in := range inputs {
			st, err := ReadDocs([]string{in.Path}, IngestOptions{Field: in.Field}, func(d Doc) error {
				if !yield(d.Text) {
					return stop
				}
				return nil
			})
			total.Files += st.Files
			total.Docs += st.Docs
			total.Bytes += st.Bytes
			total.Skipped += st.Skipped
			for _, m := range st.FirstBad {
				if len(total.FirstBad) < 20 {
					total.FirstBad = append(total.FirstBad, m)
				}
			}
			if err == stop {
				return
			}
			if err != nil {
				readErr = err
				return
			}
		}
		if builtin {
			for _, f := range Builtin() {
				for _, p := range splitParagraphs(string(f.Text)) {
					if !yield(p) {
						return
					}
				}
			}
		}
		if synthetic > 0 {
			for _, d := range Synthetic(seed, synthetic) {
				if !yield(d.Text) {
					return
				}
			}
		}
	}
	return seq, func() (IngestStats, error) { return total, readErr }
}
