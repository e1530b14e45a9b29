package sharding

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/ipfs/go-cid"
	"golang.org/x/text/unicode/norm"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/tokenizer"
)

// Input is one input file and the provenance of its documents.
type Input struct {
	Path      string `json:"path"`
	Format    Format `json:"format,omitempty"` // default: from the extension
	Field     string `json:"field,omitempty"`  // JSONL text field
	Source    string `json:"source"`           // natural (default) or synthetic
	Generator string `json:"generator,omitempty"`
	Licence   string `json:"licence"`
	Stage     string `json:"stage"` // default pretrain

	name string // the recipe's name for it, when not its base name
}

// PrepareConfig is a dataset recipe.
type PrepareConfig struct {
	Inputs []Input `json:"inputs"`
	// Builtin adds the built-in bilingual corpus (natural, CC0-1.0).
	Builtin bool `json:"builtin,omitempty"`
	// Synthetic adds this many documents from the built-in synthetic
	// generator (SynthGenerator, CC0-1.0), seeded by SyntheticSeed.
	Synthetic     int    `json:"synthetic,omitempty"`
	SyntheticSeed uint64 `json:"synthetic_seed,omitempty"`
	// Instructions and Pairs add this many bilingual instructions (SFT
	// conversations) or preference pairs from the built-in post-training
	// generator (InstructGenerator, its training split), seeded by
	// SyntheticSeed.
	Instructions int `json:"instructions,omitempty"`
	Pairs        int `json:"pairs,omitempty"`
	// MultiTurn adds this many multi-turn conversations from the same
	// generator (Conversations: follow-ups in the other language, word
	// problems; SFT).
	MultiTurn   int          `json:"multi_turn,omitempty"`
	Filters     FilterConfig `json:"filters"`
	SeqLen      int          `json:"seq_len"`      // model context T (default 256)
	ShardTokens int          `json:"shard_tokens"` // tokens per shard, about (default 1M)
	// TrainRoles are the roles of a conversation whose turns are trained
	// (the loss mask; default: assistant).
	TrainRoles []string `json:"train_roles,omitempty"`

	// Threads is how many goroutines analyse documents (0: GOMAXPROCS).
	// The output does not depend on it.
	Threads int `json:"-"`

	// SkippedFiles lists the files of input directories that Validate
	// left out (see expandDirs); the manifest's report counts them.
	SkippedFiles []SkippedFile `json:"-"`
}

// Stages a document can belong to.
var Stages = []string{"pretrain", "midtrain", "sft", "preference"}

// Validate fills defaults and checks the recipe.
func (c *PrepareConfig) Validate() error {
	if len(c.Inputs) == 0 && !c.Builtin && c.Synthetic == 0 && c.Instructions == 0 && c.Pairs == 0 && c.MultiTurn == 0 {
		return errors.New("prepare: no inputs")
	}
	if c.Synthetic < 0 || c.Instructions < 0 || c.Pairs < 0 || c.MultiTurn < 0 {
		return fmt.Errorf("prepare: generated counts (synthetic %d, instructions %d, pairs %d, multi-turn %d) must not be negative",
			c.Synthetic, c.Instructions, c.Pairs, c.MultiTurn)
	}
	if c.SeqLen == 0 {
		c.SeqLen = 256
	}
	if c.ShardTokens == 0 {
		c.ShardTokens = 1 << 20
	}
	if c.SeqLen < 1 || c.SeqLen > 1<<20 {
		return fmt.Errorf("prepare: seq_len %d out of range", c.SeqLen)
	}
	if c.ShardTokens < c.SeqLen+1 {
		return fmt.Errorf("prepare: shard_tokens %d is less than one row of %d tokens", c.ShardTokens, c.SeqLen+1)
	}
	for _, r := range c.TrainRoles {
		if r != tokenizer.RoleSystem && r != tokenizer.RoleUser && r != tokenizer.RoleAssistant {
			return fmt.Errorf("prepare: trained role %q (want system, user or assistant)", r)
		}
	}
	inputs, skipped, err := expandDirs(c.Inputs)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	c.Inputs, c.SkippedFiles = inputs, append(c.SkippedFiles, skipped...)
	for i := range c.Inputs {
		in := &c.Inputs[i]
		if in.Format == "" {
			in.Format = FormatOf(in.Path)
		}
		if in.Source == "" {
			in.Source = "natural"
		}
		if in.Stage == "" {
			in.Stage = "pretrain"
		}
		if in.Licence == "" {
			in.Licence = "unknown"
		}
		switch {
		case in.Source != "natural" && in.Source != "synthetic":
			return fmt.Errorf("prepare: input %s: source %q (want natural or synthetic)", in.Path, in.Source)
		case in.Source == "synthetic" && in.Generator == "":
			return fmt.Errorf("prepare: input %s: synthetic text needs a generator", in.Path)
		case !slices.Contains(Stages, in.Stage):
			return fmt.Errorf("prepare: input %s: stage %q (want one of %v)", in.Path, in.Stage, Stages)
		case in.Format != FormatText && in.Format != FormatTSV && in.Format != FormatJSONL && in.Format != FormatParquet:
			return fmt.Errorf("prepare: input %s: format %q", in.Path, in.Format)
		}
	}
	return nil
}

// Progress reports preparation as it goes.
type Progress struct {
	Input     string
	Bytes     int64 // bytes of documents read so far
	Total     int64 // bytes of all inputs
	Documents int64
	Shards    int
}

// Prepared is the result of Prepare.
type Prepared struct {
	Manifest      *Manifest
	ManifestBytes []byte
	CID           cid.Cid // the dataset CID
	Dir           string
}

// group collects the token stream of one provenance until a shard is full.
type group struct {
	prov   Provenance
	tokens []int32 // pending stream (documents with EOS)
	mask   []bool  // which of tokens are targets
	masked bool    // some are not: the group's shards carry the mask
	pairs  bool    // preference pairs, a row each (shard version 3)
	n      int     // shards written
}

// ReasonConversationTooLong: a conversation longer than a row (they are
// never split).
const ReasonConversationTooLong = "conversation_too_long"

// add appends a document's ids (and EOS) to g; a conversation (mask set)
// starts a new row, the rest of the current one padded and not trained,
// unless it fits what is left of it. It reports false for a conversation
// longer than a row.
func (g *group) add(ids []int32, mask []bool, eos, pad int32, rowLen int) bool {
	if mask != nil {
		if len(ids)+1 > rowLen {
			return false
		}
		if left := rowLen - len(g.tokens)%rowLen; left < len(ids)+1 && left < rowLen {
			for range left {
				g.tokens, g.mask = append(g.tokens, pad), append(g.mask, false)
			}
		}
		g.masked = true
	}
	g.tokens = append(append(g.tokens, ids...), eos)
	if mask == nil {
		for range len(ids) + 1 {
			g.mask = append(g.mask, true)
		}
	} else {
		g.mask = append(append(g.mask, mask...), false)
	}
	return true
}

// ReasonPairTooLong: a preference pair one of whose conversations is
// longer than a row.
const ReasonPairTooLong = "pair_too_long"

// addPair appends a preference pair: the chosen and the rejected
// conversation (ids and masks), each alone in a row. It reports false when
// either is longer than a row.
func (g *group) addPair(chosen []int32, cmask []bool, rejected []int32, rmask []bool, eos, pad int32, rowLen int) bool {
	if len(chosen)+1 > rowLen || len(rejected)+1 > rowLen {
		return false
	}
	g.masked, g.pairs = true, true
	for _, c := range []struct {
		ids  []int32
		mask []bool
	}{{chosen, cmask}, {rejected, rmask}} {
		g.tokens = append(append(g.tokens, c.ids...), eos)
		g.mask = append(append(g.mask, c.mask...), false)
		for range rowLen - len(c.ids) - 1 {
			g.tokens, g.mask = append(g.tokens, pad), append(g.mask, false)
		}
	}
	return true
}

// nfc is a conversation with its contents in Unicode NFC.
func nfc(msgs []tokenizer.Message) []tokenizer.Message {
	out := make([]tokenizer.Message, len(msgs))
	for i, m := range msgs {
		out[i] = tokenizer.Message{Role: m.Role, Content: norm.NFC.String(m.Content)}
	}
	return out
}

// answerMasked encodes a conversation in the chat format with only its
// last message (the answer of a preference pair) marked as targets.
func answerMasked(tk *tokenizer.Tokenizer, msgs []tokenizer.Message) ([]int32, []bool, error) {
	last := func(n int) func(string) bool {
		i := -1
		return func(string) bool { i++; return i == n }
	}
	return tk.EncodeChatMasked(msgs, last(len(msgs)-1))
}

// Prepare reads the inputs, filters and deduplicates documents, tokenises
// them (NFC first), packs them per provenance group into shards under
// outDir/shards, and writes outDir/manifest.json (dag-json) and
// outDir/tokenizer.json. The same inputs, tokenizer and config give the same
// bytes and CIDs, whatever cfg.Threads. Files are written under temporary
// names and renamed.
func Prepare(ctx context.Context, cfg PrepareConfig, tk *tokenizer.Tokenizer, outDir string, progress func(Progress)) (*Prepared, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var recs []InputRecord
	for _, in := range cfg.Inputs {
		rec, err := digest(in)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	generated := builtinSources(cfg)
	for _, g := range generated {
		recs = append(recs, g.rec)
	}
	k, err := newPacker(ctx, cfg, tk, outDir, recs, progress)
	if err != nil {
		return nil, err
	}
	read := func(yield func(Doc, int) error) error {
		for i, in := range cfg.Inputs {
			st, err := ReadDocs([]string{in.Path}, IngestOptions{Field: in.Field}, func(d Doc) error { return yield(d, i) })
			k.malformed(int64(st.Skipped))
			if err != nil {
				return err
			}
		}
		return readGenerated(generated, len(cfg.Inputs), yield)
	}
	newAnalyser := func() *analyser {
		return &analyser{filters: cfg.Filters, dd: k.dd, seen: k.dd.Kept, tk: tk, trainRoles: k.trainRoles}
	}
	if err := runPipeline(ctx, cfg.Threads, newAnalyser, read, k.consume); err != nil {
		return nil, err
	}
	return k.finish()
}

// readGenerated yields the documents of the built-in sources, numbering
// them as inputs from first on.
func readGenerated(generated []source, first int, yield func(Doc, int) error) error {
	for i, gen := range generated {
		for _, d := range gen.docs {
			d.File = gen.rec.Name
			if err := yield(d, first+i); err != nil {
				return err
			}
		}
	}
	return nil
}

// packer is Prepare's sequential part: it decides duplicates and packs the
// documents kept into shards, in input order. Prepare feeds it from its
// workers, Merge from the pieces of a split preparation.
type packer struct {
	ctx        context.Context
	cfg        PrepareConfig
	tk         *tokenizer.Tokenizer
	outDir     string
	progress   func(Progress)
	inputs     []InputRecord // provenance by input index
	eos, pad   int32
	rowLen     int
	perShard   int
	trainRoles []string
	tokCID     cid.Cid
	m          *Manifest
	groups     map[string]*group
	order      []string // groups in order of first appearance: deterministic
	totals     map[[2]string]*Total
	dd         *Deduper
	p          Progress
	kind       string // "pairs" or "documents", from the first document kept
	mu         sync.Mutex
	bad        int64 // malformed records (counted by the reader)
}

func newPacker(ctx context.Context, cfg PrepareConfig, tk *tokenizer.Tokenizer, outDir string, inputs []InputRecord, progress func(Progress)) (*packer, error) {
	eos, ok := tk.SpecialID(tokenizer.EOS)
	if !ok {
		return nil, errors.New("prepare: the tokenizer has no " + tokenizer.EOS)
	}
	pad, ok := tk.SpecialID(tokenizer.PAD)
	if !ok {
		return nil, errors.New("prepare: the tokenizer has no " + tokenizer.PAD)
	}
	if err := os.MkdirAll(filepath.Join(outDir, "shards"), 0o755); err != nil {
		return nil, err
	}
	tokJSON, err := tk.MarshalJSON()
	if err != nil {
		return nil, err
	}
	tokCID, err := contentstore.FileCID(ctx, bytes.NewReader(tokJSON))
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFile(filepath.Join(outDir, "tokenizer.json"), tokJSON); err != nil {
		return nil, err
	}
	k := &packer{ctx: ctx, cfg: cfg, tk: tk, outDir: outDir, progress: progress, inputs: inputs, eos: eos, pad: pad,
		rowLen: cfg.SeqLen + 1, trainRoles: trainRolesOf(cfg), tokCID: tokCID,
		groups: map[string]*group{}, totals: map[[2]string]*Total{}, dd: NewDeduper(cfg.Filters.NearDupThreshold)}
	k.perShard = max(1, cfg.ShardTokens/k.rowLen) * k.rowLen
	k.m = &Manifest{Format: ManifestFormat, Tokenizer: LinkTo(tokCID), Vocab: tk.Vocab(), SeqLen: cfg.SeqLen,
		DType:  map[int]string{DTypeU16: "uint16", DTypeU32: "uint32"}[dtypeFor(tk.Vocab())],
		Report: Report{Dropped: map[string]int64{}, SkippedFiles: int64(len(cfg.SkippedFiles))},
		Recipe: Recipe{Filters: cfg.Filters, SeqLen: cfg.SeqLen, ShardTokens: cfg.ShardTokens, Normalize: "NFC", Tokenizer: LinkTo(tokCID), Inputs: inputs}}
	for _, in := range inputs {
		k.p.Total += in.Bytes
	}
	return k, nil
}

// malformed counts records the reader skipped (any goroutine).
func (k *packer) malformed(n int64) {
	k.mu.Lock()
	k.bad += n
	k.mu.Unlock()
}

// consume decides one analysed document and packs it if kept.
func (k *packer) consume(d *pdoc) error {
	in := k.inputs[d.in]
	k.m.Report.DocumentsIn++
	k.p.Bytes += int64(len(d.Text)) + d.bytes
	k.p.Input = d.File
	reason := d.reason
	switch {
	case reason != "":
	case d.twin && k.dd.Kept(d.key):
		reason = ReasonExactDup
	case d.twin:
		// An earlier document of the same key was analysed and not kept:
		// it was a near duplicate of one kept, and so is this one.
		reason = ReasonNearDup
	default:
		reason = k.dd.Decide(d.key, d.sig)
	}
	if reason != "" {
		k.m.Report.Dropped[reason]++
		return nil
	}
	prov := Provenance{Language: d.lang, Source: in.Source, Generator: in.Generator, Licence: in.Licence, Stage: in.Stage}
	key := prov.Group() + "\x00" + prov.Licence
	g := k.groups[key]
	if g == nil {
		g = &group{prov: prov}
		k.groups[key] = g
		k.order = append(k.order, key)
	}
	if pairs := d.pair; k.kind == "" {
		k.kind = map[bool]string{true: "pairs", false: "documents"}[pairs]
	} else if (k.kind == "pairs") != pairs {
		return fmt.Errorf("prepare: %s:%d: a dataset holds preference pairs only, or none", d.File, d.Line)
	}
	if d.err != nil {
		return fmt.Errorf("prepare: %s:%d: %w", d.File, d.Line, d.err)
	}
	ids := d.ids
	if d.pair {
		if !g.addPair(d.ids, d.mask, d.rids, d.rmask, k.eos, k.pad, k.rowLen) {
			k.m.Report.Dropped[ReasonPairTooLong]++
			return nil
		}
		ids = append(ids, d.rids...)
	} else if !g.add(d.ids, d.mask, k.eos, k.pad, k.rowLen) {
		k.m.Report.Dropped[ReasonConversationTooLong]++
		return nil
	}
	t := k.totals[[2]string{d.lang, in.Source}]
	if t == nil {
		t = &Total{Language: d.lang, Source: in.Source}
		k.totals[[2]string{d.lang, in.Source}] = t
	}
	t.Documents++
	t.Tokens += int64(len(ids) + 1)
	k.m.Report.DocumentsOut++
	k.p.Documents++
	if err := k.flush(g, false); err != nil {
		return err
	}
	if k.progress != nil && k.p.Documents%1000 == 0 {
		k.progress(k.p)
	}
	return nil
}

// flush writes the full shards of g (with final, the rest too).
func (k *packer) flush(g *group, final bool) error {
	rowLen, perShard := k.rowLen, k.perShard
	if g.pairs && (perShard/rowLen)%2 != 0 { // pairs are never split
		perShard += rowLen
	}
	for len(g.tokens) >= perShard || (final && len(g.tokens) > 0) {
		n := min(len(g.tokens), perShard)
		chunk := g.tokens[:n]
		rows := make([][]int32, 0, (n+rowLen-1)/rowLen)
		var masks [][]bool
		for i := 0; i < n; i += rowLen {
			row, mask := make([]int32, rowLen), make([]bool, rowLen)
			c := copy(row, chunk[i:min(i+rowLen, n)])
			copy(mask, g.mask[i:i+c])
			for j := c; j < rowLen; j++ {
				row[j] = k.pad
			}
			rows = append(rows, row)
			if g.masked {
				masks = append(masks, mask)
			}
		}
		var buf bytes.Buffer
		encode := EncodeShard
		if g.pairs {
			encode = func(w io.Writer, vocab, seqLen int, tok cid.Cid, rows [][]int32, masks ...[]bool) error {
				return EncodePairShard(w, vocab, seqLen, tok, rows, masks)
			}
		}
		if err := encode(&buf, k.tk.Vocab(), k.cfg.SeqLen, k.tokCID, rows, masks...); err != nil {
			return err
		}
		c, err := contentstore.FileCID(k.ctx, bytes.NewReader(buf.Bytes()))
		if err != nil {
			return err
		}
		name := filepath.Join("shards", c.String()+".bin")
		if err := fsutil.WriteFile(filepath.Join(k.outDir, name), buf.Bytes()); err != nil {
			return err
		}
		docs := 0
		for _, t := range chunk {
			if t == k.eos {
				docs++
			}
		}
		k.m.Shards = append(k.m.Shards, ShardEntry{CID: LinkTo(c), File: name, Bytes: int64(buf.Len()), Tokens: int64(n),
			Rows: len(rows), Docs: docs, Pairs: g.pairs, Provenance: g.prov, Group: g.prov.Group()})
		g.tokens = append(g.tokens[:0], g.tokens[n:]...)
		g.mask = append(g.mask[:0], g.mask[n:]...)
		g.n++
		k.p.Shards++
	}
	return nil
}

// finish writes the last shards of every group and the manifest.
func (k *packer) finish() (*Prepared, error) {
	m := k.m
	for _, key := range k.order {
		if err := k.flush(k.groups[key], true); err != nil {
			return nil, err
		}
	}
	if k.progress != nil {
		k.progress(k.p)
	}
	m.Report.Malformed = k.bad
	for _, t := range k.totals {
		m.Totals = append(m.Totals, *t)
	}
	sort.Slice(m.Totals, func(i, j int) bool {
		a, b := m.Totals[i], m.Totals[j]
		return a.Language < b.Language || a.Language == b.Language && a.Source < b.Source
	})
	mb, mc, err := EncodeManifest(m)
	if errors.Is(err, ErrEmptyDataset) {
		return nil, fmt.Errorf("prepare: %w: %d inputs, %d documents read, %d malformed records, dropped %v: no document to make shards of",
			ErrEmptyDataset, len(m.Recipe.Inputs), m.Report.DocumentsIn, m.Report.Malformed, m.Report.Dropped)
	}
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFile(filepath.Join(k.outDir, "manifest.json"), mb); err != nil {
		return nil, err
	}
	return &Prepared{Manifest: m, ManifestBytes: mb, CID: mc, Dir: k.outDir}, nil
}

// source is a built-in input: its documents and its recipe record.
type source struct {
	in   Input
	rec  InputRecord
	docs []Doc
}

// BuiltinLicence is the licence of the built-in corpus and generator output:
// both were written for this project and dedicated to the public domain.
const BuiltinLicence = "CC0-1.0"

func builtinSources(cfg PrepareConfig) []source {
	var out []source
	mk := func(name string, in Input, docs []Doc) source {
		h := sha256.New()
		var n int64
		for _, d := range docs {
			h.Write([]byte(d.Text))
			h.Write([]byte{0})
			n += int64(len(d.Text))
		}
		format := FormatText
		if len(docs) > 0 && docs[0].Messages != nil {
			format = FormatJSONL
		}
		return source{in: in, docs: docs, rec: InputRecord{Name: name, SHA256: hex.EncodeToString(h.Sum(nil)), Bytes: n,
			Format: format, Source: in.Source, Generator: in.Generator, Licence: in.Licence, Stage: in.Stage}}
	}
	texts := func(ts []string) []Doc {
		out := make([]Doc, len(ts))
		for i, t := range ts {
			out[i] = Doc{Text: t}
		}
		return out
	}
	if cfg.Builtin {
		var ts []string
		for _, f := range Builtin() {
			ts = append(ts, splitParagraphs(string(f.Text))...)
		}
		out = append(out, mk("builtin:ko-en", Input{Source: "natural", Licence: BuiltinLicence, Stage: "pretrain"}, texts(ts)))
	}
	if cfg.Synthetic > 0 {
		var ts []string
		for _, d := range Synthetic(cfg.SyntheticSeed, cfg.Synthetic) {
			ts = append(ts, d.Text)
		}
		name := fmt.Sprintf("%s:%d:%d", SynthGenerator, cfg.Synthetic, cfg.SyntheticSeed)
		out = append(out, mk(name, Input{Source: "synthetic", Generator: SynthGenerator, Licence: BuiltinLicence, Stage: "pretrain"}, texts(ts)))
	}
	// Post-training data from the instruction generator's training split.
	for _, g := range []struct {
		n            int
		stage, which string
	}{{cfg.Instructions, "sft", "instructions"}, {cfg.Pairs, "preference", "pairs"}} {
		if g.n <= 0 {
			continue
		}
		var docs []Doc
		for _, in := range Instructions(cfg.SyntheticSeed, g.n, false) {
			d := Doc{Text: in.Prompt + "\n" + in.Answer, Messages: in.Messages()}
			if g.which == "pairs" {
				d.Text += "\n" + in.Wrong
				d.Rejected = []tokenizer.Message{d.Messages[0], {Role: tokenizer.RoleAssistant, Content: in.Wrong}}
			}
			docs = append(docs, d)
		}
		name := fmt.Sprintf("%s:%s:%d:%d", InstructGenerator, g.which, g.n, cfg.SyntheticSeed)
		out = append(out, mk(name, Input{Source: "synthetic", Generator: InstructGenerator, Licence: BuiltinLicence, Stage: g.stage}, docs))
	}
	if cfg.MultiTurn > 0 {
		var docs []Doc
		for _, c := range Conversations(cfg.SyntheticSeed, cfg.MultiTurn, false) {
			var text []string
			for _, m := range c.Messages {
				text = append(text, m.Content)
			}
			docs = append(docs, Doc{Text: strings.Join(text, "\n"), Messages: c.Messages})
		}
		name := fmt.Sprintf("%s:multi-turn:%d:%d", InstructGenerator, cfg.MultiTurn, cfg.SyntheticSeed)
		out = append(out, mk(name, Input{Source: "synthetic", Generator: InstructGenerator, Licence: BuiltinLicence, Stage: "sft"}, docs))
	}
	return out
}

// splitParagraphs splits text at blank lines, as text inputs are read.
func splitParagraphs(s string) []string {
	var out []string
	for _, p := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n\n") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// digest hashes an input file for the recipe.
func digest(in Input) (InputRecord, error) {
	f, err := os.Open(in.Path)
	if err != nil {
		return InputRecord{}, fmt.Errorf("%w: %v", ErrInput, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return InputRecord{}, fmt.Errorf("%w: %s: %v", ErrInput, in.Path, err)
	}
	return digestRecord(in, h.Sum(nil), n), nil
}
