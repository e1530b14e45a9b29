package sharding

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadDocs(t *testing.T) {
	dir := t.TempDir()
	txt := write(t, dir, "a.txt", "first para\nline two\n\n\nsecond\r\n\nbad \xff line\nthird\n")
	tsv := write(t, dir, "b.tsv", "Hello\t안녕\nno tab here\nA\tB\tC\n\t빈\n")
	jl := write(t, dir, "c.jsonl", `{"text":"one"}`+"\n"+`{"body":"x"}`+"\n"+`not json`+"\n\n"+`{"text":"한국어"}`+"\n")
	var docs []Doc
	st, err := ReadDocs([]string{txt, tsv, jl}, IngestOptions{}, func(d Doc) error { docs = append(docs, d); return nil })
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, d := range docs {
		texts = append(texts, d.Text)
	}
	want := "first para\nline two|second|third|Hello|안녕|빈|one|한국어"
	if got := strings.Join(texts, "|"); got != want {
		t.Fatalf("docs %q\nwant %q", got, want)
	}
	if st.Skipped != 5 || st.Docs != 8 || st.Files != 3 {
		t.Fatalf("stats %+v", st)
	}
	wantBad := []string{"a.txt:7", "b.tsv:2", "b.tsv:3", "c.jsonl:2", "c.jsonl:3"}
	for i, m := range st.FirstBad {
		if !strings.Contains(m.String(), wantBad[i]) {
			t.Errorf("skip %d is %s, want %s", i, m, wantBad[i])
		}
	}
	if docs[0].Line != 1 || docs[1].Line != 5 || docs[3].Side != "en" || docs[4].Side != "ko" {
		t.Errorf("provenance: %+v", docs[:5])
	}
	if _, err := ReadDocs([]string{filepath.Join(dir, "missing.txt")}, IngestOptions{}, func(Doc) error { return nil }); !errors.Is(err, ErrInput) {
		t.Fatalf("missing file: %v", err)
	}
	long := write(t, dir, "long.txt", "ok\n"+strings.Repeat("x", 100)+"\n")
	if _, err := ReadDocs([]string{long}, IngestOptions{MaxLine: 50}, func(Doc) error { return nil }); err == nil || !strings.Contains(err.Error(), "long.txt:2") {
		t.Fatalf("long line: %v", err)
	}
	stop := errors.New("stop")
	if _, err := ReadDocs([]string{txt}, IngestOptions{}, func(Doc) error { return stop }); err != stop {
		t.Fatalf("yield error not returned: %v", err)
	}
}
