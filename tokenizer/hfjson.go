package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/fomnet/fomnet/internal/fsutil"
)

// tokenizer.json, the Hugging Face tokenizers format. Features used:
//
//	added_tokens   the special tokens (special, not normalised, no strip)
//	normalizer     null (Encode is lossless; NFC is applied upstream)
//	pre_tokenizer  Sequence[Split(Regex Pattern, Isolated), ByteLevel(no
//	               prefix space, use_regex false)]
//	model          BPE with vocab and merges ("A B" strings), no unk token,
//	               no dropout, no byte fallback, ignore_merges false
//	decoder        ByteLevel
//	post_processor null (no tokens are added automatically)
//
// Load accepts exactly this shape and says which field differs otherwise.

type hfAdded struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfByteLevel struct {
	Type           string `json:"type"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	TrimOffsets    bool   `json:"trim_offsets"`
	UseRegex       bool   `json:"use_regex"`
}

type hfSplit struct {
	Type     string            `json:"type"`
	Pattern  map[string]string `json:"pattern"`
	Behavior string            `json:"behavior"`
	Invert   bool              `json:"invert"`
}

type hfModel struct {
	Type                    string         `json:"type"`
	Dropout                 *float64       `json:"dropout"`
	UnkToken                *string        `json:"unk_token"`
	ContinuingSubwordPrefix *string        `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string        `json:"end_of_word_suffix"`
	FuseUnk                 bool           `json:"fuse_unk"`
	ByteFallback            bool           `json:"byte_fallback"`
	IgnoreMerges            bool           `json:"ignore_merges"`
	Vocab                   map[string]int `json:"vocab"`
	Merges                  []string       `json:"merges"`
}

type hfFile struct {
	Version      string          `json:"version"`
	Truncation   json.RawMessage `json:"truncation"`
	Padding      json.RawMessage `json:"padding"`
	AddedTokens  []hfAdded       `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer struct {
		Type          string            `json:"type"`
		Pretokenizers []json.RawMessage `json:"pretokenizers"`
	} `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       hfByteLevel     `json:"decoder"`
	Model         hfModel         `json:"model"`
}

// MarshalJSON renders the tokenizer as a Hugging Face tokenizer.json. The
// output is deterministic.
func (t *Tokenizer) MarshalJSON() ([]byte, error) {
	f := hfFile{Version: "1.0", Truncation: json.RawMessage("null"), Padding: json.RawMessage("null"),
		Normalizer: json.RawMessage("null"), PostProcessor: json.RawMessage("null")}
	for i, s := range t.specials {
		f.AddedTokens = append(f.AddedTokens, hfAdded{ID: 256 + i, Content: s, Special: true})
	}
	split, _ := json.Marshal(hfSplit{Type: "Split", Pattern: map[string]string{"Regex": Pattern}, Behavior: "Isolated"})
	bl, _ := json.Marshal(hfByteLevel{Type: "ByteLevel"})
	f.PreTokenizer.Type = "Sequence"
	f.PreTokenizer.Pretokenizers = []json.RawMessage{split, bl}
	f.Decoder = hfByteLevel{Type: "ByteLevel"}
	f.Model = hfModel{Type: "BPE", Vocab: map[string]int{}, Merges: []string{}}
	for id := range t.tokens {
		f.Model.Vocab[t.tokenString(int32(id))] = id
	}
	for _, p := range t.mergeSeq {
		f.Model.Merges = append(f.Model.Merges, t.tokenString(p.a)+" "+t.tokenString(p.b))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tokenString is an id's vocabulary string: the special token's text, or
// its bytes in the byte-level alphabet.
func (t *Tokenizer) tokenString(id int32) string {
	if t.IsSpecial(id) {
		return t.specials[id-256]
	}
	return byteString(t.tokens[id])
}

// Save writes tokenizer.json to path atomically (temporary file, fsync,
// rename).
func (t *Tokenizer) Save(path string) error {
	b, err := t.MarshalJSON()
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, b)
}

// LoadFile reads a tokenizer.json written by this package.
func LoadFile(path string) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, a...)...)
}

// Parse reads tokenizer.json bytes. Only the features listed above are
// accepted; anything else is an error naming the field.
func Parse(b []byte) (*Tokenizer, error) {
	var f hfFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, bad("%v", err)
	}
	if n := strings.TrimSpace(string(f.Normalizer)); n != "null" && n != "" {
		return nil, bad("normalizer must be null, got %s", n)
	}
	if n := strings.TrimSpace(string(f.PostProcessor)); n != "null" && n != "" {
		return nil, bad("post_processor must be null")
	}
	if f.PreTokenizer.Type != "Sequence" || len(f.PreTokenizer.Pretokenizers) != 2 {
		return nil, bad("pre_tokenizer must be a Sequence of Split and ByteLevel")
	}
	var sp hfSplit
	var bl hfByteLevel
	if json.Unmarshal(f.PreTokenizer.Pretokenizers[0], &sp) != nil || sp.Type != "Split" || sp.Pattern["Regex"] != Pattern || sp.Behavior != "Isolated" || sp.Invert {
		return nil, bad("pre_tokenizer[0] must be Split on fomnet's pattern, Isolated, not inverted")
	}
	if json.Unmarshal(f.PreTokenizer.Pretokenizers[1], &bl) != nil || bl.Type != "ByteLevel" || bl.AddPrefixSpace || bl.UseRegex {
		return nil, bad("pre_tokenizer[1] must be ByteLevel without prefix space or regex")
	}
	if f.Decoder.Type != "ByteLevel" {
		return nil, bad("decoder must be ByteLevel, got %q", f.Decoder.Type)
	}
	m := f.Model
	if m.Type != "BPE" || m.Dropout != nil || m.UnkToken != nil || m.ContinuingSubwordPrefix != nil || m.EndOfWordSuffix != nil || m.ByteFallback || m.IgnoreMerges {
		return nil, bad("model must be plain byte-level BPE (no dropout, unk, prefixes, byte fallback or ignore_merges)")
	}
	var specials []string
	for i, a := range f.AddedTokens {
		if a.ID != 256+i || !a.Special || a.Normalized || a.LStrip || a.RStrip || a.SingleWord {
			return nil, bad("added_tokens[%d] (%q): want id %d, special, not normalised, no strip or single-word", i, a.Content, 256+i)
		}
		specials = append(specials, a.Content)
	}
	t, err := newTokenizer(specials)
	if err != nil {
		return nil, bad("%v", err)
	}
	n := len(m.Vocab)
	byID := make([]string, n)
	for s, id := range m.Vocab {
		if id < 0 || id >= n || byID[id] != "" {
			return nil, bad("vocab ids must be 0..%d without repeats (%q has %d)", n-1, s, id)
		}
		byID[id] = s
	}
	for id, s := range byID {
		switch {
		case id < 256:
			if want := byteString([]byte{byte(id)}); s != want {
				return nil, bad("vocab id %d is %q, want the byte token %q", id, s, want)
			}
		case id < 256+len(specials):
			if s != specials[id-256] {
				return nil, bad("vocab id %d is %q, want special %q", id, s, specials[id-256])
			}
		default:
			raw, ok := stringBytes(s)
			if !ok || len(raw) < 2 {
				return nil, bad("vocab token %q (id %d) is not a byte-level string of 2 or more bytes", s, id)
			}
			t.tokens = append(t.tokens, raw)
		}
	}
	for r, line := range m.Merges {
		a, b, ok := strings.Cut(line, " ")
		ia, oka := m.Vocab[a]
		ib, okb := m.Vocab[b]
		res, okr := m.Vocab[a+b]
		if !ok || !oka || !okb || !okr || t.IsSpecial(int32(ia)) || t.IsSpecial(int32(ib)) {
			return nil, bad("merge %d %q: both parts and their concatenation must be ordinary vocabulary tokens", r, line)
		}
		if _, dup := t.merges[pair{int32(ia), int32(ib)}]; dup {
			return nil, bad("merge %d %q is repeated", r, line)
		}
		t.merges[pair{int32(ia), int32(ib)}] = merge{rank: int32(r), id: int32(res)}
		t.mergeSeq = append(t.mergeSeq, pair{int32(ia), int32(ib)})
	}
	return t, nil
}

// TokenString is an id's vocabulary string as tokenizer.json (and GGUF's
// "gpt2" tokenizer) writes it: a special token's text, or the token's
// bytes in the byte-level alphabet.
func (t *Tokenizer) TokenString(id int32) (string, bool) {
	if id < 0 || int(id) >= len(t.tokens) {
		return "", false
	}
	return t.tokenString(id), true
}

// MergeStrings lists the merges in rank order as "A B" strings of the
// byte-level alphabet, as tokenizer.json does.
func (t *Tokenizer) MergeStrings() []string {
	out := make([]string, 0, len(t.mergeSeq))
	for _, p := range t.mergeSeq {
		out = append(out, t.tokenString(p.a)+" "+t.tokenString(p.b))
	}
	return out
}
