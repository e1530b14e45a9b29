package sharding

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fomnet/fomnet/tokenizer"

	"github.com/parquet-go/parquet-go"
)

type hfRow struct {
	ID   int64   `parquet:"id"`
	Text *string `parquet:"text,optional"`
}

func TestReadParquet(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "train-00000.parquet")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	s := func(x string) *string { return &x }
	rows := []hfRow{{1, s("안녕하세요, 세계.")}, {2, nil}, {3, s("Hello, world.")}, {4, s("bad \xff utf8")}}
	for i := 0; i < 1000; i++ { // enough rows for several pages
		rows = append(rows, hfRow{int64(10 + i), s(strings.Repeat("문장 ", 1+i%7))})
	}
	w := parquet.NewGenericWriter[hfRow](f, parquet.PageBufferSize(512))
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var docs []Doc
	st, err := ReadDocs([]string{path}, IngestOptions{}, func(d Doc) error { docs = append(docs, d); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1002 || docs[0].Text != "안녕하세요, 세계." || docs[1].Line != 3 || st.Skipped != 2 || st.Docs != 1002 {
		t.Fatalf("%d docs, first %+v, second %+v, stats %+v", len(docs), docs[0], docs[1], st)
	}
	if got := st.FirstBad[0].String(); !strings.Contains(got, "train-00000.parquet:2") {
		t.Errorf("skip reported as %s", got)
	}
	if _, err := ReadDocs([]string{path}, IngestOptions{Field: "body"}, func(Doc) error { return nil }); err == nil || !strings.Contains(err.Error(), "text") {
		t.Errorf("missing column: %v (want the list of columns)", err)
	}
	bad := write(t, dir, "broken.parquet", "PAR1 this is not parquet")
	if _, err := ReadDocs([]string{bad}, IngestOptions{}, func(Doc) error { return nil }); err == nil {
		t.Error("broken parquet accepted")
	}
}

type pqMsg struct {
	Role    string `parquet:"role" json:"role"`
	Content string `parquet:"content" json:"content"`
}

// Conversations and preference pairs in Parquet (nested lists of messages
// included) read as the same records in JSONL do, malformed rows counted
// alike.
func TestReadParquetRecords(t *testing.T) {
	type chat struct {
		Messages []pqMsg `parquet:"messages,list" json:"messages"`
	}
	type instr struct {
		Instruction string `parquet:"instruction" json:"instruction"`
		Input       string `parquet:"input" json:"input"`
		Output      string `parquet:"output" json:"output"`
	}
	type pairText struct {
		Prompt   string `parquet:"prompt" json:"prompt"`
		Chosen   string `parquet:"chosen" json:"chosen"`
		Rejected string `parquet:"rejected" json:"rejected"`
	}
	type pairMsgs struct {
		Chosen   []pqMsg `parquet:"chosen,list" json:"chosen"`
		Rejected []pqMsg `parquet:"rejected,list" json:"rejected"`
	}
	u, a := func(s string) pqMsg { return pqMsg{"user", s} }, func(s string) pqMsg { return pqMsg{"assistant", s} }
	checkSame(t, "chat", []chat{{[]pqMsg{{"system", "Answer briefly."}, u("2 더하기 3은?"), a("5입니다.")}}, {[]pqMsg{u("no answer")}}, {[]pqMsg{{"tool", "x"}, a("y")}}, {[]pqMsg{u("Hi"), a("Hello."), u("한국어로?"), a("안녕하세요.")}}}, 2, 2)
	checkSame(t, "instr", []instr{{"Translate into Korean.", "Open the file.", "파일을 엽니다."}, {"Say hi.", "", "Hi!"}}, 2, 0)
	checkSame(t, "pairs", []pairText{{"2 더하기 3은?", "5입니다.", "7입니다."}}, 1, 0)
	checkSame(t, "pairmsgs", []pairMsgs{{[]pqMsg{u("Say hi."), a("Hi!")}, []pqMsg{u("Say hi."), a("Hi, I am")}}, {[]pqMsg{u("x")}, []pqMsg{u("x"), a("y")}}}, 1, 1)
}

// checkSame writes rows as Parquet and as JSONL and wants the same
// documents (docs of them) from both, bad of them skipped.
func checkSame[T any](t *testing.T, name string, rows []T, docs, bad int) {
	t.Helper()
	dir := t.TempDir()
	pq := filepath.Join(dir, name+".parquet")
	f, err := os.Create(pq)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[T](f)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var lines []string
	for _, r := range rows {
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	js := write(t, dir, name+".jsonl", strings.Join(lines, "\n")+"\n")
	read := func(path string) ([]Doc, IngestStats) {
		var out []Doc
		st, err := ReadDocs([]string{path}, IngestOptions{}, func(d Doc) error { d.File = ""; out = append(out, d); return nil })
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return out, st
	}
	a, sa := read(pq)
	b, sb := read(js)
	if !reflect.DeepEqual(a, b) || len(a) != docs || sa.Skipped != bad || sb.Skipped != bad {
		t.Fatalf("%s: Parquet gave %+v (%d skipped: %v), JSONL %+v (%d skipped: %v)", name, a, sa.Skipped, sa.FirstBad, b, sb.Skipped, sb.FirstBad)
	}
	for _, d := range a {
		if len(d.Messages) == 0 || d.Messages[len(d.Messages)-1].Role != "assistant" {
			t.Fatalf("%s: %+v is not a conversation", name, d)
		}
	}
}

// FuzzReadDocs feeds arbitrary bytes to the readers of every input format:
// they return documents of valid UTF-8 or an input error, never panic.
func FuzzReadDocs(f *testing.F) {
	type chat struct {
		Messages []pqMsg `parquet:"messages,list"`
	}
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[chat](&buf)
	w.Write([]chat{{[]pqMsg{{"user", "2 더하기 3은?"}, {"assistant", "5입니다."}}}, {[]pqMsg{{"user", "x"}}}})
	w.Close()
	f.Add(byte(1), buf.Bytes())
	f.Add(byte(0), []byte(`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"안녕"}]}`+"\n"+`{"prompt":"x","chosen":"y","rejected":"z"}`+"\n"+`{"instruction":"a","output":"b"}`))
	f.Add(byte(2), []byte("첫 문단.\n\nSecond paragraph.\n"))
	f.Add(byte(3), []byte("hello\t안녕\nbad line\n"))
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		path := filepath.Join(t.TempDir(), "in"+[]string{".jsonl", ".parquet", ".txt", ".tsv"}[kind%4])
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadDocs([]string{path}, IngestOptions{MaxLine: 1 << 16}, func(d Doc) error {
			for _, s := range append([]tokenizer.Message{{Content: d.Text}}, append(d.Messages, d.Rejected...)...) {
				if !utf8.ValidString(s.Content) {
					t.Fatalf("document of invalid UTF-8: %q", s.Content)
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, ErrInput) {
			t.Fatalf("not an input error: %v", err)
		}
	})
}
