package sharding

import (
	"strings"
	"unicode"
)

// FilterConfig holds the quality filters. Zero values disable a check
// unless noted; DefaultFilters gives working settings.
type FilterConfig struct {
	MinChars int `json:"min_chars"` // documents shorter than this are dropped
	MaxChars int `json:"max_chars"` // and longer ones (0: no limit)
	// MaxDupLineFrac drops documents whose repeated lines make up more than
	// this fraction of their characters (0: off).
	MaxDupLineFrac float64 `json:"max_dup_line_frac"`
	// MaxCharRunFrac drops documents whose longest run of one character is
	// more than this fraction of the document (0: off).
	MaxCharRunFrac float64 `json:"max_char_run_frac"`
	// MaxControlFrac drops documents with more than this fraction of control
	// or format characters other than tab and newline (0: off).
	MaxControlFrac float64 `json:"max_control_frac"`
	// LangShare: a document is "ko" when Hangul letters are at least this
	// share of its Hangul and Latin letters, "en" when Latin letters are,
	// "mixed" otherwise; "none" without letters of either script.
	LangShare float64 `json:"lang_share"`
	// Languages kept (empty: all).
	Languages []string `json:"languages"`
	// NearDupThreshold is the estimated Jaccard similarity of character
	// 5-gram sets above which a document counts as a near duplicate of one
	// kept earlier (0: near-dedup off). Exact duplicates are always dropped.
	NearDupThreshold float64 `json:"near_dup_threshold"`
}

// DefaultFilters are the settings `fomnet data prepare` uses unless told
// otherwise.
func DefaultFilters() FilterConfig {
	return FilterConfig{MinChars: 2, MaxChars: 1 << 20, MaxDupLineFrac: 0.3, MaxCharRunFrac: 0.5,
		MaxControlFrac: 0.01, LangShare: 0.7, Languages: []string{"ko", "en", "mixed"}, NearDupThreshold: 0.8}
}

// Filter reasons, as counted in reports.
const (
	ReasonTooShort   = "too_short"
	ReasonTooLong    = "too_long"
	ReasonRepetitive = "repetitive"
	ReasonControl    = "control_chars"
	ReasonLanguage   = "language"
	ReasonExactDup   = "exact_duplicate"
	ReasonNearDup    = "near_duplicate"
)

// Language tags a document by script: see FilterConfig.LangShare.
func Language(text string, share float64) string {
	var sc scriptCount
	for _, r := range text {
		sc.add(r)
	}
	return sc.language(share)
}

// scriptCount counts the Hangul and Latin letters of a text.
type scriptCount struct{ hangul, latin int }

func (c *scriptCount) add(r rune) {
	switch {
	case r < 0x80: // ASCII: the only letters are Latin
		if r|0x20 >= 'a' && r|0x20 <= 'z' {
			c.latin++
		}
	case r >= 0xAC00 && r <= 0xD7A3, unicode.Is(unicode.Hangul, r) && unicode.IsLetter(r):
		c.hangul++
	case unicode.Is(unicode.Latin, r) && unicode.IsLetter(r):
		c.latin++
	}
}

func (c scriptCount) language(share float64) string {
	h, l := c.hangul, c.latin
	switch {
	case h+l == 0:
		return "none"
	case float64(h) >= share*float64(h+l):
		return "ko"
	case float64(l) >= share*float64(h+l):
		return "en"
	}
	return "mixed"
}

// isControl reports a control or format character other than tab and
// newline.
func isControl(r rune) bool {
	if r < 0x80 { // no ASCII character is a format character
		return r != '\t' && r != '\n' && (r < 0x20 || r == 0x7f)
	}
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
}

// Check applies the per-document filters (not dedup) and returns the
// document's language and the reason it is dropped ("" to keep it).
func (c FilterConfig) Check(text string) (lang, reason string) {
	n := 0
	ctrl := 0
	run, best := 0, 0
	var prev rune = -1
	var sc scriptCount
	for _, r := range text {
		n++
		sc.add(r)
		if r == prev {
			run++
		} else {
			run = 1
			prev = r
		}
		best = max(best, run)
		if isControl(r) {
			ctrl++
		}
	}
	lang = sc.language(c.LangShare)
	switch {
	case n < c.MinChars:
		return lang, ReasonTooShort
	case c.MaxChars > 0 && n > c.MaxChars:
		return lang, ReasonTooLong
	case c.MaxControlFrac > 0 && float64(ctrl) > c.MaxControlFrac*float64(n):
		return lang, ReasonControl
	case c.MaxCharRunFrac > 0 && n >= 10 && float64(best) > c.MaxCharRunFrac*float64(n):
		return lang, ReasonRepetitive
	case c.MaxDupLineFrac > 0 && dupLineFrac(text) > c.MaxDupLineFrac:
		return lang, ReasonRepetitive
	}
	if len(c.Languages) > 0 {
		ok := false
		for _, l := range c.Languages {
			ok = ok || l == lang
		}
		if !ok {
			return lang, ReasonLanguage
		}
	}
	return lang, ""
}

// dupLineFrac is the fraction of characters in lines that repeat an earlier
// line of the same document.
func dupLineFrac(text string) float64 {
	if !strings.Contains(text, "\n") {
		return 0
	}
	seen := map[string]bool{}
	dup := 0
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if seen[line] {
			dup += len(line)
		}
		seen[line] = true
	}
	return float64(dup) / float64(len(text))
}
