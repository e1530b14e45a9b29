package sharding

import (
	"strings"
	"testing"
)

func TestLanguage(t *testing.T) {
	for text, want := range map[string]string{
		"안녕하세요 여러분":                "ko",
		"Hello everyone":           "en",
		"파일 메뉴에서 Save를 누르십시오":      "ko",
		"Open 파일을":                 "mixed",
		"12345 !!":                 "none",
		"Choose File - Save As 저장": "en",
	} {
		if got := Language(text, 0.7); got != want {
			t.Errorf("Language(%q) = %s, want %s", text, got, want)
		}
	}
}

func TestFilters(t *testing.T) {
	c := DefaultFilters()
	for text, want := range map[string]string{
		"a":                                     ReasonTooShort,
		"Hello world, this is fine.":            "",
		strings.Repeat("x", 40) + " short tail": ReasonRepetitive,
		"line one\nline two\nline one\nline one\nline one": ReasonRepetitive,
		"bad\x00\x01\x02 control characters here":          ReasonControl,
		"1234567890": ReasonLanguage,
	} {
		if _, got := c.Check(text); got != want {
			t.Errorf("Check(%q) = %q, want %q", text, got, want)
		}
	}
}

func TestDedup(t *testing.T) {
	d := NewDeduper(0.8)
	base := "The quick brown fox jumps over the lazy dog near the river bank today."
	if r := d.Check(base); r != "" {
		t.Fatalf("first document dropped: %s", r)
	}
	if r := d.Check("The  quick brown fox\njumps over the lazy dog near the river bank today."); r != ReasonExactDup {
		t.Fatalf("whitespace variant: %q, want exact duplicate", r)
	}
	if r := d.Check("The quick brown fox jumps over the lazy dog near the river bank today!"); r != ReasonNearDup {
		t.Fatalf("one-character edit: %q, want near duplicate", r)
	}
	if r := d.Check("A completely different sentence about Korean grammar and verbs."); r != "" {
		t.Fatalf("different document dropped: %s", r)
	}
	// Short documents: distinct UI strings must survive, repeats must not.
	for _, s := range []string{"Open", "Save", "Close", "열기", "저장"} {
		if r := d.Check(s); r != "" {
			t.Errorf("short %q dropped: %s", s, r)
		}
	}
	if r := d.Check("Save"); r != ReasonExactDup {
		t.Errorf("repeated short string: %q", r)
	}
}
