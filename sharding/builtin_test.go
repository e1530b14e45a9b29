package sharding

import (
	"bytes"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestBuiltinIsBilingual(t *testing.T) {
	files := Builtin()
	if len(files) == 0 {
		t.Fatal("no built-in corpus")
	}
	var hangul, latin int
	for _, f := range files {
		if !utf8.Valid(f.Text) {
			t.Fatalf("%s is not UTF-8", f.Name)
		}
		for _, r := range string(f.Text) {
			switch {
			case unicode.Is(unicode.Hangul, r):
				hangul++
			case unicode.Is(unicode.Latin, r):
				latin++
			}
		}
		if bytes.Contains(f.Text, []byte("\r")) {
			t.Errorf("%s has CR line endings", f.Name)
		}
	}
	if hangul < 500 || latin < 1000 {
		t.Fatalf("corpus has %d Hangul and %d Latin letters; want both languages well represented", hangul, latin)
	}
}

func TestBuiltinPairs(t *testing.T) {
	ps := BuiltinPairs()
	if len(ps) < 55 {
		t.Fatalf("%d aligned pairs", len(ps))
	}
	for i, p := range ps {
		if Language(p[0], 0.7) != "ko" || Language(p[1], 0.7) != "en" {
			t.Fatalf("pair %d: %q / %q", i, p[0], p[1])
		}
	}
}
