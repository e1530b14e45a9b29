package sharding

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SkippedFile is a file of an input directory that Prepare left out, and why.
type SkippedFile struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

func (s SkippedFile) String() string { return s.Path + ": " + s.Reason }

// expandDirs replaces each input that is a directory by the files under it
// (walked in lexical order, so the same tree gives the same dataset), each
// with the directory's provenance and, unless the directory's input names
// one, the format its extension says. A directory is a collection of mixed
// files: what is not text (LooksBinary, parquet aside), hidden entries,
// and what is not a regular file are skipped and returned, not an error —
// as an input named on its own, such a file is refused. A directory
// without any text file is an error.
func expandDirs(inputs []Input) ([]Input, []SkippedFile, error) {
	var out []Input
	var skipped []SkippedFile
	for _, in := range inputs {
		fi, err := os.Stat(in.Path)
		if err != nil || !fi.IsDir() {
			out = append(out, in) // files, and errors, are for reading to report
			continue
		}
		n := len(out)
		var skippedHere []SkippedFile
		err = filepath.WalkDir(in.Path, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("%w: %v", ErrInput, err)
			}
			if path == in.Path {
				return nil
			}
			why := ""
			switch {
			case strings.HasPrefix(d.Name(), "."):
				why = "hidden"
			case d.IsDir():
				return nil
			default:
				why, err = fileNotText(path, in.Format)
				if err != nil {
					return err
				}
			}
			if why != "" {
				skippedHere = append(skippedHere, SkippedFile{path, why})
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			f := in
			f.Path = path
			if in.Format == "" {
				f.Format = FormatOf(path)
			}
			rel, _ := filepath.Rel(filepath.Dir(filepath.Clean(in.Path)), path)
			f.name = filepath.ToSlash(rel)
			out = append(out, f)
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		if len(out) == n {
			extra := ""
			if len(skippedHere) > 0 {
				extra = fmt.Sprintf(" (%d skipped, the first %s)", len(skippedHere), skippedHere[0])
			}
			return nil, nil, fmt.Errorf("%w: directory %s holds no text file%s", ErrInput, in.Path, extra)
		}
		skipped = append(skipped, skippedHere...)
	}
	return out, skipped, nil
}

// fileNotText says why the file at path cannot be an input of a
// directory's ("" if it can): not a regular file (links are followed), or
// not text by LooksBinary unless its format is parquet.
func fileNotText(path string, format Format) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInput, err)
	}
	if !fi.Mode().IsRegular() {
		return "not a regular file", nil
	}
	if format == "" {
		format = FormatOf(path)
	}
	if format == FormatParquet {
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInput, err)
	}
	defer f.Close()
	why, err := LooksBinary(bufio.NewReaderSize(f, sniffLen))
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrInput, path, err)
	}
	if why != "" {
		why = "not text: " + why
	}
	return why, nil
}
