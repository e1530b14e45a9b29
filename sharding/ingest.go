package sharding

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/fomnet/fomnet/tokenizer"
)

// Doc is one document read from an input, with where it came from. A
// conversation (Messages set) is trained in the chat format; its Text is
// its messages' contents, one a line, for the filters.
type Doc struct {
	Text     string
	File     string
	Line     int    // first line of the document in File (1-based)
	Side     string // for parallel TSV: "en" or "ko" (the column); else ""
	Messages []tokenizer.Message
	// Rejected, for a preference pair, is the conversation with the
	// rejected answer (Messages then has the chosen one).
	Rejected []tokenizer.Message
}

// Format names an input format.
type Format string

// Input formats. Plain text is split into documents at blank lines; TSV holds
// aligned pairs "english<TAB>korean" (the shared corpus's format), each side
// a document; JSONL holds one JSON object a line with the text in Field, or
// a conversation: "messages" ([{role, content}], roles system, user and
// assistant) or "instruction", optional "input" and "output";
// Parquet (the Hugging Face datasets layout) one document a row in the
// string column Field.
const (
	FormatText    Format = "text"
	FormatTSV     Format = "tsv"
	FormatJSONL   Format = "jsonl"
	FormatParquet Format = "parquet"
)

// FormatOf guesses a file's format from its extension.
func FormatOf(path string) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".tsv":
		return FormatTSV
	case ".jsonl", ".ndjson":
		return FormatJSONL
	case ".parquet":
		return FormatParquet
	default:
		return FormatText
	}
}

// IngestOptions control reading.
type IngestOptions struct {
	Field   string // JSONL field holding the text (default "text")
	MaxLine int    // longest line accepted, bytes (default 16 MiB)
}

// Malformed is one skipped input record.
type Malformed struct {
	File   string
	Line   int
	Reason string
}

func (m Malformed) String() string { return fmt.Sprintf("%s:%d: %s", m.File, m.Line, m.Reason) }

// IngestStats counts what reading did. Nothing is dropped silently: every
// skipped record is counted, and the first few are kept with file:line.
type IngestStats struct {
	Files    int
	Docs     int
	Bytes    int64
	Skipped  int
	FirstBad []Malformed // at most 20
}

func (s *IngestStats) skip(m Malformed) {
	s.Skipped++
	if len(s.FirstBad) < 20 {
		s.FirstBad = append(s.FirstBad, m)
	}
}

// sniffLen is how much of a text input LooksBinary reads.
const sniffLen = 64 << 10

// LooksBinary peeks at the start of a text input (at most sniffLen bytes,
// consuming nothing) and says why it is not text, or "" if it is: a NUL
// byte, or more than 1% (and more than four) of its bytes in invalid UTF-8
// or in control characters other than tab, newline, carriage return and
// form feed.
func LooksBinary(r *bufio.Reader) (string, error) {
	b, err := r.Peek(sniffLen)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return "", err
	}
	return binaryReason(b), nil
}

func binaryReason(b []byte) string {
	invalid, control := 0, 0
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		switch {
		case r == 0:
			return fmt.Sprintf("a NUL byte at offset %d", i)
		case r == utf8.RuneError && n == 1:
			if !utf8.FullRune(b[i:]) && len(b) == sniffLen {
				i = len(b) // a character cut by the sniff window
				continue
			}
			invalid++
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r' && r != '\f', r == 0x7f, r >= 0x80 && r < 0xa0:
			control++
		}
		i += n
	}
	limit := max(len(b)/100, 4) // a stray bad byte is a malformed line
	switch {
	case invalid > limit:
		return fmt.Sprintf("%d of its first %d bytes are not UTF-8", invalid, len(b))
	case control > limit:
		return fmt.Sprintf("%d control characters in its first %d bytes", control, len(b))
	}
	return ""
}

// ErrInput reports an input file that cannot be read at all.
var ErrInput = errors.New("input")

// ReadDocs streams the documents of each file to yield, in order. Memory
// does not grow with the input: one line (or one paragraph) is held at a
// time. Malformed records (invalid UTF-8, a TSV line without exactly one
// tab, a JSONL line that is not an object with a string field) are skipped
// and counted in the stats. An unreadable file, or a line longer than
// MaxLine, stops reading with an error naming file:line. A non-nil error
// from yield stops reading and is returned.
func ReadDocs(paths []string, o IngestOptions, yield func(Doc) error) (IngestStats, error) {
	if o.Field == "" {
		o.Field = "text"
	}
	if o.MaxLine <= 0 {
		o.MaxLine = 16 << 20
	}
	var st IngestStats
	for _, p := range paths {
		if err := readFile(p, FormatOf(p), o, &st, yield); err != nil {
			return st, err
		}
		st.Files++
	}
	return st, nil
}

func readFile(path string, f Format, o IngestOptions, st *IngestStats, yield func(Doc) error) error {
	return readSpan(path, f, o, st, span{End: -1, Line: 1}, yield)
}

// span is a stretch of a line-based input file: from byte Start, the start
// of line Line (1-based), to byte End (-1: the end of the file). A plan
// cuts files only where a document starts (a line of .tsv or .jsonl; the
// first line after a blank one in text), so a span holds whole documents
// and reading the spans of a file one after the other gives the documents
// of the whole file.
type span struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	Line  int   `json:"line"`
}

func readSpan(path string, f Format, o IngestOptions, st *IngestStats, sp span, yield func(Doc) error) error {
	if o.Field == "" {
		o.Field = "text"
	}
	if o.MaxLine <= 0 {
		o.MaxLine = 16 << 20
	}
	if f == FormatParquet {
		return readParquet(path, o, st, func(d Doc) error {
			st.Docs++
			st.Bytes += int64(len(d.Text))
			return yield(d)
		})
	}
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInput, err)
	}
	defer fh.Close()
	var r io.Reader = fh
	if sp.Start > 0 {
		if _, err := fh.Seek(sp.Start, io.SeekStart); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInput, path, err)
		}
	}
	if sp.End >= 0 {
		r = io.LimitReader(fh, sp.End-sp.Start)
	}
	br := bufio.NewReaderSize(r, sniffLen)
	if sp.Start == 0 { // a plan has sniffed a file it cuts
		if why, err := LooksBinary(br); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInput, path, err)
		} else if why != "" {
			return fmt.Errorf("%w: %s is not text (%s); fomnet reads UTF-8 text, .tsv, .jsonl and .parquet", ErrInput, path, why)
		}
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, min(64<<10, o.MaxLine)), o.MaxLine)
	line := sp.Line - 1
	var para strings.Builder
	paraLine := 0
	emit := func(d Doc) error {
		st.Docs++
		st.Bytes += int64(len(d.Text))
		return yield(d)
	}
	flush := func() error {
		if para.Len() == 0 {
			return nil
		}
		text := para.String()
		para.Reset()
		return emit(Doc{Text: text, File: path, Line: paraLine})
	}
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if !utf8.Valid(b) {
			st.skip(Malformed{path, line, "invalid UTF-8"})
			continue
		}
		s := strings.TrimSuffix(string(b), "\r")
		switch f {
		case FormatText:
			if strings.TrimSpace(s) == "" {
				if err := flush(); err != nil {
					return err
				}
				continue
			}
			if para.Len() == 0 {
				paraLine = line
			} else {
				para.WriteByte('\n')
			}
			para.WriteString(s)
		case FormatTSV:
			en, ko, ok := strings.Cut(s, "\t")
			if !ok || strings.Contains(ko, "\t") {
				st.skip(Malformed{path, line, fmt.Sprintf("want 2 tab-separated columns, got %d", strings.Count(s, "\t")+1)})
				continue
			}
			for _, side := range []struct{ text, name string }{{en, "en"}, {ko, "ko"}} {
				if strings.TrimSpace(side.text) == "" {
					continue
				}
				if err := emit(Doc{Text: side.text, File: path, Line: line, Side: side.name}); err != nil {
					return err
				}
			}
		case FormatJSONL:
			if strings.TrimSpace(s) == "" {
				continue
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal([]byte(s), &obj); err != nil {
				st.skip(Malformed{path, line, "not a JSON object: " + err.Error()})
				continue
			}
			d, why := record(obj, o.Field)
			if why != "" {
				st.skip(Malformed{path, line, why})
				continue
			}
			d.File, d.Line = path, line
			if err := emit(d); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%w: %s:%d: line longer than %d bytes", ErrInput, path, line+1, o.MaxLine)
		}
		return fmt.Errorf("%w: %s:%d: %v", ErrInput, path, line+1, err)
	}
	if f == FormatText {
		return flush()
	}
	return nil
}

// record reads one JSON object (a JSONL line, a Parquet row) as a
// document: the string field, else a preference pair (with "chosen"), else
// a conversation; or it says why the object is none of them.
func record(obj map[string]json.RawMessage, field string) (Doc, string) {
	raw, ok := obj[field]
	if ok {
		var text string
		if json.Unmarshal(raw, &text) != nil {
			return Doc{}, fmt.Sprintf("no string field %q", field)
		}
		return Doc{Text: text}, ""
	}
	if _, isPair := obj["chosen"]; isPair {
		chosen, rej, why := pair(obj)
		if why != "" {
			return Doc{}, why
		}
		return Doc{Text: chatText(chosen) + "\n" + chatText(rej[len(rej)-1:]), Messages: chosen, Rejected: rej}, ""
	}
	msgs, why := conversation(obj)
	switch {
	case why != "":
		return Doc{}, why
	case msgs == nil:
		return Doc{}, fmt.Sprintf("no string field %q, and not a conversation (messages, or instruction and output)", field)
	}
	return Doc{Text: chatText(msgs), Messages: msgs}, ""
}

// conversation reads a JSONL record as a conversation: "messages"
// ([{role, content}]) or "instruction" (with "input" appended after a
// blank line when present) answered by "output". It returns nil messages
// for a record of neither layout, and why a record of one is malformed.
func conversation(obj map[string]json.RawMessage) ([]tokenizer.Message, string) {
	if raw, ok := obj["messages"]; ok {
		var msgs []tokenizer.Message
		if err := json.Unmarshal(raw, &msgs); err != nil {
			return nil, "messages is not a list of {role, content}: " + err.Error()
		}
		answered := false
		for i, m := range msgs {
			switch m.Role {
			case tokenizer.RoleSystem, tokenizer.RoleUser:
			case tokenizer.RoleAssistant:
				answered = true
			default:
				return nil, fmt.Sprintf("message %d: role %q is not system, user or assistant", i, m.Role)
			}
		}
		if !answered {
			return nil, "a conversation without an assistant turn"
		}
		return msgs, ""
	}
	str := func(k string) (string, bool) {
		var s string
		raw, ok := obj[k]
		return s, ok && json.Unmarshal(raw, &s) == nil
	}
	inst, ok1 := str("instruction")
	out, ok2 := str("output")
	if !ok1 && !ok2 {
		return nil, ""
	}
	if !ok1 || !ok2 {
		return nil, "instruction and output must both be strings"
	}
	if in, ok := str("input"); ok && strings.TrimSpace(in) != "" {
		inst += "\n\n" + in
	}
	return []tokenizer.Message{{Role: tokenizer.RoleUser, Content: inst}, {Role: tokenizer.RoleAssistant, Content: out}}, ""
}

// pair reads a JSONL preference record: the context ("prompt", a string,
// or "messages", a conversation ending with a user turn) and two answers
// ("chosen", "rejected": each a string or a list of assistant messages, or,
// without a context, each the whole conversation). It returns the chosen
// and the rejected conversation, or why the record is malformed.
func pair(obj map[string]json.RawMessage) (chosen, rejected []tokenizer.Message, why string) {
	var ctx []tokenizer.Message
	if raw, ok := obj["prompt"]; ok {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, nil, "prompt is not a string"
		}
		ctx = []tokenizer.Message{{Role: tokenizer.RoleUser, Content: s}}
	} else if raw, ok := obj["messages"]; ok {
		if err := json.Unmarshal(raw, &ctx); err != nil {
			return nil, nil, "messages is not a list of {role, content}: " + err.Error()
		}
	}
	answer := func(k string) ([]tokenizer.Message, string) {
		raw, ok := obj[k]
		if !ok {
			return nil, "a preference pair without " + k
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return append(ctx[:len(ctx):len(ctx)], tokenizer.Message{Role: tokenizer.RoleAssistant, Content: s}), ""
		}
		var msgs []tokenizer.Message
		if err := json.Unmarshal(raw, &msgs); err != nil {
			return nil, k + " is neither a string nor a list of {role, content}"
		}
		return append(ctx[:len(ctx):len(ctx)], msgs...), ""
	}
	if chosen, why = answer("chosen"); why != "" {
		return nil, nil, why
	}
	if rejected, why = answer("rejected"); why != "" {
		return nil, nil, why
	}
	for _, c := range [][]tokenizer.Message{chosen, rejected} {
		for i, m := range c {
			switch m.Role {
			case tokenizer.RoleSystem, tokenizer.RoleUser, tokenizer.RoleAssistant:
			default:
				return nil, nil, fmt.Sprintf("message %d: role %q is not system, user or assistant", i, m.Role)
			}
		}
		if len(c) == 0 || c[len(c)-1].Role != tokenizer.RoleAssistant {
			return nil, nil, "a preference answer must end with an assistant turn"
		}
	}
	return chosen, rejected, ""
}

// chatText is a conversation's contents, one message a line.
func chatText(msgs []tokenizer.Message) string {
	parts := make([]string, len(msgs))
	for i, m := range msgs {
		parts[i] = m.Content
	}
	return strings.Join(parts, "\n")
}
