package sharding

import (
	"embed"
	"io/fs"
	"sort"
)

//go:embed builtin/*.txt
var builtinFS embed.FS

// BuiltinFile is one text of the built-in corpus.
type BuiltinFile struct {
	Name string
	Text []byte
}

// Builtin returns the built-in corpus in a fixed order.
func Builtin() []BuiltinFile {
	names, _ := fs.Glob(builtinFS, "builtin/*.txt")
	sort.Strings(names)
	var out []BuiltinFile
	for _, n := range names {
		b, _ := builtinFS.ReadFile(n)
		out = append(out, BuiltinFile{Name: n, Text: b})
	}
	return out
}

// BuiltinPairs returns the aligned paragraph pairs of the built-in corpus,
// {Korean, English}: the texts alternate a Korean paragraph and its English
// translation.
func BuiltinPairs() [][2]string {
	var paras []string
	for _, f := range Builtin() {
		paras = append(paras, splitParagraphs(string(f.Text))...)
	}
	var out [][2]string
	for i := 0; i+1 < len(paras); i++ {
		if Language(paras[i], 0.7) == "ko" && Language(paras[i+1], 0.7) == "en" {
			out = append(out, [2]string{paras[i], paras[i+1]})
			i++
		}
	}
	return out
}
