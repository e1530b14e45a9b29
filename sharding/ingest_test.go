package sharding

import (
	"errors"
	"math/rand/v2"
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

// Binary input is refused by name, whatever its extension: a NUL byte
// (executables, UTF-16), random bytes, control characters; text with a
// stray bad byte is read (the line skipped), Korean text passes.
func TestReadDocsRefusesBinary(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 200<<10)
	for i := range random {
		random[i] = byte(r.IntN(255) + 1) // no NUL: the share of invalid UTF-8 tells
	}
	ctrl := strings.Repeat("text\x01\x02\x03 ", 100)
	for name, path := range map[string]string{
		"executable": exe,
		"random":     write(t, dir, "random.txt", string(random)),
		"utf-16":     write(t, dir, "utf16.txt", "h\x00e\x00l\x00l\x00o\x00"),
		"control":    write(t, dir, "ctrl.jsonl", ctrl),
	} {
		_, err := ReadDocs([]string{path}, IngestOptions{}, func(Doc) error { return nil })
		if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "is not text") || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	ko := write(t, dir, "ko.txt", strings.Repeat("한국어 문장입니다. English too.\n\n", 3000)+"stray \xff byte\n")
	st, err := ReadDocs([]string{ko}, IngestOptions{}, func(Doc) error { return nil })
	if err != nil || st.Docs != 3000 || st.Skipped != 1 {
		t.Fatalf("Korean text: %+v, %v", st, err)
	}
}
