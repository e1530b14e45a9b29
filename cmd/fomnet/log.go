package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/gologshim"
	"github.com/spf13/pflag"
)

// logFlags choose how the process logs on stderr: --log-format text (one
// human line: time, level, message, key=value pairs) or json (slog's JSON
// lines), and --log-level.
type logFlags struct {
	format, level string
}

func (f *logFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.format, "log-format", "text", "log lines on stderr: text or json")
	fs.StringVar(&f.level, "log-level", "info", "least important log lines shown: debug, info, warn or error")
}

// logger builds the process's logger on w. libp2p's own logs (slog through
// gologshim) go to the same handler, at warn and above unless debugging.
func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", f.level)
	}
	var h slog.Handler
	switch f.format {
	case "text":
		h = &lineHandler{w: w, level: level}
	case "json":
		h = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	default:
		return nil, usagef("--log-format %q: want text or json", f.format)
	}
	lib := h
	if level > slog.LevelDebug {
		lib = minLevel{h, max(level, slog.LevelWarn)}
	}
	gologshim.SetDefaultHandler(lib)
	return slog.New(h), nil
}

// minLevel drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}
func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(as), m.min}
}
func (m minLevel) WithGroup(g string) slog.Handler { return minLevel{m.Handler.WithGroup(g), m.min} }

// lineHandler writes one line a record, in one Write:
// "2026-12-05T07:30:01.123Z INFO  message key=value …" (values quoted when
// they hold spaces or quotes). slog's TextHandler quotes every message,
// which reads badly in a terminal.
type lineHandler struct {
	w      io.Writer
	level  slog.Level
	prefix string // the group path, "a.b."
	attrs  string // pre-rendered " k=v" pairs
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	b.WriteString(t.UTC().Format("2006-01-02T15:04:05.000Z"))
	fmt.Fprintf(&b, " %-5s %s%s", r.Level, r.Message, h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.prefix, a)
		return true
	})
	b.WriteByte('\n')
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *lineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	for _, a := range as {
		writeAttr(&b, h.prefix, a)
	}
	c := *h
	c.attrs += b.String()
	return &c
}

func (h *lineHandler) WithGroup(g string) slog.Handler {
	if g == "" {
		return h
	}
	c := *h
	c.prefix += g + "."
	return &c
}

func writeAttr(b *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			writeAttr(b, prefix+a.Key+".", g)
		}
		return
	}
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		v = strconv.Quote(v)
	}
	fmt.Fprintf(b, " %s%s=%s", prefix, a.Key, v)
}
