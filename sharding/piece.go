package sharding

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/fomnet/fomnet/tokenizer"
)

// A piece is one part of a plan analysed, as bytes:
//
//	"FOMPIECE" version:byte plan:[32]byte part:uvarint
//	(1 record)… 0
//	malformed:uvarint filtered:uvarint × (reason:string documents:uvarint bytes:uvarint)
//	records:uvarint
//	record: flags:byte input:uvarint line:varint bytes:uvarint
//	        twin: first:uvarint
//	        else: lang:byte key:[32]byte has-signature:byte [64]uint32 ids [mask] [pair: ids [mask]] [error: string]
//	ids: n:uvarint n × uvarint;  mask: ⌈n/8⌉ bytes, bit i of byte i/8
//	string: n:uvarint n bytes
//
// Documents the filters drop are only counted (by reason); every other
// document is a record in input order, written as it is analysed (a
// piece is never held in memory; the counts come last). line is the
// difference from the record before's. A twin (an earlier document of the
// part had the same dedup key) carries only the number of that document
// among the records that are not twins.

const (
	pieceMagic   = "FOMPIECE"
	pieceVersion = 1
)

const (
	recTwin = 1 << iota
	recPair
	recMasked
	recError
)

var pieceLangs = []string{"ko", "en", "mixed", "none"}

// PreparePart analyses part of a plan (as Prepare's workers do, on
// threads goroutines) and writes its piece to w.
func PreparePart(ctx context.Context, pl *Plan, tk *tokenizer.Tokenizer, part, threads int, w io.Writer) error {
	return preparePart(ctx, pl, tk, part, threads, w, nil)
}

// preparePart is PreparePart; tamper, in tests, changes each document
// analysed before it is written (a cheating machine).
func preparePart(ctx context.Context, pl *Plan, tk *tokenizer.Tokenizer, part, threads int, w io.Writer, tamper func(*pdoc)) error {
	if part < 0 || part >= len(pl.Parts) {
		return fmt.Errorf("prepare part: part %d of a plan of %d", part, len(pl.Parts))
	}
	if err := pl.check(ctx, tk); err != nil {
		return err
	}
	hash, err := pl.Hash()
	if err != nil {
		return err
	}
	cfg := pl.Config
	local := NewDeduper(0) // keys of the documents of this part that passed the filters
	sigs := NewDeduper(cfg.Filters.NearDupThreshold)
	var (
		malformed int64
		filtered  = map[string][2]int64{}
		n         int
		buf       []byte
		firsts    = map[[32]byte]uint64{} // key → number among the records not twins
		prevLine  int
	)
	bw := bufio.NewWriterSize(w, 1<<20)
	head := append([]byte(pieceMagic), pieceVersion)
	head = append(head, hash[:]...)
	if _, err := bw.Write(binary.AppendUvarint(head, uint64(part))); err != nil {
		return err
	}
	read := pl.partDocs(part, &malformed)
	consume := func(d *pdoc) error {
		if tamper != nil {
			tamper(d)
		}
		if d.reason != "" {
			f := filtered[d.reason]
			filtered[d.reason] = [2]int64{f[0] + 1, f[1] + int64(len(d.Text))}
			return nil
		}
		first, twin := firsts[d.key]
		if !twin {
			first = uint64(len(firsts))
			firsts[d.key] = first
			local.Decide(d.key, nil)
		}
		d.twin = twin // a worker may have missed a twin being analysed beside it
		buf = appendRecord(append(buf[:0], 1), d, first, d.Line-prevLine)
		prevLine = d.Line
		n++
		_, err := bw.Write(buf)
		return err
	}
	newAnalyser := func() *analyser {
		return &analyser{filters: cfg.Filters, dd: sigs, seen: local.Kept, tk: tk, trainRoles: trainRolesOf(cfg)}
	}
	if err := runPipeline(ctx, threads, newAnalyser, read, consume); err != nil {
		return err
	}
	out := binary.AppendUvarint([]byte{0}, uint64(malformed))
	reasons := make([]string, 0, len(filtered))
	for r := range filtered {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	out = binary.AppendUvarint(out, uint64(len(reasons)))
	for _, r := range reasons {
		out = appendString(out, r)
		out = binary.AppendUvarint(out, uint64(filtered[r][0]))
		out = binary.AppendUvarint(out, uint64(filtered[r][1]))
	}
	out = binary.AppendUvarint(out, uint64(n))
	if _, err := bw.Write(out); err != nil {
		return err
	}
	return bw.Flush()
}

// trainRolesOf is the roles whose turns cfg trains on (default: the
// assistant's).
func trainRolesOf(cfg PrepareConfig) []string {
	if len(cfg.TrainRoles) == 0 {
		return []string{tokenizer.RoleAssistant}
	}
	return cfg.TrainRoles
}

// partDocs reads the documents of part in order (for runPipeline),
// counting the lines ingestion skips in malformed.
func (pl *Plan) partDocs(part int, malformed *int64) func(yield func(Doc, int) error) error {
	cfg := pl.Config
	generated := builtinSources(cfg)
	return func(yield func(Doc, int) error) error {
		for _, r := range pl.Parts[part] {
			if r.Input >= len(cfg.Inputs) {
				g := generated[r.Input-len(cfg.Inputs)]
				for _, d := range g.docs[r.Start:r.End] {
					d.File = g.rec.Name
					if err := yield(d, r.Input); err != nil {
						return err
					}
				}
				continue
			}
			in := cfg.Inputs[r.Input]
			if err := pl.sameSize(r.Input); err != nil {
				return err
			}
			var st IngestStats
			err := readSpan(pl.inputPath(r.Input), in.Format, IngestOptions{Field: in.Field}, &st, r.span, func(d Doc) error { return yield(d, r.Input) })
			*malformed += int64(st.Skipped)
			if err != nil {
				return err
			}
		}
		return nil
	}
}

func appendRecord(b []byte, d *pdoc, first uint64, dline int) []byte {
	var flags byte
	if d.twin {
		flags |= recTwin
	}
	if d.pair {
		flags |= recPair
	}
	if d.mask != nil {
		flags |= recMasked
	}
	if d.err != nil {
		flags |= recError
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(d.in))
	b = binary.AppendVarint(b, int64(dline))
	b = binary.AppendUvarint(b, uint64(len(d.Text)))
	if d.twin {
		return binary.AppendUvarint(b, first)
	}
	b = append(b, byte(slices.Index(pieceLangs, d.lang)))
	b = append(b, d.key[:]...)
	if d.sig == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		for _, h := range d.sig.hashes {
			b = binary.LittleEndian.AppendUint32(b, h)
		}
	}
	b = appendIDs(b, d.ids, d.mask, flags&recMasked != 0)
	if d.pair {
		b = appendIDs(b, d.rids, d.rmask, flags&recMasked != 0)
	}
	if d.err != nil {
		b = appendString(b, d.err.Error())
	}
	return b
}

func appendIDs(b []byte, ids []int32, mask []bool, masked bool) []byte {
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(id))
	}
	if masked {
		bits := make([]byte, (len(ids)+7)/8)
		for i, m := range mask {
			if m {
				bits[i/8] |= 1 << (i % 8)
			}
		}
		b = append(b, bits...)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// ErrPiece reports a piece that is not one of the plan's, or not a piece.
var ErrPiece = errors.New("piece")

// pieceReader decodes a piece, checking every field against the plan.
type pieceReader struct {
	r     *bufio.Reader
	name  string // for errors
	pl    *Plan
	vocab int
	sigs  *Deduper // for the band hashes of signatures read
	off   int64
	keys  [][32]byte // of the records read that are not twins
	line  int        // of the record before
}

func (p *pieceReader) fail(format string, args ...any) error {
	if p.name == "" {
		return fmt.Errorf("%w: at byte %d: %s", ErrPiece, p.off, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%w %s: at byte %d: %s", ErrPiece, p.name, p.off, fmt.Sprintf(format, args...))
}

func (p *pieceReader) full(b []byte) error {
	n, err := io.ReadFull(p.r, b)
	p.off += int64(n)
	if err != nil {
		return p.fail("truncated (%v)", err)
	}
	return nil
}

func (p *pieceReader) byte() (byte, error) {
	var b [1]byte
	err := p.full(b[:])
	return b[0], err
}

func (p *pieceReader) uvarint(limit uint64, what string) (uint64, error) {
	start := p.off
	v, err := binary.ReadUvarint(byteCounter{p})
	if err != nil {
		return 0, p.fail("%s: %v", what, err)
	}
	if v > limit {
		p.off = start
		return 0, p.fail("%s %d is more than %d", what, v, limit)
	}
	return v, nil
}

type byteCounter struct{ p *pieceReader }

func (c byteCounter) ReadByte() (byte, error) {
	b, err := c.p.r.ReadByte()
	if err == nil {
		c.p.off++
	}
	return b, err
}

func (p *pieceReader) string(limit uint64, what string) (string, error) {
	n, err := p.uvarint(limit, what+" length")
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	return string(b), p.full(b)
}

// header reads the head of a piece and checks it is part part of the
// plan of this hash.
func (p *pieceReader) header(hash [32]byte, part int) error {
	var head [len(pieceMagic) + 1 + 32]byte
	if err := p.full(head[:]); err != nil {
		return err
	}
	switch {
	case string(head[:len(pieceMagic)]) != pieceMagic:
		return p.fail("not a piece (magic %q)", head[:len(pieceMagic)])
	case head[len(pieceMagic)] != pieceVersion:
		return p.fail("version %d (this fomnet reads %d)", head[len(pieceMagic)], pieceVersion)
	case [32]byte(head[len(pieceMagic)+1:]) != hash:
		return p.fail("made for another plan (%x…)", head[len(pieceMagic)+1:len(pieceMagic)+9])
	}
	got, err := p.uvarint(1<<31, "part")
	if err != nil {
		return err
	}
	if int(got) != part {
		return p.fail("part %d where part %d belongs", got, part)
	}
	return nil
}

// next reads the tag before a record: true for a record, false for the
// trailer.
func (p *pieceReader) next() (bool, error) {
	tag, err := p.byte()
	if err != nil {
		return false, err
	}
	if tag > 1 {
		return false, p.fail("tag %d (want 1 before a record, 0 before the counts)", tag)
	}
	return tag == 1, nil
}

// trailer reads the counts after the last of n records, and checks
// nothing follows.
func (p *pieceReader) trailer(n uint64) (malformed int64, filtered map[string][2]int64, err error) {
	m, err := p.uvarint(1<<62, "malformed count")
	if err != nil {
		return 0, nil, err
	}
	nr, err := p.uvarint(uint64(len(filterReasons)), "filter reasons")
	if err != nil {
		return 0, nil, err
	}
	filtered = map[string][2]int64{}
	for range nr {
		r, err := p.string(64, "reason")
		if err != nil {
			return 0, nil, err
		}
		if !slices.Contains(filterReasons, r) {
			return 0, nil, p.fail("filter reason %q", r)
		}
		if _, dup := filtered[r]; dup {
			return 0, nil, p.fail("filter reason %q twice", r)
		}
		docs, err := p.uvarint(1<<62, "documents")
		if err != nil {
			return 0, nil, err
		}
		if docs == 0 {
			return 0, nil, p.fail("no documents dropped for %s", r)
		}
		size, err := p.uvarint(1<<62, "bytes")
		if err != nil {
			return 0, nil, err
		}
		filtered[r] = [2]int64{int64(docs), int64(size)}
	}
	count, err := p.uvarint(1<<62, "record count")
	if err != nil {
		return 0, nil, err
	}
	if count != n {
		return 0, nil, p.fail("%d records counted, %d read", count, n)
	}
	if _, err := p.r.ReadByte(); !errors.Is(err, io.EOF) {
		return 0, nil, p.fail("bytes after the end")
	}
	return int64(m), filtered, nil
}

// filterReasons are the reasons FilterConfig.Check gives.
var filterReasons = []string{ReasonTooShort, ReasonTooLong, ReasonControl, ReasonRepetitive, ReasonLanguage}

// record reads one record into d (fields the packer reads).
func (p *pieceReader) record(d *pdoc) error {
	*d = pdoc{}
	flags, err := p.byte()
	if err != nil {
		return err
	}
	if flags >= recError<<1 {
		return p.fail("record flags %#x", flags)
	}
	d.twin, d.pair = flags&recTwin != 0, flags&recPair != 0
	in, err := p.uvarint(uint64(len(p.pl.Inputs)-1), "input")
	if err != nil {
		return err
	}
	d.in = int(in)
	d.File = p.pl.inputName(d.in)
	dline, err := binary.ReadVarint(byteCounter{p})
	if err != nil {
		return p.fail("line: %v", err)
	}
	if dline < -(1<<40) || dline > 1<<40 {
		return p.fail("line step %d", dline)
	}
	p.line += int(dline)
	d.Line = p.line
	size, err := p.uvarint(1<<62, "bytes")
	if err != nil {
		return err
	}
	d.bytes = int64(size)
	if d.twin {
		if len(p.keys) == 0 {
			return p.fail("a twin before any document")
		}
		first, err := p.uvarint(uint64(len(p.keys)-1), "twin of")
		if err != nil {
			return err
		}
		d.key = p.keys[first]
		return nil
	}
	lang, err := p.byte()
	if err != nil {
		return err
	}
	if int(lang) >= len(pieceLangs) {
		return p.fail("language %d", lang)
	}
	d.lang = pieceLangs[lang]
	if err := p.full(d.key[:]); err != nil {
		return err
	}
	p.keys = append(p.keys, d.key)
	hasSig, err := p.byte()
	if err != nil {
		return err
	}
	switch {
	case hasSig > 1:
		return p.fail("signature flag %d", hasSig)
	case (hasSig == 1) != (p.pl.Config.Filters.NearDupThreshold > 0):
		return p.fail("a signature where near-dedup is %v", p.pl.Config.Filters.NearDupThreshold > 0)
	case hasSig == 1:
		var b [numHashes * 4]byte
		if err := p.full(b[:]); err != nil {
			return err
		}
		var h minhash
		for i := range h {
			h[i] = binary.LittleEndian.Uint32(b[4*i:])
		}
		d.sig = p.sigs.bandsOf(h)
	}
	masked := flags&recMasked != 0
	if d.ids, d.mask, err = p.ids(masked); err != nil {
		return err
	}
	if d.pair {
		if d.rids, d.rmask, err = p.ids(masked); err != nil {
			return err
		}
	}
	if flags&recError != 0 {
		msg, err := p.string(1<<16, "error")
		if err != nil {
			return err
		}
		d.err = errors.New(msg)
	}
	return nil
}

func (p *pieceReader) ids(masked bool) ([]int32, []bool, error) {
	n, err := p.uvarint(1<<26, "token count")
	if err != nil {
		return nil, nil, err
	}
	ids := make([]int32, 0, min(n, 1<<16))
	for range n {
		id, err := p.uvarint(uint64(p.vocab-1), "token id")
		if err != nil {
			return nil, nil, err
		}
		ids = append(ids, int32(id))
	}
	if !masked {
		return ids, nil, nil
	}
	bits := make([]byte, (n+7)/8)
	if err := p.full(bits); err != nil {
		return nil, nil, err
	}
	mask := make([]bool, n)
	for i := range mask {
		mask[i] = bits[i/8]&(1<<(i%8)) != 0
	}
	return ids, mask, nil
}

// inputName names input i in errors and progress, as Prepare does.
func (pl *Plan) inputName(i int) string {
	if i < len(pl.Config.Inputs) {
		return pl.Config.Inputs[i].Path
	}
	return pl.Inputs[i].Name
}
