package sharding

import (
	"encoding/json"
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
// page at a time; without that column, a file of conversations or
// preference pairs is read row by row (readParquetRecords). A document's
// Line is its row number (1-based). Null or non-UTF-8 values are skipped
// and counted.
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
	if !ok && recordLayout(pf.Schema()) {
		return readParquetRecords(path, pf, o.Field, st, emit)
	}
	if !ok {
		var cols []string
		for _, p := range pf.Schema().Columns() {
			cols = append(cols, strings.Join(p, "."))
		}
		return fmt.Errorf("%w: %s: no column %q (columns: %s); choose one with --field (or give conversations: messages, instruction and output, or chosen and rejected)", ErrInput, path, o.Field, strings.Join(cols, ", "))
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

// recordLayout says whether a Parquet file's top-level columns are those of
// conversations or preference pairs.
func recordLayout(s *parquet.Schema) bool {
	for _, f := range s.Fields() {
		switch f.Name() {
		case "messages", "instruction", "chosen":
			return true
		}
	}
	return false
}

// readParquetRecords reads a Parquet file of conversations or preference
// pairs (nested lists of {role, content} included) a few rows at a time,
// each row as a JSON object through record, the decoder of JSONL records,
// so both containers accept the same layouts. A row that cannot be read as
// an object is skipped and counted; a panic of the Parquet reader on a
// hostile file is an input error.
func readParquetRecords(path string, pf *parquet.File, field string, st *IngestStats, emit func(Doc) error) (err error) {
	r := parquet.NewGenericReader[any](pf)
	defer r.Close()
	row := 0
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: row %d: unreadable: %v", ErrInput, path, row+1, p)
		}
	}()
	rows := make([]any, 64)
	for {
		n, rerr := r.Read(rows)
		for _, v := range rows[:n] {
			row++
			var obj map[string]json.RawMessage
			b, jerr := json.Marshal(v)
			if jerr == nil {
				jerr = json.Unmarshal(b, &obj)
			}
			if jerr != nil {
				st.skip(Malformed{path, row, "not a record: " + jerr.Error()})
				continue
			}
			d, why := record(obj, field)
			if why != "" {
				st.skip(Malformed{path, row, why})
				continue
			}
			d.File, d.Line = path, row
			if err := emit(d); err != nil {
				return err
			}
		}
		clear(rows[:n])
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("%w: %s: row %d: %v", ErrInput, path, row+1, rerr)
		}
	}
}
