package sharding

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
