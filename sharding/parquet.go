package sharding

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
)

// readParquet streams the string column o.Field of a Parquet file (the
// Hugging Face datasets layout: one row per document, a "text" column) one
// page at a time. A document's Line is its row number (1-based). Null or
// non-UTF-8 values are skipped and counted.
func readParquet(path string, o IngestOptions, st *IngestStats, emit func(Doc) error) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInput, err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInput, err)
	}
	pf, err := parquet.OpenFile(fh, fi.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return fmt.Errorf("%w: %s: not a readable Parquet file: %v", ErrInput, path, err)
	}
	leaf, ok := pf.Schema().Lookup(o.Field)
	if !ok {
		var cols []string
		for _, p := range pf.Schema().Columns() {
			cols = append(cols, strings.Join(p, "."))
		}
		return fmt.Errorf("%w: %s: no column %q (columns: %s); choose one with --field", ErrInput, path, o.Field, strings.Join(cols, ", "))
	}
	if leaf.MaxRepetitionLevel > 0 {
		return fmt.Errorf("%w: %s: column %q is repeated; a text column holds one string a row", ErrInput, path, o.Field)
	}
	row := 0
	buf := make([]parquet.Value, 256)
	for _, rg := range pf.RowGroups() {
		pages := rg.ColumnChunks()[leaf.ColumnIndex].Pages()
		for {
			pg, err := pages.ReadPage()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				pages.Close()
				return fmt.Errorf("%w: %s: row %d: %v", ErrInput, path, row+1, err)
			}
			vr := pg.Values()
			for {
				n, err := vr.ReadValues(buf)
				for _, v := range buf[:n] {
					row++
					if v.IsNull() || v.Kind() != parquet.ByteArray {
						st.skip(Malformed{path, row, "null or non-string value"})
						continue
					}
					text := string(v.ByteArray())
					if !utf8.ValidString(text) {
						st.skip(Malformed{path, row, "invalid UTF-8"})
						continue
					}
					if err := emit(Doc{Text: text, File: path, Line: row}); err != nil {
						parquet.Release(pg)
						pages.Close()
						return err
					}
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					parquet.Release(pg)
					pages.Close()
					return fmt.Errorf("%w: %s: row %d: %v", ErrInput, path, row+1, err)
				}
			}
			parquet.Release(pg)
		}
		pages.Close()
	}
	return nil
}
