package sharding

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/fomnet/fomnet/tokenizer"
)

// PieceFraud shows that a piece is not its part analysed: the document
// where it departs (Line 0: its counts, or its bytes as a whole), and how.
// Anyone with the plan's inputs finds the same by checking the piece with
// that document analysed in full.
type PieceFraud struct {
	Part   int    `json:"part"`
	In     int    `json:"in"` // the input's index in the plan
	Input  string `json:"input,omitempty"`
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// Doc names the document as one int (DocIndex), −1 for the piece as a
// whole.
func (f *PieceFraud) Doc() int {
	if f.Line == 0 {
		return -1
	}
	return DocIndex(f.In, f.Line)
}

// DocIndex names a document of a plan by its input and line as one int.
func DocIndex(in, line int) int { return in<<40 | line }

func (f *PieceFraud) Error() string {
	if f.Line == 0 {
		return fmt.Sprintf("piece of part %d: %s", f.Part, f.Reason)
	}
	return fmt.Sprintf("piece of part %d: %s line %d: %s", f.Part, f.Input, f.Line, f.Reason)
}

// CheckPiece checks piece against part of plan pl, re-executing it: every
// document of the part is read, normalised, put through the filters and
// given its dedup key — the cheap stages — which must give exactly the
// piece's records (one for each document that passes, in order, with its
// size, language, key and twin) and its counts of dropped and malformed
// documents. The documents full says yes to (by input and line) are also
// signed and tokenised, and their signatures and token ids compared; for
// the others the piece's are taken on trust. It returns nil, a
// *PieceFraud, or another error when it could not check (an input
// missing, ctx ended), and how many documents it analysed in full.
func CheckPiece(ctx context.Context, pl *Plan, tk *tokenizer.Tokenizer, part, threads int, piece io.Reader, full func(in, line int) bool) (int, error) {
	if part < 0 || part >= len(pl.Parts) {
		return 0, fmt.Errorf("check piece: part %d of a plan of %d", part, len(pl.Parts))
	}
	if err := pl.check(ctx, tk); err != nil {
		return 0, err
	}
	hash, err := pl.Hash()
	if err != nil {
		return 0, err
	}
	analysed := 0
	fraud := func(d *pdoc, format string, args ...any) error {
		f := &PieceFraud{Part: part, Reason: fmt.Sprintf(format, args...)}
		if d != nil {
			f.In, f.Input, f.Line = d.in, pl.inputName(d.in), d.Line
		}
		return f
	}
	cfg := pl.Config
	p := &pieceReader{r: bufio.NewReaderSize(piece, 1<<20), pl: pl,
		vocab: tk.Vocab(), sigs: NewDeduper(cfg.Filters.NearDupThreshold)}
	if err := p.header(hash, part); err != nil {
		return 0, fraud(nil, "%v", err)
	}
	var (
		malformed int64
		filtered  = map[string][2]int64{}
		firsts    = map[[32]byte]bool{}
		n         uint64
		rec       pdoc
	)
	consume := func(d *pdoc) error {
		if d.reason != "" {
			f := filtered[d.reason]
			filtered[d.reason] = [2]int64{f[0] + 1, f[1] + int64(len(d.Text))}
			return nil
		}
		switch more, err := p.next(); {
		case err != nil:
			return fraud(d, "%v", err)
		case !more:
			return fraud(d, "the document passes the filters; the piece's records end before it")
		}
		if err := p.record(&rec); err != nil {
			return fraud(d, "%v", err)
		}
		n++
		twin := firsts[d.key]
		firsts[d.key] = true
		switch {
		case rec.in != d.in || rec.Line != d.Line:
			return fraud(d, "the document passes the filters; the piece's next record is %s line %d", pl.inputName(rec.in), rec.Line)
		case rec.bytes != int64(len(d.Text)):
			return fraud(d, "%d bytes recorded, %d read", rec.bytes, len(d.Text))
		case rec.key != d.key:
			return fraud(d, "dedup key %x recorded, %x computed", rec.key[:4], d.key[:4])
		case rec.twin != twin:
			return fraud(d, "recorded as a twin %v; an earlier document of its key passed: %v", rec.twin, twin)
		case twin:
			return nil
		case rec.lang != d.lang || rec.pair != d.pair:
			return fraud(d, "language %s (pair %v) recorded, %s (%v) found", rec.lang, rec.pair, d.lang, d.pair)
		case !full(d.in, d.Line):
			return nil
		}
		analysed++
		return sameEncoding(&rec, d, func(what string) error { return fraud(d, "%s differ from the document's, analysed again", what) })
	}
	newAnalyser := func() *analyser {
		return &analyser{filters: cfg.Filters, dd: NewDeduper(cfg.Filters.NearDupThreshold), seen: func([32]byte) bool { return false },
			tk: tk, trainRoles: trainRolesOf(cfg), encodes: func(d *pdoc) bool { return full(d.in, d.Line) }}
	}
	if err := runPipeline(ctx, threads, newAnalyser, pl.partDocs(part, &malformed), consume); err != nil {
		return analysed, err
	}
	switch more, err := p.next(); {
	case err != nil:
		return analysed, fraud(nil, "%v", err)
	case more:
		return analysed, fraud(nil, "records after the last document of the part that passes the filters")
	}
	gotMalformed, gotFiltered, err := p.trailer(n)
	switch {
	case err != nil:
		return analysed, fraud(nil, "%v", err)
	case gotMalformed != malformed:
		return analysed, fraud(nil, "%d malformed lines counted, %d read", gotMalformed, malformed)
	case !maps.Equal(gotFiltered, filtered):
		return analysed, fraud(nil, "dropped documents counted %v, found %v", gotFiltered, filtered)
	}
	return analysed, nil
}

// sameEncoding compares what encode makes of a document with a record's.
func sameEncoding(rec, d *pdoc, differ func(what string) error) error {
	switch {
	case (rec.sig == nil) != (d.sig == nil) || rec.sig != nil && rec.sig.hashes != d.sig.hashes:
		return differ("MinHash signatures")
	case !slices.Equal(rec.ids, d.ids) || !slices.Equal(rec.mask, d.mask):
		return differ("token ids")
	case !slices.Equal(rec.rids, d.rids) || !slices.Equal(rec.rmask, d.rmask):
		return differ("rejected answer's token ids")
	case (rec.err == nil) != (d.err == nil) || rec.err != nil && rec.err.Error() != d.err.Error():
		return differ("encoding errors")
	}
	return nil
}

// IsPieceFraud reports whether err shows a piece is not its part's.
func IsPieceFraud(err error) (*PieceFraud, bool) {
	var f *PieceFraud
	return f, errors.As(err, &f)
}

// SampleDocs says yes to about share of documents, chosen by a hash of
// seed, input and line: which ones, only whoever holds seed knows.
func SampleDocs(share float64, seed uint64) func(in, line int) bool {
	if share >= 1 {
		return func(int, int) bool { return true }
	}
	limit := uint64(max(share, 0) * (1 << 63) * 2)
	return func(in, line int) bool {
		z := seed + uint64(in+1)*0x9e3779b97f4a7c15 + uint64(line)*0xd1b54a32d192ed03
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		return z^z>>31 < limit
	}
}
