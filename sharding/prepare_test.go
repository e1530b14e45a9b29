package sharding

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/tokenizer"
)

func testTokenizer(t testing.TB) *tokenizer.Tokenizer {
	var texts []string
	for _, f := range Builtin() {
		texts = append(texts, strings.Split(string(f.Text), "\n\n")...)
	}
	tk, err := tokenizer.Train(context.Background(), slices.Values(texts), tokenizer.TrainConfig{Vocab: 500})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func testInputs(t testing.TB) []Input {
	dir := t.TempDir()
	var txt strings.Builder
	for _, f := range Builtin() {
		txt.Write(f.Text)
	}
	txt.WriteString("\n\nshort\n\nx\n\n")                                             // "x" is too short
	txt.WriteString("\n\n" + strings.SplitN(string(Builtin()[0].Text), "\n\n", 2)[0]) // an exact duplicate
	a := write(t, dir, "builtin.txt", txt.String())
	b := write(t, dir, "pairs.tsv", "Open the file.\t파일을 엽니다.\nSave the file.\t파일을 저장합니다.\nbroken\n")
	c := write(t, dir, "synth.jsonl", `{"text":"2 더하기 3은 5입니다. Two plus three is five."}`+"\n"+`{"text":"사과는 과일입니다."}`+"\n")
	return []Input{
		{Path: a, Licence: "CC0-1.0"},
		{Path: b, Licence: "MPL-2.0"},
		{Path: c, Source: "synthetic", Generator: "fomnet-templates/v1", Licence: "CC0-1.0", Stage: "midtrain"},
	}
}

func TestPrepare(t *testing.T) {
	tk := testTokenizer(t)
	cfg := PrepareConfig{Inputs: testInputs(t), Filters: DefaultFilters(), SeqLen: 64, ShardTokens: 1000}
	out := t.TempDir()
	p, err := Prepare(context.Background(), cfg, tk, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := p.Manifest
	if m.Report.Dropped[ReasonTooShort] != 1 || m.Report.Dropped[ReasonExactDup] != 1 || m.Report.Malformed != 1 {
		t.Fatalf("report %+v", m.Report)
	}
	if m.Report.DocumentsIn != m.Report.DocumentsOut+m.Report.Dropped[ReasonTooShort]+m.Report.Dropped[ReasonExactDup]+m.Report.Dropped[ReasonNearDup]+m.Report.Dropped[ReasonLanguage] {
		t.Fatalf("documents do not add up: %+v", m.Report)
	}
	// Every shard decodes, has the manifest's CID and tokens, and keeps one
	// provenance.
	var shardTokens, shardDocs int64
	groups := map[string]bool{}
	for _, s := range m.Shards {
		b, err := os.ReadFile(filepath.Join(out, s.File))
		if err != nil {
			t.Fatal(err)
		}
		c, _ := contentstore.FileCID(context.Background(), bytes.NewReader(b))
		if c.String() != s.CID.CID {
			t.Fatalf("shard %s has CID %s on disk", s.CID.CID, c)
		}
		sh, err := DecodeShard(b)
		if err != nil {
			t.Fatal(err)
		}
		if sh.Rows != s.Rows || sh.SeqLen != 64 || sh.Tokenizer.String() != m.Tokenizer.CID {
			t.Fatalf("shard header %+v vs entry %+v", sh.ShardHeader, s)
		}
		shardTokens += s.Tokens
		shardDocs += int64(s.Docs)
		groups[s.Group] = true
	}
	var totTokens, totDocs int64
	for _, tt := range m.Totals {
		totTokens += tt.Tokens
		totDocs += tt.Documents
	}
	if shardTokens != totTokens || shardDocs != totDocs || totDocs != m.Report.DocumentsOut {
		t.Fatalf("shards hold %d tokens / %d docs; totals say %d / %d; report %d", shardTokens, shardDocs, totTokens, totDocs, m.Report.DocumentsOut)
	}
	for _, g := range []string{"pretrain/ko/natural", "pretrain/en/natural", "midtrain/ko/synthetic/fomnet-templates/v1"} {
		if !groups[g] {
			t.Errorf("no shard of group %s (have %v)", g, groups)
		}
	}
	back, err := DecodeManifest(p.ManifestBytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Shards) != len(m.Shards) || len(back.Recipe.Inputs) != 3 || back.Recipe.Inputs[0].SHA256 == "" {
		t.Fatalf("decoded manifest %+v", back.Recipe)
	}
	if onDisk, _ := os.ReadFile(filepath.Join(out, "manifest.json")); !bytes.Equal(onDisk, p.ManifestBytes) {
		t.Fatal("manifest.json differs from the encoded manifest")
	}
}

// TestPrepareThreads: the dataset does not depend on how many goroutines
// analyse documents. The inputs span many batches and repeat each other, so
// workers see documents whose twins are kept, not yet kept or being decided.
func TestPrepareThreads(t *testing.T) {
	tk := testTokenizer(t)
	var txt strings.Builder
	for range 3 {
		for _, f := range Builtin() {
			txt.Write(f.Text)
			txt.WriteString("\n\n")
		}
		for _, d := range Synthetic(7, 1500) {
			txt.WriteString(d.Text + "\n\n")
		}
	}
	dir := t.TempDir()
	inputs := []Input{{Path: write(t, dir, "a.txt", txt.String())}, {Path: write(t, dir, "b.txt", txt.String())}}
	var first *Prepared
	for _, threads := range []int{1, 2, 5} {
		p, err := Prepare(context.Background(), PrepareConfig{Inputs: inputs, Filters: DefaultFilters(), SeqLen: 64, ShardTokens: 4000, Threads: threads}, tk, t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = p
			if in := p.Manifest.Report.DocumentsIn; in < 4*batchDocs || p.Manifest.Report.Dropped[ReasonExactDup] < in/2 {
				t.Fatalf("%d documents, %v dropped: the test wants many batches and duplicates", in, p.Manifest.Report.Dropped)
			}
			continue
		}
		if !p.CID.Equals(first.CID) || !bytes.Equal(p.ManifestBytes, first.ManifestBytes) {
			t.Fatalf("%d threads: dataset %s, 1 thread: %s", threads, p.CID, first.CID)
		}
	}
}

// TestPrepareDeterministic: preparing the same inputs twice gives the same
// dataset CID, shard CIDs and bytes.
func TestPrepareDeterministic(t *testing.T) {
	tk := testTokenizer(t)
	inputs := testInputs(t)
	run := func() *Prepared {
		p, err := Prepare(context.Background(), PrepareConfig{Inputs: inputs, Filters: DefaultFilters(), SeqLen: 32, ShardTokens: 500}, tk, t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := run(), run()
	if !a.CID.Equals(b.CID) || !bytes.Equal(a.ManifestBytes, b.ManifestBytes) {
		t.Fatalf("dataset CIDs %s and %s", a.CID, b.CID)
	}
	if len(a.Manifest.Shards) < 2 {
		t.Fatalf("only %d shards: the test should span several", len(a.Manifest.Shards))
	}
}

func TestPrepareConfigErrors(t *testing.T) {
	for name, cfg := range map[string]PrepareConfig{
		"no inputs":               {},
		"bad source":              {Inputs: []Input{{Path: "a.txt", Source: "scraped"}}},
		"synthetic w/o generator": {Inputs: []Input{{Path: "a.txt", Source: "synthetic"}}},
		"bad stage":               {Inputs: []Input{{Path: "a.txt", Stage: "warmup"}}},
		"tiny shards":             {Inputs: []Input{{Path: "a.txt"}}, SeqLen: 100, ShardTokens: 50},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPrepareBuiltinAndSynthetic: a dataset from the project's own texts,
// natural and synthetic, shows its synthetic share in the totals.
func TestPrepareBuiltinAndSynthetic(t *testing.T) {
	tk := testTokenizer(t)
	p, err := Prepare(context.Background(), PrepareConfig{Builtin: true, Synthetic: 300, SyntheticSeed: 1, Filters: DefaultFilters(), SeqLen: 64, ShardTokens: 4096}, tk, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var nat, syn int64
	for _, tt := range p.Manifest.Totals {
		if tt.Source == "synthetic" {
			syn += tt.Tokens
		} else {
			nat += tt.Tokens
		}
	}
	if nat == 0 || syn == 0 {
		t.Fatalf("totals %+v", p.Manifest.Totals)
	}
	recs := p.Manifest.Recipe.Inputs
	if len(recs) != 2 || recs[1].Generator != SynthGenerator || recs[1].Licence != BuiltinLicence || recs[1].SHA256 == "" {
		t.Fatalf("recipe inputs %+v", recs)
	}
	if p.Manifest.Report.Dropped[ReasonExactDup] == 0 {
		t.Error("templated synthetic text should repeat and be deduplicated")
	}
}

// An empty input, or one whose every document the filters drop, is not a
// dataset: Prepare says so (with what it read) and writes no manifest, and
// a manifest without shards or with an empty shard does not decode.
func TestPrepareRefusesEmpty(t *testing.T) {
	tk := testTokenizer(t)
	dir := t.TempDir()
	for name, content := range map[string]string{"empty.txt": "", "short.txt": "a\n\nb\n"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		out := t.TempDir()
		_, err := Prepare(context.Background(), PrepareConfig{Inputs: []Input{{Path: path}}, Filters: DefaultFilters()}, tk, out, nil)
		if !errors.Is(err, ErrEmptyDataset) {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
		if _, err := os.Stat(filepath.Join(out, "manifest.json")); !os.IsNotExist(err) {
			t.Fatalf("%s: a manifest was written (%v)", name, err)
		}
	}
	p, err := Prepare(context.Background(), PrepareConfig{Inputs: testInputs(t), Filters: DefaultFilters(), SeqLen: 64, ShardTokens: 1000}, tk, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(m *Manifest){
		"no shards":   func(m *Manifest) { m.Shards = nil },
		"empty shard": func(m *Manifest) { m.Shards[0].Rows = 0 },
	} {
		m := *p.Manifest
		m.Shards = slices.Clone(m.Shards)
		edit(&m)
		plain, _ := json.Marshal(&m)
		if _, err := DecodeManifest(plain); !errors.Is(err, ErrEmptyDataset) {
			t.Errorf("%s: decoded (%v)", name, err)
		}
		if _, _, err := EncodeManifest(&m); !errors.Is(err, ErrEmptyDataset) {
			t.Errorf("%s: encoded (%v)", name, err)
		}
	}
}

// A directory input is a collection of mixed files: its text files are
// read in lexical order with the directory's provenance, and what is not
// text (a binary, a hidden directory) is skipped and counted, where the
// same binary named on its own is refused (TestReadDocsRefusesBinary).
func TestPrepareDirectory(t *testing.T) {
	tk := testTokenizer(t)
	files := testInputs(t)
	corpus := filepath.Join(t.TempDir(), "corpus")
	binary := make([]byte, 4096)
	for i := range binary {
		binary[i] = byte(i * 7)
	}
	for name, from := range map[string]string{"a.txt": files[0].Path, "sub/b.tsv": files[1].Path, "logo.png": "", ".git/HEAD": ""} {
		b := binary
		if from != "" {
			var err error
			if b, err = os.ReadFile(from); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(corpus, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(corpus, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	prepare := func(in ...Input) (*Prepared, PrepareConfig, error) {
		cfg := PrepareConfig{Inputs: in, Filters: DefaultFilters(), SeqLen: 64, ShardTokens: 1000}
		if err := cfg.Validate(); err != nil {
			return nil, cfg, err
		}
		p, err := Prepare(context.Background(), cfg, tk, t.TempDir(), nil)
		return p, cfg, err
	}
	p, cfg, err := prepare(Input{Path: corpus, Licence: "CC0-1.0"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range p.Manifest.Recipe.Inputs {
		names = append(names, r.Name)
	}
	if want := []string{"corpus/a.txt", "corpus/sub/b.tsv"}; !slices.Equal(names, want) {
		t.Fatalf("recipe inputs %v, want %v", names, want)
	}
	if p.Manifest.Report.SkippedFiles != 2 || len(cfg.SkippedFiles) != 2 {
		t.Fatalf("skipped %d files, listed %v; want .git and logo.png", p.Manifest.Report.SkippedFiles, cfg.SkippedFiles)
	}
	for _, s := range cfg.SkippedFiles {
		t.Logf("skipped %s", s)
	}
	if !strings.HasSuffix(cfg.SkippedFiles[0].Path, ".git") || !strings.Contains(cfg.SkippedFiles[1].Reason, "not text") {
		t.Fatalf("skipped %v", cfg.SkippedFiles)
	}
	single, _, err := prepare(Input{Path: files[0].Path, Licence: "CC0-1.0"}, Input{Path: files[1].Path, Licence: "CC0-1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Manifest.Report.DocumentsIn != single.Manifest.Report.DocumentsIn || !slices.Equal(shardCIDs(p), shardCIDs(single)) {
		t.Fatalf("the directory read %d documents into shards %v; its two files named alone, %d into %v",
			p.Manifest.Report.DocumentsIn, shardCIDs(p), single.Manifest.Report.DocumentsIn, shardCIDs(single))
	}
	again, _, err := prepare(Input{Path: corpus, Licence: "CC0-1.0"})
	if err != nil || again.CID != p.CID {
		t.Fatalf("the same directory again: %v, %v (first %v)", again, err, p.CID)
	}
	for _, f := range []string{"a.txt", "sub/b.tsv"} {
		if err := os.Remove(filepath.Join(corpus, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := prepare(Input{Path: corpus}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "holds no text file") {
		t.Fatalf("a directory of binaries: %v", err)
	} else {
		t.Log(err)
	}
}

func shardCIDs(p *Prepared) []string {
	var out []string
	for _, s := range p.Manifest.Shards {
		out = append(out, s.CID.CID)
	}
	return out
}

// Conversations (the messages and the instruction/input/output layouts of
// JSONL) are packed whole, each in one row (a row's rest padded when one
// would not fit), into shards that carry a loss mask marking exactly the
// assistant's content and <|end|>; a conversation longer than a row and
// malformed records are counted, not packed.
func TestPrepareConversations(t *testing.T) {
	tk := testTokenizer(t)
	dir := t.TempDir()
	long := strings.Repeat("긴 대답입니다. ", 40)
	jsonl := write(t, dir, "chat.jsonl", strings.Join([]string{
		`{"messages":[{"role":"system","content":"Answer briefly."},{"role":"user","content":"2 더하기 3은?"},{"role":"assistant","content":"5입니다."}]}`,
		`{"instruction":"Translate into Korean.","input":"Open the file.","output":"파일을 엽니다."}`,
		`{"messages":[{"role":"user","content":"What is 7 times 6?"},{"role":"assistant","content":"42."},{"role":"user","content":"한국어로?"},{"role":"assistant","content":"사십이입니다."}]}`,
		`{"messages":[{"role":"user","content":"길게 말해 주세요."},{"role":"assistant","content":"` + long + `"}]}`,
		`{"messages":[{"role":"tool","content":"x"}]}`,
		`{"messages":[{"role":"user","content":"no answer"}]}`,
	}, "\n")+"\n")
	cfg := PrepareConfig{Inputs: []Input{{Path: jsonl, Licence: "CC0-1.0", Stage: "sft"}}, Filters: DefaultFilters(), SeqLen: 48, ShardTokens: 4096}
	out := t.TempDir()
	p, err := Prepare(context.Background(), cfg, tk, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Manifest.Report; r.Dropped[ReasonConversationTooLong] != 1 || r.Malformed != 2 || r.DocumentsOut != 3 {
		t.Fatalf("report %+v", r)
	}
	id := func(s string) int32 { i, _ := tk.SpecialID(s); return i }
	eos, pad, asst, end := id(tokenizer.EOS), id(tokenizer.PAD), id(tokenizer.Assistant), id(tokenizer.EndTurn)
	convs := 0
	for _, s := range p.Manifest.Shards {
		b, _ := os.ReadFile(filepath.Join(out, s.File))
		sh, err := DecodeShard(b)
		if err != nil || sh.Mask == nil {
			t.Fatalf("shard %s: %v, mask %v", s.File, err, sh.Mask != nil)
		}
		for r := range sh.Rows {
			row, mask := sh.Row(r), sh.RowMask(r)
			// Each row holds whole conversations: it starts with a role
			// token, and after each EOS comes another or padding.
			if row[0] == pad || !tk.IsSpecial(row[0]) {
				t.Fatalf("row %d starts with %d, not a role token", r, row[0])
			}
			inAnswer := false
			for j, v := range row {
				switch {
				case v == asst:
					inAnswer = true
					if mask[j] {
						t.Fatalf("row %d: the assistant's own token is a target", r)
					}
					continue
				case v == eos:
					convs++
					if mask[j] {
						t.Fatalf("row %d: EOS is a target", r)
					}
					if j+1 < len(row) && row[j+1] != pad && !tk.IsSpecial(row[j+1]) {
						t.Fatalf("row %d: a conversation continues past EOS at %d", r, j)
					}
				case tk.IsSpecial(v) && v != end:
					inAnswer = false // another role's turn
				}
				if v != eos && mask[j] != (inAnswer && v != pad) {
					t.Fatalf("row %d token %d (%d): target %v inside an answer %v", r, j, v, mask[j], inAnswer)
				}
				if v == end {
					inAnswer = false
				}
			}
		}
	}
	if convs != 3 {
		t.Fatalf("%d conversations in the shards, want 3", convs)
	}
}

// Preference pairs in three JSONL layouts become pair shards: rows 2k and
// 2k+1 share the prompt, each holds one conversation, and only the last
// answer is a target. Malformed records are skipped, a pair too long for
// a row is dropped, and a dataset that mixes pairs with documents is
// refused.
func TestPreparePairs(t *testing.T) {
	tk := testTokenizer(t)
	dir := t.TempDir()
	long := strings.Repeat("긴 대답입니다. ", 40)
	jsonl := write(t, dir, "pairs.jsonl", strings.Join([]string{
		`{"prompt":"2 더하기 3은?","chosen":"5입니다.","rejected":"7입니다."}`,
		`{"messages":[{"role":"system","content":"Answer in English."},{"role":"user","content":"What is 4 times 2?"}],"chosen":"8.","rejected":"팔입니다."}`,
		`{"chosen":[{"role":"user","content":"Say hi."},{"role":"assistant","content":"Hi!"}],"rejected":[{"role":"user","content":"Say hi."},{"role":"assistant","content":"Hi, I am"}]}`,
		`{"prompt":"길게?","chosen":"` + long + `","rejected":"아니요."}`,
		`{"prompt":"x","chosen":"y"}`,
		`{"prompt":"x","chosen":[{"role":"assistant","content":"y"}],"rejected":[{"role":"user","content":"z"}]}`,
	}, "\n")+"\n")
	cfg := PrepareConfig{Inputs: []Input{{Path: jsonl, Licence: "CC0-1.0", Stage: "preference"}}, Filters: DefaultFilters(), SeqLen: 48, ShardTokens: 3 * 49}
	out := t.TempDir()
	p, err := Prepare(context.Background(), cfg, tk, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Manifest.Report; r.Dropped[ReasonPairTooLong] != 1 || r.Malformed != 2 || r.DocumentsOut != 3 {
		t.Fatalf("report %+v", r)
	}
	answers := []string{"5입니다.", "7입니다.", "8.", "팔입니다.", "Hi!", "Hi, I am"}
	var got []string
	for _, s := range p.Manifest.Shards {
		b, _ := os.ReadFile(filepath.Join(out, s.File))
		sh, err := DecodeShard(b)
		if err != nil || !sh.Pairs || !s.Pairs || sh.Rows%2 != 0 {
			t.Fatalf("shard %s: %v, pairs %v (manifest %v), %d rows", s.File, err, sh != nil && sh.Pairs, s.Pairs, sh.Rows)
		}
		for r := range sh.Rows {
			row, mask := sh.Row(r), sh.RowMask(r)
			var ans []int32
			for j, v := range row {
				if mask[j] {
					ans = append(ans, v)
				}
			}
			end, _ := tk.SpecialID(tokenizer.EndTurn)
			if len(ans) == 0 || ans[len(ans)-1] != end {
				t.Fatalf("row %d: targets %v do not end the turn", r, ans)
			}
			text, err := tk.Decode(ans[:len(ans)-1])
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(text))
			if r%2 == 1 { // the pair shares everything before the answer
				first := slices.Index(mask, true)
				if !slices.Equal(row[:first], sh.Row(r - 1)[:first]) {
					t.Fatalf("rows %d and %d: different prompts", r-1, r)
				}
			}
		}
	}
	// Pairs come grouped by language; each stays whole.
	pairsOf := func(a []string) []string {
		var out []string
		for i := 0; i+1 < len(a); i += 2 {
			out = append(out, a[i]+" | "+a[i+1])
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(pairsOf(got), pairsOf(answers)) {
		t.Fatalf("answers %q, want %q", got, answers)
	}
	mixed := write(t, dir, "mixed.jsonl", `{"prompt":"a","chosen":"b","rejected":"c"}`+"\n"+`{"text":"plain text here for the filters to keep, long enough."}`+"\n")
	cfg.Inputs = []Input{{Path: mixed, Licence: "CC0-1.0"}}
	if _, err := Prepare(context.Background(), cfg, tk, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "pairs only") {
		t.Fatalf("a dataset mixing pairs and documents: %v", err)
	}
}
