package sharding

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unicode"
	"unicode/utf8"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/tokenizer"
)

// A preparation split across machines: Plan cuts the inputs into parts at
// document boundaries, each machine runs PreparePart on one part and
// writes a piece (its documents analysed: filter verdicts, dedup keys,
// MinHash signatures, token ids), and Merge decides duplicates and packs
// the pieces in order, exactly as Prepare does in one process, so the
// dataset CID is the same. What a piece holds is what Prepare's workers
// compute; what Merge does is what Prepare's packer does.

// PlanFormat is the current plan format.
const PlanFormat = "prepare-plan/v1"

// Plan is a preparation split into parts.
type Plan struct {
	Format string `json:"fomnet"`
	// Config is the recipe, validated (input directories expanded).
	Config PrepareConfig `json:"config"`
	// SkippedFiles counts the files of input directories left out.
	SkippedFiles int `json:"skipped_files"`
	// Tokenizer is the CID of the tokenizer every part encodes with.
	Tokenizer string `json:"tokenizer"`
	// Inputs are the inputs' records (digests): the files, then the
	// built-in sources.
	Inputs []InputRecord `json:"inputs"`
	// Parts are contiguous stretches of the inputs, in order.
	Parts [][]PlanRange `json:"parts"`
	// InputCIDs, when set (AddCIDs), name the input files in the swarm
	// (the CIDs fomnet add gives them), so that nodes can fetch them.
	InputCIDs []string `json:"input_cids,omitempty"`

	local map[int]string // where an input is on this machine, if not at its path (UseLocal)
}

// AddCIDs records every input file's CID (InputCIDs).
func (pl *Plan) AddCIDs(ctx context.Context) error {
	pl.InputCIDs = nil
	for _, in := range pl.Config.Inputs {
		f, err := os.Open(in.Path)
		if err != nil {
			return fmt.Errorf("plan: %w: %v", ErrInput, err)
		}
		c, err := contentstore.FileCID(ctx, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("plan: %s: %w", in.Path, err)
		}
		pl.InputCIDs = append(pl.InputCIDs, c.String())
	}
	return nil
}

// UseLocal reads input i from path on this machine (a copy fetched by
// CID) rather than from the plan's path; the plan stays the same.
func (pl *Plan) UseLocal(i int, path string) {
	if pl.local == nil {
		pl.local = map[int]string{}
	}
	pl.local[i] = path
}

// inputPath is where input i is read on this machine.
func (pl *Plan) inputPath(i int) string {
	if p, ok := pl.local[i]; ok {
		return p
	}
	return pl.Config.Inputs[i].Path
}

// PlanRange is a stretch of one input: a span of a file, or a whole
// built-in source (Input ≥ len(Config.Inputs)).
type PlanRange struct {
	Input int `json:"input"`
	span
}

// Hash names a plan: SHA-256 of its JSON encoding. Pieces carry it.
func (p *Plan) Hash() ([32]byte, error) {
	b, err := json.Marshal(p)
	return sha256.Sum256(b), err
}

// MakePlan validates the recipe, digests every input and cuts the inputs
// into parts of about equal bytes, at document boundaries (Parquet files
// and built-in sources are not cut; the built-in sources go to the last
// part).
func MakePlan(ctx context.Context, cfg PrepareConfig, tk *tokenizer.Tokenizer, parts int) (*Plan, error) {
	if parts < 1 {
		return nil, fmt.Errorf("plan: %d parts (want 1 or more)", parts)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tokCID, err := tokenizerCID(ctx, tk)
	if err != nil {
		return nil, err
	}
	pl := &Plan{Format: PlanFormat, Config: cfg, SkippedFiles: len(cfg.SkippedFiles), Tokenizer: tokCID, Parts: make([][]PlanRange, parts)}
	pl.Config.SkippedFiles, pl.Config.Threads = nil, 0
	var total int64
	sizes := make([]int64, len(cfg.Inputs))
	for i, in := range cfg.Inputs {
		fi, err := os.Stat(in.Path)
		if err != nil {
			return nil, fmt.Errorf("plan: %w: %v", ErrInput, err)
		}
		sizes[i] = fi.Size()
		total += sizes[i]
	}
	var offset int64 // of the current file in the whole input
	part := 0
	target := func(j int) int64 { return total * int64(j) / int64(parts) } // where part j starts
	for i, in := range cfg.Inputs {
		var cuts []span // starts of the parts that begin inside this file
		next := func() int64 {
			if part+1 < parts {
				return target(part+1) - offset
			}
			return -1
		}
		rec, err := scanInput(in, next, func(sp span) { cuts = append(cuts, sp); part++ })
		if err != nil {
			return nil, err
		}
		if rec.Bytes != sizes[i] {
			return nil, fmt.Errorf("plan: %w: %s changed while read (%d bytes, then %d)", ErrInput, in.Path, sizes[i], rec.Bytes)
		}
		pl.Inputs = append(pl.Inputs, rec)
		first := part - len(cuts)
		start := span{Start: 0, Line: 1}
		for k, c := range append(cuts, span{Start: rec.Bytes}) {
			if c.Start > start.Start {
				pl.Parts[first+k] = append(pl.Parts[first+k], PlanRange{Input: i, span: span{Start: start.Start, End: c.Start, Line: start.Line}})
			}
			start = c
		}
		offset += sizes[i]
		// A cut at the very end of a file starts the next part with the
		// next file.
		for part+1 < parts && target(part+1) <= offset {
			part++
		}
	}
	for i, g := range builtinSources(cfg) {
		pl.Inputs = append(pl.Inputs, g.rec)
		pl.Parts[parts-1] = append(pl.Parts[parts-1], PlanRange{Input: len(cfg.Inputs) + i, span: span{End: int64(len(g.docs)), Line: 1}})
	}
	return pl, nil
}

// scanInput digests an input as digest does and, for a cuttable format,
// calls cut at the first document boundary at or after each offset that
// next returns (-1: none wanted).
func scanInput(in Input, next func() int64, cut func(span)) (InputRecord, error) {
	if in.Format == FormatParquet {
		return digest(in)
	}
	f, err := os.Open(in.Path)
	if err != nil {
		return InputRecord{}, fmt.Errorf("%w: %v", ErrInput, err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, sniffLen)
	if why, err := LooksBinary(br); err != nil {
		return InputRecord{}, fmt.Errorf("%w: %s: %v", ErrInput, in.Path, err)
	} else if why != "" {
		return InputRecord{}, fmt.Errorf("%w: %s is not text (%s); fomnet reads UTF-8 text, .tsv, .jsonl and .parquet", ErrInput, in.Path, why)
	}
	h := sha256.New()
	var off int64
	line, blank := 1, true // the line before the first counts as blank
	var lb lineBlank
	for {
		chunk, err := br.ReadSlice('\n')
		h.Write(chunk)
		lb.feed(chunk)
		off += int64(len(chunk))
		if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
			blank = lb.end()
			line++
			if want := next(); want >= 0 && off >= want && (in.Format != FormatText || blank) {
				cut(span{Start: off, Line: line})
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return InputRecord{}, fmt.Errorf("%w: %s: %v", ErrInput, in.Path, err)
		}
	}
	return digestRecord(in, h.Sum(nil), off), nil
}

// lineBlank tells, a line fed in pieces, whether the reader would take it
// as blank: valid UTF-8 of white space only (an invalid line is skipped as
// malformed, and does not end a paragraph).
type lineBlank struct {
	notBlank bool
	pend     []byte // a character cut between pieces
}

func (l *lineBlank) feed(b []byte) {
	for _, c := range b {
		if l.notBlank {
			return
		}
		if c < utf8.RuneSelf && len(l.pend) == 0 {
			l.notBlank = !asciiSpace[c]
			continue
		}
		l.pend = append(l.pend, c)
		if utf8.FullRune(l.pend) {
			r, n := utf8.DecodeRune(l.pend)
			l.notBlank = r == utf8.RuneError && n == 1 || !unicode.IsSpace(r)
			l.pend = l.pend[:0]
		}
	}
}

// end reports whether the line was blank and starts the next one.
func (l *lineBlank) end() bool {
	blank := !l.notBlank && len(l.pend) == 0
	*l = lineBlank{pend: l.pend[:0]}
	return blank
}

func tokenizerCID(ctx context.Context, tk *tokenizer.Tokenizer) (string, error) {
	b, err := tk.MarshalJSON()
	if err != nil {
		return "", err
	}
	c, err := contentstore.FileCID(ctx, bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	return c.String(), nil
}

// digestRecord is the recipe record of an input of this digest and size.
func digestRecord(in Input, sum []byte, n int64) InputRecord {
	name := in.name
	if name == "" {
		name = filepath.Base(in.Path)
	}
	return InputRecord{Name: name, SHA256: hex.EncodeToString(sum), Bytes: n, Format: in.Format,
		Field: in.Field, Source: in.Source, Generator: in.Generator, Licence: in.Licence, Stage: in.Stage}
}

// check verifies that a plan (perhaps from another machine) is whole and
// made for this tokenizer.
func (pl *Plan) check(ctx context.Context, tk *tokenizer.Tokenizer) error {
	if pl.Format != PlanFormat {
		return fmt.Errorf("plan: format %q (this fomnet reads %s)", pl.Format, PlanFormat)
	}
	if err := pl.Config.Validate(); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	tokCID, err := tokenizerCID(ctx, tk)
	if err != nil {
		return err
	}
	if tokCID != pl.Tokenizer {
		return fmt.Errorf("plan: made for tokenizer %s, given %s", pl.Tokenizer, tokCID)
	}
	generated := builtinSources(pl.Config)
	if len(pl.Inputs) != len(pl.Config.Inputs)+len(generated) {
		return fmt.Errorf("plan: %d input records for %d inputs and %d built-in sources", len(pl.Inputs), len(pl.Config.Inputs), len(generated))
	}
	if len(pl.Parts) == 0 {
		return errors.New("plan: no parts")
	}
	for p, ranges := range pl.Parts {
		for _, r := range ranges {
			size := int64(0)
			switch {
			case r.Input < 0 || r.Input >= len(pl.Inputs):
				return fmt.Errorf("plan: part %d: input %d of %d", p, r.Input, len(pl.Inputs))
			case r.Input < len(pl.Config.Inputs):
				size = pl.Inputs[r.Input].Bytes
			default:
				size = int64(len(generated[r.Input-len(pl.Config.Inputs)].docs))
			}
			if r.Start < 0 || r.End < r.Start || r.End > size || r.Line < 1 {
				return fmt.Errorf("plan: part %d: range %d–%d (line %d) of input %d (%d long)", p, r.Start, r.End, r.Line, r.Input, size)
			}
		}
	}
	return nil
}

// Encode is the plan as a file holds it (JSON).
func (pl *Plan) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(pl, "", "  ")
	return append(b, '\n'), err
}

// sameSize checks that input i, where this machine reads it, is as long
// as the file the plan digested: a part read from another file would be
// another dataset. (Its digest cannot be checked by one part alone.)
func (pl *Plan) sameSize(i int) error {
	path := pl.inputPath(i)
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInput, err)
	}
	if want := pl.Inputs[i].Bytes; fi.Size() != want {
		return fmt.Errorf("%w: %s is %d bytes here; the plan's input is %d (sha256 %s): another file at this path?", ErrInput, path, fi.Size(), want, pl.Inputs[i].SHA256)
	}
	return nil
}

// ReadPlan reads a plan file.
func ReadPlan(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pl, err := ParsePlan(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pl, nil
}

// ParsePlan reads a plan's JSON strictly (perhaps from a peer; check it
// against its tokenizer before use: PreparePart and Merge do).
func ParsePlan(b []byte) (*Plan, error) {
	var pl Plan
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pl); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if dec.More() {
		return nil, errors.New("plan: trailing data after the JSON object")
	}
	if len(pl.InputCIDs) != 0 && len(pl.InputCIDs) != len(pl.Config.Inputs) {
		return nil, fmt.Errorf("plan: %d input CIDs for %d inputs", len(pl.InputCIDs), len(pl.Config.Inputs))
	}
	return &pl, nil
}

// Merge packs the pieces of a plan (one per part, in order) into a
// dataset under outDir, as Prepare would have from the same inputs: the
// same shards, manifest and dataset CID.
func Merge(ctx context.Context, pl *Plan, tk *tokenizer.Tokenizer, pieces []string, outDir string, progress func(Progress)) (*Prepared, error) {
	if err := pl.check(ctx, tk); err != nil {
		return nil, err
	}
	if len(pieces) != len(pl.Parts) {
		return nil, fmt.Errorf("merge: %d pieces for a plan of %d parts", len(pieces), len(pl.Parts))
	}
	hash, err := pl.Hash()
	if err != nil {
		return nil, err
	}
	k, err := newPacker(ctx, pl.Config, tk, outDir, pl.Inputs, progress)
	if err != nil {
		return nil, err
	}
	k.m.Report.SkippedFiles = int64(pl.SkippedFiles)
	for part, path := range pieces {
		if err := k.mergePiece(pl, hash, part, path); err != nil {
			return nil, err
		}
	}
	return k.finish()
}

func (k *packer) mergePiece(pl *Plan, hash [32]byte, part int, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	p := &pieceReader{r: bufio.NewReaderSize(f, 1<<20), name: path, pl: pl, vocab: k.tk.Vocab(), sigs: k.dd}
	if err := p.header(hash, part); err != nil {
		return err
	}
	var d pdoc
	var n uint64
	for {
		more, err := p.next()
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if n%1024 == 0 {
			if err := k.ctx.Err(); err != nil {
				return err
			}
		}
		if err := p.record(&d); err != nil {
			return err
		}
		if err := k.consume(&d); err != nil {
			return err
		}
		n++
	}
	malformed, filtered, err := p.trailer(n)
	if err != nil {
		return err
	}
	k.malformed(malformed)
	for r, c := range filtered {
		k.m.Report.DocumentsIn += c[0]
		k.m.Report.Dropped[r] += c[0]
		k.p.Bytes += c[1]
	}
	return nil
}
