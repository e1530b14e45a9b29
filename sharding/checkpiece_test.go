package sharding

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCheckPiece: an honest piece passes, whether every document is
// analysed in full or none is; pieces from a machine that dropped a
// document as filtered, changed a document's key or language, or
// changed token ids are refuted, naming the document — the token ids only
// when that document is among those analysed in full (the sample).
func TestCheckPiece(t *testing.T) {
	tk := testTokenizer(t)
	ctx := context.Background()
	cfg := PrepareConfig{Inputs: splitInputs(t), Builtin: true, Filters: DefaultFilters(), SeqLen: 64, ShardTokens: 3000}
	pl, err := MakePlan(ctx, cfg, tk, 3)
	if err != nil {
		t.Fatal(err)
	}
	all := func(int, int) bool { return true }
	none := func(int, int) bool { return false }
	piece := func(part int, tamper func(*pdoc)) []byte {
		var b bytes.Buffer
		if err := preparePart(ctx, pl, tk, part, 2, &b, tamper); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	for part := range pl.Parts {
		b := piece(part, nil)
		for _, full := range []func(int, int) bool{all, none} {
			if _, err := CheckPiece(ctx, pl, tk, part, 2, bytes.NewReader(b), full); err != nil {
				t.Fatalf("honest piece of part %d: %v", part, err)
			}
		}
		if _, err := CheckPiece(ctx, pl, tk, (part+1)%3, 1, bytes.NewReader(b), none); err == nil || !strings.Contains(err.Error(), "belongs") {
			t.Fatalf("part %d's piece checked as part %d's: %v", part, (part+1)%3, err)
		}
	}
	// The cheat hits the 5th document of part 1 that passes the filters.
	target := func(change func(d *pdoc)) func(*pdoc) {
		n := 0
		return func(d *pdoc) {
			if d.reason == "" {
				if n++; n == 5 {
					change(d)
				}
			}
		}
	}
	var line int
	cheats := []struct {
		name   string
		change func(d *pdoc)
		full   func(int, int) bool
		want   string
	}{
		{"dropped", func(d *pdoc) { d.reason = ReasonTooShort }, none, "passes the filters"},
		{"key", func(d *pdoc) { d.key[0] ^= 1 }, none, "dedup key"},
		{"language", func(d *pdoc) { d.lang = "none" }, none, "language"},
		{"ids", func(d *pdoc) { line = d.Line; d.ids = append(d.ids, 5) }, all, "token ids differ"},
		{"truncated", nil, none, "piece"},
	}
	for _, c := range cheats {
		var b []byte
		if c.change != nil {
			b = piece(1, target(c.change))
		} else {
			b = piece(1, nil)
			b = b[:len(b)*2/3]
		}
		_, err := CheckPiece(ctx, pl, tk, 1, 2, bytes.NewReader(b), c.full)
		f, ok := IsPieceFraud(err)
		if !ok || !strings.Contains(err.Error(), c.want) || (c.change != nil && f.Line == 0) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Changed token ids of a document outside the sample pass: the
	// sample's size is the check's power.
	b := piece(1, target(func(d *pdoc) { d.ids = append(d.ids, 5) }))
	if _, err := CheckPiece(ctx, pl, tk, 1, 2, bytes.NewReader(b), func(_, l int) bool { return l != line }); err != nil {
		t.Errorf("changed ids outside the sample: %v", err)
	}
}
