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
