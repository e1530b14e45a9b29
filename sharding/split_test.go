package sharding

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// splitInputs are inputs whose documents repeat across and within parts:
// exact duplicates with other white space, near duplicates, and a near
// duplicate followed by its own white-space twin (which must count as a
// near duplicate, though within its part it looks like an exact one).
func splitInputs(t *testing.T) []Input {
	dir := t.TempDir()
	x := "The lighthouse keeper counted the ships that passed the northern rocks every single evening."
	a := strings.Replace(x, "single", "singIe", 1) // a near duplicate of x
	var txt strings.Builder
	txt.WriteString(x + "\n\n")
	for _, f := range Builtin() {
		txt.Write(f.Text)
		txt.WriteString("\n\n")
	}
	for i, d := range Synthetic(3, 800) {
		txt.WriteString(d.Text + "\n\n")
		if i%7 == 0 {
			txt.WriteString(strings.ReplaceAll(d.Text, " ", "  ") + "\n\n")
		}
	}
	txt.WriteString(" \n" + a + "\n\n" + strings.ReplaceAll(a, " ", "\t") + "\n\n")
	var jsonl strings.Builder
	for i := range 300 {
		fmt.Fprintf(&jsonl, `{"text":"문서 %d: 오늘은 날씨가 맑습니다. Document %d is short."}`+"\n", i%200, i%200)
	}
	jsonl.WriteString("not json\n")
	return []Input{
		{Path: write(t, dir, "a.txt", txt.String()), Licence: "CC0-1.0"},
		{Path: write(t, dir, "pairs.tsv", "Open the file.\t파일을 엽니다.\nSave the file.\t파일을 저장합니다.\nbroken\n"+strings.Repeat("Close it.\t닫습니다.\n", 3)), Licence: "MPL-2.0"},
		{Path: write(t, dir, "docs.jsonl", jsonl.String()), Source: "synthetic", Generator: "test/v1", Licence: "CC0-1.0"},
	}
}

// TestSplitPrepare: a preparation cut into parts, each analysed on its
// own, and merged gives the dataset Prepare gives in one process, byte
// for byte, for any number of parts.
func TestSplitPrepare(t *testing.T) {
	tk := testTokenizer(t)
	ctx := context.Background()
	cfg := PrepareConfig{Inputs: splitInputs(t), Builtin: true, Filters: DefaultFilters(), SeqLen: 64, ShardTokens: 3000}
	want, err := Prepare(ctx, cfg, tk, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := want.Manifest.Report; r.Dropped[ReasonNearDup] == 0 || r.Dropped[ReasonExactDup] == 0 || r.Malformed == 0 {
		t.Fatalf("report %+v: the test wants near and exact duplicates and malformed lines", r)
	}
	for _, parts := range []int{1, 2, 3, 7} {
		pl, err := MakePlan(ctx, cfg, tk, parts)
		if err != nil {
			t.Fatal(err)
		}
		// The plan travels as JSON.
		dir := t.TempDir()
		b, err := pl.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "plan.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if pl, err = ReadPlan(filepath.Join(dir, "plan.json")); err != nil {
			t.Fatal(err)
		}
		var pieces []string
		for i := range parts {
			path := filepath.Join(dir, fmt.Sprintf("piece-%d", i))
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := PreparePart(ctx, pl, tk, i, 1+i%2, f); err != nil {
				t.Fatal(err)
			}
			f.Close()
			pieces = append(pieces, path)
		}
		if parts > 1 && len(pl.Parts[1]) == 0 {
			t.Fatalf("%d parts: part 1 is empty: %+v", parts, pl.Parts)
		}
		got, err := Merge(ctx, pl, tk, pieces, t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !got.CID.Equals(want.CID) || !bytes.Equal(got.ManifestBytes, want.ManifestBytes) {
			t.Fatalf("%d parts: dataset %s, Prepare: %s\n%s\n%s", parts, got.CID, want.CID, got.ManifestBytes, want.ManifestBytes)
		}
		if parts == 3 {
			// Pieces in the wrong order, or one from another plan, are refused.
			if _, err := Merge(ctx, pl, tk, []string{pieces[1], pieces[0], pieces[2]}, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "belongs") {
				t.Fatalf("swapped pieces: %v", err)
			}
			// A part read from another file at the plan's path is refused.
			path := pl.Config.Inputs[0].Path
			orig, _ := os.ReadFile(path)
			os.WriteFile(path, append(orig, "\n\nOne more paragraph.\n"...), 0o644)
			err := PreparePart(ctx, pl, tk, 0, 1, io.Discard)
			os.WriteFile(path, orig, 0o644)
			if err == nil || !strings.Contains(err.Error(), "another file at this path") {
				t.Fatalf("part of a changed input: %v", err)
			}
			other := *pl
			other.Config.SeqLen++
			if _, err := Merge(ctx, &other, tk, pieces, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "another plan") {
				t.Fatalf("pieces of another plan: %v", err)
			}
		}
	}
}

// FuzzPiece: any bytes are read as a piece of the plan (records whose
// inputs, languages, token ids and masks are the plan's) or refused; never
// a panic. Seeds: the pieces of a plan of text, conversations and pairs.
func FuzzPiece(f *testing.F) {
	ctx := context.Background()
	tk := testTokenizer(f)
	dir := f.TempDir()
	in := write(f, dir, "a.txt", "First paragraph here.\n\n첫 문단입니다.\n\nFirst  paragraph\there.\n\nx\n")
	cfg := PrepareConfig{Inputs: []Input{{Path: in}}, Instructions: 12, Pairs: 6, Filters: DefaultFilters(), SeqLen: 64}
	pl, err := MakePlan(ctx, cfg, tk, 2)
	if err != nil {
		f.Fatal(err)
	}
	hash, err := pl.Hash()
	if err != nil {
		f.Fatal(err)
	}
	for part := range pl.Parts {
		var buf bytes.Buffer
		if err := PreparePart(ctx, pl, tk, part, 1, &buf); err != nil {
			f.Fatal(err)
		}
		f.Add(part, buf.Bytes())
	}
	dd := NewDeduper(cfg.Filters.NearDupThreshold)
	f.Fuzz(func(t *testing.T, part int, b []byte) {
		p := &pieceReader{r: bufio.NewReader(bytes.NewReader(b)), name: "fuzz", pl: pl, vocab: tk.Vocab(), sigs: dd}
		if p.header(hash, part) != nil {
			return
		}
		var d pdoc
		var n uint64
		for ; n < 1<<16; n++ {
			if more, err := p.next(); err != nil || !more {
				break
			}
			if err := p.record(&d); err != nil {
				return
			}
			if d.in < 0 || d.in >= len(pl.Inputs) || !slices.Contains(pieceLangs, d.lang) {
				t.Fatalf("record of input %d, language %q", d.in, d.lang)
			}
			for _, ids := range [][]int32{d.ids, d.rids} {
				for _, id := range ids {
					if id < 0 || int(id) >= tk.Vocab() {
						t.Fatalf("token %d outside the vocabulary", id)
					}
				}
			}
			if d.mask != nil && len(d.mask) != len(d.ids) || d.rmask != nil && len(d.rmask) != len(d.rids) {
				t.Fatalf("masks of %d and %d bits for %d and %d tokens", len(d.mask), len(d.rmask), len(d.ids), len(d.rids))
			}
		}
		if _, filtered, err := p.trailer(n); err == nil {
			for r, c := range filtered {
				if !slices.Contains(filterReasons, r) || c[0] < 1 {
					t.Fatalf("%d documents dropped for %q", c[0], r)
				}
			}
		}
	})
}

// FuzzParsePlan: any bytes are a plan that its checks accept or refuse
// (a plan comes from a peer in a swarm preparation); never a panic.
func FuzzParsePlan(f *testing.F) {
	ctx := context.Background()
	tk := testTokenizer(f)
	in := write(f, f.TempDir(), "a.txt", "First paragraph here.\n\n첫 문단입니다.\n")
	pl, err := MakePlan(ctx, PrepareConfig{Inputs: []Input{{Path: in}}, Builtin: true, Filters: DefaultFilters(), SeqLen: 64}, tk, 2)
	if err != nil {
		f.Fatal(err)
	}
	pl.InputCIDs = []string{"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}
	b, _ := pl.Encode()
	f.Add(b)
	f.Add([]byte(`{"fomnet":"prepare-plan/v1","parts":[[{"input":-1,"start":5,"end":2,"line":0}]]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pl, err := ParsePlan(b)
		if err != nil {
			return
		}
		if pl.check(ctx, tk) != nil {
			return
		}
		if _, err := pl.Hash(); err != nil {
			t.Fatal(err)
		}
	})
}
